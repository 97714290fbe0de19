"""Dates and times in the instance table: filtered as times (equality, ranges) and as ISO 8601 text (``contains``).

A column of Arrow timestamps or dates (a pandas ``datetime64`` column, Python ``datetime`` or ``date`` values) is
read as NumPy ``datetime64``: a zoned column's values are UTC. A value to compare with is ISO 8601 text
(``"2024-03-05"``, ``"2024-03-05T14:30"``, ``"2024-03-05T14:30:00+01:00"``), a ``datetime`` or a ``date``; one with
an offset is converted to UTC, one without is taken as the column's own time (UTC for a zoned column).

>>> subset_mask(table, {"range": {"taken": ["2024-03-01", "2024-03-31T23:59:59"]}}).sum()
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np


def is_time(t: Any) -> bool:
    """Whether an Arrow type is a date or a timestamp."""
    import pyarrow as pa

    return pa.types.is_timestamp(t) or pa.types.is_date(t)


def time_values(col: Any) -> np.ndarray:
    """A date or timestamp column as ``datetime64`` (NaT for nulls; a zoned column in UTC)."""
    return np.asarray(col.to_numpy(zero_copy_only=False))


def as_time(value: Any, column: str) -> np.datetime64:
    """A value to compare a time column with: ISO 8601 text, a ``datetime`` or a ``date``; ``ValueError`` else."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            value = None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if not isinstance(value, (dt.datetime, dt.date)):
        raise ValueError(f"deepscope: {column!r} holds dates or times: give ISO 8601 text such as '2024-03-05' or "
                         f"'2024-03-05T14:30:00' (or null for an open end of a range)")  # fmt: skip
    return np.datetime64(value, "us") if isinstance(value, dt.datetime) else np.datetime64(value, "D")


def time_text(col: Any) -> list[str | None]:
    """Each value as ISO 8601 text, as the instance detail shows it: ``2024-03-05`` for a date,
    ``2024-03-05T14:30:00`` for a time (microseconds when there are some; ``+00:00`` for a zoned column's UTC)."""
    import pyarrow as pa

    x = time_values(col)
    if pa.types.is_date(col.type):
        text = np.datetime_as_string(x.astype("datetime64[D]"))
    else:
        seconds = x.astype("datetime64[s]")
        text = np.datetime_as_string(seconds).astype(object)
        fraction = ~np.isnat(x) & (x != seconds)
        text[fraction] = np.datetime_as_string(x[fraction].astype("datetime64[us]"))
        if col.type.tz is not None:
            text = text + "+00:00"
    return [None if nat else str(t) for t, nat in zip(text, np.isnat(x))]


def time_detail(value: Any) -> str:
    """One value of a time column as :func:`time_text` writes it (a zoned time in UTC)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.isoformat()
