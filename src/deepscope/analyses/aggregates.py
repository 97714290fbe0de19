"""Aggregates: mean and spread of a layer's activations per class or per subset, and a neuron's top instances.

Computed on demand from the activation matrix (rows = instances, columns = neurons); nothing is stored.
A *subset* is a row mask, usually from a small filter over the instance table (see :func:`subset_mask`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .time_columns import as_time, is_time, time_text, time_values

SPECIAL_KEYS = ("text_contains", "contains", "range", "index", "predicted", "lasso")  # lasso: AnalysisReader.mask


@dataclass(frozen=True)
class Aggregate:
    """Per-group statistics of a layer: ``mean`` and ``std`` are (groups, neurons), ``count`` is (groups,)."""

    groups: list[Any]
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def subset_mask(table: Any, where: Mapping[str, Any] | np.ndarray | None) -> np.ndarray:
    """Rows of the instance table (a ``pyarrow.Table``) that match ``where``, as a boolean mask.

    Keys combine with *and*: a column name (``label``, ``prediction``/``predicted``, ``correct`` or any metadata
    column) equals a value, or is one of a list; ``text_contains`` — any text column contains the string;
    ``contains`` — ``{column: substring}`` (both ignore case); ``range`` — ``{column: [low, high]}``, both ends
    included, either one ``None`` for no bound; a date or time column compares times given as ISO 8601 text, and
    ``contains`` reads its ISO 8601 text (:mod:`.time_columns`); ``index`` — a list of row numbers from 0 (pinned
    instances); ``lasso`` — a polygon on a stored projection (:meth:`AnalysisReader.mask`, which reads it).

    >>> subset_mask(table, {"predicted": 3, "label": 8}).sum()
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if where is None:
        return np.ones(n, dtype=bool)
    if isinstance(where, np.ndarray):
        if where.dtype != bool or where.shape != (n,):
            raise ValueError(f"deepscope: a row mask must be {n} booleans, got {where.dtype} {where.shape}")
        return where
    mask = np.ones(n, dtype=bool)
    for key, value in where.items():
        if key == "text_contains":
            text_cols = [c for c in table.column_names if pa.types.is_string(table.schema.field(c).type)
                         or pa.types.is_large_string(table.schema.field(c).type)]  # fmt: skip
            hit = np.zeros(n, dtype=bool)
            for c in text_cols:
                hit |= _bools(pc.match_substring(table.column(c), str(value), ignore_case=True))
            mask &= hit
        elif key == "contains":
            for col, sub in _per_column(key, value).items():
                mask &= _bools(pc.match_substring(_text(_column(table, col), col), str(sub), ignore_case=True))
        elif key == "range":
            for col, bounds in _per_column(key, value).items():
                mask &= _in_range(_column(table, col), col, bounds)
        elif key == "lasso":
            raise ValueError("deepscope: a lasso is read with the projection it was drawn on: AnalysisReader.mask")
        elif key == "index":
            mask &= _rows(value, n)
        else:
            col = _column(table, "prediction" if key == "predicted" else key)
            values = list(value) if isinstance(value, (list, tuple, set, np.ndarray)) else [value]
            if is_time(col.type):
                x = time_values(col)
                mask &= np.isin(x, np.array([as_time(v, key) for v in values]))
            else:
                mask &= _bools(pc.is_in(col, value_set=_values_of(col, key, values)))
    return mask


