from __future__ import annotations

from fastapi import APIRouter, Query

from .. import queries
from ..dependencies import StoreDep
from ..schemas import KeyList, RunDetail, RunList, ScalarSummaryList

router = APIRouter(prefix="/api/runs", tags=["runs"])
NOT_FOUND = {404: {"description": "No such run"}}


@router.get("", response_model=RunList)
def list_runs(store: StoreDep) -> RunList:
    """Every run, newest first."""
    return queries.list_runs(store)


@router.get("/{run_id}", response_model=RunDetail, responses=NOT_FOUND)
def get_run(run_id: str, store: StoreDep) -> RunDetail:
    """One run with its full configuration and environment."""
    return queries.run_detail(store, run_id)


@router.get("/{run_id}/keys", response_model=KeyList, responses=NOT_FOUND)
def list_keys(run_id: str, store: StoreDep, rank: int | None = Query(None, ge=0)) -> KeyList:
    """The keys a run logged: scalars, then histograms (all ranks when ``rank`` is absent)."""
    return queries.run_keys(store, run_id, rank)


@router.get("/{run_id}/summary", response_model=ScalarSummaryList, responses=NOT_FOUND)
def summary(run_id: str, store: StoreDep, rank: int | None = Query(None, ge=0)) -> ScalarSummaryList:
    """Each scalar key's last value, minimum and maximum (all ranks when ``rank`` is absent)."""
    return queries.scalar_summaries(store, run_id, rank)
