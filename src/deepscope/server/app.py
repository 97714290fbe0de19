"""``create_app(root)``: the HTTP API over a runs directory, plus the built web app at ``/``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.responses import Response

from .. import __version__
from ..store import Store
from . import graph_queries, schemas
from .analysis_queries import BadRequest
from .live import LiveHub
from .projection_jobs import ProjectionJobs
from .queries import NotFound
from .routers import analysis, events, graph, health, histograms, layers, live, ranks, runs, scalars
from .security import BodyLimit, LoopbackHostOnly, SameOriginWrites, TokenAuth
from .static_site import STATIC_DIR, StaticSite


def create_app(
    root: str | os.PathLike[str],
    *,
    token: str | None = None,
    static_dir: str | os.PathLike[str] | None = None,
    live_hub: LiveHub | None = None,
) -> FastAPI:
    """The deepscope server for the runs in ``root``.

    With ``token``, every request must carry it (header, cookie or ``?token=``); without, only requests
    addressed to a loopback host are answered. ``static_dir`` defaults to the packaged web build.

    >>> app = create_app("deepscope-runs", token="s3cret")
    >>> uvicorn.run(app, host="127.0.0.1", port=6150)
    """
    store = Store(root)
    hub = live_hub or LiveHub(store)
    jobs = ProjectionJobs()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(hub.run())
        # parse the newest runs' graphs in the background: the graph view's first paint needs no parse
        warming = asyncio.create_task(asyncio.to_thread(graph_queries.warm, store))
        try:
            yield
        finally:
            hub.close()
            await asyncio.to_thread(jobs.close)  # a running projection stops at its next progress report
            poller.cancel()
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    app = FastAPI(
        title="deepscope",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url=None,  # the interactive docs load scripts from a CDN: not in a local, offline tool
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.store = store
    app.state.live = hub
    app.state.projection_jobs = jobs
    for module in (health, runs, scalars, histograms, events, layers, ranks, graph, analysis, live):
        app.include_router(module.router)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(BadRequest, _bad_request)
    _add_fallbacks(app, StaticSite(Path(static_dir) if static_dir is not None else STATIC_DIR))
    app.openapi = lambda: _openapi_with_live_messages(app)

    # The last added middleware runs first: body limit, then host check / auth, then the origin of writes.
    app.add_middleware(SameOriginWrites)
    if token is not None:
        app.add_middleware(TokenAuth, token=token)
    else:
        app.add_middleware(LoopbackHostOnly)
    app.add_middleware(BodyLimit)
    return app


def _operation_id(route: APIRoute) -> str:
    return route.name  # the handler's name: `list_runs`, `get_scalars`… in the generated client types


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=400)


def _add_fallbacks(app: FastAPI, site: StaticSite) -> None:
    @app.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def api_not_found(path: str) -> Response:
        return JSONResponse({"detail": "no such route"}, status_code=404)

    @app.get("/{path:path}", include_in_schema=False)
    def web_app(path: str) -> Response:
        return site.response(path)


def _openapi_with_live_messages(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the models of ``/api/live``'s event data (no route returns them as JSON)."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)  # generates and caches app.openapi_schema
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in schemas.LIVE_MESSAGES:
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return app.openapi_schema