def _values_of(col: Any, name: str, values: list[Any]) -> Any:
    """The values an equality compares a column with, in its type; ``ValueError`` naming the column and what it holds
    (not Arrow's "Expected bytes, got a 'int' object")."""
    import pyarrow as pa

    t = col.type
    try:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            if not all(isinstance(v, str) for v in values):
                raise TypeError
        elif pa.types.is_boolean(t) and not all(isinstance(v, bool) for v in values):
            raise TypeError
        elif pa.types.is_integer(t) and any(isinstance(v, float) and not v.is_integer() for v in values):
            raise TypeError  # Arrow would truncate 1.5 to 1
        return pa.array(values, type=t)
    except (TypeError, ValueError, OverflowError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        what = {"string": "text", "large_string": "text", "bool": "true or false"}.get(str(t), str(t))
        raise ValueError(f"deepscope: column {name!r} holds {what}; it cannot equal {values[0]!r}") from None


def _in_range(col: Any, name: str, bounds: Any) -> np.ndarray:
    """Rows whose numeric value, or time, lies in ``[low, high]`` (a ``None`` end: unbounded); nulls and NaN never
    do. A time column's ends are times (:mod:`.time_columns`)."""
    import pyarrow as pa

    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or is_time(t)):
        raise ValueError(f"deepscope: a range needs a numeric, date or time column; {name!r} holds {t}")
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise ValueError(f"deepscope: the range of {name!r} must be [low, high] (null for an open end)")
    if is_time(t):
        x = time_values(col)
        low, high = (None if b is None else as_time(b, name) for b in bounds)
        hit = ~np.isnat(x)
    else:
        low, high = (None if b is None else _number(b, name) for b in bounds)
        x = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
        hit = ~np.isnan(x)
    if low is not None:
        hit &= x >= low
    if high is not None:
        hit &= x <= high
    return hit


def _number(bound: Any, name: str) -> float:
    """A numeric range's end as a float; ``ValueError`` for one that is none (text, a list) or beyond float64."""
    try:
        if isinstance(bound, bool):
            raise TypeError
        return float(bound)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"deepscope: the range of {name!r} takes numbers (or null for an open end), "
                         f"not {bound!r:.40}") from None  # fmt: skip


def _per_column(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"deepscope: {key!r} is {{column: …}}, not {value!r:.40}")
    return value


def _rows(value: Any, n: int) -> np.ndarray:
    """The rows ``index`` names, as a mask; ``ValueError`` for a number that is no row (-1 once meant the last row,
    1.5 row 1)."""
    values = value.tolist() if isinstance(value, np.ndarray) else value if isinstance(value, (list, tuple)) else [value]
    for i in values:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"deepscope: 'index' takes row numbers (whole numbers from 0), not {i!r:.40}")
        if not 0 <= i < n:
            raise ValueError(f"deepscope: 'index' {i} is no row of the table: it has {n} rows, numbered from 0")
    rows = np.zeros(n, dtype=bool)
    rows[np.asarray(values, dtype=np.int64)] = True
    return rows


def _text(col: Any, name: str) -> Any:
    """A column ``contains`` reads: a text column, or a time column's ISO 8601 text; ``ValueError`` for another."""
    import pyarrow as pa

    if is_time(col.type):
        return pa.array(time_text(col), pa.string())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise ValueError(f"deepscope: 'contains' reads a text, date or time column; {name!r} holds {col.type}")
    return col


def _column(table: Any, name: str) -> Any:
    if name not in table.column_names:
        raise KeyError(f"deepscope: no column {name!r} to filter on; columns: {', '.join(table.column_names)}")
    return table.column(name)


def _bools(arr: Any) -> np.ndarray:
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class Moments:
    """What makes aggregates one matrix-vector product: the column means and centred squares of a layer."""

    center: np.ndarray  # (D,) float64
    squares: np.ndarray  # (N, D) float32: (x - center)²; centring keeps E[x²] − E[x]² from cancelling
    nonnegative: np.ndarray | None = None  # (D,) bool: neurons never below 0 (ReLU-like), see ``std``

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        center = x.mean(0, dtype=np.float64)
        nonnegative = x.min(0) >= 0 if len(x) else np.zeros(x.shape[1], bool)
        squares = x - center.astype(np.float32)
        return cls(center, np.square(squares, out=squares), nonnegative)  # squared in place: one (N, D) array

    def std(self, mean: np.ndarray, mean_square: np.ndarray) -> np.ndarray:
        """A group's standard deviation from its ``mean`` and the mean of its centred squares, ``E[(x − center)²]``.

        0 where a never-negative neuron's mean is 0: it is 0 on every row of the group (dead there). The float32 sums
        behind ``mean_square`` leave about 1e-4 of the centre's square there instead (a dead unit's standard
        deviation read up to 0.1 beside a mean of 0)."""
        var = np.maximum(mean_square - (mean - self.center) ** 2, 0.0)
        if self.nonnegative is not None:
            var = np.where(self.nonnegative & (mean == 0), 0.0, var)
        return np.sqrt(var)


