"""The labels and class names given to ``deepscope.analyze``: one integer class per instance (-1: unlabelled), and
the class names as a list, class ``i`` at ``i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def class_name_list(names: Any) -> list[str] | None:
    """Class names as a list, class ``i`` at ``i``: a sequence, or a mapping from class index to name (a Hugging Face
    config's ``id2label``, its keys integers or their text)."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise TypeError(f"deepscope.analyze: class_names is one string ({str(names)[:40]!r}); give a list of names, "
                        "one per class")  # fmt: skip
    if isinstance(names, Mapping):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise TypeError(
                "deepscope.analyze: class_names as a dict maps class indices (0, 1, … or '0', '1', …) "
                f"to names, as a config's id2label does; its keys are {list(names)[:5]}"
            ) from None
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"deepscope.analyze: class_names as a dict needs every class index from 0 to "
                             f"{len(by_index) - 1}; it has {sorted(by_index)[:10]}")  # fmt: skip
        return [by_index[i] for i in range(len(by_index))]
    return [str(c) for c in names]


def integer_labels(labels: Any) -> np.ndarray:
    """One integer class per instance (int64; -1, NaN, or None in a list, for an unlabelled instance), or a
    ``ValueError`` (floats with fractions are not classes)."""
    if isinstance(labels, (list, tuple)) and any(v is None for v in labels):
        labels = [-1 if v is None else v for v in labels]
    if isinstance(labels, (list, tuple)) and any(isinstance(v, str) for v in labels):
        raise ValueError("deepscope.analyze: labels must be integer class indices, got strings (class names?): pass "
                         "the indices as labels and the names as class_names")  # fmt: skip
    if hasattr(labels, "to_numpy") and getattr(labels.dtype, "kind", "") in "biuf":  # a pandas column, nullable too
        labels = labels.to_numpy(dtype="float64", na_value=np.nan)
    try:
        y = np.asarray(torch.as_tensor(labels).cpu())
    except (TypeError, ValueError) as e:
        raise ValueError(f"deepscope.analyze: labels must be one integer class index per instance ({e})") from e
    if y.ndim != 1:
        raise ValueError(f"deepscope.analyze: labels must be one integer per instance, not an array of shape {y.shape}")
    if y.dtype.kind == "f":
        y = np.where(np.isnan(y), -1, y)  # missing (a pandas column with gaps): unlabelled, as in data (X, y)
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError("deepscope.analyze: labels must be integer class indices; got non-integer floats "
                             "(a regression target is no class: leave labels out, or pass it as metadata)")  # fmt: skip
    elif y.dtype.kind not in "iub":
        raise ValueError(f"deepscope.analyze: labels must be integer class indices, got {y.dtype}")
    if len(y) and y.min() < -1:
        i = int(np.argmax(y < -1))
        raise ValueError(f"deepscope.analyze: label {int(y[i])} of instance {i} is no class index (0 and up; -1 marks "
                         "an unlabelled instance)")  # fmt: skip
    return y.astype(np.int64)
