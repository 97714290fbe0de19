"""deepscope: see inside neural networks, during and after training.

>>> import deepscope
>>> run = deepscope.init(project="mnist", config={"lr": 1e-3})
>>> run.log({"train/loss": 0.3}, step=0)
>>> run.finish()
>>> store = deepscope.open("deepscope-runs")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .run import Run, current, default_dir
from .store import RunReader, Store

__version__ = "0.1.0"
__all__ = ["Run", "RunReader", "Store", "event", "finish", "init", "log", "open"]


def init(
    project: str = "default",
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Run:
    """Start a run and make it the current one: ``deepscope.log`` then writes to it.

    ``dir`` defaults to ``$DEEPSCOPE_DIR`` or ``./deepscope-runs``. Other keywords: ``id``, ``tags``,
    ``notes``, ``rank``, ``world_size``, ``resume``, ``flush_interval``.
    """
    return Run(project=project, name=name, config=config, dir=dir, **kwargs)


def _require_run() -> Run:
    run = current()
    if run is None:
        raise RuntimeError("deepscope: no active run; call deepscope.init() first")
    return run


def log(data: Mapping[str, Any], step: int | None = None) -> None:
    """Log scalars to the current run (see :meth:`Run.log`)."""
    _require_run().log(data, step=step)


def event(kind: str, text: str, **kwargs: Any) -> None:
    """Record a text event in the current run (see :meth:`Run.event`)."""
    _require_run().event(kind, text, **kwargs)


def finish() -> None:
    """Finish the current run."""
    run = current()
    if run is not None:
        run.finish()


def open(root: str | os.PathLike[str] | None = None) -> Store:  # noqa: A001 - the verb users expect
    """Open a runs directory for reading (default: the same as :func:`init`)."""
    return Store(root if root is not None else default_dir())
