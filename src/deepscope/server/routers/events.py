from __future__ import annotations

from fastapi import APIRouter, Query

from .. import queries
from ..dependencies import StoreDep
from ..schemas import EventList

router = APIRouter(prefix="/api/runs", tags=["events"])


@router.get("/{run_id}/events", response_model=EventList, responses={404: {"description": "No such run"}})
def list_events(run_id: str, store: StoreDep, rank: int | None = Query(None, ge=0)) -> EventList:
    """Text events (notes, alerts) in time order (all ranks when ``rank`` is absent)."""
    return queries.events(store, run_id, rank)
