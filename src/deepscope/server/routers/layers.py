from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response

from .. import layer_queries, queries
from ..dependencies import StoreDep
from ..schemas import LayerKind, LayerProfile, LayerStat, LayerTable
from .scalars import ARROW_ANSWER

router = APIRouter(prefix="/api/runs", tags=["layers"])
NOT_FOUND = {404: {"description": "No such run, rank or layer, or the run was not watched"}}
MATRIX_ANSWER = {
    200: {
        "description": "Arrow record batch, one row per layer: name, values (one float32 per step bucket), "
        "nonfinite (one int32 per step bucket: rows that were NaN/Inf; null for a layer without any); "
        "schema metadata: kind, stat, exact, steps (JSON list of each bucket's last step)",
        "content": {queries.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    },
    **NOT_FOUND,
}


@router.get("/{run_id}/layers", response_model=LayerTable, responses=NOT_FOUND)
def get_layers(run_id: str, store: StoreDep, rank: int = Query(0, ge=0)) -> LayerTable:
    """The layers ``run.watch`` recorded, in model order, with its settings."""
    return layer_queries.layer_table(store, run_id, rank)


@router.get("/{run_id}/layerstats/matrix", response_class=Response, responses=MATRIX_ANSWER)
def get_layer_matrix(
    run_id: str,
    store: StoreDep,
    kind: LayerKind = Query("act"),
    stat: LayerStat = Query("mean"),
    start: int | None = Query(None, ge=0),
    end: int | None = Query(None, ge=0),
    buckets: int = Query(500, ge=1, le=queries.MAX_BUCKETS),
    rank: int = Query(0, ge=0),
) -> Response:
    """Layers × step buckets of one statistic: the layer × step overview."""
    m = layer_queries.layer_matrix(store, run_id, kind, stat, start, end, buckets, rank)
    return Response(queries.arrow_stream(layer_queries.layer_matrix_table(m)), media_type=queries.ARROW_STREAM)


@router.get("/{run_id}/layerstats/profile", response_model=LayerProfile, responses=NOT_FOUND)
def get_layer_profile(
    run_id: str,
    store: StoreDep,
    kind: LayerKind = Query("param_grad"),
    stat: LayerStat = Query("norm"),
    step: int | None = Query(None, ge=0),
    rank: int = Query(0, ge=0),
) -> LayerProfile:
    """One statistic across depth at the last recorded step ≤ ``step``: gradient flow."""
    return layer_queries.layer_profile(store, run_id, kind, stat, step, rank)


@router.get("/{run_id}/layerstats/series", response_class=Response, responses=ARROW_ANSWER)
def get_layer_series(
    run_id: str,
    store: StoreDep,
    layer: str = Query(..., min_length=1),
    kind: LayerKind = Query("act"),
    stat: LayerStat = Query("mean"),
    start: int | None = Query(None, ge=0),
    end: int | None = Query(None, ge=0),
    buckets: int = Query(1000, ge=1, le=queries.MAX_BUCKETS),
    rank: int = Query(0, ge=0),
) -> Response:
    """One statistic of one layer over steps, downsampled like a scalar series (same Arrow columns)."""
    d = layer_queries.layer_series(store, run_id, layer, kind, stat, start, end, buckets, rank)
    return Response(queries.arrow_stream(queries.scalars_table(d)), media_type=queries.ARROW_STREAM)


@router.get("/{run_id}/layerstats/total", response_class=Response, responses=ARROW_ANSWER)
def get_total_norm(
    run_id: str,
    store: StoreDep,
    kind: Literal["param_grad", "weight"] = Query("param_grad"),
    start: int | None = Query(None, ge=0),
    end: int | None = Query(None, ge=0),
    buckets: int = Query(1000, ge=1, le=queries.MAX_BUCKETS),
    rank: int = Query(0, ge=0),
) -> Response:
    """The norm of all parameters' gradients (``param_grad``) or weights together, √(Σ ‖p‖²), at each recorded
    step — the global gradient norm —, downsampled like a scalar series (same Arrow columns)."""
    d = layer_queries.total_norm(store, run_id, kind, start, end, buckets, rank)
    return Response(queries.arrow_stream(queries.scalars_table(d)), media_type=queries.ARROW_STREAM)
