"""run.json: identity, config, status from heartbeat, environment."""

from __future__ import annotations

import json
import os
import time

import deepscope
from deepscope.store import runmeta


def test_metadata_fields(root):
    cfg = {"lr": 1e-3, "model": {"depth": 4, "act": "relu"}, "layers": [1, 2]}
    run = deepscope.init(project="mnist", name="cnn-bn", config=cfg, dir=root, tags=["a", "b"], notes="n")
    info = deepscope.open(root).info(run.id)
    assert info.status == "running" and info.end_time is None
    run.finish()
    info = deepscope.open(root).info(run.id)
    assert (info.project, info.name, info.status, info.tags, info.notes) == (
        "mnist",
        "cnn-bn",
        "finished",
        ("a", "b"),
        "n",
    )
    assert info.config == cfg
    assert info.config_flat == {"lr": 1e-3, "model.depth": 4, "model.act": "relu", "layers": "[1, 2]"}
    assert info.end_time >= info.start_time and info.host and info.python_version
    assert info.world_size == 1


def test_crash_in_with_block_marks_crashed(root):
    try:
        with deepscope.init(dir=root, name="boom") as run:
            run.log({"x": 1.0})
            raise ValueError("bad batch")
    except ValueError:
        pass
    info = deepscope.open(root).info(run.id)
    assert info.status == "crashed" and "bad batch" in info.exit_reason


def test_stale_heartbeat_reads_as_crashed(root):
    run = deepscope.init(dir=root)
    run.finish()
    meta = json.loads((run.dir / "run.json").read_text())
    meta["status"] = "running"  # as if the writer died without finish()
    (run.dir / "run.json").write_text(json.dumps(meta))
    old = time.time() - 3600
    os.utime(run.dir / "streams" / "0" / "heartbeat", (old, old))
    info = deepscope.open(root).info(run.id)
    assert info.status == "crashed" and info.exit_reason == "heartbeat stopped"


def test_newer_format_is_refused_clearly(root):
    run = deepscope.init(dir=root)
    run.finish()
    meta = json.loads((run.dir / "run.json").read_text())
    meta["format_version"] = 99
    (run.dir / "run.json").write_text(json.dumps(meta))
    try:
        deepscope.open(root).info(run.id)
    except ValueError as e:
        assert "format 99" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_git_commit_recorded_inside_a_repo(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
        cwd=tmp_path,
        check=True,
    )
    assert len(runmeta.git_commit(tmp_path)) == 40
    assert runmeta.git_commit(tmp_path / "..") is None or True  # outside: whatever git says, never raises


def test_listing_and_unknown_ids(root):
    ids = [deepscope.init(dir=root, name=f"r{i}").id for i in range(3)]
    deepscope.finish()
    store = deepscope.open(root)
    assert sorted(r.id for r in store.runs()) == sorted(ids)
    for bad in ["nope", "..", "../x", "/etc", ""]:
        try:
            store.run(bad)
        except KeyError:
            continue
        raise AssertionError(bad)


def test_listing_skips_a_run_in_a_newer_format_and_shows_progress(root):
    ok = deepscope.init(dir=root, name="ok")
    for i in range(5):
        ok.log({"x": i}, step=i)
    ok.finish()
    newer = deepscope.init(dir=root, name="newer")
    newer.finish()
    meta = json.loads((newer.dir / "run.json").read_text())
    meta["format_version"] = 99
    (newer.dir / "run.json").write_text(json.dumps(meta))
    (info,) = deepscope.open(root).runs()
    assert info.id == ok.id and info.max_step == 4


def test_uncaught_exception_marks_the_run_crashed(root):
    import subprocess
    import sys

    script = f"import deepscope\nrun = deepscope.init(dir={str(root)!r}, id='dies')\nrun.log({{'x': 1.0}})\n"
    script += "raise ValueError('bad data')\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "ValueError: bad data" in out.stderr
    info = deepscope.open(root).info("dies")
    assert info.status == "crashed" and info.exit_reason == "ValueError: bad data"
    assert deepscope.open(root).run("dies").series("x").value.tolist() == [1.0]


