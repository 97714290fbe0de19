"""Host side of ``watch``: the step's per-device accumulators become finalized statistics per kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import reducers as R
from .step_buffers import rows_per_kind


def combine(payload: list, n_layers: int, n_params: int, params: list) -> dict[str, dict[str, np.ndarray]]:
    """Sum the per-device accumulators (a model split over devices) and finalize the statistics."""
    one = len(payload) == 1
    acc = fold(np.add, [p["acc_all"] for _, p in payload], one)
    mn = fold(np.minimum, [p["mn_all"] for _, p in payload], one)
    mx = fold(np.maximum, [p["mx_all"] for _, p in payload], one)
    rows = rows_per_kind(n_layers, n_params)
    numel = np.concatenate([np.ones(len(acc) - n_params), [p.numel() for _, p in params]])
    every = R.finalize(acc, mn, mx, numel)  # all four kinds at once; "norm" is kept for weights only
    out: dict[str, dict[str, np.ndarray]] = {}
    start = 0
    for kind, n in rows.items():
        stats = {k: v[start : start + n] for k, v in every.items() if k != "norm" or kind == "weight"}
        if kind == "param_grad":
            a = acc[start : start + n]
            stats["norm"] = np.where(a[:, R.N] > 0, np.sqrt(a[:, R.NORMSQ]), np.nan)
        if kind == "weight":
            upd = np.nansum([p["update"].numpy().astype(np.float64) for _, p in payload], axis=0)
            has = np.any([~np.isnan(p["update"].numpy()[:, 0]) for _, p in payload], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats["update_ratio"] = np.where(has, np.sqrt(upd[:, 0] / upd[:, 1]), np.nan)
        out[kind] = stats
        start += n
    return out


def fold(op: Any, tensors: list[torch.Tensor], one: bool) -> np.ndarray:
    """Per-device host tensors -> one float64 array, combined with ``op`` (a NumPy ufunc)."""
    if one:
        return tensors[0].numpy().astype(np.float64)
    return op.reduce([t.numpy().astype(np.float64) for t in tensors])
