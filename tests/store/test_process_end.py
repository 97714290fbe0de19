"""A run left open in a ``multiprocessing`` worker is finished when the worker's target ends — a forked worker
runs no ``atexit`` (Lightning's ``ddp_fork``) —, crashed when it raises; and a forked worker never finishes the
copies of its parent's runs. A thread that dies of an uncaught exception leaves the runs it created crashed."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

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


def test_a_thread_that_raises_leaves_the_runs_it_created_crashed_and_the_others_go_on(root):
    """Only sys.excepthook was wrapped: a training thread's exception left its run to atexit, "finished"."""
    code = """
        import sys, threading, deepscope
        main = deepscope.init(dir=sys.argv[1], id="main")  # the main thread's: it goes on

        def train(run_id, fail):
            run = deepscope.init(dir=sys.argv[1], id=run_id)
            for step in range(3):
                run.log({"loss": 1.0}, step=step)
            if fail:
                raise ValueError("training thread crashed")

        for run_id, fail in (("in-thread", True), ("other-thread", False)):
            t = threading.Thread(target=train, args=(run_id, fail))
            t.start()
            t.join()
        print("still open:", sorted(r.id for r in deepscope.run.open_runs()), flush=True)
        main.log({"x": 1.0}, step=0)
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(root)], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "ValueError: training thread crashed" in p.stderr  # the previous hook still prints it
    assert "still open: ['main', 'other-thread']" in p.stdout
    store = deepscope.open(root)
    crashed = store.info("in-thread")
    assert (crashed.status, crashed.exit_reason) == ("crashed", "ValueError: training thread crashed")
    assert reopen(root, "in-thread").series("loss").step.tolist() == [0, 1, 2]
    assert store.info("other-thread").status == store.info("main").status == "finished"  # at exit
