"""Every logged value comes back exactly, compared against NumPy arrays kept on the side."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import reopen

import deepscope


def test_scalars_roundtrip_exactly(root):
    rng = np.random.default_rng(0)
    truth = {k: rng.normal(size=500) for k in ("train/loss", "train/acc", "lr")}
    with deepscope.init(project="p", name="rt", dir=root) as run:
        for i in range(500):
            run.log({k: float(v[i]) for k, v in truth.items()}, step=i)
    reader = reopen(root, run.id)
    for k, v in truth.items():
        s = reader.series(k)
        np.testing.assert_array_equal(s.value, v)
        np.testing.assert_array_equal(s.step, np.arange(500))
        assert np.all(np.diff(s.wall_time) >= 0)


def test_mixed_key_sets_and_tensors(root):
    torch = pytest.importorskip("torch")
    with deepscope.init(dir=root) as run:
        for i in range(100):
            row = {"a": i, "t": torch.tensor(i / 2)}
            if i % 3 == 0:
                row["b"] = np.float32(i)
            run.log(row, step=i)
    r = reopen(root, run.id)
    np.testing.assert_array_equal(r.series("a").value, np.arange(100))
    np.testing.assert_allclose(r.series("t").value, np.arange(100) / 2)
    np.testing.assert_array_equal(r.series("b").step, np.arange(0, 100, 3))


def test_tensor_updated_in_place_after_log_keeps_logged_value(root):
    torch = pytest.importorskip("torch")
    acc = torch.zeros(())
    with deepscope.init(dir=root) as run:
        for i in range(10):
            acc += 1
            run.log({"acc": acc}, step=i)
    np.testing.assert_array_equal(reopen(root, run.id).series("acc").value, np.arange(1, 11))


def test_nan_and_inf_are_stored_and_counted(root):
    vals = [1.0, float("nan"), float("inf"), -float("inf"), 2.0]
    with deepscope.init(dir=root) as run:
        for i, v in enumerate(vals):
            run.log({"x": v}, step=i)
    r = reopen(root, run.id)
    np.testing.assert_array_equal(r.series("x").value, np.array(vals))
    d = r.downsample("x", buckets=1)
    assert d.count.tolist() == [5] and d.nonfinite.tolist() == [3]
    assert d.min[0] == 1.0 and d.max[0] == 2.0 and d.mean[0] == 1.5


def test_step_defaults_to_next_step(root):
    with deepscope.init(dir=root) as run:
        run.log({"x": 1})
        run.log({"x": 2})
        run.log({"x": 3}, step=10)
        run.log({"x": 4})
    assert reopen(root, run.id).series("x").step.tolist() == [0, 1, 10, 11]


def test_step_going_backwards_is_kept_and_flagged(root):
    run = deepscope.init(dir=root)
    run.log({"x": 1}, step=5)
    with pytest.warns(RuntimeWarning, match="step went backwards"):
        run.log({"x": 2}, step=3)
    run.log({"x": 3}, step=4)
    run.finish()
    r = reopen(root, run.id)
    s = r.series("x")
    assert s.step.tolist() == [3, 4, 5] and s.value.tolist() == [2, 3, 1]
    assert [e.kind for e in r.events()] == ["step_regression"]


def test_histograms_from_values_match_numpy(root):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=10_000)
    with deepscope.init(dir=root) as run:
        run.log_histogram("np", x, step=0, bins=32)
        run.log_histogram("pt", torch.from_numpy(x), step=1, bins=32)
        run.log_histogram("given", counts=[1, 2, 3], edges=[0, 1, 2, 4], step=2)
    r = reopen(root, run.id)
    want, edges = np.histogram(x, bins=32)
    (h,) = r.histograms("np")
    np.testing.assert_array_equal(h.counts, want)
    np.testing.assert_allclose(h.edges, edges)
    (ht,) = r.histograms("pt")
    assert ht.counts.sum() == x.size
    np.testing.assert_allclose(ht.edges, edges, rtol=1e-5)
    # float32 binning on the device may move a value that lies on an edge by one bin
    assert np.abs(ht.counts - want).sum() <= 4
    (hg,) = r.histograms("given")
    assert hg.counts.tolist() == [1, 2, 3] and hg.edges.tolist() == [0, 1, 2, 4]


def test_events(root):
    with deepscope.init(dir=root) as run:
        run.event("note", "switched to cosine schedule", step=7)
        run.event("alert", "loss spike", severity="warning", key="train/loss")
    evs = reopen(root, run.id).events()
    assert [(e.kind, e.text, e.step, e.severity, e.key) for e in evs] == [
        ("note", "switched to cosine schedule", 7, "info", None),
        ("alert", "loss spike", None, "warning", "train/loss"),
    ]


def test_module_level_api(root):
    run = deepscope.init(dir=root, name="m")
    deepscope.log({"x": 1.0}, step=0)
    deepscope.event("note", "hi")
    deepscope.finish()
    assert run.finished
    with pytest.raises(RuntimeError, match="no active run"):
        deepscope.log({"x": 1.0})


def test_an_older_open_run_does_not_become_current_when_the_newer_finishes(root):
    left_open = deepscope.init(dir=root, name="left-open")  # e.g. an exception skipped its finish
    newer = deepscope.init(dir=root, name="newer")
    newer.finish()
    with pytest.raises(RuntimeError, match=f"no active run.*open, but not current: {left_open.id}"):
        deepscope.log({"x": 1.0})  # not silently into left-open, which the message names
    left_open.finish()
    assert not deepscope.open(root).run(left_open.id).keys()


def test_keys_are_gathered_lazily_and_correctly_across_refreshes(root):
    run = deepscope.init(dir=root, flush_interval=0.01)
    reader = None
    for part in range(4):
        for i in range(part * 50, (part + 1) * 50):
            run.log({"a": i, "b": -i, **({"c": 2 * i} if i % 2 else {})}, step=i)
        run.flush()
        reader = reader or deepscope.open(root).run(run.id)
        reader.refresh()
        np.testing.assert_array_equal(reader.series("a").value, np.arange((part + 1) * 50))  # "a" every time
        if part == 1:
            np.testing.assert_array_equal(reader.series("c").value, 2 * np.arange(1, 100, 2))
    run.finish()
    reader.refresh()
    counts = {k.key: (k.count, k.last_step) for k in reader.keys()}
    assert counts == {"a": (200, 199), "b": (200, 199), "c": (100, 199)}
    np.testing.assert_array_equal(reader.series("b").value, -np.arange(200))  # first asked at the very end
    np.testing.assert_array_equal(reader.series("c").value, 2 * np.arange(1, 200, 2))
    assert reader._ranks[0].chunks == []  # every key has gathered every chunk: nothing is held twice


def test_events_are_read_without_loading_the_run(root):
    with deepscope.init(dir=root) as run:
        run.log({"x": 1.0}, step=0)
        run.event("note", "hi", step=0)
    store = deepscope.open(root)
    assert [e.text for e in store.events(run.id)] == ["hi"]
    assert run.id not in store._readers  # the scalars were never read
    assert store._event_readers[run.id]._ranks[0].key_ids == {}
    with deepscope.init(dir=root, id=run.id, resume=True) as again:
        again.event("note", "later")
    assert [e.text for e in store.events(run.id)] == ["hi", "resumed; it was finished", "later"]  # tailed


def test_store_and_reader_say_what_they_hold(root):
    with deepscope.init(dir=root, id="r1") as run:
        run.log({"x": 1.0}, step=4)
    store = deepscope.open(root)
    assert repr(store) == f"<deepscope.Store {str(root)!r}: 1 runs>"
    assert repr(store.run("r1")) == "<deepscope.RunReader 'r1': 1 rank(s), steps to 4>"
