"""One growing scalar series in memory, with min/max/mean/last rollups for fast downsampled queries.

Rollup level L summarises blocks of ``BLOCK**L`` consecutive points (in step order). A query over many
points reduces whole blocks of the coarsest level that still gives as many blocks as buckets — each block then
narrower than a bucket when steps are evenly spaced, so no bucket is left without one —, with finer blocks toward
both ends and raw points only at the very ends, so its cost depends on the bucket count, not the series length.
Extremes are never lost: every point sits in exactly one block and every block in exactly one bucket.
"""

from __future__ import annotations

import numpy as np

from ..types import Downsampled, Series

BLOCK = 64
_MIN_BLOCKS_PER_BUCKET = 1


class _Units:
    """Aggregates of consecutive runs of points: the raw points are units of one."""

    __slots__ = ("first", "last", "wall", "lastv", "min", "max", "sum", "nfin", "count")

    def __init__(self, first, last, wall, lastv, mn, mx, sm, nfin, count):  # noqa: ANN001
        self.first, self.last, self.wall, self.lastv = first, last, wall, lastv
        self.min, self.max, self.sum, self.nfin, self.count = mn, mx, sm, nfin, count

    @staticmethod
    def of_points(step: np.ndarray, wall: np.ndarray, value: np.ndarray) -> _Units:
        fin = np.isfinite(value)
        return _Units(
            step,
            step,
            wall,
            value,
            np.where(fin, value, np.inf),
            np.where(fin, value, -np.inf),
            np.where(fin, value, 0.0),
            fin.astype(np.int64),
            np.ones(len(step), np.int64),
        )

    def __len__(self) -> int:
        return len(self.first)

    def slice(self, a: int, b: int) -> _Units:
        return _Units(*(getattr(self, f)[a:b] for f in self.__slots__))

    def reduce(self, starts: np.ndarray) -> _Units:
        """Combine the units between consecutive ``starts`` (indices into self)."""
        ends = np.append(starts[1:], len(self)) - 1
        return _Units(
            self.first[starts],
            self.last[ends],
            self.wall[ends],
            self.lastv[ends],
            np.minimum.reduceat(self.min, starts),
            np.maximum.reduceat(self.max, starts),
            np.add.reduceat(self.sum, starts),
            np.add.reduceat(self.nfin, starts),
            np.add.reduceat(self.count, starts),
        )

    @staticmethod
    def concat(parts: list[_Units]) -> _Units:
        return _Units(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Units.__slots__))


