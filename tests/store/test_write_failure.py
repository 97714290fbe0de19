"""A failing disk never crashes the training loop: one warning, data kept up to a bound, then counted drops."""

from __future__ import annotations

import builtins
import errno
import shutil
import warnings

import numpy as np
import pytest

import deepscope
from deepscope.store import writer as writer_mod


class FailingDisk:
    """Stands in for ``open`` in the writer: while ``failing``, files open on /dev/full (writes: ENOSPC)."""

    def __init__(self, error: int = errno.ENOSPC) -> None:
        self.failing = True
        self.error = error

    def __call__(self, path, *args, **kwargs):
        if not self.failing:
            return builtins.open(path, *args, **kwargs)
        if self.error == errno.ENOSPC:
            return builtins.open("/dev/full", "wb", buffering=0)
        raise OSError(self.error, "Read-only file system" if self.error == errno.EROFS else "denied", str(path))


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_failure_then_recovery_loses_nothing(root, monkeypatch, error):
    disk = FailingDisk(error)
    monkeypatch.setattr(writer_mod, "open", disk, raising=False)
    run = deepscope.init(dir=root, flush_interval=0.02)
    with pytest.warns(RuntimeWarning, match="cannot write") as caught:
        for i in range(200):
            run.log({"x": i}, step=i)
        run.flush()
        for i in range(200, 400):
            run.log({"x": i}, step=i)
        run.flush()
    assert sum("cannot write" in str(w.message) for w in caught) == 1  # one warning, not one per flush
    assert run._writer.write_errors >= 2
    disk.failing = False
    with pytest.warns(RuntimeWarning, match="works again"):
        run.flush()
    run.finish()
    np.testing.assert_array_equal(deepscope.open(root).run(run.id).series("x").value, np.arange(400))


def test_beyond_the_bound_oldest_data_is_dropped_and_counted(root, monkeypatch):
    monkeypatch.setattr(writer_mod, "open", FailingDisk(), raising=False)
    run = deepscope.init(dir=root, flush_interval=0.02)
    run._writer.max_retained_bytes = 20_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(50):
            run.log({f"k{j}": float(j) for j in range(100)}, step=i)
            run.flush()
        run.finish()
    messages = [str(w.message) for w in caught]
    assert any("dropping the oldest" in m for m in messages)
    assert run._writer.dropped_values > 0
    assert run._writer._retained_bytes <= 20_000 or len(run._writer._retained) == 1


def test_a_disk_that_stays_full_is_said_once_then_every_few_minutes_and_finish_says_how_much_is_lost(root, monkeypatch):
    """Each dropped chunk was a warning of its own (with a running count: never de-duplicated), queued without bound
    while nothing emitted them (a watch alone calls no log()); at finish the values still held were lost unsaid."""
    monkeypatch.setattr(writer_mod, "open", FailingDisk(), raising=False)
    run = deepscope.init(dir=root, flush_interval=60)
    writer = run._writer
    writer.max_retained_bytes = 20_000
    row = {f"k{j}": float(j) for j in range(100)}
    for step in range(50):  # as a watch records: into the writer, no log() to emit its warnings
        writer.add_scalars((step, 0.0, row, False), len(row))
        writer.flush()
    assert writer.dropped_values > 0
    assert len(writer.warnings) == 2 and "dropping the oldest" in writer.warnings[1], list(writer.warnings)
    monkeypatch.setattr(writer_mod, "DROP_REPORT_INTERVAL", 0.0)  # the next report is due
    writer.add_scalars((50, 0.0, row, False), len(row))
    writer.flush()
    assert "values dropped so far" in writer.warnings[-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.finish()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4, messages
    assert "5,100 logged values are lost" in messages[-1]  # all of them: nothing reached the disk


def test_the_warnings_the_writer_queues_are_bounded(root):
    run = deepscope.init(dir=root)
    for i in range(10 * writer_mod.MAX_QUEUED_WARNINGS):
        run._writer._warn(f"problem {i}")
    assert len(run._writer.warnings) == writer_mod.MAX_QUEUED_WARNINGS
    run._writer.warnings.clear()
    run.finish()


def test_run_directory_deleted_while_writing(root):
    run = deepscope.init(dir=root, flush_interval=0.02)
    for i in range(100):
        run.log({"x": i}, step=i)
    run.flush()
    shutil.rmtree(run.dir)
    with pytest.warns(RuntimeWarning, match="was removed"):
        for i in range(100, 200):
            run.log({"x": i}, step=i)
        run.flush()
    run.finish()
    # what was logged after the deletion is written into the recreated directory
    np.testing.assert_array_equal(deepscope.open(root).run(run.id).series("x").value, np.arange(100, 200))


def test_a_record_the_writer_cannot_convert_loses_only_itself(root):
    """What log() lets through the writer can store; the watch hands the writer records of its own. One it cannot
    convert is left out with one warning; the rest of its batch, and the histograms and events beside it, are
    written."""
    run = deepscope.init(dir=root, flush_interval=60)  # one drain takes everything: at finish()
    writer = run._writer
    for step in range(10):
        bad = 1 + 2j if step in (3, 7) else 1.0
        writer.add_scalars((step, 0.0, {"a": float(step), "b": bad}, False), 2)
    writer.add_histogram("h", 1, 0.0, np.array([0.0, 1.0]), np.array([2.0]))
    writer.add_histogram("h", 2, 0.0, np.array(["x", "y"]), np.array([2.0]))
    writer.add_event(1, 0.0, "note", "info", "kept", None)
    writer.add_event(2, 0.0, "note", "info", 5, None)  # no str
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.finish()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3, messages  # one per kind of failure, not one per record
    assert "'a', 'b' at step 3" in messages[0] and "complex" in messages[0]
    assert writer.unconvertible == {"scalars": 4, "histograms": 1, "events": 1}
    r = deepscope.open(root).run(run.id)
    assert r.series("a").step.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [h.step for h in r.histograms("h")] == [1]
    assert [e.text for e in r.events()] == ["kept"]