def test_signal_handlers_are_installed_while_a_run_is_live_and_restored_after(root):
    import signal

    def mine(signum, frame):  # the user's own handler, in place before deepscope
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        first = deepscope.init(dir=root, name="a")
        second = deepscope.init(dir=root, name="b")
        assert signal.getsignal(signal.SIGTERM) is not mine  # finishes the live runs, then calls `mine`
        first.finish()
        assert signal.getsignal(signal.SIGTERM) is not mine  # "b" is still live
        second.finish()
        assert signal.getsignal(signal.SIGTERM) is mine
        third = deepscope.init(dir=root, name="c")  # and again for the next run
        assert signal.getsignal(signal.SIGTERM) is not mine
        third.finish()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_marks_a_live_run_crashed_and_ends_the_process(root):
    import signal
    import subprocess
    import sys

    script = (
        f"import deepscope, sys, time\nrun = deepscope.init(dir={str(root)!r}, id='killed')\nrun.log({{'x': 1.0}})\n"
    )
    script += "print('ready', flush=True)\ntime.sleep(60)\n"
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
    info = deepscope.open(root).info("killed")
    assert info.status == "crashed" and info.exit_reason == "SIGTERM"
    assert deepscope.open(root).run("killed").series("x").value.tolist() == [1.0]


def _ctrl_c_script(root, body: str, run_id: str = "r") -> str:
    """A script with a live run that sends itself SIGINT (as Ctrl-C does) where ``body`` says ``ctrl_c()``."""
    return (
        "import os, signal, time, deepscope\n"
        "ctrl_c = lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5))\n"
        f"run = deepscope.init(dir={str(root)!r}, id={run_id!r})\n" + body
    )


def _python(script: str):
    import subprocess
    import sys

    from tests.test_cli import ctrl_c_as_at_a_terminal

    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          preexec_fn=ctrl_c_as_at_a_terminal)  # fmt: skip


def test_a_caught_ctrl_c_leaves_the_run_open_and_it_ends_as_interrupted(root):
    """Training code that catches KeyboardInterrupt (to save a checkpoint, or a notebook that goes on) can still log;
    the run is marked interrupted when the script ends."""
    body = (
        "try:\n    run.log({'x': 1.0}, step=0)\n    ctrl_c()\nexcept KeyboardInterrupt:\n"
        "    run.log({'saved': 1.0}, step=1)\nprint('after', run.finished, flush=True)\n"
    )
    out = _python(_ctrl_c_script(root, body))
    assert out.returncode == 0 and "after False" in out.stdout, out.stderr
    info = deepscope.open(root).info("r")
    assert (info.status, info.exit_reason) == ("finished", "interrupted (SIGINT)")
    assert deepscope.open(root).run("r").series("saved").value.tolist() == [1.0]


def test_an_uncaught_ctrl_c_or_one_leaving_a_with_block_ends_the_run_as_interrupted(root):
    out = _python(_ctrl_c_script(root, "run.log({'x': 1.0})\nctrl_c()\n"))
    assert out.returncode == -2 and "KeyboardInterrupt" in out.stderr  # Python ends by the signal
    assert deepscope.open(root).info("r").exit_reason == "interrupted (SIGINT)"
    body = f"with deepscope.init(dir={str(root)!r}, id='w') as w:\n    w.log({{'x': 1.0}})\n    ctrl_c()\n"
    _python(_ctrl_c_script(root, "run.finish()\n" + body, run_id="first"))
    info = deepscope.open(root).info("w")
    assert (info.status, info.exit_reason) == ("finished", "interrupted (SIGINT)")


def test_a_second_ctrl_c_while_the_run_is_written_out_loses_nothing(root):
    """A second Ctrl-C (or a process group's) during finish() used to raise inside the writer's close: the values it
    still held were lost and the run stayed "running" (later read as crashed)."""
    body = (
        "for i in range(50):\n    run.log({'x': float(i)})\n"
        "close = run._writer.close\n"
        "def slow_close(timeout=30.0):\n    ctrl_c()\n    close(timeout)\n"
        "run._writer.close = slow_close\n"
        "ctrl_c()\n"
    )
    out = _python(_ctrl_c_script(root, body))
    assert "writing the runs out" in out.stderr
    info = deepscope.open(root).info("r")
    assert (info.status, info.exit_reason) == ("finished", "interrupted (SIGINT)")
    assert deepscope.open(root).run("r").series("x").value.tolist() == [float(i) for i in range(50)]


def test_a_signal_while_a_run_is_written_out_is_handled_once_it_is(root):
    """A sweep finishing one run when SIGTERM comes: that run is written out whole, then the signal does what it
    does — the next run is marked crashed and the process ends (it was dropped: the sweep went on)."""
    import signal

    body = (
        "close = run._writer.close\n"
        "def slow_close(timeout=30.0):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(0.3)\n"
        "    close(timeout)\n"
        "run._writer.close = slow_close\n"
        "run.log({'x': 1.0})\n"
        f"nxt = deepscope.init(dir={str(root)!r}, id='next')\n"
        "run.finish()\n"
        "print('went on', flush=True)\n"
    )
    out = _python(_ctrl_c_script(root, body))
    assert out.returncode == -signal.SIGTERM and "went on" not in out.stdout, out.stderr
    first = deepscope.open(root).info("r")
    assert first.status == "finished" and deepscope.open(root).run("r").series("x").value.tolist() == [1.0]
    assert (deepscope.open(root).info("next").status, deepscope.open(root).info("next").exit_reason) == (
        "crashed",
        "SIGTERM",
    )


