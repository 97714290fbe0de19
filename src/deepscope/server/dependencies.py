"""What route handlers receive: the app's store and live hub."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..store import Store
from .live import LiveHub


async def get_store(request: Request) -> Store:
    return request.app.state.store  # async: a dependency this small should not hop to a worker thread


async def get_live_hub(request: Request) -> LiveHub:
    return request.app.state.live


StoreDep = Annotated[Store, Depends(get_store)]
LiveHubDep = Annotated[LiveHub, Depends(get_live_hub)]
