"""A store keeps the readers of the runs asked for lately, not of every run it ever opened."""

from __future__ import annotations

import deepscope
from deepscope.store import reader as store_reader


def write_runs(root, n: int) -> list[str]:
    ids = []
    for i in range(n):
        with deepscope.init(project="p", name=f"run-{i}", dir=root) as run:
            for step in range(20):
                run.log({"loss": float(i * 100 + step)}, step=step)
        ids.append(run.id)
    return ids


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_readers_beyond_the_kept_ones_go_when_idle_and_come_back_with_their_data(tmp_path):
    kept = store_reader.READERS_KEPT
    ids = write_runs(tmp_path, kept + 4)
    store = deepscope.open(tmp_path)
    clock = store._clock = Clock()
    first = {}
    for rid in ids:  # one a second: the first ones are the least recently asked for
        clock.now += 1
        first[rid] = store.run(rid)
        assert first[rid].series("loss").value[-1] == ids.index(rid) * 100 + 19
    assert len(store._readers) == len(ids)  # nobody idle yet: all kept

    clock.now += store_reader.READER_IDLE_S + 1
    store.run(ids[-1])  # asked for again: stays, and is the newest
    assert store.run(ids[-1]) is first[ids[-1]]
    clock.now += 1
    newcomer = write_runs(tmp_path, 1)[0]
    store.run(newcomer)  # a new reader: the idle ones beyond the kept are dropped
    # kept: the newcomer, the run asked for again, and the next most recent up to READERS_KEPT
    assert set(store._readers) == {newcomer, ids[-1], *ids[-(kept - 1) : -1]}
    dropped = ids[0]
    assert dropped not in store._readers
    again = store.run(dropped)  # read anew, with its data, under a new generation
    assert again is not first[dropped]
    assert again.series("loss").value.tolist() == [float(step) for step in range(20)]
    assert again.generation != first[dropped].generation


def test_readers_asked_for_lately_are_kept_however_many(tmp_path):
    ids = write_runs(tmp_path, store_reader.READERS_KEPT + 3)
    store = deepscope.open(tmp_path)
    store._clock = Clock()
    readers = [store.run(rid) for rid in ids]
    assert all(store.run(rid) is r for rid, r in zip(ids, readers, strict=True))
