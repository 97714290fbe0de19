"""Response models of the HTTP API: the one source of the web client's types (see docs/http-api.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

RunStatus = Literal["running", "finished", "crashed"]
Severity = Literal["debug", "info", "warning", "error"]


class Health(BaseModel):
    version: str
    root: str


class RunSummary(BaseModel):
    id: str
    project: str
    name: str
    status: RunStatus
    start_time: float
    end_time: float | None
    heartbeat: float | None
    tags: list[str]
    notes: str
    config_flat: dict[str, Any]
    world_size: int
    max_step: int | None


class RunDetail(RunSummary):
    config: dict[str, Any]
    host: str
    git_commit: str | None
    python_version: str
    torch_version: str | None
    exit_reason: str | None
    ranks: list[int]


class RunList(BaseModel):
    runs: list[RunSummary]


class KeyInfo(BaseModel):
    key: str
    kind: Literal["scalar", "histogram"]
    count: int
    last_step: int
    rank: int


class KeyList(BaseModel):
    keys: list[KeyInfo]


class HistogramPoint(BaseModel):
    """One distribution: ``counts[i]`` values fell in ``[edges[i], edges[i+1])``."""

    step: int
    wall_time: float
    edges: list[float]
    counts: list[float]


class HistogramList(BaseModel):
    histograms: list[HistogramPoint]


class Event(BaseModel):
    step: int | None
    wall_time: float
    kind: str
    severity: Severity
    text: str
    key: str | None
    rank: int


class EventList(BaseModel):
    events: list[Event]


class LiveRun(BaseModel):
    """``data`` of an ``event: run`` on ``/api/live``: the run has data up to ``max_step`` now."""

    run: str
    max_step: int | None
    status: RunStatus


class LiveRuns(BaseModel):
    """``data`` of an ``event: runs`` on ``/api/live``: reload ``/api/runs``."""


LIVE_MESSAGES = (LiveRun, LiveRuns)
