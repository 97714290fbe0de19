"""A run resumed in a new ``deepscope.init(id=..., resume=True)``: its steps continue, its metadata stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope


def _train(run: deepscope.Run, model: nn.Module, steps: int, step0: int | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run.watch(model, opt, histograms_every=0, diagnose=False, **({} if step0 is None else {"start_step": step0}))
    for _ in range(steps):
        loss = model(torch.randn(4, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"train/loss": loss})  # no step given: counted by the run
    run.finish()


def test_a_resumed_run_continues_its_steps(root):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    _train(deepscope.init(dir=root, id="r"), model, 5)
    _train(deepscope.init(dir=root, id="r", resume=True), model, 3)
    r = reopen(root, "r")
    assert r.layer_steps().tolist() == list(range(8))  # not 0–2 again, over the first session's statistics
    assert r.series("train/loss").step.tolist() == list(range(8))
    assert r.series("sys/step_time").step.tolist() == list(range(8))
    assert not [e for e in r.events() if e.kind == "step_regression"]


@pytest.mark.parametrize("heartbeat", ["empty", "missing"])
def test_a_resumed_run_whose_heartbeat_was_lost_counts_on_from_its_data(root, heartbeat):
    """A process killed while it wrote its heartbeat left it empty: the steps on disk still say where to go on."""
    run = deepscope.init(dir=root, id="h")
    for i in range(6):
        run.log({"x": float(i)})
    run.finish()
    beat = run.dir / "streams" / "0" / "heartbeat"
    beat.write_text("") if heartbeat == "empty" else beat.unlink()
    again = deepscope.init(dir=root, id="h", resume=True)
    again.log({"x": 6.0})
    again.finish()
    assert reopen(root, "h").series("x").step.tolist() == list(range(7))
    assert not (run.dir / "streams" / "0" / "heartbeat.tmp").exists()


def test_resuming_from_an_earlier_checkpoint_is_flagged(root):
    """A training that resumes from an earlier checkpoint passes its own step: going back is an event."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 2))
    _train(deepscope.init(dir=root, id="r"), model, 6)
    run = deepscope.init(dir=root, id="r", resume=True)
    with pytest.warns(RuntimeWarning, match="step went backwards from 5 to 3"):
        run.log({"train/loss": 1.0}, step=3)
    run.finish()
    assert [e.step for e in reopen(root, "r").events() if e.kind == "step_regression"] == [3]


def test_a_resumed_run_keeps_its_metadata(root):
    deepscope.init(dir=root, id="m", project="p", name="nice name", config={"lr": 1, "depth": 4},
                   tags=["a"], notes="first").finish()  # fmt: skip
    deepscope.init(dir=root, id="m", resume=True, config={"lr": 0.5}).finish()
    info = deepscope.open(root).info("m")
    assert (info.project, info.name, info.tags, info.notes) == ("p", "nice name", ("a",), "first")
    assert info.config == {"lr": 0.5, "depth": 4}  # updated with the new values
    deepscope.init(dir=root, id="m", resume=True, name="renamed", tags=["b"]).finish()
    info = deepscope.open(root).info("m")
    assert (info.name, info.tags) == ("renamed", ("b",))


def test_ranks_resume_from_the_highest_step_of_any_rank(root):
    """Rank 0 logged one step more than rank 1 (a final evaluation): both resume after it, aligned."""
    for rank, steps in ((0, 6), (1, 5)):
        run = deepscope.init(dir=root, id="d", rank=rank, world_size=2)
        for s in range(steps):
            run.log({"x": float(s)}, step=s)
        run.finish()
    runs = [deepscope.init(dir=root, id="d", rank=rank, world_size=2, resume=True) for rank in (0, 1)]  # together
    for run in runs:
        run.log({"x": 9.0})  # no step: the next one
        run.finish()
    r = reopen(root, "d")
    assert r.series("x", rank=0).step.tolist()[-1] == 6 and r.series("x", rank=1).step.tolist()[-1] == 6


def test_resume_without_an_id_warns_and_an_unnamed_run_id_holds_the_time_once(root):
    with pytest.warns(RuntimeWarning, match="resume=True without an id") as caught:
        run = deepscope.init(dir=root, resume=True)
    assert caught[0].filename == __file__  # pointed at the caller's line
    run.finish()
    stamp = run.name.removeprefix("run-")  # YYYYmmdd-HHMMSS
    assert run.name.startswith("run-") and run.id.count(stamp) == 1
    assert run.id.startswith(run.name) and len(run.id) == len(run.name) + 5  # "-" and 4 hex digits


def test_init_under_a_launcher_before_the_process_group_warns_that_ranks_would_split(root, monkeypatch):
    """torchrun sets RANK and WORLD_SIZE: a run started before dist.init_process_group() cannot share rank 0's id."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.warns(RuntimeWarning, match=r"rank 1 of 2 .* after dist.init_process_group\(\)") as caught:
        run = deepscope.init(dir=root)
    assert caught[0].filename == __file__  # pointed at the caller's line
    run.finish()
    monkeypatch.setenv("DEEPSCOPE_RUN_ID", "shared")  # the way out it names: no warning
    shared = deepscope.init(dir=root)
    shared.finish()
    assert shared.id == "shared" and shared.rank == 1


def test_a_resumed_run_without_a_heartbeat_and_with_a_torn_tail_counts_on_from_its_data(root):
    """After a power loss the heartbeat may be gone and a segment's tail zero-filled: the steps before it count."""
    run = deepscope.init(dir=root, id="t")
    for i in range(10):
        run.log({"x": float(i)})
    run.finish()
    stream = run.dir / "streams" / "0"
    (stream / "heartbeat").unlink()
    with open(next(stream.glob("scalars-*.arrows")), "ab") as f:
        f.write(b"\0" * 4096)
    again = deepscope.init(dir=root, id="t", resume=True)
    again.log({"x": 10.0})
    again.finish()
    assert reopen(root, "t").series("x").step.tolist()[-1] == 10


