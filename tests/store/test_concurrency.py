"""Four writer processes (two runs × two ranks) and a live reader: exact counts, no duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import deepscope

N = 30_000
WRITER = """
import sys, deepscope
root, run_id, rank, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
run = deepscope.init(dir=root, id=run_id, name=run_id, rank=rank, world_size=2, flush_interval=0.05)
for i in range(n):
    run.log({"a": i, "b": rank * 1000000 + i}, step=i)
    if i % 1000 == 0:
        run.event("note", f"rank {rank} at {i}", step=i)
run.finish()
"""


@pytest.mark.slow
def test_four_writers_and_a_live_reader(root):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # rank 0 of each run creates run.json first, as a launcher would
    for run_id in ("alpha", "beta"):
        deepscope.init(dir=root, id=run_id, rank=0, world_size=2).finish()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), run_id, str(rank), str(N)], env=env)
        for run_id in ("alpha", "beta")
        for rank in (0, 1)
    ]
    for run_id in ("alpha", "beta"):
        (root / run_id / "run.json").unlink()  # let the writers own run.json from here on
    store = None
    seen = {}
    deadline = time.time() + 120
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        if store is None and all((root / r / "run.json").exists() for r in ("alpha", "beta")):
            store = deepscope.open(root)
        if store is not None:
            for run_id in ("alpha", "beta"):
                reader = store.run(run_id)
                reader.refresh()
                for rank in reader.ranks():
                    if "a" not in {k.key for k in reader.keys(rank)}:
                        continue
                    s = reader.series("a", rank)
                    # live view: always a duplicate-free prefix, never shrinking
                    np.testing.assert_array_equal(s.step, np.arange(len(s)))
                    assert len(s) >= seen.get((run_id, rank), 0)
                    seen[run_id, rank] = len(s)
        time.sleep(0.05)
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    store = deepscope.open(root)
    for run_id in ("alpha", "beta"):
        reader = store.run(run_id)
        assert reader.ranks() == [0, 1]
        assert store.info(run_id).world_size == 2
        for rank in (0, 1):
            a, b = reader.series("a", rank), reader.series("b", rank)
            np.testing.assert_array_equal(a.value, np.arange(N))
            np.testing.assert_array_equal(b.value, rank * 1000000 + np.arange(N))
            assert len([e for e in reader.events(rank) if e.kind == "note"]) == N // 1000
    assert len(seen) >= 2  # the reader really watched the writers live


def test_a_second_live_writer_of_a_stream_is_refused(root):
    first = deepscope.init(dir=root, id="one")
    with pytest.raises(RuntimeError, match="another live process"):
        deepscope.init(dir=root, id="one", resume=True)
    first.finish()
    again = deepscope.init(dir=root, id="one", resume=True)  # the lock dies with its writer
    again.finish()
