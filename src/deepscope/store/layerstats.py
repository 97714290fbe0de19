"""Reader side of ``layerstats``: each kind's rows in growing columns, and the queries views need.

Rows are kept per kind (act, grad, param_grad, weight) as NumPy columns — step, wall time, layer id and a
(stats × rows) float32 matrix — in arrival order, which is step order: a step range is two binary searches and a
step's rows lie together. A layer × step matrix over a wide range reads rollups instead of rows: level ``k``
holds, per block of ``BLOCK**k`` consecutive recorded steps and per layer, the sum and count of one statistic's
finite values and how many rows were not finite (below).
They are built for a (kind, statistic) when a query first needs them and extended as steps arrive, so a matrix
costs about (buckets × layers), not (steps × layers): the overview of a million steps answers as fast as that of
a thousand. Like the scalar rollups (``series.py``), a bucket takes whole blocks — the one its first step falls
in — with at least two per bucket, and every row counts in exactly one bucket.

A row is *not finite* when its tensor held NaN/±Inf (``nonfinite_frac`` > 0) or the statistic itself is ±Inf: a
statistic that does not apply is NaN too, so a NaN value alone does not say that training went wrong.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..types import Downsampled
from . import format as fmt
from .series import SeriesBuffer

STAT_INDEX = {s: i for i, s in enumerate(fmt.LAYER_STATS)}
_NONFINITE = STAT_INDEX["nonfinite_frac"]
KIND_INDEX = {k: i for i, k in enumerate(fmt.LAYER_KINDS)}
BLOCK = 4  # recorded steps per rollup block at level 1; ×4 per level
_MIN_BLOCKS_PER_BUCKET = 2
_ROLLUPS_KEPT = 8  # (kind, statistic) pairs whose rollups stay in memory, most recently used
_SLICE = 1 << 20  # rows converted at a time


@dataclass(frozen=True)
class LayerMatrix:
    """``values[l, b]``: the mean of one statistic for ``names[l]`` over the steps of bucket ``b`` (of its finite
    values); ``nonfinite[l, b]``: how many of those steps' rows were not finite (NaN/±Inf in the tensor or the
    statistic). A bucket with rows but no finite value is NaN in ``values`` and counts its NaN/Inf rows here."""

    kind: str
    stat: str
    names: list[str]
    step: np.ndarray  # (B,) last step that fell in each bucket (NaN-free: empty buckets dropped)
    values: np.ndarray  # (L, B) float64, NaN where a layer has no value in the bucket
    exact: bool  # one bucket per recorded step
    nonfinite: np.ndarray  # (L, B) int64, rows not finite


@dataclass
class _Level:
    """Rollup blocks of one level: first and last step of each, and per (block, layer) sum and count."""

    first: np.ndarray  # (nb,) int64
    last: np.ndarray  # (nb,) int64
    total: np.ndarray  # (nb, L) float64, finite values only
    count: np.ndarray  # (nb, L) int32
    bad: np.ndarray  # (nb, L) int32, rows not finite


@dataclass
class _Rows:
    """One kind's rows, step-ordered: columns, the distinct steps and where each one's rows start."""

    step: np.ndarray
    layer: np.ndarray
    stats: np.ndarray  # (S, n)
    ustep: np.ndarray  # distinct steps, ascending
    ustart: np.ndarray  # (len(ustep) + 1,) first row of each distinct step, then n


class _KindRows:
    """The rows of one kind in arrival order (steps non-decreasing unless a stream went back)."""

    def __init__(self) -> None:
        self.n = 0
        self._step = np.empty(256, np.int64)
        self._wall = np.empty(256, np.float64)
        self._layer = np.empty(256, np.int32)
        self._stats = np.empty((len(fmt.LAYER_STATS), 256), np.float32)
        self._ordered = True
        self._ustep = np.empty(64, np.int64)  # while ordered: distinct steps …
        self._ustart = np.empty(64, np.int64)  # … and their first rows
        self._nu = 0
        self._sorted: _Rows | None = None  # when not ordered: a sorted copy, until the next append
        self.rollups: OrderedDict[int, list[_Level]] = OrderedDict()
        # the layers of this kind get ids of their own (modules for act and grad, parameters for the others), so
        # that rollups and buckets are as wide as the kind's layers, not as every name the run has
        self.globals: list[int] = []  # local id -> the buffer's id
        self._local = np.full(0, -1, np.int64)  # the buffer's id -> local id (-1: none)

    def local_ids(self, layer: np.ndarray) -> np.ndarray:
        """The buffer's layer ids as this kind's, new ones numbered in order of appearance."""
        top = int(layer.max()) + 1 if len(layer) else 0
        if top > len(self._local):
            self._local = np.concatenate([self._local, np.full(top - len(self._local), -1, np.int64)])
        if (self._local[layer] < 0).any():
            _, first = np.unique(layer, return_index=True)
            for g in layer[np.sort(first)].tolist():
                if self._local[g] < 0:
                    self._local[g] = len(self.globals)
                    self.globals.append(g)
        return self._local[layer].astype(np.int32)

    def local_of(self, layer_id: int) -> int:
        return int(self._local[layer_id]) if layer_id < len(self._local) else -1

    def append(
        self,
        step: np.ndarray,
        wall: np.ndarray,
        layer: np.ndarray,
        stats: list[np.ndarray | None],
        rows: np.ndarray | None = None,
    ) -> None:
        """Rows of this kind — all of the columns', or those at the indices ``rows`` (gathered straight into place:
        one copy, not two); ``stats``: one column per statistic (None: not recorded, NaN)."""
        m = len(step) if rows is None else len(rows)
        if not m:
            return
        a, b = self.n, self.n + m
        self._grow(b)
        for dst, src in ((self._step, step), (self._wall, wall), *zip(self._stats, stats)):
            if src is None:
                dst[a:b] = np.nan
            elif rows is None:
                dst[a:b] = src
            else:
                np.take(src, rows, out=dst[a:b])
        step = self._step[a:b]
        self._layer[a:b] = self.local_ids(layer if rows is None else layer[rows])
        if self._ordered and ((a and step[0] < self._step[a - 1]) or np.any(step[1:] < step[:-1])):
            self._ordered = False
        self.n = b
        self._sorted = None
        if not self._ordered:
            self.rollups.clear()  # rebuilt from the sorted copy when asked for
            return
        new = np.flatnonzero(np.r_[not a or step[0] != self._step[a - 1], step[1:] != step[:-1]])
        k = len(new)
        if self._nu + k > len(self._ustep):
            cap = max(self._nu + k, 2 * len(self._ustep))
            self._ustep = np.resize(self._ustep, cap)
            self._ustart = np.resize(self._ustart, cap)
        self._ustep[self._nu : self._nu + k] = step[new]
        self._ustart[self._nu : self._nu + k] = a + new
        self._nu += k

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more rows."""
        self._grow(self.n + extra)

    def _grow(self, need: int) -> None:
        if need <= len(self._step):
            return
        cap = max(need, 2 * len(self._step))
        for attr in ("_step", "_wall", "_layer"):
            old = getattr(self, attr)
            new = np.empty(cap, old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, attr, new)
        stats = np.empty((self._stats.shape[0], cap), np.float32)
        stats[:, : self.n] = self._stats[:, : self.n]
        self._stats = stats

    def rows(self) -> _Rows:
        """The rows in step order: a view while they arrived in order, else a sorted copy kept until the next
        append."""
        n = self.n
        if self._ordered:
            return _Rows(self._step[:n], self._layer[:n], self._stats[:, :n], self._ustep[: self._nu],
                         np.r_[self._ustart[: self._nu], n])  # fmt: skip
        if self._sorted is None:
            o = np.argsort(self._step[:n], kind="stable")
            step = self._step[:n][o]
            starts = np.flatnonzero(np.r_[True, step[1:] != step[:-1]])
            self._sorted = _Rows(step, self._layer[:n][o], self._stats[:, :n][:, o], step[starts], np.r_[starts, n])
        return self._sorted

    def arrival(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step, wall time, layer id and stats columns in arrival order (what a layer's series extends from)."""
        n = self.n
        return self._step[:n], self._wall[:n], self._layer[:n], self._stats[:, :n]

    def levels(self, j: int, n_layers: int) -> list[_Level]:
        """Rollups of statistic ``j``, extended to the complete blocks before the last recorded step (which may
        still be growing)."""
        levels = self.rollups.pop(j, [])
        self.rollups[j] = levels  # most recently used last
        while len(self.rollups) > _ROLLUPS_KEPT:
            self.rollups.popitem(last=False)
        r = self.rows()
        steps = max(len(r.ustep) - 1, 0)  # the last step is left to the raw rows
        below: _Level | None = None
        below_n = steps
        for li in range(32):
            full = below_n // BLOCK
            if full == 0:
                break
            have = len(levels[li].first) if li < len(levels) else 0
            if li < len(levels) and levels[li].total.shape[1] < n_layers:  # layers that appeared since
                lv = levels[li]
                pad = ((0, 0), (0, n_layers - lv.total.shape[1]))
                levels[li] = _Level(lv.first, lv.last, *(np.pad(a, pad) for a in (lv.total, lv.count, lv.bad)))
            if full > have:
                fresh = (
                    _blocks_of_rows(r, j, have, full, n_layers)
                    if below is None
                    else _blocks_of_level(below, have, full)
                )
                if li < len(levels):
                    lv = levels[li]
                    levels[li] = _Level(*(np.concatenate([getattr(lv, f), getattr(fresh, f)]) for f in _LEVEL_FIELDS))
                else:
                    levels.append(fresh)
            below = levels[li]
            below_n = len(below.first)
        return levels


def _slices(tables: list[pa.Table]) -> list[tuple[pa.Table, np.ndarray]]:
    """The tables in slices of at most ``_SLICE`` rows (a whole segment's rows at once made temporaries of
    gigabytes), each with its rows' kind codes (``KIND_INDEX``; -1: a kind this reader does not know)."""
    parts = []
    for table in tables:
        for offset in range(0, table.num_rows, _SLICE):
            part = table.slice(offset, _SLICE)
            kind = part["kind"].combine_chunks()
            remap = np.array([KIND_INDEX.get(k, -1) for k in kind.dictionary.to_pylist()], np.int8)
            parts.append((part, remap[fmt.numpy_column(kind.indices)]))
    return parts


def _distinct(step: np.ndarray) -> np.ndarray:
    """The distinct values of ``step``, ascending (no sort when they are in order already, as streams are)."""
    if len(step) and not np.any(step[1:] < step[:-1]):
        return step[np.r_[True, step[1:] != step[:-1]]]
    return np.unique(step)


_LEVEL_FIELDS = ("first", "last", "total", "count", "bad")


def _not_finite(r: _Rows, val: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows ``a … b - 1`` whose tensor held NaN/±Inf or whose statistic (``val``, their values) is ±Inf."""
    return (r.stats[_NONFINITE, a:b] > 0) | np.isinf(val)


def _blocks_of_rows(r: _Rows, j: int, b0: int, b1: int, n_layers: int) -> _Level:
    """Level-1 blocks ``b0 … b1 - 1`` (``BLOCK`` distinct steps each) from the rows."""
    s0, s1 = b0 * BLOCK, b1 * BLOCK
    a, b = int(r.ustart[s0]), int(r.ustart[s1])
    per_step = np.diff(r.ustart[s0 : s1 + 1])
    block = np.repeat(np.arange(b1 - b0), per_step.reshape(b1 - b0, BLOCK).sum(1))
    val = r.stats[j, a:b].astype(np.float64)
    fin = np.isfinite(val)
    flat = (block * n_layers + r.layer[a:b])[fin]
    size = (b1 - b0) * n_layers
    total = np.bincount(flat, weights=val[fin], minlength=size).reshape(b1 - b0, n_layers)
    count = np.bincount(flat, minlength=size).astype(np.int32).reshape(b1 - b0, n_layers)
    cell = (block * n_layers + r.layer[a:b])[_not_finite(r, val, a, b)]
    bad = np.bincount(cell, minlength=size).astype(np.int32).reshape(b1 - b0, n_layers)
    return _Level(r.ustep[s0:s1:BLOCK].copy(), r.ustep[s0 + BLOCK - 1 : s1 : BLOCK].copy(), total, count, bad)


def _blocks_of_level(below: _Level, b0: int, b1: int) -> _Level:
    """Blocks ``b0 … b1 - 1`` of the level above ``below`` (``BLOCK`` of its blocks each)."""
    a, b = b0 * BLOCK, b1 * BLOCK
    n_layers = below.total.shape[1]
    return _Level(
        below.first[a:b:BLOCK].copy(),
        below.last[a + BLOCK - 1 : b : BLOCK].copy(),
        below.total[a:b].reshape(b1 - b0, BLOCK, n_layers).sum(1),
        below.count[a:b].reshape(b1 - b0, BLOCK, n_layers).sum(1, dtype=np.int32),
        below.bad[a:b].reshape(b1 - b0, BLOCK, n_layers).sum(1, dtype=np.int32),
    )


class LayerStatsBuffer:
    """A rank's layer statistics. Tables are kept as they arrive and converted when a query needs them, all that
    arrived at once: opening a run sizes each kind's columns once instead of growing them segment by segment (the
    copies took half of the time)."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self._n = 0
        self._pending: list[pa.Table] = []
        self._kinds = [_KindRows() for _ in fmt.LAYER_KINDS]
        self._steps = np.empty(64, np.int64)  # distinct steps of every kind, ascending
        self._n_steps = 0
        self._series: dict[tuple[str, str, str], tuple[SeriesBuffer, int]] = {}

    def __len__(self) -> int:
        return self._n

    @property
    def names(self) -> list[str]:
        """Every layer and parameter path seen, in order of first appearance."""
        self._convert()
        return self._names

    def append(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table)
            self._n += table.num_rows

    def _convert(self) -> None:
        """The tables that arrived since the last query, into each kind's columns."""
        if not self._pending:
            return
        parts = _slices(self._pending)  # the only references left: each table goes once its last slice is converted
        self._pending = []
        for k, rows in enumerate(self._kinds):
            rows.reserve(sum(int(np.count_nonzero(code == k)) for _, code in parts))
        parts.reverse()
        while parts:
            self._convert_part(*parts.pop())
            pa.default_memory_pool().release_unused()  # to the system, for the columns' pages still untouched

    def _convert_part(self, table: pa.Table, code: np.ndarray) -> None:
        layer = table["layer"].combine_chunks()
        remap = np.array([self._id(n) for n in layer.dictionary.to_pylist()], np.int32)
        lid = remap[fmt.numpy_column(layer.indices)]
        step = fmt.numpy_column(table["step"])
        wall = fmt.numpy_column(table["wall_time"])
        cols = [fmt.numpy_column(table[s]) if s in table.column_names else None for s in fmt.LAYER_STATS]
        if not np.any(code[1:] < code[:-1]):  # kinds together, as the writer puts them: a slice each
            bounds = np.searchsorted(code, np.arange(len(self._kinds) + 1)).tolist()
            distinct = []
            for k, rows in enumerate(self._kinds):
                a, b = bounds[k], bounds[k + 1]
                rows.append(step[a:b], wall[a:b], lid[a:b], [None if c is None else c[a:b] for c in cols])
                distinct.append(_distinct(step[a:b]))
            self._add_steps(np.unique(np.concatenate(distinct)))
            return
        for k, rows in enumerate(self._kinds):  # kinds interleaved (stores written before): gathered by index
            idx = np.flatnonzero(code == k)
            if len(idx) == len(code):
                rows.append(step, wall, lid, cols)
            elif len(idx):
                rows.append(step, wall, lid, cols, idx)
        self._add_steps(step[code >= 0])  # a kind this reader does not know adds no step (as with slices)

    def _add_steps(self, step: np.ndarray) -> None:
        new = _distinct(step)
        if not len(new):
            return
        n = self._n_steps
        if n and new[0] <= self._steps[n - 1]:  # a stream that went back, or a step seen before
            merged = np.union1d(self._steps[:n], new)
            self._steps = np.resize(merged, max(64, 2 * len(merged)))
            self._n_steps = len(merged)
            return
        if n + len(new) > len(self._steps):
            self._steps = np.resize(self._steps, max(n + len(new), 2 * len(self._steps)))
        self._steps[n : n + len(new)] = new
        self._n_steps = n + len(new)

    def _id(self, name: str) -> int:
        i = self._ids.get(name)
        if i is None:
            i = self._ids[name] = len(self._names)
            self._names.append(name)
        return i

    def steps(self) -> np.ndarray:
        self._convert()
        return self._steps[: self._n_steps].copy()

    def _positions(self, names: list[str]) -> np.ndarray:
        """For each layer id, its row among ``names`` (-1: not shown)."""
        order = np.full(len(self._names), -1, np.int64)
        for pos, name in enumerate(names):
            i = self._ids.get(name)
            if i is not None:
                order[i] = pos
        return order

    def matrix(
        self, kind: str, stat: str, start: int | None, end: int | None, buckets: int, names: list[str]
    ) -> LayerMatrix:
        """Mean of ``stat`` per (layer, step bucket) for the layers ``names`` (in that order)."""
        self._convert()
        j = _stat_index(stat)
        kr = self._kinds[_kind_code(kind)]
        r = kr.rows()
        d0 = 0 if start is None else int(np.searchsorted(r.ustep, start, "left"))
        d1 = len(r.ustep) if end is None else int(np.searchsorted(r.ustep, end, "right"))
        n_steps = d1 - d0
        if n_steps <= 0:
            empty = np.zeros((len(names), 0), np.int64)
            return LayerMatrix(kind, stat, names, np.zeros(0, np.int64), empty + np.nan, True, empty)
        n_layers = len(kr.globals)
        acc = _Buckets(buckets if n_steps > buckets else n_steps, n_layers)
        if n_steps <= buckets:  # one bucket per recorded step
            acc.add_rows(r, j, d0, d1, np.arange(n_steps))
        else:
            lo, hi = int(r.ustep[d0]), int(r.ustep[d1 - 1])
            edges = lo + (hi - lo + 1) * np.arange(buckets + 1, dtype=np.float64) / buckets
            bucket_of = lambda s: np.clip(np.searchsorted(edges, s, "right") - 1, 0, buckets - 1)  # noqa: E731
            level, size = None, 1
            if n_steps >= _MIN_BLOCKS_PER_BUCKET * buckets * BLOCK:
                for li, lv in enumerate(kr.levels(j, n_layers)):
                    bsize = BLOCK ** (li + 1)
                    if n_steps // bsize >= _MIN_BLOCKS_PER_BUCKET * buckets and len(lv.first):
                        level, size = lv, bsize
            if level is None:
                acc.add_rows(r, j, d0, d1, bucket_of(r.ustep[d0:d1]))
            else:
                # raw rows before the first whole block and after the last built one
                b0 = min(-(-d0 // size), len(level.first))
                b1 = max(min(d1 // size, len(level.first)), b0)
                head = min(b0 * size, d1)
                tail = min(max(head, b1 * size), d1)
                acc.add_rows(r, j, d0, head, bucket_of(r.ustep[d0:head]))
                acc.add_blocks(level, b0, b1, bucket_of(level.first[b0:b1]))
                acc.add_rows(r, j, tail, d1, bucket_of(r.ustep[tail:d1]))
        values, last = acc.means()
        used = last >= 0
        out = np.full((len(names), int(used.sum())), np.nan)
        bad = np.zeros(out.shape, np.int64)
        pos = self._positions(names)[np.array(kr.globals, np.int64)]
        shown = pos >= 0
        out[pos[shown]] = values[used].T[shown]
        bad[pos[shown]] = acc.bad[used].T[shown]
        return LayerMatrix(kind, stat, names, last[used], out, n_steps <= buckets, bad)

    def profile(self, kind: str, stat: str, step: int | None, names: list[str]) -> tuple[int | None, np.ndarray]:
        """Values of ``stat`` across ``names`` at the last recorded step ≤ ``step`` (default: the latest)."""
        self._convert()
        kr = self._kinds[_kind_code(kind)]
        r = kr.rows()
        d = len(r.ustep) - 1 if step is None else int(np.searchsorted(r.ustep, step, "right")) - 1
        if d < 0:
            return None, np.full(len(names), np.nan)
        a, b = int(r.ustart[d]), int(r.ustart[d + 1])
        out = np.full(len(names), np.nan)
        pos = self._positions(names)[np.array(kr.globals, np.int64)][r.layer[a:b]]
        shown = pos >= 0
        out[pos[shown]] = r.stats[_stat_index(stat), a:b][shown]
        return int(r.ustep[d]), out

    def series(self, name: str, kind: str, stat: str, start: int | None, end: int | None, buckets: int) -> Downsampled:
        """One statistic of one layer over time, downsampled like a scalar series (min/max band)."""
        self._convert()
        key = (name, kind, stat)
        kr = self._kinds[_kind_code(kind)]
        buf, seen = self._series.get(key, (None, 0))
        if buf is None:
            if name not in self._ids:
                raise KeyError(f"no layer {name!r}")
            buf = SeriesBuffer(f"{kind}/{stat}/{name}")
        if seen < kr.n:  # extend with the rows that arrived since the last query
            step, wall, layer, stats = kr.arrival()
            sel = seen + np.flatnonzero(layer[seen:] == kr.local_of(self._ids[name]))
            buf.append(step[sel], wall[sel], stats[_stat_index(stat), sel].astype(np.float64))
            self._series[key] = (buf, kr.n)
        return buf.downsample(start, end, buckets)

    def total_norm(self, kind: str, start: int | None, end: int | None, buckets: int) -> Downsampled:
        """The norm of all of a kind's parameters together at each recorded step — √(Σ ‖p‖²) over the parameters
        recorded at that step, the global gradient norm that clipping compares with its limit —, downsampled like
        a scalar series. NaN/±Inf when any parameter's norm was. A step's rows arrive together (the writer puts
        each step's statistics in one chunk); kept up to date as steps arrive, like a layer's series."""
        if kind not in ("param_grad", "weight"):
            raise ValueError(f"deepscope: a total norm is of param_grad or weight, not {kind!r}")
        self._convert()
        key = ("", kind, "total_norm")
        kr = self._kinds[_kind_code(kind)]
        buf, seen = self._series.get(key, (None, 0))
        if buf is None:
            buf = SeriesBuffer(f"{kind}/norm/(all parameters)")
        step, wall, _, stats = kr.arrival()
        while seen < kr.n:  # in slices of whole steps: a million steps' rows at once made gigabytes of temporaries
            b = min(kr.n, seen + _SLICE)
            if b < kr.n:
                cut = np.flatnonzero(step[seen + 1 : b + 1] != step[seen:b])
                b = seen + 1 + int(cut[-1]) if len(cut) else b  # the end of the last whole step in the slice
            s = step[seen:b]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # each step's rows, in arrival order
            ends = np.r_[starts[1:], len(s)] - 1
            norm = stats[STAT_INDEX["norm"], seen:b].astype(np.float64)
            buf.append(s[starts], wall[seen:b][ends], np.sqrt(np.add.reduceat(norm * norm, starts)))
            seen = b
            self._series[key] = (buf, seen)
        return buf.downsample(start, end, buckets)


class _Buckets:
    """Per (bucket, layer) sums and counts of finite values and counts of rows not finite, and each bucket's last
    step."""

    def __init__(self, buckets: int, n_layers: int) -> None:
        self.n_layers = n_layers
        self.total = np.zeros((buckets, n_layers))
        self.count = np.zeros((buckets, n_layers), np.int64)
        self.bad = np.zeros((buckets, n_layers), np.int64)
        self.last = np.full(buckets, -1, np.int64)

    def add_rows(self, r: _Rows, j: int, d0: int, d1: int, bucket_of_step: np.ndarray) -> None:
        """The rows of distinct steps ``d0 … d1 - 1``; ``bucket_of_step`` gives each of those steps' bucket."""
        if d1 <= d0:
            return
        a, b = int(r.ustart[d0]), int(r.ustart[d1])
        bucket = np.repeat(bucket_of_step, np.diff(r.ustart[d0 : d1 + 1]))
        val = r.stats[j, a:b].astype(np.float64)
        fin = np.isfinite(val)
        flat = (bucket * self.n_layers + r.layer[a:b])[fin]
        size = self.total.size
        self.total += np.bincount(flat, weights=val[fin], minlength=size).reshape(self.total.shape)
        self.count += np.bincount(flat, minlength=size).reshape(self.count.shape)
        cell = (bucket * self.n_layers + r.layer[a:b])[_not_finite(r, val, a, b)]
        self.bad += np.bincount(cell, minlength=size).reshape(self.bad.shape)
        np.maximum.at(self.last, bucket_of_step, r.ustep[d0:d1])

    def add_blocks(self, level: _Level, b0: int, b1: int, bucket_of_block: np.ndarray) -> None:
        if b1 <= b0:
            return
        starts = np.flatnonzero(np.r_[True, bucket_of_block[1:] != bucket_of_block[:-1]])
        at = bucket_of_block[starts]
        n_layers = level.total.shape[1]
        self.total[at, :n_layers] += np.add.reduceat(level.total[b0:b1], starts, axis=0)
        self.count[at, :n_layers] += np.add.reduceat(level.count[b0:b1], starts, axis=0)
        self.bad[at, :n_layers] += np.add.reduceat(level.bad[b0:b1], starts, axis=0)
        ends = np.r_[starts[1:], b1 - b0] - 1
        self.last[at] = np.maximum(self.last[at], level.last[b0:b1][ends])

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(buckets × layers) means (NaN without a value) and each bucket's last step (-1: empty)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan), self.last


def _kind_code(kind: str) -> int:
    if kind not in KIND_INDEX:
        raise ValueError(f"deepscope: unknown layer statistics kind {kind!r}; one of {fmt.LAYER_KINDS}")
    return KIND_INDEX[kind]


def _stat_index(stat: str) -> int:
    if stat not in STAT_INDEX:
        raise ValueError(f"deepscope: unknown statistic {stat!r}; one of {fmt.LAYER_STATS}")
    return STAT_INDEX[stat]
