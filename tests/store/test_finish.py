"""finish() always writes the run's end: whatever fails inside it, and however slow the disk."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope import run as run_mod


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_a_failure_ending_the_watch_is_one_warning_the_run_is_finished_and_no_hook_survives(root, monkeypatch):
    """An error while the watch ended (its last step) escaped finish(): run.json stayed "running", the run stayed
    registered (atexit then skipped it, being finished), and the watcher after the failing one kept its hooks."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    run = deepscope.init(dir=root, id="f")
    run.watch(model, graph=False, print_findings=False)
    model(torch.randn(2, 4)).sum().backward()
    run.log({"loss": 1.0}, step=0)
    assert _hooks(model) > 0
    first = run._watchers[0]  # the step timer, closed before the watcher

    def fail() -> None:
        raise RuntimeError("any error while recording the last step")

    monkeypatch.setattr(first, "close", fail)
    with pytest.warns(RuntimeWarning, match="ending the watch of run 'f' failed.*RuntimeError.*run is finished") as w:
        run.finish()
    assert len(w) == 1 and w[0].filename == __file__
    assert _hooks(model) == 0
    assert json.loads((root / "f" / "run.json").read_text())["status"] == "finished"
    assert run not in run_mod.open_runs()
    assert reopen(root, "f").series("loss").step.tolist() == [0]
