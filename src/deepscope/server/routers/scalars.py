from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from .. import queries

router = APIRouter(prefix="/api/runs", tags=["scalars"])

ARROW_ANSWER = {
    200: {
        "description": "One Arrow record batch: step, wall_time, min, max, mean, last, count, nonfinite",
        "content": {queries.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    },
    404: {"description": "No such run, key or rank"},
}


@router.get("/{run_id}/scalars", response_class=Response, responses=ARROW_ANSWER)
async def get_scalars(
    run_id: str,
    request: Request,
    key: str = Query(..., min_length=1),
    start: int | None = Query(None, ge=0),
    end: int | None = Query(None, ge=0),
    buckets: int = Query(1000, ge=1, le=queries.MAX_BUCKETS),
    rank: int = Query(0, ge=0),
) -> Response:
    """A scalar series over steps ``[start, end]``, downsampled to ``buckets``, as an Arrow IPC stream."""
    # The store straight from the app, not through a dependency: live tails are polled often, and
    # resolving a dependency costs as much as answering.
    store = request.app.state.store
    # An answer already computed (clients polling one live tail share it) or a live tail of a run in memory is
    # answered on the event loop, without a thread hop. Anything else — reading a run's files, gathering a key's
    # values, scanning points — goes to a worker thread: a 10,000-bucket zoom into a million points held every other
    # request up (health, live).
    answer = queries.scalars_answer_now(store, run_id, key, start, end, buckets, rank)
    if answer is None:
        answer = await run_in_threadpool(queries.scalars_answer, store, run_id, key, start, end, buckets, rank)
    return Response(answer, media_type=queries.ARROW_STREAM)