def subset_aggregate(x: np.ndarray, mask: np.ndarray, moments: Moments | None = None) -> Aggregate:
    """Mean and standard deviation of the rows of ``x`` selected by ``mask`` (NaN for an empty subset).

    With ``moments``: subsets of more than an eighth of the rows are two matrix-vector products over every row
    (float32 BLAS, reading ``x`` and the centred squares once each); smaller ones gather their rows.
    """
    n = int(mask.sum())
    if n == 0:
        nan = np.full((1, x.shape[1]), np.nan, np.float32)
        return Aggregate(["subset"], nan, nan.copy(), np.zeros(1, np.int64))
    if moments is None:
        rows = x[mask]  # (N, D) -> (n, D)
        mean = rows.mean(0, dtype=np.float64)
        std = rows.std(0, dtype=np.float64)
    elif n * 8 < len(mask):  # few rows: gathering them beats reading every row
        idx = np.flatnonzero(mask)
        mean = x[idx].sum(0, dtype=np.float64) / n  # (n, D) -> (D,)
        std = moments.std(mean, moments.squares[idx].sum(0, dtype=np.float64) / n)
    else:
        w = mask.astype(np.float32)  # (N,)
        mean = (w @ x).astype(np.float64) / n  # (N,) @ (N, D) -> (D,)
        std = moments.std(mean, (w @ moments.squares).astype(np.float64) / n)
    return Aggregate(["subset"], mean[None].astype(np.float32), std[None].astype(np.float32), np.array([n]))


CELL_COLUMNS = ("label", "prediction", "correct")
CELL_KEYS = (*CELL_COLUMNS, "predicted")


@dataclass(frozen=True)
class Cells:
    """A layer summed per cell of (label, prediction): filters on those columns (and ``correct``) select whole
    cells, so their aggregates are sums of a few cell rows instead of passes over every instance.

    ``table`` holds one instance table row per cell (the label, prediction and correct columns, as stored), so
    :func:`subset_mask` decides which cells a filter keeps exactly as it would for the instances.
    """

    table: Any  # pyarrow.Table, K rows
    count: np.ndarray  # (K,) int64
    sums: np.ndarray  # (K, D) float64: sums of x
    squares: np.ndarray  # (K, D) float64: sums of (x - moments.center)²

    @classmethod
    def of(cls, table: Any, x: np.ndarray, moments: Moments) -> Cells | None:
        """The cells of an instance table (None without label or prediction columns)."""
        cols = [c for c in CELL_COLUMNS if c in table.column_names]
        if "label" not in cols and "prediction" not in cols:
            return None
        key = np.zeros(table.num_rows, np.int64)
        for c in ("label", "prediction"):
            if c in cols:
                v = table.column(c).fill_null(-1).to_numpy().astype(np.int64) + 1  # null -> 0
                key = key * (int(v.max(initial=0)) + 1) + v
        cells, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        count = np.bincount(inverse, minlength=len(cells)).astype(np.int64)
        # A sparse (K, N) indicator, one 1 per row: each product reads x once, whatever the number of cells
        # (a dense indicator costs K times more arithmetic: 100 cells of 100k × 512 took 2.5x longer, same run).
        onehot = _sparse_indicator(inverse, len(cells))  # (K, N)
        sums = np.asarray(onehot @ x, dtype=np.float64)  # (K, N) @ (N, D) -> (K, D)
        squares = np.asarray(onehot @ moments.squares, dtype=np.float64)
        return cls(table.select(cols).take(first), count, sums, squares)

    @staticmethod
    def answers(where: Any) -> bool:
        """Whether ``where`` filters on cell columns only."""
        return isinstance(where, Mapping) and bool(where) and all(k in CELL_KEYS for k in where)

    def subset(self, where: Mapping[str, Any], moments: Moments) -> Aggregate:
        keep = subset_mask(self.table, where)
        return self._stats(keep[None], moments, ["subset"])

    def groups(self, by: str, n_groups: int, where: Mapping[str, Any] | None, moments: Moments) -> Aggregate:
        """Per-group statistics, groups being the values ``0 … n_groups-1`` of ``by`` (label or prediction)."""
        keep = subset_mask(self.table, where) if where else np.ones(self.table.num_rows, bool)
        g = self.table.column(by).fill_null(-1).to_numpy().astype(np.int64)
        member = (g[None] == np.arange(n_groups)[:, None]) & keep[None]  # (G, K)
        return self._stats(member, moments, list(range(n_groups)))

    def _stats(self, member: np.ndarray, moments: Moments, names: list[Any]) -> Aggregate:
        m = member.astype(np.float64)  # (G, K)
        count = (m @ self.count).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (m @ self.sums) / count[:, None]  # (G, K) @ (K, D) -> (G, D)
            std = moments.std(mean, (m @ self.squares) / count[:, None])
        return Aggregate(names, mean.astype(np.float32), std.astype(np.float32), count)


