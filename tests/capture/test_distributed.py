"""Two DDP processes (gloo, CPU) write two rank streams of one run; the slowed rank is a straggler."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepscope
from deepscope.store.ranks import gradient_divergence, rank_summaries

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_ranks_and_straggler(root):
    port = free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(root), "1", "40"], env=env))
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = deepscope.open(root)
    (info,) = store.runs()
    assert info.world_size == 2 and info.status == "finished"
    reader = store.run(info.id)
    assert reader.ranks() == [0, 1]
    for rank in (0, 1):
        assert len(reader.series("train/loss", rank)) == 40
        acts = reader.layer_matrix("act", "mean", rank=rank)
        assert len(acts.step) == 40 and acts.names == ["0", "1", "2"]  # the paths of the model inside DDP
    summaries = {s.rank: s for s in rank_summaries(reader)}
    assert summaries[1].straggler and not summaries[0].straggler
    assert summaries[1].data_time > summaries[0].data_time + 0.02
    # the fast rank waits for the slow one inside its backward pass (the all-reduce)
    assert summaries[0].backward_time > summaries[1].backward_time
    steps, spread, norms = gradient_divergence(reader)
    assert len(steps) == 40 and set(norms) == {0, 1}
    assert np.all(np.isfinite(spread)) and np.all(spread >= 0)
