"""Distributed runs: stragglers and gradient divergence between ranks, from each rank's stream.

A straggler is a rank that reaches the gradient all-reduce late: its *busy* time (data loading plus
forward, ``sys/data_time + sys/forward_time``) is well above the fastest rank's, while the others wait
for it inside their backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import BACKWARD_TIME as BACKWARD
from ..types import DATA_TIME as DATA
from ..types import FORWARD_TIME as FORWARD
from ..types import STEP_TIME as STEP
from .reader import RunReader

STRAGGLER_FACTOR = 1.25  # busy time above this multiple of the fastest rank's …
STRAGGLER_MIN_SECONDS = 0.005  # … and by at least this much


@dataclass(frozen=True)
class RankSummary:
    rank: int
    steps: int
    step_time: float  # medians, seconds
    data_time: float
    forward_time: float
    backward_time: float
    busy_time: float
    straggler: bool


def _median(reader: RunReader, key: str, rank: int) -> tuple[float, int]:
    try:
        s = reader.series(key, rank)
    except KeyError:
        return float("nan"), 0
    v = s.value[np.isfinite(s.value)]
    return (float(np.median(v)) if v.size else float("nan")), len(s)


def rank_summaries(reader: RunReader) -> list[RankSummary]:
    """Per-rank medians of the step phases, with stragglers flagged."""
    rows = []
    for rank in reader.ranks():
        step, n = _median(reader, STEP, rank)
        data, _ = _median(reader, DATA, rank)
        fwd, _ = _median(reader, FORWARD, rank)
        bwd, _ = _median(reader, BACKWARD, rank)
        rows.append((rank, n, step, data, fwd, bwd, data + fwd))
    busy = np.array([r[6] for r in rows], dtype=float)
    fastest = np.nanmin(busy) if len(busy) and np.isfinite(busy).any() else float("nan")
    out = []
    for rank, n, step, data, fwd, bwd, b in rows:
        slow = (
            len(rows) > 1 and np.isfinite(b) and b > STRAGGLER_FACTOR * fastest and b - fastest > STRAGGLER_MIN_SECONDS
        )
        out.append(RankSummary(rank, n, step, data, fwd, bwd, b, bool(slow)))
    return out


def gradient_divergence(reader: RunReader, buckets: int = 500) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Total parameter-gradient norm per rank over steps, and its relative spread between ranks.

    Returns ``(steps, spread, norms)``: ``norms[rank][i]`` is the global gradient norm at ``steps[i]``
    (square root of the sum of squared per-parameter norms), ``spread = (max − min) / mean`` across ranks.
    """
    per_rank: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for rank in reader.ranks():
        try:
            m = reader.layer_matrix("param_grad", "norm", buckets=buckets, rank=rank)
        except KeyError:
            continue
        per_rank[rank] = (m.step, np.sqrt(np.nansum(m.values**2, axis=0)))
    if not per_rank:
        return np.zeros(0), np.zeros(0), {}
    common = per_rank[min(per_rank)][0]
    for steps, _ in per_rank.values():
        common = np.intersect1d(common, steps)
    norms = {r: vals[np.isin(steps, common)] for r, (steps, vals) in per_rank.items()}
    stacked = np.vstack(list(norms.values()))
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = (stacked.max(0) - stacked.min(0)) / stacked.mean(0)
    return common, spread, norms