class SeriesBuffer:
    """Append-only columns of one key on one rank (amortised growth), with rollups kept up to date."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._n = 0
        self._step = np.empty(64, np.int64)
        self._wall = np.empty(64, np.float64)
        self._value = np.empty(64, np.float64)
        self._sorted = True
        self._order: np.ndarray | None = None  # stable sort order when steps went backwards
        self._levels: list[_Units] = []

    def __len__(self) -> int:
        return self._n

    @property
    def last_step(self) -> int:
        return int(self._step[self._n - 1]) if self._n else -1

    @property
    def max_step(self) -> int:
        return int(self._step[: self._n].max()) if self._n else -1

    def append(self, step: np.ndarray, wall: np.ndarray, value: np.ndarray) -> None:
        m = len(step)
        if m == 0:
            return
        need = self._n + m
        if need > len(self._step):
            cap = max(need, 2 * len(self._step))
            for name in ("_step", "_wall", "_value"):
                old = getattr(self, name)
                new = np.empty(cap, old.dtype)
                new[: self._n] = old[: self._n]
                setattr(self, name, new)
        if self._sorted and ((self._n and step[0] < self._step[self._n - 1]) or (m > 1 and np.any(np.diff(step) < 0))):
            self._sorted = False
        self._step[self._n : need] = step
        self._wall[self._n : need] = wall
        self._value[self._n : need] = value
        self._n = need
        self._order = None

    def series(self) -> Series:
        step, wall, value = self._columns()
        return Series(self.key, step.copy(), wall.copy(), value.copy())

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self._n
        if self._sorted:
            return self._step[:n], self._wall[:n], self._value[:n]
        if self._order is None:
            self._order = np.argsort(self._step[:n], kind="stable")
        o = self._order
        return self._step[:n][o], self._wall[:n][o], self._value[:n][o]

    def _rollups(self, step: np.ndarray, wall: np.ndarray, value: np.ndarray) -> list[_Units]:
        """Rollup levels 1, 2, … over complete blocks, extended incrementally as points arrive."""
        if not self._sorted:
            self._levels = []  # order can change with every append: rebuild from scratch
        below = None  # units of the level under the one being extended (None: the raw points)
        below_len = len(step)
        for li in range(32):
            have = len(self._levels[li]) if li < len(self._levels) else 0
            full = below_len // BLOCK
            if full == 0:
                break
            if full > have:
                a, b = have * BLOCK, full * BLOCK
                src = _Units.of_points(step[a:b], wall[a:b], value[a:b]) if below is None else below.slice(a, b)
                fresh = src.reduce(np.arange(0, b - a, BLOCK))
                if li < len(self._levels):
                    self._levels[li] = _Units.concat([self._levels[li], fresh])
                else:
                    self._levels.append(fresh)
            below = self._levels[li]
            below_len = len(below)
        return self._levels

    def downsample(self, start: int | None, end: int | None, buckets: int) -> Downsampled:
        step, wall, value = self._columns()
        i0 = 0 if start is None else int(np.searchsorted(step, start, "left"))
        i1 = len(step) if end is None else int(np.searchsorted(step, end, "right"))
        n = max(i1 - i0, 0)
        if n <= buckets:
            s, w, v = step[i0:i1], wall[i0:i1], value[i0:i1]
            fin = np.isfinite(v)
            return Downsampled(
                self.key, s.copy(), w.copy(), np.where(fin, v, np.nan), np.where(fin, v, np.nan),
                np.where(fin, v, np.nan), v.copy(), np.ones(n, np.int64), (~fin).astype(np.int64), True,
            )  # fmt: skip
        units = self._units_for(step, wall, value, i0, i1, buckets)
        lo, hi = int(step[i0]), int(step[i1 - 1])
        edges = lo + (hi - lo + 1) * np.arange(buckets + 1, dtype=np.float64) / buckets
        b = np.clip(np.searchsorted(edges, units.first, "right") - 1, 0, buckets - 1)
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        r = units.reduce(starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(r.nfin > 0, r.sum / np.maximum(r.nfin, 1), np.nan)
        none = r.nfin == 0
        return Downsampled(
            self.key, r.last, r.wall, np.where(none, np.nan, r.min), np.where(none, np.nan, r.max),
            mean, r.lastv, r.count, r.count - r.nfin, False,
        )  # fmt: skip

    def _units_for(self, step, wall, value, i0: int, i1: int, buckets: int) -> _Units:  # noqa: ANN001
        n = i1 - i0
        levels = self._rollups(step, wall, value) if n >= BLOCK * _MIN_BLOCKS_PER_BUCKET * buckets else []
        coarsest = 0
        for li, lv in enumerate(levels):
            if n // BLOCK ** (li + 1) >= _MIN_BLOCKS_PER_BUCKET * buckets and len(lv):
                coarsest = li + 1
        parts = _cover(levels, step, wall, value, i0, i1, coarsest)
        return parts[0] if len(parts) == 1 else _Units.concat(parts)  # raw points alone: no copy


def _cover(levels: list[_Units], step, wall, value, i0: int, i1: int, level: int) -> list[_Units]:  # noqa: ANN001
    """Units covering points ``[i0, i1)`` in order: whole blocks of ``level`` in the middle, each end covered by the
    next finer level (raw points last), so that a query reads at most ``2 * BLOCK`` units of each finer level."""
    if level == 0:
        return [_Units.of_points(step[i0:i1], wall[i0:i1], value[i0:i1])]
    size, blocks = BLOCK**level, levels[level - 1]
    b0 = -(-i0 // size)
    b1 = min(i1 // size, len(blocks))
    if b0 >= b1:
        return _cover(levels, step, wall, value, i0, i1, level - 1)
    return [
        *_cover(levels, step, wall, value, i0, b0 * size, level - 1),
        blocks.slice(b0, b1),
        *_cover(levels, step, wall, value, b1 * size, i1, level - 1),
    ]
