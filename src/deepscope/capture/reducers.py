"""On-device reductions: a tensor becomes a few accumulated moments, without a device sync.

Statistics come from a sample of at most ``sample`` elements (``sampling.Sampler``), so a hook costs
about the same for a 1k- or a 100M-element tensor; parameter-gradient norms are exact. ``reduce_rows``
computes the moments, minimum and maximum of many staged samples at once (what ``watch`` does at each
step's end); ``moments`` and ``histogram`` reduce one sample (a module's repeated calls in one step,
added to its row). ``histogram_rows`` bins staged samples on the host, in the writer thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Columns of an accumulator row; min and max live in separate buffers (combined with min/max, not +).
N, SUM, SUMSQ, ZEROS, SAT, NONFINITE, NORMSQ = range(7)
MOMENTS = 7

# Histogram edges shared by every layer, kind and step (so distributions compare across all of them):
# 0, then ±2^(k/4) for k = -64 … 64 (4 bins per octave from 1.5e-5 to 65536); values beyond the outer
# edges are counted in the outermost bins, values smaller than 2^-16 in magnitude in the two centre bins.
_OCTAVE_BINS = 4
_K_MIN, _K_MAX = -16 * _OCTAVE_BINS, 16 * _OCTAVE_BINS
_POS = 2.0 ** (np.arange(_K_MIN, _K_MAX + 1) / _OCTAVE_BINS)
HIST_EDGES = np.concatenate([-_POS[::-1], [0.0], _POS])  # 259 edges, 258 bins
HIST_BINS = len(HIST_EDGES) - 1
_N_POS = len(_POS)  # edges on each side of zero


def moments(s: torch.Tensor, saturation: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``s`` (1-D float32) → (moments row, min, max); non-finite values are counted, not summed.

    ``saturation = (lo, hi)``: values ≤ lo or ≥ hi count as saturated (sigmoid/tanh-like outputs).
    """
    finite = torch.isfinite(s)
    clean = torch.where(finite, s, 0.0)
    n = torch.full((), s.numel(), dtype=torch.float32, device=s.device)
    if saturation is None:
        sat = torch.zeros((), device=s.device)
    else:
        lo, hi = saturation
        sat = ((clean <= lo) | (clean >= hi)).logical_and_(finite).sum()
    row = torch.stack(
        [
            n,
            clean.sum(),
            (clean * clean).sum(),
            ((clean == 0) & finite).sum().to(torch.float32),
            sat.to(torch.float32),
            (~finite).sum().to(torch.float32),
            torch.zeros((), device=s.device),
        ]
    )
    big = torch.finfo(torch.float32).max
    mn = torch.where(finite, s, big).amin()
    mx = torch.where(finite, s, -big).amax()
    return row, mn, mx


@dataclass(frozen=True)
class Saturation:
    """The rows of a staging matrix that hold bounded activations, and each one's saturation bounds."""

    rows: np.ndarray  # (k,) int64 row indices
    lo: np.ndarray  # (k, 1)
    hi: np.ndarray  # (k, 1)

    @staticmethod
    def of(rows: list[int], bounds: list[tuple[float, float]]) -> Saturation | None:
        if not rows:
            return None
        lo = np.array([b[0] for b in bounds], np.float32)[:, None]
        hi = np.array([b[1] for b in bounds], np.float32)[:, None]
        return Saturation(np.array(rows, np.int64), lo, hi)


# Columns of a reduced row (``reduce_rows``): the moments, then the minimum and the maximum.
MIN, MAX = MOMENTS, MOMENTS + 1
ROW = MOMENTS + 2


