"""finish() always writes the run's end: whatever fails inside it, and however slow the disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope import run as run_mod
from deepscope.store import writer as writer_mod


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


STALLED_DISK = """
    import builtins, threading

    class StalledFile:
        def __init__(self, f, free):
            self._f, self._free = f, free

        def write(self, data):
            self._free.wait()  # a stalled file system: the write returns when it comes back
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

    free = threading.Event()

    def stalled_open(path, *args, **kwargs):
        return StalledFile(builtins.open(path, *args, **kwargs), free)
"""


@pytest.fixture
def stalled(monkeypatch):
    """The writer's files write only once ``free`` is set."""
    space: dict = {}
    exec(textwrap.dedent(STALLED_DISK), space)
    monkeypatch.setattr(writer_mod, "open", space["stalled_open"], raising=False)
    yield space["free"]
    space["free"].set()


def test_a_writer_still_writing_after_finish_is_said_and_run_json_says_so_until_it_is_done(root, monkeypatch, stalled):
    """finish() said "finished" while the writer, past close()'s 30 s, still held the values: lost at exit unsaid."""
    monkeypatch.setattr(run_mod, "CLOSE_TIMEOUT", 0.2)
    run = deepscope.init(dir=root, id="slow")
    for step in range(100):
        run.log({"x": float(step)}, step=step)
    with pytest.warns(RuntimeWarning, match=r"not finished writing after 0.2 s .* 100 logged values are not on disk"):
        run.finish()
    meta = json.loads((root / "slow" / "run.json").read_text())
    assert meta["status"] == "finished"
    assert meta["exit_reason"] == "still writing at finish: 100 logged values were not on disk yet"
    stalled.set()  # the disk comes back
    assert run._writer.join(30)
    assert json.loads((root / "slow" / "run.json").read_text())["exit_reason"] is None
    assert reopen(root, "slow").series("x").step.tolist() == list(range(100))


@pytest.mark.parametrize("disk", ["comes back", "stays stalled"])
def test_the_process_exit_waits_for_a_writer_still_writing_and_says_what_it_could_not_write(root, disk):
    code = textwrap.dedent(STALLED_DISK) + textwrap.dedent(
        """
        import sys
        import deepscope
        from deepscope import run as run_mod
        from deepscope.store import writer as writer_mod
        writer_mod.open = stalled_open
        run_mod.CLOSE_TIMEOUT, run_mod.EXIT_WAIT = 0.2, 3.0
        if sys.argv[2] == "comes back":
            threading.Thread(target=lambda: free.wait(1.0) or free.set(), daemon=True).start()  # during the exit
        run = deepscope.init(dir=sys.argv[1], id="slow")
        for step in range(100):
            run.log({"x": float(step)}, step=step)
        run.finish()
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run(
        [sys.executable, "-c", code, str(root), disk], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "waiting up to 3 s for run 'slow' to be written (100 logged values not on disk yet)" in p.stderr
    info = deepscope.open(root).info("slow")
    assert info.status == "finished"
    if disk == "comes back":
        assert info.exit_reason is None
        assert reopen(root, "slow").series("x").step.tolist() == list(range(100))
    else:
        lost = "100 logged values were never written: the writer had not finished when the process ended"
        assert info.exit_reason == lost and lost in p.stderr
