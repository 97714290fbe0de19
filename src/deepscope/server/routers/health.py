from __future__ import annotations

from fastapi import APIRouter

from ... import __version__
from ..dependencies import StoreDep
from ..schemas import Health

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", response_model=Health)
def health(store: StoreDep) -> Health:
    """The server's version and the runs directory it serves."""
    return Health(version=__version__, root=str(store.root))