def test_sys_exit_after_a_caught_ctrl_c_ends_the_run_as_interrupted(root):
    """``except KeyboardInterrupt: save(); sys.exit(130)`` — Lightning stops on Ctrl-C the same way."""
    body = (
        f"with deepscope.init(dir={str(root)!r}, id='w') as w:\n"
        "    try:\n        ctrl_c()\n    except KeyboardInterrupt:\n        w.log({'saved': 1.0})\n"
        "        raise SystemExit(130)\n"
    )
    out = _python(_ctrl_c_script(root, "run.finish()\n" + body, run_id="first"))
    assert out.returncode == 130, out.stderr
    info = deepscope.open(root).info("w")
    assert (info.status, info.exit_reason) == ("finished", "interrupted (SIGINT)")


def test_a_sigterm_the_user_handles_leaves_the_runs_open_to_their_handler(root):
    """A preemption handler that saves a checkpoint and logs it: the run is still open when it runs."""
    body = (
        "import sys\n"
        "def preempted(signum, frame):\n    run.log({'checkpoint': 1.0})\n    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, preempted)\n"
        f"run = deepscope.init(dir={str(root)!r}, id='p')\n"
        "run.log({'x': 1.0})\n"
        "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(1)\n"
    )
    out = _python(_ctrl_c_script(root, "run.finish()\n" + body, run_id="first"))
    assert out.returncode == 0, out.stderr
    info = deepscope.open(root).info("p")
    assert (info.status, info.exit_reason) == ("finished", "interrupted (SIGTERM)")
    assert deepscope.open(root).run("p").series("checkpoint").value.tolist() == [1.0]


def test_a_config_may_be_a_namespace_or_a_dataclass_and_nested_ones_are_settings_of_their_own(root):
    import argparse
    import dataclasses

    @dataclasses.dataclass
    class Optim:
        lr: float = 1e-3
        betas: tuple = (0.9, 0.99)

    @dataclasses.dataclass
    class Config:
        model: str = "mlp"
        optim: Optim = dataclasses.field(default_factory=Optim)

    args = argparse.Namespace(epochs=3, config=Config(), tags=["a"])
    run = deepscope.init(dir=root, config=args)
    run.finish()
    info = deepscope.open(root).info(run.id)
    assert info.config == {"epochs": 3, "config": {"model": "mlp", "optim": {"lr": 1e-3, "betas": [0.9, 0.99]}},
                           "tags": ["a"]}  # fmt: skip
    meta = json.loads((root / run.id / "run.json").read_text())
    assert meta["config_flat"]["config.optim.lr"] == 1e-3 and meta["config_flat"]["config.model"] == "mlp"


def test_config_values_without_a_json_form_are_kept_as_a_person_would_write_them(root):
    """Two runs of one config store the same text (no memory address), numbers stay numbers."""
    import enum

    import numpy as np
    import torch

    class Mode(enum.Enum):
        FAST = 1

    class Plain:
        pass

    def config():
        return {"fn": lambda x: x, "obj": Plain(), "small": torch.ones(2), "big": torch.zeros(10, 10),
                "one": torch.tensor(0.5), "arr": np.arange(3), "mode": Mode.FAST, "act": torch.relu,
                "module": torch.nn.ReLU, "dtype": torch.float16, "device": torch.device("cpu")}  # fmt: skip

    stored = []
    for _ in range(2):
        with deepscope.init(project="p", dir=root, config=config()) as run:
            pass
        stored.append(json.loads((root / run.id / "run.json").read_text())["config"])
    assert stored[0] == stored[1]
    c = stored[0]
    assert c["fn"].endswith(".<lambda>") and " at 0x" not in c["obj"] and c["obj"].endswith("Plain object>")
    assert (c["small"], c["big"], c["one"], c["arr"]) == ([1.0, 1.0], "Tensor of shape (10, 10)", 0.5, [0, 1, 2])
    assert (c["mode"], c["act"], c["module"]) == ("Mode.FAST", "torch.relu", "torch.nn.modules.activation.ReLU")
    assert (c["dtype"], c["device"]) == ("torch.float16", "cpu")
