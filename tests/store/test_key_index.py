"""The key index of scalars segments: keys are listed without reading values, and every store reads the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import deepscope
from deepscope.store import format as fmt


def _log(root, n: int = 300, run_id: str | None = None, **init):
    run = deepscope.init(dir=root, id=run_id, **init)
    for i in range(n):
        run.log({"a": float(i), "b": -float(i), **({"c": 2.0 * i} if i % 3 == 0 else {})}, step=i)
        if i % 100 == 99:
            run.flush()  # several chunks
    return run


def _indexes(root, run_id: str) -> list[Path]:
    return sorted((Path(root) / run_id / "streams" / "0").glob("scalars-*.index"))


def _keys(reader) -> dict:
    return {k.key: (k.count, k.last_step) for k in reader.keys()}


EXPECTED = {"a": (300, 299), "b": (300, 299), "c": (100, 297)}


def test_the_index_describes_every_chunk(root):
    run = _log(root)
    run.finish()
    (index,) = _indexes(root, run.id)
    data = index.with_name(index.name.replace(".index", ".arrows")).read_bytes()
    entries = [c.table for c in fmt.iter_chunks(index.read_bytes())]
    chunks = list(fmt.iter_chunks(data))
    assert len(entries) == len(chunks) >= 3
    start = 0
    for entry, chunk in zip(entries, chunks):
        assert entry.schema.metadata[b"deepscope.kind"] == b"scalars_index"
        assert set(entry["offset"].to_pylist()) == {start}
        assert set(entry["length"].to_pylist()) == {chunk.end - start}
        keys = chunk.table["key"].combine_chunks()
        names = np.array(keys.dictionary.to_pylist())[keys.indices.to_numpy()]
        for row in entry.to_pylist():
            mine = chunk.table["step"].to_numpy()[names == row["key"]]
            assert (row["count"], row["max_step"], row["last_step"]) == (len(mine), mine.max(), mine[-1])
        start = chunk.end


def test_keys_are_listed_without_reading_values(root):
    run = _log(root)
    run.finish()
    store = deepscope.open(root)
    reader = store.run(run.id)
    assert _keys(reader) == EXPECTED
    assert reader.max_step == 299
    assert not reader.loaded and not store.is_open(run.id)
    assert reader._ranks[0].chunks == []  # no value in memory
    np.testing.assert_array_equal(reader.series("c").value, 2.0 * np.arange(0, 300, 3))
    assert reader.loaded and store.is_open(run.id)
    assert _keys(reader) == EXPECTED  # counted once, not twice


def test_a_store_without_indexes_reads_the_same(root):
    run = _log(root)
    run.finish()
    for p in _indexes(root, run.id):
        p.unlink()
    reader = deepscope.open(root).run(run.id)
    assert reader.loaded  # nothing to go by: the values were read
    assert _keys(reader) == EXPECTED
    np.testing.assert_array_equal(reader.series("a").value, np.arange(300.0))


def test_data_beyond_the_index_is_read(root):
    run = _log(root)
    run.finish()
    (index,) = _indexes(root, run.id)
    entries = list(fmt.iter_chunks(index.read_bytes()))
    index.write_bytes(index.read_bytes()[: entries[0].end])  # as if the writer died before indexing the rest
    reader = deepscope.open(root).run(run.id)
    assert _keys(reader) == EXPECTED
    np.testing.assert_array_equal(reader.series("b").value, -np.arange(300.0))


def test_an_index_that_does_not_match_its_data_is_recounted(root):
    run = _log(root)
    run.finish()
    (index,) = _indexes(root, run.id)
    first = next(fmt.iter_chunks(index.read_bytes())).table
    wrong = first.set_column(3, "count", [np.full(first.num_rows, 7, np.int64)])  # counts that lie
    rest = index.read_bytes()[len(fmt.encode_chunk(first.to_batches()[0])) :]
    index.write_bytes(fmt.encode_chunk(wrong.to_batches()[0]) + rest)
    store = deepscope.open(root)
    reader = store.run(run.id)
    assert _keys(reader)["a"][0] != 300  # believed until the values are read …
    np.testing.assert_array_equal(reader.series("a").value, np.arange(300.0))
    assert _keys(reader) == EXPECTED  # … then counted from them


def test_a_live_run_is_followed_through_its_index(root):
    run = _log(root, 150)
    run.flush()
    reader = deepscope.open(root).run(run.id)
    assert _keys(reader)["a"] == (150, 149) and not reader.loaded
    for i in range(150, 300):
        run.log({"a": float(i), "b": -float(i), **({"c": 2.0 * i} if i % 3 == 0 else {})}, step=i)
    run.flush()
    tail = reader.refresh()
    assert tail.new_values == 350 and set(tail.changed_keys) == {"a", "b", "c"} and tail.max_step == 299
    assert _keys(reader) == EXPECTED
    np.testing.assert_array_equal(reader.series("c").value, 2.0 * np.arange(0, 300, 3))
    run.log({"a": 300.0}, step=300)
    run.finish()
    assert reader.refresh().new_values == 1  # loaded: tailed from the data, as before
    assert _keys(reader)["a"] == (301, 300)


def test_a_resumed_run_reads_every_segment_in_order(root):
    run = _log(root, 100)
    run.finish()
    again = deepscope.init(dir=root, id=run.id, resume=True)
    with pytest.warns(RuntimeWarning, match="step went backwards from 99 to 0"):  # a resumed run knows its steps
        for i in range(5):
            again.log({"a": 1000.0 + i}, step=i)  # steps go back: order within a step is log order
    again.finish()
    assert len(_indexes(root, run.id)) == 2
    reader = deepscope.open(root).run(run.id)
    assert _keys(reader)["a"] == (105, 4)
    s = reader.series("a")
    np.testing.assert_array_equal(s.step[:10], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(s.value[:4], [0.0, 1000.0, 1.0, 1001.0])


def test_a_stale_index_is_never_reused_for_a_new_segment(root):
    run = _log(root, 10)
    run.finish()
    (index,) = _indexes(root, run.id)
    stale = index.with_name(fmt.index_name(fmt.segment_name("scalars", 1)))
    stale.write_bytes(index.read_bytes())  # an index with no segment of its own
    again = deepscope.init(dir=root, id=run.id, resume=True)
    again.log({"a": 5.0}, step=10)
    again.finish()
    assert not (stale.with_name(fmt.segment_name("scalars", 1))).exists()  # that seq was skipped
    reader = deepscope.open(root).run(run.id)
    assert _keys(reader)["a"] == (11, 10)
    np.testing.assert_array_equal(reader.series("a").value, [*range(10), 5.0])
