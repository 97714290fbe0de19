"""Arrow record batches of ``layerstats`` and watch histograms, built in the writer thread."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..store import format as fmt
from . import reducers as R
from .layers import Layer

_KIND_CODES = {k: i for i, k in enumerate(fmt.LAYER_KINDS)}


def layerstats_batch(
    step: int, wall: float, layers: list[str], params: list[str], stats: dict[str, dict[str, np.ndarray]]
) -> pa.RecordBatch:
    """One row per (layer, kind) that recorded something this step; see docs/store-format.md."""
    names = layers + params
    codes, kinds, cols = [], [], {s: [] for s in fmt.LAYER_STATS}
    for kind, offset in (("act", 0), ("grad", 0), ("param_grad", len(layers)), ("weight", len(layers))):
        st = stats[kind]
        present = np.isfinite(st["mean"]) | (st["nonfinite_frac"] > 0)
        idx = np.flatnonzero(present)
        codes.append(idx + offset)
        kinds.append(np.full(len(idx), _KIND_CODES[kind], np.int8))
        for s in fmt.LAYER_STATS:
            col = st.get(s)
            cols[s].append(col[idx] if col is not None else np.full(len(idx), np.nan))
    code = np.concatenate(codes).astype(np.int32)
    n = len(code)
    return pa.record_batch(
        [
            pa.array(np.full(n, step, np.int64)),
            pa.array(np.full(n, wall, np.float64)),
            pa.DictionaryArray.from_arrays(pa.array(code), pa.array(names, pa.string())),
            pa.DictionaryArray.from_arrays(pa.array(np.concatenate(kinds)), pa.array(fmt.LAYER_KINDS, pa.string())),
            *(pa.array(np.concatenate(cols[s]).astype(np.float32)) for s in fmt.LAYER_STATS),
        ],
        schema=fmt.LAYERSTATS,
    )


def histogram_key(kind: str, name: str) -> str:
    """``watch/<kind>/<layer or parameter path>``: where watch histograms are stored."""
    return f"watch/{kind}/{name}"


def watch_histograms_batch(
    step: int, wall: float, layers: list[Layer], params: list[str], counts_all: np.ndarray
) -> pa.RecordBatch:
    """The step's histograms of every layer and parameter (all on the fixed ``HIST_EDGES`` bins);
    ``counts_all`` holds one row per layer and kind, in ``step_buffers.rows_per_kind`` order."""
    keys, counts = [], []
    start = 0
    for kind, names in (("act", [la.path for la in layers]), ("grad", [la.path for la in layers]),
                        ("param_grad", params), ("weight", params)):  # fmt: skip
        for i, name in enumerate(names):
            row = counts_all[start + i]
            if row.sum() > 0:
                keys.append(histogram_key(kind, name)[: fmt.MAX_KEY_LENGTH])
                counts.append(row)
        start += len(names)
    edges = R.HIST_EDGES
    n = len(keys)
    return pa.record_batch(
        [
            pa.array(np.full(n, step, np.int64)),
            pa.array(np.full(n, wall, np.float64)),
            pa.array(keys, pa.string()),
            pa.array([edges] * n, pa.list_(pa.float64())),
            pa.array(counts, pa.list_(pa.float64())),
        ],
        schema=fmt.HISTOGRAMS,
    )
