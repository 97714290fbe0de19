"""A store written by the real ``deepscope.init``/``log``, and clients of the server over it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tests.server.helpers import STEPS, make_client

import deepscope
from deepscope.server import create_app


@dataclass(frozen=True)
class Fixture:
    root: Path
    main: str  # a finished single-rank run: scalars (NaN/±Inf included), histograms, events
    multi: str  # a two-rank run
    loss: np.ndarray  # the values logged as train/loss at steps 0..STEPS-1


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Fixture:
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    loss = np.exp(-np.arange(STEPS) / 500) + rng.normal(0, 0.01, STEPS)
    loss[100], loss[200], loss[300] = np.nan, np.inf, -np.inf
    config = {"lr": 1e-3, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "bad": float("nan")}
    with deepscope.init(project="p", name="main <b>run</b>", config=config, dir=root, tags=["t1"]) as run:
        for step in range(STEPS):
            run.log({"train/loss": loss[step], "lr": 0.1}, step=step)
        for step in (0, 10, 20):
            run.log_histogram("weights/fc", rng.normal(step, 1, 1000), step=step, bins=16)
        run.event("note", "hello <script>", step=5)
        run.event("alert", "loss spiked", step=200, severity="warning", key="train/loss")
        main = run.id
    multi = "multi-rank"
    for rank in (0, 1):
        with deepscope.init(project="p", id=multi, dir=root, rank=rank, world_size=2) as run:
            run.log({"x": float(rank)}, step=0)
            run.log({"x": float(rank) + 1}, step=1)
    return Fixture(root, main, multi, loss)


@pytest.fixture
def client(store):
    with make_client(create_app(store.root)) as c:
        yield c
