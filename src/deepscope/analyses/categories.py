"""A metadata column's values as groups: the most frequent values apiece, the rest together, missing ones apart.

The neuron matrix's rows per value of a column (``AnalysisReader.aggregate(layer, by=column)``) are these groups, in
the order the projection's legend gives the same column's categories: most frequent first, ties by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MOST_GROUPS = 24  # values with a group (a matrix row) of their own; the others share one
GROUPABLE = ("string", "bool", "int")  # column kinds that group; a float or time column is a scale, not categories


@dataclass(frozen=True)
class Categories:
    """``codes``: each row's group (``0 … len(names) - 1``); ``names``: the ``named`` values' texts, then
    ``"N other values"`` and ``"missing"`` where those rows exist."""

    codes: np.ndarray
    names: list[str]
    named: int


def categories(col: Any, most: int = MOST_GROUPS) -> Categories:
    """Group the rows of a pyarrow column by value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(col)
    encoded = encoded.combine_chunks() if isinstance(encoded, pa.ChunkedArray) else encoded
    index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    texts = [value_text(v) for v in encoded.dictionary.to_pylist()]
    count = np.bincount(index[index >= 0], minlength=len(texts))
    order = sorted(range(len(texts)), key=lambda k: (-int(count[k]), texts[k]))
    named = order[:most]
    names = [texts[k] for k in named]
    rank = np.full(len(texts) + 1, -1, np.int64)  # the last: missing
    rank[named] = np.arange(len(named))
    if len(texts) > len(named):
        rank[:-1][rank[:-1] < 0] = len(names)
        names.append(f"{len(texts) - len(named):,} other values")
    if (index < 0).any():
        rank[-1] = len(names)
        names.append("missing")
    return Categories(rank[index], names, len(named))


def value_text(v: Any) -> str:
    """A value as the dashboard writes it (booleans as ``true``/``false``, as JavaScript does)."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)
