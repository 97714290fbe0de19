"""Confusion matrix: how often each true class was predicted as each class (``artifacts/confusion/``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..store.runmeta import write_json_atomic
from .base import artifact_dir, provenance, write_provenance

NAME = "confusion"
MANY_CLASSES = 50  # above it, the matrix keeps the classes that occur (a 5,000-class head: 141 MB of zeros)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``m[i, j]``: instances of true class ``i`` predicted as ``j`` (rows without a label, < 0, are left out)."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    keep = labels >= 0
    n = int(n_classes or max(labels.max(initial=-1), predictions.max(initial=-1)) + 1)
    return np.bincount(labels[keep] * n + predictions[keep], minlength=n * n).reshape(n, n)


@dataclass(frozen=True)
class ConfusionConfig:
    pass


class ConfusionMatrix:
    """From the stored labels and predictions, written as ``confusion/confusion.json``."""

    name = NAME

    def __init__(self, config: ConfusionConfig | None = None) -> None:
        self.config = config or ConfusionConfig()

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        return True  # needs labels: ``run`` returns None without them

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> Path | None:
        from .reader import AnalysisReader

        reader = AnalysisReader(run_dir)
        table = reader.instances()
        if "label" not in table.column_names or "prediction" not in table.column_names:
            return None
        names = reader.class_names
        labels = table.column("label").fill_null(-1).to_numpy()
        preds = table.column("prediction").to_numpy()
        n = len(names) if names else None
        if n is not None and max(labels.max(initial=-1), preds.max(initial=-1)) >= n:
            n = None  # outputs beyond the named classes: size from the data
        m = confusion_matrix(labels, preds, n)
        classes = np.arange(len(m))
        if len(m) > MANY_CLASSES:  # the classes some instance is labelled or predicted as
            classes = np.flatnonzero(m.sum(0) + m.sum(1))
            m = m[np.ix_(classes, classes)]
        out = artifact_dir(run_dir, NAME)
        write_provenance(out, provenance(NAME, asdict(self.config), source="activations/instances.parquet"))
        write_json_atomic(out / "confusion.json", {"version": 1, "class_names": names, "classes": classes.tolist(),
                                                   "matrix": m.tolist()})  # fmt: skip
        return out
