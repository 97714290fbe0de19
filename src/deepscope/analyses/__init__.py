"""Analyses after training: activations of instances, per-class and per-subset aggregates, projections, neighbours.

Each analysis is one file with a config dataclass, ``is_compatible(model, data)`` and ``run``; ``registry.ANALYSES``
lists them. Artifacts live under ``<run_dir>/artifacts/`` (docs/store-format.md, "Artifacts: analyses").
Reading (``read``, ``AnalysisReader``) needs no torch; ``analyze`` and ``ANALYSES`` import it when first used.
"""

from __future__ import annotations

from typing import Any

from .aggregates import Aggregate, subset_mask
from .reader import AnalysisReader, read

__all__ = ["ANALYSES", "Aggregate", "AnalysisReader", "analyze", "read", "subset_mask"]


def __getattr__(name: str) -> Any:
    if name == "analyze":
        from .pipeline import analyze

        return analyze
    if name == "ANALYSES":
        from .registry import ANALYSES

        return ANALYSES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
