"""A run left open in a ``multiprocessing`` worker is finished when the worker's target ends — a forked worker
runs no ``atexit`` (Lightning's ``ddp_fork``) —, crashed when it raises; and a forked worker never finishes the
copies of its parent's runs."""

from __future__ import annotations

import multiprocessing
import sys

import pytest
from tests.conftest import reopen

import deepscope

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork: POSIX only")


def _worker(root: str, fail: bool) -> None:
    run = deepscope.init(dir=root, id="in-worker")
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    if fail:
        raise RuntimeError("worker failed")
    # left open, as a callback leaves the run of a training that ended: the worker's end finishes it


def _start(root, fail: bool) -> int:
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_worker, args=(str(root), fail))
    p.start()
    p.join(60)
    return p.exitcode


def test_a_run_left_open_in_a_forked_worker_is_finished_with_all_it_logged(root):
    assert _start(root, fail=False) == 0
    info = deepscope.open(root).info("in-worker")
    assert info.status == "finished"
    assert reopen(root, "in-worker").series("loss").step.tolist() == [0, 1, 2]


def test_a_forked_worker_that_raises_leaves_its_run_crashed(root):
    assert _start(root, fail=True) == 1
    info = deepscope.open(root).info("in-worker")
    assert info.status == "crashed" and info.exit_reason == "RuntimeError: worker failed"
    assert reopen(root, "in-worker").series("loss").step.tolist() == [0, 1, 2]


def test_a_forked_worker_leaves_its_parents_runs_alone(root):
    with deepscope.init(dir=root, id="parent") as parent:
        parent.log({"x": 1.0}, step=0)
        parent.flush()
        assert _start(root / "child", fail=False) == 0
        assert deepscope.open(root).info("parent").status == "running"  # the child did not finish it
        parent.log({"x": 2.0}, step=1)
    assert deepscope.open(root).info("parent").status == "finished"
    assert reopen(root, "parent").series("x").step.tolist() == [0, 1]
