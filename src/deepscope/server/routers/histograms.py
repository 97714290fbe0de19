from __future__ import annotations

from fastapi import APIRouter, Query

from .. import queries
from ..dependencies import StoreDep
from ..schemas import HistogramList

router = APIRouter(prefix="/api/runs", tags=["histograms"])


@router.get("/{run_id}/histograms", response_model=HistogramList, responses={404: {"description": "No such run"}})
def get_histograms(
    run_id: str, store: StoreDep, key: str = Query(..., min_length=1), rank: int = Query(0, ge=0)
) -> HistogramList:
    """Every logged distribution of ``key``, in step order."""
    return queries.histograms(store, run_id, key, rank)
