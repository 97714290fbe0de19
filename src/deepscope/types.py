"""The data model shared by every layer: capture, store, server and web speak these names.

The keys are (run, rank, key, step). A *key* is a name such as ``train/loss``; a value kind is one of
scalar, histogram or event. The on-disk layout of each kind is specified in ``docs/store-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RUN_STATUSES = ("running", "finished", "crashed")
SEVERITIES = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RunInfo:
    """Identity and metadata of one run, as read from ``run.json`` plus the status seen by a reader."""

    id: str
    project: str
    name: str
    status: str  # one of RUN_STATUSES, "crashed" when the writer's heartbeat went stale
    start_time: float
    end_time: float | None
    heartbeat: float | None  # newest heartbeat of any rank (unix seconds)
    config: dict[str, Any]  # as the user gave it
    config_flat: dict[str, Any]  # nested keys joined with "." for display and filtering
    tags: tuple[str, ...]
    notes: str
    host: str
    git_commit: str | None
    python_version: str
    torch_version: str | None
    world_size: int
    exit_reason: str | None = None
    format_version: int = 1
    max_step: int | None = None  # highest step on disk, from the writers' heartbeats (None: nothing yet)
    contents: tuple[str, ...] = ()  # what the run holds beside its logged values: "watch", "graph", "analysis"


@dataclass(frozen=True)
class Series:
    """Every logged value of one key on one rank, sorted by step (stable: restarts keep log order)."""

    key: str
    step: np.ndarray  # int64
    wall_time: np.ndarray  # float64, unix seconds
    value: np.ndarray  # float64, NaN and ±Inf kept

    def __len__(self) -> int:
        return len(self.step)

    def __repr__(self) -> str:
        if not len(self.step):
            return f"Series(key={self.key!r}, no values)"
        return (f"Series(key={self.key!r}, {len(self.step):,} values, steps {int(self.step[0])}–{int(self.step[-1])}, "
                f"last {float(self.value[-1]):.6g})")  # fmt: skip


@dataclass(frozen=True)
class Downsampled:
    """A series reduced to at most ``buckets`` points over a step range.

    One row per non-empty bucket. ``step``/``wall_time``/``last`` belong to the bucket's last point;
    ``min``/``max``/``mean`` are over its finite values (NaN when it has none); ``count`` counts all
    points and ``nonfinite`` the NaN/±Inf among them. When the range holds no more points than buckets,
    every point is its own bucket (``exact`` is True): full fidelity.
    """

    key: str
    step: np.ndarray
    wall_time: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    last: np.ndarray
    count: np.ndarray
    nonfinite: np.ndarray
    exact: bool

    def __len__(self) -> int:
        return len(self.step)


@dataclass(frozen=True)
class Histogram:
    """One distribution at one step: ``counts[i]`` values fell in ``[edges[i], edges[i+1])``."""

    key: str
    step: int
    wall_time: float
    edges: np.ndarray  # float64, len(counts) + 1, increasing
    counts: np.ndarray  # float64


@dataclass(frozen=True)
class Event:
    """A text event with a severity: notes, alerts from diagnoses, flagged anomalies."""

    step: int | None
    wall_time: float
    kind: str
    severity: str
    text: str
    key: str | None = None
    rank: int = 0


@dataclass(frozen=True)
class KeyInfo:
    """A logged key and how many values it holds on one rank."""

    key: str
    kind: str  # "scalar" | "histogram"
    count: int
    last_step: int
    rank: int = 0


@dataclass(frozen=True)
class Tail:
    """What a refresh of a live run found: how far each kind reaches now."""

    run: str
    max_step: int | None
    new_values: int
    changed_keys: tuple[str, ...] = field(default=())


# Scalar keys that ``watch`` records on every rank for every step (seconds, host wall clock).
STEP_TIME = "sys/step_time"  # step end to step end
DATA_TIME = "sys/data_time"  # previous step end to the first training forward (data loading, user code)
FORWARD_TIME = "sys/forward_time"  # the step's forward passes (summed over accumulated micro-batches)
BACKWARD_TIME = "sys/backward_time"  # the rest of the step: backward passes, optimizer, collective waits
