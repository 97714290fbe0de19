"""Shared ``/scalars`` answers: identical questions share one encoding, and new data makes a new one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tests.server.helpers import STEPS

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


def test_answers_are_bounded_by_bytes_oldest_first():
    answers = queries._Answers(size=100, max_bytes=1000)
    for i in range(10):
        answers.put(("run", "a", i), 0, bytes(300))
    assert answers.nbytes == 900 and [answers.get(("run", "a", i), 0) is not None for i in (6, 7, 8, 9)] == [
        False, True, True, True]  # fmt: skip
    answers.put(("run", "a", 9), 0, bytes(50))  # replaced: counted once
    assert answers.nbytes == 650
    answers.put(("run", "big"), 0, bytes(1001))  # larger than the whole cache: not kept, nothing dropped
    assert answers.get(("run", "big"), 0) is None and answers.nbytes == 650
    small = queries._Answers(size=3)
    for i in range(5):
        small.put((i,), 0, b"x")
    assert [small.get((i,), 0) for i in range(5)] == [None, None, b"x", b"x", b"x"]


def test_an_answer_not_shared_yet_is_computed_off_the_event_loop_unless_a_live_tail(store, client, monkeypatch):
    """Even of a run in memory: a 10,000-bucket zoom into a million points held /api/health and /api/live up. A
    tail of a few steps costs less than the thread hop: answered at once."""
    import asyncio

    on_loop: list[bool] = []
    scalars = queries.scalars

    def recording(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return scalars(*args, **kwargs)

    monkeypatch.setattr(queries, "scalars", recording)
    monkeypatch.setattr(queries, "TAIL_STEPS", 100, raising=False)
    client.app.state.store.run(store.main).load()
    assert client.app.state.store.is_open(store.main)
    url = f"/api/runs/{store.main}/scalars"
    whole = {"key": "train/loss", "buckets": 7}
    first = client.get(url, params=whole)
    again = client.get(url, params=whole)  # shared: from the event loop, no work
    assert first.status_code == again.status_code == 200 and first.content == again.content
    assert client.get(url, params=whole | {"start": STEPS - 1 - queries.TAIL_STEPS}).status_code == 200
    assert client.get(url, params=whole | {"start": STEPS - 10}).status_code == 200  # a live tail
    assert on_loop == [False, False, True]
