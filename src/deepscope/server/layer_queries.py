"""What the training-internals routes answer (``run.watch`` data), as plain functions over a ``Store``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from ..capture.diagnose import depth_axis
from ..store import Store
from ..store.layerstats import LayerMatrix
from ..store.ranks import gradient_divergence, rank_summaries
from ..types import Downsampled
from . import schemas
from .queries import NotFound, reader


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


_MANIFEST_FIELDS = ("layers", "params", "step_unit", "every", "histograms_every", "sample", "dead_window",
                    "histogram_edges", "call_order")  # fmt: skip


def layer_table(store: Store, run_id: str, rank: int = 0) -> schemas.LayerTable:
    """The rank's ``watch.json`` as a ``LayerTable``; ``NotFound`` for a rank never watched, or a manifest that is
    not the shape ``run.watch`` writes (one written by hand, or by another program) — saying which field is wrong."""
    r = reader(store, run_id)
    manifest = r.watch_manifest(rank)
    if manifest is None:
        raise NotFound(f"run {run_id!r} has no watched layers on rank {rank}")
    unreadable = f"run {run_id!r}: unreadable watch.json on rank {rank}"
    if not isinstance(manifest, dict):
        raise NotFound(f"{unreadable}: not a JSON object")
    try:
        steps = r.layer_steps(rank)
    except KeyError:
        steps = np.zeros(0, np.int64)
    try:
        table = schemas.LayerTable(
            **{k: manifest[k] for k in _MANIFEST_FIELDS if k in manifest},
            rank=rank,
            depth=[],
            steps=len(steps),
            first_step=int(steps[0]) if len(steps) else None,
            last_step=int(steps[-1]) if len(steps) else None,
        )
    except ValidationError as e:
        error = e.errors()[0]
        raise NotFound(f"{unreadable}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    depth = depth_axis([la.model_dump() for la in table.layers], table.params)
    return table.model_copy(update={"depth": [table.params[i] for i in depth]})


def layer_matrix(
    store: Store, run_id: str, kind: str, stat: str, start: int | None, end: int | None, buckets: int, rank: int
) -> LayerMatrix:
    try:
        return reader(store, run_id).layer_matrix(kind, stat, start, end, buckets, rank)
    except KeyError as e:
        raise NotFound(str(e.args[0]) if e.args else run_id) from None


def layer_matrix_table(m: LayerMatrix) -> pa.RecordBatch:
    """One row per layer (model order): ``name``, ``values`` (float32 per step bucket, NaN = no value) and
    ``nonfinite`` (int32 per step bucket: rows not finite; null for a layer without any, as most are).

    The bucket steps travel in the schema metadata (``steps``, a JSON list) with ``kind``, ``stat``, ``exact``.
    """
    metadata = {
        "kind": m.kind,
        "stat": m.stat,
        "exact": "true" if m.exact else "false",
        "steps": json.dumps(m.step.tolist()),
    }
    n_b = m.values.shape[1]
    flat = pa.array(m.values.astype(np.float32).reshape(-1))
    values = (
        pa.FixedSizeListArray.from_arrays(flat, n_b) if n_b else pa.array([[]] * len(m.names), pa.list_(pa.float32()))
    )
    if n_b:
        any_bad = m.nonfinite.any(axis=1)
        flat_bad = pa.array(m.nonfinite.astype(np.int32).reshape(-1))
        bad = pa.FixedSizeListArray.from_arrays(flat_bad, n_b, mask=pa.array(~any_bad))
    else:  # no step in the range (a kind with no rows yet, a zoom past the last step): like `values`
        bad = pa.nulls(len(m.names), pa.list_(pa.int32()))
    names = pa.array(m.names, pa.string())
    return pa.RecordBatch.from_arrays(
        [names, values, bad], names=["name", "values", "nonfinite"]
    ).replace_schema_metadata(metadata)


def layer_profile(store: Store, run_id: str, kind: str, stat: str, step: int | None, rank: int) -> schemas.LayerProfile:
    try:
        at, names, values = reader(store, run_id).layer_profile(kind, stat, step, rank)
    except KeyError as e:
        raise NotFound(str(e.args[0]) if e.args else run_id) from None
    return schemas.LayerProfile(kind=kind, stat=stat, step=at, names=names, values=_finite_or_none(values))


def layer_series(
    store: Store,
    run_id: str,
    layer: str,
    kind: str,
    stat: str,
    start: int | None,
    end: int | None,
    buckets: int,
    rank: int,
) -> Downsampled:
    try:
        return reader(store, run_id).layer_series(layer, kind, stat, start, end, buckets, rank)
    except KeyError as e:
        raise NotFound(str(e.args[0]) if e.args else layer) from None


def total_norm(
    store: Store, run_id: str, kind: str, start: int | None, end: int | None, buckets: int, rank: int
) -> Downsampled:
    try:
        return reader(store, run_id).total_norm(kind, start, end, buckets, rank)
    except KeyError as e:
        raise NotFound(str(e.args[0]) if e.args else run_id) from None


def rank_report(store: Store, run_id: str) -> schemas.RankReport:
    r = reader(store, run_id)
    rows = []
    for s in rank_summaries(r):
        d = asdict(s)
        rows.append(
            schemas.RankSummary(
                **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
            )
        )
    steps, spread, _ = gradient_divergence(r)
    return schemas.RankReport(ranks=rows, divergence_steps=[int(s) for s in steps], divergence=_finite_or_none(spread))
