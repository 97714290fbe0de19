"""On-device reductions: a tensor becomes a few accumulated moments, without a device sync.

Statistics come from a fixed random sample of at most ``sample`` elements (one ``index_select``), so a
hook costs about the same for a 1k- or a 100M-element tensor; parameter-gradient norms are exact.
``reduce_rows`` computes ``moments`` and ``histogram`` of many staged samples at once (what ``watch``
does at each step's end); ``moments`` and ``histogram`` reduce one sample (a module's repeated calls).
Moments are *added* into a preallocated row, so a module called several times in one step (shared
weights, recurrent cells, gradient accumulation) contributes all its calls.
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


class Sampler:
    """A fixed random subset of a tensor's elements, the same at every step (per size and device)."""

    def __init__(self, sample: int, seed: int = 0) -> None:
        self.sample = sample
        self.seed = seed
        self._cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (any shape) → 1-D float32 sample of at most ``sample`` elements."""
        flat = x.detach().reshape(-1)
        n = flat.numel()
        if n > self.sample:
            flat = flat.index_select(0, self._index(n, flat.device))
        return flat.to(torch.float32)

    def into(self, x: torch.Tensor, out: torch.Tensor) -> int:
        """Write the sample of ``x`` into ``out[:k]`` (1-D float32, ``sample`` long) and NaN into the rest;
        returns ``k``. The same values as ``self(x)``, in one copy instead of two or three."""
        flat = x.detach().reshape(-1)
        n = flat.numel()
        if n > self.sample:
            idx = self._index(n, flat.device)
            if flat.dtype == out.dtype:
                torch.index_select(flat, 0, idx, out=out)
            else:
                out.copy_(flat.index_select(0, idx))
            return self.sample
        out[:n].copy_(flat)
        out[n:].fill_(float("nan"))  # padding: reduce_rows counts it as non-finite and takes it back out
        return n

    def _index(self, n: int, device: torch.device) -> torch.Tensor:
        idx = self._cache.get((n, device))
        if idx is None:
            g = torch.Generator().manual_seed(self.seed + n)
            idx = torch.randint(n, (self.sample,), generator=g)
            # sorted: the same sample, gathered in memory order (fewer cache misses than a random walk)
            idx = self._cache[(n, device)] = idx.sort().values.to(device)
        return idx


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
        sat = ((clean <= lo) | (clean >= hi)).sum()
    row = torch.stack(
        [
            n,
            clean.sum(),
            (clean * clean).sum(),
            (clean == 0).sum().to(torch.float32),
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

    rows: torch.Tensor  # (k,) int64 row indices
    lo: torch.Tensor  # (k, 1)
    hi: torch.Tensor  # (k, 1)
    zero_counts: torch.Tensor  # (k,) 1.0 where 0 itself counts as saturated (padding must be taken back out)

    @staticmethod
    def of(rows: list[int], bounds: list[tuple[float, float]], device: torch.device) -> Saturation | None:
        if not rows:
            return None
        lo = torch.tensor([b[0] for b in bounds], device=device)
        hi = torch.tensor([b[1] for b in bounds], device=device)
        return Saturation(
            torch.tensor(rows, device=device), lo[:, None], hi[:, None], ((lo >= 0) | (hi <= 0)).to(torch.float32)
        )


def reduce_rows(
    x: torch.Tensor, n: torch.Tensor, saturation: Saturation | None, hist: bool, work: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Staged samples → per-row (moments, min, max, histogram or None): ``moments`` and ``histogram`` of
    every row at once, in a dozen passes over the matrix instead of a dozen kernels per row.

    ``x`` (R, S) float32: row r holds ``n[r]`` sampled values, then NaN padding. ``work`` (2, R, S) is
    scratch space: allocating temporaries this size every step costs more than the arithmetic. Only
    arithmetic and reductions here: on CPU, ops that produce bool tensors cost 5-10× more than float ones.
    """
    clean, tmp = work[0], work[1]
    pad = x.shape[1] - n  # (R,) padding counted as non-finite (and as zero) below, then taken back out
    torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0, out=clean)  # non-finite -> 0, as moments()
    total = clean.sum(1)
    sumsq = torch.linalg.vector_norm(clean, dim=1).square()
    nonzero = torch.linalg.vector_norm(torch.sign(clean, out=tmp), dim=1).square().round()  # √count² -> count
    nonfinite = torch.mul(x, 0.0, out=tmp).nan_to_num_(nan=1.0).sum(1) - pad  # x·0: 0 if finite, NaN if not
    row = torch.stack(
        [
            n,
            total,
            sumsq,
            n - nonzero,  # zeros: non-finite values count as zeros, as in moments()
            torch.zeros_like(n) if saturation is None else _saturated(clean, n, pad, saturation),
            nonfinite,
            torch.zeros_like(n),
        ],
        dim=1,
    )  # (R, MOMENTS)
    big = torch.finfo(torch.float32).max
    mn = torch.nan_to_num(x, nan=big, posinf=big, neginf=big, out=tmp).amin(1)
    mx = torch.nan_to_num(x, nan=-big, posinf=-big, neginf=-big, out=tmp).amax(1)
    return row, mn, mx, _histogram_rows(x, clean) if hist else None


def _saturated(clean: torch.Tensor, n: torch.Tensor, pad: torch.Tensor, sat: Saturation) -> torch.Tensor:
    c = clean.index_select(0, sat.rows)  # (k, S): only the bounded activations' rows
    count = ((c <= sat.lo) | (c >= sat.hi)).sum(1).to(torch.float32) - pad[sat.rows] * sat.zero_counts
    return torch.zeros_like(n).index_copy_(0, sat.rows, count)


def _histogram_rows(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``histogram`` of every row of ``x`` (R, S) -> (R, HIST_BINS), in one scatter."""
    rows = x.shape[0]
    mag = clean.abs().clamp_min(2.0 ** (_K_MIN / _OCTAVE_BINS - 1))
    j = (torch.floor(torch.log2(mag) * _OCTAVE_BINS).to(torch.int64) - _K_MIN + 1).clamp(0, _N_POS - 1)
    idx = torch.where(clean >= 0, _N_POS + j, _N_POS - 1 - j)  # (R, S) bin in the row
    idx += torch.arange(rows, device=x.device)[:, None] * HIST_BINS  # bin in the flattened (R, HIST_BINS)
    finite = torch.nan_to_num(x * 0.0, nan=1.0).neg_().add_(1.0)  # 1 if finite, 0 if not (or padding)
    counts = torch.zeros(rows * HIST_BINS, dtype=torch.float32, device=x.device)
    counts.scatter_add_(0, idx.reshape(-1), finite.reshape(-1))
    return counts.view(rows, HIST_BINS)


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