def test_values_logged_after_a_resume_from_an_earlier_checkpoint_keep_the_watchs_steps(root):
    """Resumed with start_step=5 after steps 0–9: the loss of step 5 goes to step 5 (flagged as going back), not onto
    step 9 with the four after it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    _train(deepscope.init(dir=root, id="c"), model, 10)
    with pytest.warns(RuntimeWarning, match="step went backwards"):
        _train(deepscope.init(dir=root, id="c", resume=True), model, 4, step0=5)
    steps = reopen(root, "c").series("train/loss").step.tolist()
    assert steps == sorted([*range(10), 5, 6, 7, 8])  # each of 5–8 twice: the first session and the resumed one


def test_a_resume_logging_earlier_steps_than_its_watch_counts_says_how_to_align_them(root):
    """Resumed without start_step after steps 0–9, the loop logs its checkpoint's steps from 5: the warning says the
    watch counts on from step 10 and how to give it the checkpoint's step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    _train(deepscope.init(dir=root, id="w"), model, 10)
    run = deepscope.init(dir=root, id="w", resume=True)
    run.watch(model, torch.optim.SGD(model.parameters(), lr=0.01), diagnose=False)
    with pytest.warns(RuntimeWarning, match=r"count on from step 10: .* run.watch\(\.\.\., start_step=5\)"):
        run.log({"train/loss": 1.0}, step=5)
    run.finish()


def test_a_resume_records_how_the_run_had_ended(root):
    run = deepscope.init(dir=root, id="e")
    run.log({"x": 1.0}, step=3)
    run.finish("crashed", "ValueError: boom")
    again = deepscope.init(dir=root, id="e", resume=True)
    again.log({"x": 2.0})
    again.finish()
    events = [(e.step, e.kind, e.text) for e in reopen(root, "e").events()]
    assert events == [(4, "resumed", "resumed; it was crashed (ValueError: boom)")]


def _child(code: str, *args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, **popen)


KILLED_AFTER_A_FLUSH = """
    import os, signal, sys
    import deepscope
    from deepscope.store.writer import StreamWriter
    if sys.argv[2] == "between":  # killed after the chunk of steps 100-199 is written, before its heartbeat
        touch = StreamWriter._touch_heartbeat
        def touch_or_die(self):
            if self.flushed_step >= 150:
                os.kill(os.getpid(), signal.SIGKILL)
            touch(self)
        StreamWriter._touch_heartbeat = touch_or_die
    run = deepscope.init(dir=sys.argv[1], id="k", flush_interval=60)
    for step in range(100):
        run.log({"x": float(step)})
    run.flush()
    for step in range(100, 200):
        run.log({"x": float(step)})
    run.flush()  # on disk: an OOM killer or a preemption comes now
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL: POSIX only")
@pytest.mark.parametrize("moment", ["after", "between"])
def test_a_run_killed_with_sigkill_resumes_after_the_last_step_on_disk(root, moment):
    """The heartbeat went at most once a second: a run killed (OOM, SIGKILL) resumed below steps it had written
    and recorded them twice. "between": killed after a chunk was written, before the heartbeat that follows it."""
    child = _child(KILLED_AFTER_A_FLUSH, root, moment)
    assert child.wait(60) == -signal.SIGKILL
    assert reopen(root, "k").series("x").step.tolist() == list(range(200))
    run = deepscope.init(dir=root, id="k", resume=True)
    run.log({"x": 200.0})
    run.finish()
    assert reopen(root, "k").series("x").step.tolist() == list(range(201))  # none twice


def test_a_step_0_of_another_rank_counts_on_resume(root):
    """Rank 1 recorded step 0 only: rank 0, resumed, goes on at step 1 (a heartbeat's 0 was taken for none)."""
    deepscope.init(dir=root, id="z", rank=0, world_size=2).finish()
    other = deepscope.init(dir=root, id="z", rank=1, world_size=2)
    other.log({"x": 0.0}, step=0)
    other.finish()
    run = deepscope.init(dir=root, id="z", rank=0, world_size=2, resume=True)
    run.log({"x": 1.0})
    run.finish()
    assert reopen(root, "z").series("x", rank=0).step.tolist() == [1]


@pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only")
def test_resuming_a_run_another_process_writes_is_refused_before_it_changes_a_file(root):
    child = _child(
        """
        import sys, deepscope
        run = deepscope.init(dir=sys.argv[1], id="live", name="first", config={"lr": 1})
        run.log({"x": 1.0}, step=0)
        run.flush()
        print("ready", flush=True)
        sys.stdin.read()  # until the test is done
        run.finish()
        """,
        root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        stream = root / "live" / "streams" / "0"
        before = {p: p.read_bytes() for p in (root / "live" / "run.json", stream / "stream.json")}
        with pytest.raises(RuntimeError, match="another live process"):
            deepscope.init(dir=root, id="live", resume=True, name="second", config={"lr": 2})
        assert {p: p.read_bytes() for p in before} == before
    finally:
        child.communicate("", timeout=60)
    info = deepscope.open(root).info("live")
    assert (info.status, info.name, info.config) == ("finished", "first", {"lr": 1})