def _sparse_indicator(group: np.ndarray, n_groups: int) -> Any:
    """``scipy.sparse`` (groups, N) float32 matrix with a 1 at (group[i], i)."""
    from scipy.sparse import csr_matrix  # scikit-learn's dependency, installed with deepscope's analyses

    n = len(group)
    order = np.argsort(group, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))])
    return csr_matrix((np.ones(n, np.float32), order, indptr), shape=(n_groups, n))


def group_aggregate(
    x: np.ndarray, groups: np.ndarray, n_groups: int | None = None, moments: Moments | None = None
) -> Aggregate:
    """Mean and standard deviation of ``x`` per group id (``groups``: ints in ``0 … n_groups-1``, negative = none).

    One pass: per-group sums of ``x`` and of centred squares by a (groups × N) indicator product.
    """
    groups = np.asarray(groups, dtype=np.int64)
    keep = groups >= 0
    g = int(n_groups if n_groups is not None else (groups.max() + 1 if keep.any() else 0))
    count = np.bincount(groups[keep], minlength=g).astype(np.int64)
    moments = moments or Moments.of(x)
    onehot = np.zeros((g, len(groups)), np.float32)  # (G, N)
    onehot[groups[keep], np.flatnonzero(keep)] = 1.0
    sums = (onehot @ x).astype(np.float64)  # (G, N) @ (N, D) -> (G, D)
    sq = (onehot @ moments.squares).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / count[:, None]
        std = moments.std(mean, sq / count[:, None])
    return Aggregate(list(range(g)), mean.astype(np.float32), std.astype(np.float32), count)


def top_instances(
    x: np.ndarray, neuron: int, k: int = 10, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and values of the ``k`` instances that activate ``neuron`` most (within ``mask``), highest first.

    Only instances above the neuron's lowest value there count: a ReLU unit that fires on three instances has three,
    a dead one (0 everywhere) none — not ``k`` arbitrary ones among equal values."""
    if not 0 <= neuron < x.shape[1]:
        raise IndexError(f"deepscope: neuron {neuron} out of range for a layer of {x.shape[1]}")
    col = np.asarray(x[:, neuron])
    rows = np.flatnonzero(mask) if mask is not None else np.arange(len(col))
    vals = col[rows]
    if len(vals):
        above = vals > vals.min()
        rows, vals = rows[above], vals[above]
    k = min(k, len(rows))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, col.dtype)
    part = np.argpartition(-vals, k - 1)[:k]
    order = part[np.lexsort((rows[part], -vals[part]))]  # ties: lower index first
    return rows[order], vals[order]
