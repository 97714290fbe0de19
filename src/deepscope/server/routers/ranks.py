from __future__ import annotations

from fastapi import APIRouter

from .. import layer_queries
from ..dependencies import StoreDep
from ..schemas import RankReport

router = APIRouter(prefix="/api/runs", tags=["ranks"])


@router.get("/{run_id}/ranks", response_model=RankReport, responses={404: {"description": "No such run"}})
def get_ranks(run_id: str, store: StoreDep) -> RankReport:
    """Per-rank step phases with stragglers flagged, and gradient-norm divergence between ranks."""
    return layer_queries.rank_report(store, run_id)
