"""Reader side of ``layerstats``: every row of one rank in growing columns, and the queries views need.

Rows are kept as NumPy columns — step, layer id, kind code and a (rows × stats) float32 matrix — so a
layer × step matrix or a depth profile is a few vectorised operations, not a loop over layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..types import Downsampled
from . import format as fmt
from .series import SeriesBuffer

STAT_INDEX = {s: i for i, s in enumerate(fmt.LAYER_STATS)}
KIND_INDEX = {k: i for i, k in enumerate(fmt.LAYER_KINDS)}


@dataclass(frozen=True)
class LayerMatrix:
    """``values[l, b]``: the mean of one statistic for ``names[l]`` over the steps of bucket ``b``."""

    kind: str
    stat: str
    names: list[str]
    step: np.ndarray  # (B,) last step that fell in each bucket (NaN-free: empty buckets dropped)
    values: np.ndarray  # (L, B) float64, NaN where a layer has no value in the bucket
    exact: bool  # one bucket per recorded step


class LayerStatsBuffer:
    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self._n = 0
        self._step = np.empty(1024, np.int64)
        self._wall = np.empty(1024, np.float64)
        self._layer = np.empty(1024, np.int32)
        self._kind = np.empty(1024, np.int8)
        self._stats = np.empty((1024, len(fmt.LAYER_STATS)), np.float32)
        self._series: dict[tuple[str, str, str], tuple[SeriesBuffer, int]] = {}

    def __len__(self) -> int:
        return self._n

    def append(self, table: pa.Table) -> None:
        layer = table["layer"].combine_chunks()
        kind = table["kind"].combine_chunks()
        remap = np.array([self._id(n) for n in layer.dictionary.to_pylist()], np.int32)
        kind_remap = np.array([KIND_INDEX.get(k, -1) for k in kind.dictionary.to_pylist()], np.int8)
        m = table.num_rows
        self._grow(self._n + m)
        a, b = self._n, self._n + m
        self._step[a:b] = table["step"].to_numpy()
        self._wall[a:b] = table["wall_time"].to_numpy()
        self._layer[a:b] = remap[layer.indices.to_numpy()]
        self._kind[a:b] = kind_remap[kind.indices.to_numpy()]
        for s, j in STAT_INDEX.items():
            if s in table.column_names:
                self._stats[a:b, j] = table[s].to_numpy()
            else:
                self._stats[a:b, j] = np.nan
        self._n = b

    def _id(self, name: str) -> int:
        i = self._ids.get(name)
        if i is None:
            i = self._ids[name] = len(self.names)
            self.names.append(name)
        return i

    def _grow(self, need: int) -> None:
        if need <= len(self._step):
            return
        cap = max(need, 2 * len(self._step))
        for attr in ("_step", "_wall", "_layer", "_kind", "_stats"):
            old = getattr(self, attr)
            new = np.empty((cap, *old.shape[1:]), old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, attr, new)

    def _select(self, kind: str, start: int | None, end: int | None) -> np.ndarray:
        n = self._n
        sel = self._kind[:n] == _kind_code(kind)
        if start is not None:
            sel &= self._step[:n] >= start
        if end is not None:
            sel &= self._step[:n] <= end
        return np.flatnonzero(sel)

    def steps(self) -> np.ndarray:
        return np.unique(self._step[: self._n])

    def matrix(
        self, kind: str, stat: str, start: int | None, end: int | None, buckets: int, names: list[str]
    ) -> LayerMatrix:
        """Mean of ``stat`` per (layer, step bucket) for the layers ``names`` (in that order)."""
        rows = self._select(kind, start, end)
        col = self._stats[rows, _stat_index(stat)].astype(np.float64)
        step = self._step[rows]
        order = np.full(len(self.names), -1, np.int64)
        for pos, name in enumerate(names):
            if name in self._ids:
                order[self._ids[name]] = pos
        lrow = order[self._layer[rows]]
        keep = (lrow >= 0) & np.isfinite(col)
        if not len(step):
            return LayerMatrix(kind, stat, names, np.zeros(0), np.full((len(names), 0), np.nan), True)
        distinct = np.unique(step)
        exact = len(distinct) <= buckets
        if exact:
            bucket = np.searchsorted(distinct, step)
            n_b = len(distinct)
        else:
            lo, hi = int(distinct[0]), int(distinct[-1])
            bucket = np.minimum(((step - lo) * buckets) // (hi - lo + 1), buckets - 1)
            n_b = buckets
        flat = lrow[keep] * n_b + bucket[keep]
        total = np.bincount(flat, weights=col[keep], minlength=len(names) * n_b)
        count = np.bincount(flat, minlength=len(names) * n_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = (total / count).reshape(len(names), n_b)
        last = np.full(n_b, -1, np.int64)
        np.maximum.at(last, bucket, step)
        used = last >= 0
        return LayerMatrix(kind, stat, names, last[used], values[:, used], exact)

    def profile(self, kind: str, stat: str, step: int | None, names: list[str]) -> tuple[int | None, np.ndarray]:
        """Values of ``stat`` across ``names`` at the last recorded step ≤ ``step`` (default: the latest)."""
        rows = self._select(kind, None, step)
        if not len(rows):
            return None, np.full(len(names), np.nan)
        at = int(self._step[rows].max())
        rows = rows[self._step[rows] == at]
        out = np.full(len(names), np.nan)
        pos = {n: i for i, n in enumerate(names)}
        vals = self._stats[rows, _stat_index(stat)]
        for lid, v in zip(self._layer[rows].tolist(), vals.tolist()):
            p = pos.get(self.names[lid])
            if p is not None:
                out[p] = v
        return at, out

    def series(self, name: str, kind: str, stat: str, start: int | None, end: int | None, buckets: int) -> Downsampled:
        """One statistic of one layer over time, downsampled like a scalar series (min/max band)."""
        key = (name, kind, stat)
        buf, seen = self._series.get(key, (None, 0))
        if buf is None:
            if name not in self._ids:
                raise KeyError(f"no layer {name!r}")
            buf = SeriesBuffer(f"{kind}/{stat}/{name}")
        if seen < self._n:  # extend with the rows that arrived since the last query
            lid = self._ids[name]
            sel = seen + np.flatnonzero(
                (self._layer[seen : self._n] == lid) & (self._kind[seen : self._n] == _kind_code(kind))
            )
            buf.append(self._step[sel], self._wall[sel], self._stats[sel, _stat_index(stat)].astype(np.float64))
            self._series[key] = (buf, self._n)
        return buf.downsample(start, end, buckets)


def _kind_code(kind: str) -> int:
    if kind not in KIND_INDEX:
        raise ValueError(f"deepscope: unknown layer statistics kind {kind!r}; one of {fmt.LAYER_KINDS}")
    return KIND_INDEX[kind]


def _stat_index(stat: str) -> int:
    if stat not in STAT_INDEX:
        raise ValueError(f"deepscope: unknown statistic {stat!r}; one of {fmt.LAYER_STATS}")
    return STAT_INDEX[stat]
