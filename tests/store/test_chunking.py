"""The writer gathers what was converted since its last flush into one chunk per kind, and compresses the large
kinds; readers get every row back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from deepscope.capture import tables
from deepscope.store import format as fmt
from deepscope.store.writer import StreamWriter


def _stats(n: int, value: float) -> dict:
    cols = {s: np.full(n, value) for s in fmt.LAYER_STATS}
    cols["nonfinite_frac"] = np.zeros(n)
    return {kind: dict(cols) for kind in ("act", "grad", "param_grad", "weight")}


def _segment_chunks(stream, kind):
    seg = next(stream.glob(f"{kind}-*.arrows"))
    data = seg.read_bytes()
    return data, list(fmt.iter_chunks(data))


def test_steps_converted_between_flushes_share_one_compressed_chunk(tmp_path):
    w = StreamWriter(tmp_path / "s", flush_interval=60)  # flushed by hand only
    names = [f"block{i}.linear" for i in range(40)]
    params = [f"block{i}.linear.weight" for i in range(40)]
    for step in range(30):
        w.add_job(
            lambda step=step: [("layerstats", tables.layerstats_batch(step, 1.0, names, params, _stats(40, step)))]
        )
    # a later watch of other layers (another dictionary) in the same flush
    w.add_job(lambda: [("layerstats", tables.layerstats_batch(30, 2.0, ["other"], ["other.w"], _stats(1, -1.0)))])
    w.flush()
    w.close()
    data, chunks = _segment_chunks(tmp_path / "s", "layerstats")
    assert len(chunks) == 1
    t = chunks[0].table
    assert t.num_rows == 30 * 160 + 4
    np.testing.assert_array_equal(np.unique(t["step"].to_numpy()), np.arange(31))
    layer = t["layer"].to_pylist()
    mean = t["mean"].to_numpy()
    step = t["step"].to_numpy()
    kind = np.asarray(t["kind"].to_pylist())
    # grouped by kind, each kind's rows in step order: readers split a chunk with a slice per kind
    assert [k for i, k in enumerate(kind) if not i or kind[i - 1] != k] == list(fmt.LAYER_KINDS)
    for k in fmt.LAYER_KINDS:
        assert np.all(np.diff(step[kind == k]) >= 0) and np.count_nonzero(kind == k) == 30 * 40 + 1
    assert layer[:40] == names and np.asarray(layer)[(kind == "param_grad") & (step == 0)].tolist() == params
    assert set(np.asarray(layer)[step == 30]) == {"other", "other.w"}
    np.testing.assert_array_equal(mean[step < 30], step[step < 30].astype(np.float32))
    np.testing.assert_array_equal(mean[step == 30], -1.0)
    # compressed: the same rows uncompressed take several times the bytes
    plain = fmt.encode_chunk(t.combine_chunks().to_batches()[0])
    assert len(plain) > 3 * len(data)


def test_histogram_chunks_are_compressed_and_exact(tmp_path):
    w = StreamWriter(tmp_path / "s", flush_interval=60)
    rng = np.random.default_rng(0)
    edges = np.linspace(-1, 1, 259)
    counts = [np.where(rng.random(258) < 0.1, rng.integers(1, 100, 258), 0).astype(np.float64) for _ in range(50)]
    for i, c in enumerate(counts):
        w.add_histogram(f"h{i % 5}", i, 0.0, edges, c)
    w.flush()
    w.close()
    data, chunks = _segment_chunks(tmp_path / "s", "histograms")
    t = pa.concat_tables([c.table for c in chunks])
    got = np.array(t["counts"].to_pylist())
    np.testing.assert_array_equal(got, np.array(counts))
    np.testing.assert_array_equal(np.array(t["edges"].to_pylist()[0]), edges)
    assert len(data) * 5 < len(fmt.encode_chunk(t.combine_chunks().to_batches()[0]))
