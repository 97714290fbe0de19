"""The metadata table given to ``deepscope.analyze``: one row per instance, stored beside the instance table, to
filter on and to show the inputs as (``text_column``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .aggregates import SPECIAL_KEYS
from .base import RESERVED_COLUMNS, decoded

# Keys of a subset filter that are not column names (aggregates.subset_mask): no metadata column may be one.
FILTER_WORDS = tuple(k for k in SPECIAL_KEYS if k not in RESERVED_COLUMNS)


def _metadata_column(name: Any, values: Any) -> Any:
    """One column of a dict of columns, as Arrow; a column of mixed types is named in the error."""
    import pyarrow as pa

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return pa.array(values if isinstance(values, np.ndarray) else list(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise TypeError(f"deepscope.analyze: metadata column {str(name)!r} cannot be stored ({e}); give it one "
                        f"value per instance, all of one type (all numbers, or all strings)") from None  # fmt: skip


def metadata_table(metadata: Any) -> Any:
    """The user's metadata as a ``pyarrow.Table`` (from a Table, a DataFrame, a dict of columns, rows, or texts)."""
    import pyarrow as pa

    try:
        if isinstance(metadata, (str, bytes)):
            raise TypeError("deepscope.analyze: metadata must be a table, a dict of columns or a list of rows, got "
                            "one string (texts, one per instance: a list of strings)")  # fmt: skip
        if metadata is None or isinstance(metadata, pa.Table):
            table = metadata
        elif hasattr(metadata, "to_arrow"):
            table = metadata.to_arrow()
        elif hasattr(metadata, "to_frame") and hasattr(metadata, "iloc"):  # a pandas Series: one column
            table = pa.Table.from_pandas(
                metadata.to_frame(str("value" if metadata.name is None else metadata.name)), preserve_index=False
            )
        elif hasattr(metadata, "iloc"):  # a pandas DataFrame
            table = pa.Table.from_pandas(metadata, preserve_index=False)
        elif isinstance(metadata, dict):
            table = pa.table({str(k): _metadata_column(k, v) for k, v in metadata.items()})
        elif isinstance(metadata, Sequence) and metadata and all(isinstance(r, dict) for r in metadata):
            table = pa.Table.from_pylist(list(metadata))
        elif isinstance(metadata, Sequence) and all(isinstance(r, str) for r in metadata):
            table = pa.table({"text": list(metadata)})
        else:
            raise TypeError(f"deepscope.analyze: metadata must be a table, a dict of columns or a list of rows, "
                            f"got {type(metadata).__name__}")  # fmt: skip
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise TypeError(f"deepscope.analyze: metadata cannot be stored as a table ({e}); each column needs one "
                        f"value per instance, all of one type (all numbers, or all strings)") from None  # fmt: skip
    if table is not None:
        table = midnights_as_dates(decoded(table))
    if table is not None and (clash := [c for c in table.column_names if c in RESERVED_COLUMNS]):
        raise ValueError(f"deepscope.analyze: metadata columns {clash} clash with the instance table's own "
                         f"columns {list(RESERVED_COLUMNS)}; rename them")  # fmt: skip
    if table is not None and (clash := [c for c in table.column_names if c in FILTER_WORDS]):
        raise ValueError(f"deepscope.analyze: metadata columns {clash} are words of subset filters "
                         f"({', '.join(FILTER_WORDS)}); rename them")  # fmt: skip
    return table


def midnights_as_dates(table: Any) -> Any:
    """Columns of times without a zone that are all at midnight (a pandas column of dates is ``datetime64``) as
    dates: shown as ``2024-01-24``, filtered with date inputs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            col = table.column(i)
            if col.null_count < len(col) and pc.all(pc.equal(col, pc.floor_temporal(col, unit="day"))).as_py():
                table = table.set_column(i, field.name, col.cast(pa.date32()))
    return table


def checked_text_column(text_column: str | bool | None, metadata: Any) -> str | bool | None:
    """``text_column``: None (found by the reader), False (the inputs are no text), or a metadata column of
    strings, which the inputs are shown as."""
    import pyarrow as pa

    if text_column is None or text_column is False:
        return text_column
    if not isinstance(text_column, str):
        raise TypeError(f"deepscope.analyze: text_column is a metadata column's name, False or None, not "
                        f"{text_column!r}")  # fmt: skip
    names = [] if metadata is None else metadata.column_names
    if text_column not in names:
        raise ValueError(f"deepscope.analyze: text_column {text_column!r} is no metadata column "
                         f"({', '.join(names) or 'no metadata given'})")  # fmt: skip
    kind = metadata.schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"deepscope.analyze: text_column {text_column!r} holds {kind}, not text")
    return text_column