def reduce_rows(x: torch.Tensor, valid: torch.Tensor, sat: Saturation | None) -> torch.Tensor:
    """Staged samples on an accelerator -> per-row statistics (R, ROW): ``moments``, min and max.

    ``x`` (R, S) float32: row r holds ``n[r]`` sampled values, then stale ones; ``valid`` (R, S) bool marks
    the sampled positions. A dozen batched kernels, whatever the number of rows, and no device sync.
    ``reduce_rows_host`` is the same on the host (the CPU's staged samples, in the writer thread).
    """
    finite = torch.isfinite(x).logical_and_(valid)
    clean = torch.where(finite, x, 0.0)  # non-finite values and padding -> 0, as moments()
    n = valid.sum(1, dtype=torch.float32)
    saturated = torch.zeros_like(n)
    if sat is not None:
        rows = torch.from_numpy(sat.rows).to(x.device)
        c = clean.index_select(0, rows)
        lo, hi = torch.from_numpy(sat.lo).to(x.device), torch.from_numpy(sat.hi).to(x.device)
        hit = ((c <= lo) | (c >= hi)).logical_and_(finite.index_select(0, rows))
        saturated.index_copy_(0, rows, hit.sum(1, dtype=torch.float32))
    big = torch.finfo(torch.float32).max
    return torch.stack(
        [
            n,
            clean.sum(1),
            (clean * clean).sum(1),
            finite.sum(1, dtype=torch.float32) - (clean != 0).sum(1, dtype=torch.float32),  # finite zeros
            saturated,
            n - finite.sum(1, dtype=torch.float32),
            torch.zeros_like(n),
            torch.where(finite, x, big).amin(1),
            torch.where(finite, x, -big).amax(1),
        ],
        dim=1,
    )


def reduce_rows_host(x: np.ndarray, lengths: np.ndarray, sat: Saturation | None) -> np.ndarray:
    """``reduce_rows`` on the host: (R, S) float32 samples, row r's first ``lengths[r]`` values valid.

    All rows are reduced together as if full, then the rows of each shorter length (small tensors taken
    whole: biases, norms) again, over their valid values only: a few blocks, whatever the row count.
    """
    rows, width = x.shape
    bounds = np.full((rows, 2), [-np.inf, np.inf], np.float32)  # no saturation: nothing is beyond ±inf
    if sat is not None:
        bounds[sat.rows] = np.concatenate([sat.lo, sat.hi], 1)
    out = np.zeros((rows, ROW))
    out[:, N] = lengths
    out[:, N + 1 :] = _reduce_block(x, bounds)
    for k in np.unique(lengths[(lengths > 0) & (lengths < width)]).tolist():
        idx = np.flatnonzero(lengths == k)
        out[idx, N + 1 :] = _reduce_block(x[idx, :k], bounds[idx])
    return out


