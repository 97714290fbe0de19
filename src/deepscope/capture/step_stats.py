"""Host side of ``watch``: the step's per-device reduced rows become finalized statistics per kind."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import reducers as R
from .step_buffers import rows_per_kind


def combine(payload: list, n_layers: int, n_params: int, numels: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """Sum the per-device accumulators (a model split over devices) and finalize the statistics."""
    parts = [_device_rows(p) for _, p in payload]
    acc = np.sum([a for a, _, _ in parts], axis=0)
    mn = np.minimum.reduce([m for _, m, _ in parts])
    mx = np.maximum.reduce([m for _, _, m in parts])
    numel = np.concatenate([np.ones(len(acc) - n_params), numels])
    every = R.finalize(acc, mn, mx, numel)  # all four kinds at once; "norm" is kept for weights only
    out: dict[str, dict[str, np.ndarray]] = {}
    start = 0
    for kind, n in rows_per_kind(n_layers, n_params).items():
        stats = {k: v[start : start + n] for k, v in every.items() if k != "norm" or kind == "weight"}
        if kind == "param_grad":
            a = acc[start : start + n]
            # a gradient with a NaN/Inf has no finite norm (the moments skip non-finite values: it read as 0)
            stats["norm"] = np.where((a[:, R.N] > 0) & (a[:, R.NONFINITE] == 0), np.sqrt(a[:, R.NORMSQ]), np.nan)
        if kind == "weight":
            stats["update_ratio"] = _update_ratio([p for _, p in payload], n_params)
        out[kind] = stats
        start += n
    return out


def histograms(payload: list) -> np.ndarray:
    """(rows, HIST_BINS) counts of the staged samples of every device, plus second calls' histograms."""
    total = None
    for _, p in payload:
        h = p["histograms"] if "histograms" in p else R.histogram_rows(p["samples"].numpy(), p["lengths"])
        if "extra" in p and "hist" in p["extra"]:
            h = h + p["extra"]["hist"].numpy()
        total = h if total is None else total + h
    return total


def _device_rows(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One device's (moments (R, MOMENTS), min, max) in float64; rows staged nowhere are empty."""
    rows = np.asarray(p["rows"], dtype=np.float64)
    staged = p["lengths"] > 0
    acc = np.where(staged[:, None], rows[:, : R.MOMENTS], 0.0)
    mn = np.where(staged, rows[:, R.MIN], np.inf)
    mx = np.where(staged, rows[:, R.MAX], -np.inf)
    extra = p.get("extra")
    if extra is not None:
        acc += extra["acc"].numpy()
        mn = np.minimum(mn, extra["mn"].numpy())
        mx = np.maximum(mx, extra["mx"].numpy())
    return acc, mn, mx


def _update_ratio(payload: list, n_params: int) -> np.ndarray:
    """‖Δw‖ / ‖w‖ over each parameter's weight sample, NaN where no optimizer step was seen."""
    upd = np.zeros((n_params, 2))
    has = np.zeros(n_params, bool)
    for p in payload:
        if "update" in p:
            h = p["has_update"]
            upd[h] += np.asarray(p["update"], dtype=np.float64)[h]
            has |= h
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(has, np.sqrt(upd[:, 0] / upd[:, 1]), np.nan)
