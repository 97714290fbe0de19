from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ..dependencies import LiveHubDep

router = APIRouter(prefix="/api", tags=["live"])

SSE_ANSWER = {
    200: {
        "description": "Server-sent events `run` (data: LiveRun) and `runs` (data: LiveRuns)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.get("/live", response_class=StreamingResponse, responses=SSE_ANSWER)
async def live(hub: LiveHubDep) -> StreamingResponse:
    """Notifications that runs got new data (``run``) or that the run list changed (``runs``)."""
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(hub.events(), media_type="text/event-stream", headers=headers)
