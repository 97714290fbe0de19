"""SIGKILL at random moments: the store always opens, reads without error, and keeps every flushed value."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import deepscope

CHILD = Path(__file__).with_name("crash_writer.py")
KILLS = 20


@pytest.mark.slow
def test_sigkill_never_loses_flushed_values(root):
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    reports = {}
    for i in range(KILLS):
        run_id = f"crash-{i:02d}"
        p = subprocess.Popen(
            [sys.executable, str(CHILD), str(root), run_id], stdout=subprocess.PIPE, text=True, env=env
        )
        first = p.stdout.readline()  # the writer is up
        assert first.startswith("flushed"), first
        lines = [first]
        deadline = time.monotonic() + 30
        # a loaded machine starts slowly: kill only once writing is under way
        while lines[-1] and int(lines[-1].split()[1]) < 0 and time.monotonic() < deadline:
            lines.append(p.stdout.readline())
        time.sleep(rng.uniform(0.05, 0.8))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        lines += out.splitlines()
        reports[run_id] = max(int(line.split()[1]) for line in lines if line.startswith("flushed"))

    store = deepscope.open(root)  # always opens
    assert {r.id for r in store.runs()} == set(reports)
    assert all(r.status in ("running", "crashed") for r in store.runs())
    for run_id, flushed in reports.items():
        reader = store.run(run_id)
        assert reader.corrupt_chunks == 0
        if flushed < 0:
            continue  # killed before its first flush completed
        x = reader.series("x")
        # a contiguous prefix 0..M with M >= what the child knew was on disk: nothing lost, no duplicates
        assert x.step[-1] >= flushed, (run_id, x.step[-1], flushed)
        np.testing.assert_array_equal(x.step, np.arange(len(x.step)))
        np.testing.assert_array_equal(x.value, x.step)
        np.testing.assert_array_equal(reader.series("y").value, -x.step)
    # at least some kills must have landed mid-stream for the test to mean anything
    assert sum(f > 1000 for f in reports.values()) >= KILLS // 2
