from __future__ import annotations

from fastapi import APIRouter, Query

from .. import graph_queries
from ..dependencies import StoreDep
from ..schemas import GraphView

router = APIRouter(prefix="/api/runs", tags=["graph"])
NOT_FOUND = {404: {"description": "No such run, or the run has no graph"}}


@router.get("/{run_id}/graph", response_model=GraphView, responses=NOT_FOUND)
def get_graph(
    run_id: str,
    store: StoreDep,
    expanded: list[str] = Query([]),
    tree: bool = Query(True),
    q: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=1000),
) -> GraphView:
    """The computation graph collapsed to its top-level modules, with the ``expanded`` module paths open."""
    return graph_queries.graph_view(store, run_id, expanded, tree, q, limit)
