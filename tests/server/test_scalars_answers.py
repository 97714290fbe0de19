"""Shared ``/scalars`` answers: identical questions share one encoding, and new data makes a new one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import deepscope
from deepscope.server import queries
from deepscope.server.live import LiveHub


def _steps(answer: bytes) -> list[float]:
    return pa.ipc.open_stream(answer).read_all()["step"].to_pylist()


def test_identical_questions_share_an_answer_until_the_run_grows(root):
    run = deepscope.init(dir=root, flush_interval=0.05)
    for i in range(10):
        run.log({"a": float(i)}, step=i)
    run.flush()
    store = deepscope.open(root)
    first = queries.scalars_answer(store, run.id, "a", start=5)
    assert _steps(first) == [5, 6, 7, 8, 9]
    assert queries.scalars_answer(store, run.id, "a", start=5) is first  # computed once
    assert _steps(queries.scalars_answer(store, run.id, "a", start=8)) == [8, 9]  # another question

    run.log({"a": 10.0}, step=10)
    run.flush()
    assert queries.scalars_answer(store, run.id, "a", start=5) is first  # not refreshed yet: same data
    store.run(run.id).refresh()
    assert _steps(queries.scalars_answer(store, run.id, "a", start=5)) == [5, 6, 7, 8, 9, 10]
    assert store.run(run.id).refresh().new_values == 0
    again = queries.scalars_answer(store, run.id, "a", start=5)
    assert queries.scalars_answer(store, run.id, "a", start=5) is again  # nothing new: still shared
    run.finish()


def test_the_answer_matches_the_query_it_encodes(root):
    with deepscope.init(dir=root) as run:
        for i in range(3000):
            run.log({"a": np.sin(i / 100)}, step=i)
    store = deepscope.open(root)
    table = pa.ipc.open_stream(queries.scalars_answer(store, run.id, "a", buckets=100)).read_all()
    d = queries.scalars(store, run.id, "a", buckets=100)
    assert table.schema.metadata[b"exact"] == b"false"
    np.testing.assert_array_equal(table["step"].to_numpy(), d.step.astype(np.float64))
    np.testing.assert_array_equal(table["min"].to_numpy(), d.min)
    np.testing.assert_array_equal(table["count"].to_numpy(), d.count)
    assert table.schema.field("count").type == pa.int32()


def test_the_poller_reads_the_values_of_running_runs_ahead_of_queries(root):
    run = deepscope.init(dir=root, flush_interval=0.05)
    run.log({"a": 1.0}, step=0)
    run.flush()
    with deepscope.init(dir=root) as done:
        done.log({"a": 1.0}, step=0)
    store = deepscope.open(root)
    hub = LiveHub(store)
    hub.poll_runs()
    hub.poll_tails()
    assert store.is_open(run.id)  # tails of a running run are answered from memory at once
    assert not store.is_open(done.id)  # a finished run is read when asked
    run.finish()