def _reduce_block(v: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(m, k) float32, every value valid -> (m, ROW - 1): the columns of ``reduce_rows`` after N."""
    out = np.zeros((v.shape[0], ROW - 1))
    finite = None if np.isfinite(v).all() else np.isfinite(v)
    clean = v if finite is None else np.where(finite, v, np.float32(0))  # non-finite -> 0, as moments()
    k = v.shape[1]
    out[:, SUM - 1] = clean.sum(1, dtype=np.float64)  # float32 sums of diverged values overflow
    with np.errstate(over="ignore"):  # |values| above ~1e19: their squares overflow float32; again in float64
        sumsq = np.square(clean).sum(1).astype(np.float64)
    big = np.flatnonzero(np.isinf(sumsq))
    if big.size:
        sumsq[big] = np.square(clean[big].astype(np.float64)).sum(1)
    out[:, SUMSQ - 1] = sumsq
    finite_n = k if finite is None else np.count_nonzero(finite, axis=1)
    out[:, ZEROS - 1] = finite_n - np.count_nonzero(clean, axis=1)  # zeros among the finite values
    bounded = np.flatnonzero(np.isfinite(bounds[:, 0]))
    if bounded.size:
        c, lo, hi = clean[bounded], bounds[bounded, :1], bounds[bounded, 1:]
        hit = (c <= lo) | (c >= hi)
        if finite is not None:  # a NaN is no saturated value (it is 0 in `clean`)
            hit &= finite[bounded]
        out[bounded, SAT - 1] = np.count_nonzero(hit, axis=1)
    if finite is None:
        out[:, MIN - 1], out[:, MAX - 1] = v.min(1), v.max(1)
    else:
        big = np.finfo(np.float32).max
        out[:, NONFINITE - 1] = k - np.count_nonzero(finite, axis=1)
        out[:, MIN - 1] = np.where(finite, v, big).min(1)
        out[:, MAX - 1] = np.where(finite, v, -big).max(1)
    return out


def update_sums_host(after: np.ndarray, before: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(P, 2): Σ Δ² and Σ w² over each parameter's weight sample (the same positions before and after); a diverged
    weight's sums are inf or NaN, without a warning in the training console."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.stack([np.square(after - before).sum(1), np.square(before).sum(1)], 1).astype(np.float64)
        for k in np.unique(lengths[lengths < after.shape[1]]).tolist():  # short rows: only their first values
            idx = np.flatnonzero(lengths == k)
            a, b = after[idx, :k], before[idx, :k]
            out[idx] = np.stack([np.square(a - b).sum(1), np.square(b).sum(1)], 1)
    return out


def histogram_rows(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Host side: ``histogram`` of each row's first ``lengths[r]`` values, (R, S) -> (R, HIST_BINS)."""
    rows, width = x.shape
    keep = (np.arange(width) < lengths[:, None]) & np.isfinite(x)
    v = x[keep].astype(np.float64)
    r = np.broadcast_to(np.arange(rows)[:, None], x.shape)[keep]
    with np.errstate(divide="ignore"):
        mag = np.maximum(np.abs(v), 2.0 ** (_K_MIN / _OCTAVE_BINS - 1))
        j = np.clip(np.floor(np.log2(mag) * _OCTAVE_BINS).astype(np.int64) - _K_MIN + 1, 0, _N_POS - 1)
    idx = np.where(v >= 0, _N_POS + j, _N_POS - 1 - j) + r * HIST_BINS
    return np.bincount(idx, minlength=rows * HIST_BINS).astype(np.float64).reshape(rows, HIST_BINS)


def histogram(s: torch.Tensor) -> torch.Tensor:
    """Counts of the sample ``s`` in the fixed ``HIST_EDGES`` bins (non-finite values left out)."""
    finite = torch.isfinite(s)
    clean = torch.where(finite, s, 0.0)
    # |v| in [P[j-1], P[j]) ⇔ j = floor(4·log2|v|) − K_MIN + 1; j = 0 holds [0, P[0])
    mag = clean.abs().clamp_min(2.0 ** (_K_MIN / _OCTAVE_BINS - 1))
    j = (torch.floor(torch.log2(mag) * _OCTAVE_BINS).to(torch.int64) - _K_MIN + 1).clamp(0, _N_POS - 1)
    idx = torch.where(clean >= 0, _N_POS + j, _N_POS - 1 - j)
    counts = torch.zeros(HIST_BINS, dtype=torch.float32, device=s.device)
    counts.scatter_add_(0, idx, finite.to(torch.float32))
    return counts


def finalize(acc: np.ndarray, mn: np.ndarray, mx: np.ndarray, numel: np.ndarray | None = None) -> dict[str, Any]:
    """Host side: moments rows (R, MOMENTS) → statistics columns, NaN where nothing was recorded."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = acc[:, N]
        fin_n = n - acc[:, NONFINITE]
        mean = acc[:, SUM] / fin_n
        ms = acc[:, SUMSQ] / fin_n
        std = np.sqrt(np.maximum(ms - mean * mean, 0.0) * fin_n / np.maximum(fin_n - 1, 1))
        out = {
            "mean": mean,
            "std": std,
            "rms": np.sqrt(ms),
            "min": np.where(fin_n > 0, mn, np.nan),
            "max": np.where(fin_n > 0, mx, np.nan),
            "zero_frac": acc[:, ZEROS] / n,
            "sat_frac": acc[:, SAT] / n,
            "nonfinite_frac": acc[:, NONFINITE] / n,
        }
        if numel is not None:  # a norm estimated from the sample: sqrt(numel · mean of squares)
            out["norm"] = np.sqrt(numel * ms)
    return out


def saturation_bounds(kind: str | None) -> tuple[float, float] | None:
    """Where a bounded activation counts as saturated: within 5% of its range's ends, where the
    derivative has fallen below a fifth of its peak (sigmoid: y(1-y) < 0.05 vs 0.25)."""
    if kind == "sigmoid":
        return (0.05, 0.95)
    if kind == "tanh":
        return (-0.95, 0.95)
    return None


def unit_dim(ndim: int) -> int:
    """Which dimension holds units: channels for (N, C, H, W[, D]) maps, the last dim otherwise."""
    return 1 if ndim >= 4 else ndim - 1


def active_units(x: torch.Tensor, rows: int = 4) -> torch.Tensor:
    """(B, …) → (units,) bool: which units are positive for any of the first ``rows`` inputs."""
    x = x.detach()
    if x.ndim >= 2:
        x = x[:rows]
    d = unit_dim(x.ndim) if x.ndim >= 2 else 0
    dims = [i for i in range(x.ndim) if i != d]
    return x.amax(dim=dims) > 0 if dims else x > 0
