"""Histograms for ``log_histogram``: binned where the values live, without a device sync."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def from_values(key: str, values: Any, bins: int) -> tuple[Any, Any]:
    """Bin ``values`` into ``bins`` equal-width bins between their finite min and max.

    Tensors are binned on their device with ``scatter_add_`` (``torch.histc`` would need the range as
    Python floats, a sync); the writer thread copies edges and counts to the host later. Non-finite
    values are left out of the counts.
    """
    if not isinstance(bins, int) or not 1 <= bins <= 10_000:
        raise ValueError(f"deepscope: log_histogram({key!r}): bins must be an int in 1..10000, got {bins!r}")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(values, torch.Tensor):
        return _torch_histogram(torch, key, values, bins)
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"deepscope: log_histogram({key!r}) takes real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False).ravel()
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0])
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
    return edges, counts.astype(np.float64)


def _torch_histogram(torch: Any, key: str, t: Any, bins: int) -> tuple[Any, Any]:
    if t.is_complex() or t.is_sparse:
        raise TypeError(f"deepscope: log_histogram({key!r}) takes a dense real tensor")
    with torch.no_grad():
        x = t.detach().reshape(-1).to(torch.float32)
        finite = torch.isfinite(x)
        big = torch.finfo(torch.float32).max
        lo = torch.where(finite, x, big).amin() if x.numel() else torch.zeros((), device=x.device)
        hi = torch.where(finite, x, -big).amax() if x.numel() else torch.ones((), device=x.device)
        # empty or constant input: widen to a unit range around the value
        empty = hi < lo
        lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, 1.0, hi)
        flat = hi <= lo
        lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
        # Boolean indexing would need a sync (its size is data-dependent): weight non-finite values 0.
        safe = torch.where(finite, x, lo)
        idx = ((safe - lo) / (hi - lo) * bins).floor().clamp_(0, bins - 1).to(torch.int64)
        counts = torch.zeros(bins, dtype=torch.float32, device=x.device)
        counts.scatter_add_(0, idx, finite.to(torch.float32))
        edges = lo + (hi - lo) * torch.linspace(0, 1, bins + 1, device=x.device, dtype=torch.float32)
    return edges, counts


def from_counts(key: str, counts: Any, edges: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate user-binned data: ``len(edges) == len(counts) + 1``, edges increasing, counts ≥ 0."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    e = np.asarray(edges, dtype=np.float64).ravel()
    if c.size == 0 or e.size != c.size + 1:
        raise ValueError(
            f"deepscope: log_histogram({key!r}): need len(edges) == len(counts) + 1, got {e.size} and {c.size}"
        )
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"deepscope: log_histogram({key!r}): edges must be finite and strictly increasing")
    if np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError(f"deepscope: log_histogram({key!r}): counts must be finite and >= 0")
    return e, c
