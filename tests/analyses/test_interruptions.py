"""An interrupted or failed activations analysis keeps only rows that are on disk and are their own instances'.

Each test stops a run where a chunk is written (the write patched, as Ctrl-C or a full disk would stop it), resumes
it, and checks every stored row against a forward pass of the same instances (the oracle), never a count.
"""

from __future__ import annotations

import errno
import json
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepscope.analyses import analysis_state, extraction, read
from deepscope.analyses.activations import Activations, ActivationsConfig
from deepscope.analyses.analysis_state import AnalysisState

N = 1000


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 8, generator=g), torch.randint(0, 3, (N,), generator=g)


def model() -> MLP:
    torch.manual_seed(0)
    return MLP().eval()


def assert_rows_are_their_own(run_dir, m: MLP, x: torch.Tensor) -> None:
    """Every stored activation and score is the forward pass's of the instance at that row."""
    r = read(run_dir)
    with torch.no_grad():
        fc1 = m.fc1(x).numpy()
        scores = torch.softmax(m(x), 1).numpy()
    np.testing.assert_allclose(r.matrix("fc1"), fc1, atol=1e-5)
    np.testing.assert_allclose(r.matrix("fc2"), m(x).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(r.scores(np.arange(N)), scores, atol=1e-5)
    np.testing.assert_array_equal(r.instances()["prediction"].to_numpy(), scores.argmax(1))


def progress(run_dir) -> dict:
    return json.loads((run_dir / "artifacts" / "activations" / "progress.json").read_text())


def failing_write(monkeypatch, fail_at: int, error: BaseException) -> None:
    """``AnalysisState.write`` raises ``error`` at its ``fail_at``-th call (1-based), after writing half the chunk."""
    real, calls = AnalysisState.write, []

    def write(self, start, chunk):
        calls.append(start)
        if len(calls) == fail_at:
            half = {k: v[: len(v) // 2] for k, v in chunk.items()}
            real(self, start, half)  # part of it on disk, as an interrupted write leaves it
            raise error
        return real(self, start, chunk)

    monkeypatch.setattr(AnalysisState, "write", write)


CFG = ActivationsConfig(layers=("fc1", "fc2"), batch_size=100, chunk_rows=256, progress=False)


@pytest.mark.parametrize("threaded", [False, True])
def test_ctrl_c_while_a_chunk_is_written_keeps_every_row_its_own(tmp_path, monkeypatch, threaded):
    monkeypatch.setattr(extraction, "WRITER_THREAD", threaded)
    m, (x, y) = model(), data()
    failing_write(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        Activations(CFG).run(tmp_path, m, (x, y))
    kept = progress(tmp_path)["rows_done"]
    assert kept >= 256  # the first chunk is kept
    monkeypatch.undo()
    monkeypatch.setattr(extraction, "WRITER_THREAD", threaded)
    Activations(CFG).run(tmp_path, m, (x, y))
    assert_rows_are_their_own(tmp_path, m, x)


@pytest.mark.parametrize("threaded", [False, True])
def test_a_full_disk_keeps_only_the_rows_before_the_failed_chunk_and_says_so(tmp_path, monkeypatch, threaded):
    monkeypatch.setattr(extraction, "WRITER_THREAD", threaded)
    m, (x, y) = model(), data()
    failing_write(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match=r"no space is left.*the 0 rows before it are kept.*call it again") as e:
        Activations(CFG).run(tmp_path, m, (x, y))
    assert e.value.errno == errno.ENOSPC
    assert progress(tmp_path)["rows_done"] == 0  # later chunks landed, but not the first
    monkeypatch.undo()
    Activations(CFG).run(tmp_path, m, (x, y))
    assert_rows_are_their_own(tmp_path, m, x)


def test_a_failed_write_after_some_chunks_keeps_those_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(extraction, "WRITER_THREAD", True)
    m, (x, y) = model(), data()
    failing_write(monkeypatch, 2, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError, match=r"from row 256 failed.*the 256 rows before it are kept"):
        Activations(CFG).run(tmp_path, m, (x, y))
    assert progress(tmp_path)["rows_done"] == 256
    monkeypatch.undo()
    Activations(CFG).run(tmp_path, m, (x, y))
    assert_rows_are_their_own(tmp_path, m, x)


class StopsAt(MLP):
    """Raises KeyboardInterrupt at its ``stop_at``-th forward pass."""

    stop_at: int | None = None
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        if type(self).stop_at == type(self).calls:
            raise KeyboardInterrupt
        return super().forward(x)


def loader(x, y, batch_size=90):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def test_a_dataloader_whose_data_changed_before_the_resume_point_starts_over(tmp_path):
    torch.manual_seed(0)
    m = StopsAt().eval()
    x, y = data()
    changed = x.clone()
    changed[100:] = data(1)[0][100:]  # the same first rows, other rows after them
    StopsAt.calls, StopsAt.stop_at = 0, 6
    with pytest.raises(KeyboardInterrupt):
        Activations(CFG).run(tmp_path, m, loader(x, y))
    assert progress(tmp_path)["rows_done"] == 450
    StopsAt.stop_at = None
    with pytest.warns(RuntimeWarning, match="its rows before row 450"):
        Activations(CFG).run(tmp_path, m, loader(changed, y))
    assert_rows_are_their_own(tmp_path, m, changed)


def test_the_data_check_takes_the_first_rows_across_small_batches(tmp_path):
    torch.manual_seed(0)
    m = StopsAt().eval()
    x, y = data()
    changed = x.clone()
    changed[1:64] = data(1)[0][1:64]  # the first row alone is the same
    StopsAt.calls, StopsAt.stop_at = 0, 300
    with pytest.raises(KeyboardInterrupt):
        Activations(CFG).run(tmp_path, m, loader(x, y, batch_size=1))
    assert progress(tmp_path)["data_rows"] == 64
    StopsAt.stop_at = None
    with pytest.warns(RuntimeWarning, match="the data"):
        Activations(CFG).run(tmp_path, m, loader(changed, y, batch_size=1))
    assert_rows_are_their_own(tmp_path, m, changed)


@pytest.mark.parametrize("stop_at", [1, 6])  # before any row is kept, and after 450
def test_an_iterator_read_once_starts_over_rather_than_misplace_its_rows(tmp_path, stop_at):
    torch.manual_seed(0)
    m = StopsAt().eval()
    x, y = data()
    batches = lambda: ((x[i : i + 90], y[i : i + 90]) for i in range(0, N, 90))  # noqa: E731
    StopsAt.calls, StopsAt.stop_at = 0, stop_at
    with pytest.raises(KeyboardInterrupt):
        Activations(CFG).run(tmp_path, m, batches())
    StopsAt.stop_at = None
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        Activations(CFG).run(tmp_path, m, batches())
    assert any("an iterator, read once" in str(w.message) for w in said) == (stop_at > 1)  # said where rows are lost
    assert_rows_are_their_own(tmp_path, m, x)


@pytest.mark.parametrize("threaded", [False, True])
def test_ctrl_c_between_handing_a_chunk_over_and_taking_its_leftover_rows(tmp_path, monkeypatch, threaded):
    monkeypatch.setattr(extraction, "WRITER_THREAD", threaded)
    m, (x, y) = model(), data()
    real, calls = extraction.Extractor._leftover, []

    def leftover(self, full, n):
        calls.append(n)
        if len(calls) == 2:  # the chunk written (or in flight), the arrays not yet swapped
            raise KeyboardInterrupt
        return real(self, full, n)

    monkeypatch.setattr(extraction.Extractor, "_leftover", leftover)
    with pytest.raises(KeyboardInterrupt):
        Activations(CFG).run(tmp_path, m, (x, y))
    assert progress(tmp_path)["rows_done"] == 600  # two chunks and the rows gathered after them
    monkeypatch.undo()
    Activations(CFG).run(tmp_path, m, (x, y))
    assert_rows_are_their_own(tmp_path, m, x)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an open file through /proc")
@pytest.mark.parametrize("threaded", [False, True])
def test_the_last_progress_counts_only_rows_flushed_to_the_disk(tmp_path, monkeypatch, threaded):
    """Before the last ``progress.json`` (done, interrupted) claims rows, their chunk files were fsynced: a machine's
    crash loses none of them."""
    monkeypatch.setattr(extraction, "WRITER_THREAD", threaded)
    synced, claims = set(), {}
    real_fsync, real_save, real_write = os.fsync, analysis_state.write_json_atomic, AnalysisState.write

    def fsync(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def save(path, record):
        rows, done = record["chunk_rows"], record["rows_done"]
        claims.clear()
        for key in record["arrays"] if path.name == "progress.json" else []:
            for f in (path.parent / key).glob("c.*"):
                if int(f.name.split(".")[1]) * rows < done:  # a chunk holding rows it claims
                    claims[str(f)] = str(f.resolve()) in synced
        real_save(path, record)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(analysis_state, "write_json_atomic", save)
    m, (x, y) = model(), data()
    failing_write(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        Activations(CFG).run(tmp_path, m, (x, y))
    assert progress(tmp_path)["rows_done"] >= 512
    assert claims and all(claims.values())  # interrupted: the chunks it counts
    monkeypatch.setattr(AnalysisState, "write", real_write)
    Activations(CFG).run(tmp_path, m, (x, y))
    assert claims and all(claims.values())  # done
    assert_rows_are_their_own(tmp_path, m, x)
