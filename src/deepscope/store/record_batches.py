"""The writer thread's conversions: the records the training thread queued, as Arrow record batches of the store's
schemas (``format.py``) — scalars with their key index's statistics, histograms, events — and 0-d tensors brought to
the host in one copy per device.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pyarrow as pa

from . import format as fmt

# A scalar record as the training thread leaves it: (step, wall_time, {key: value}, holds_tensors)
ScalarRecord = tuple[int, float, dict[str, Any], bool]
# What the key index says of one scalars chunk: (keys, count, max_step, last_step), one item per key
KeyStats = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]


def scalar_values(records: list[ScalarRecord]) -> np.ndarray:
    """The values of ``records`` in order, as float64 (tensors brought to the host in one copy per device)."""
    values: list[Any] = []
    tensor_slots: list[tuple[int, Any]] = []
    for _, _, data, has_tensor in records:
        if has_tensor:
            base = len(values)
            for j, v in enumerate(data.values()):
                if not isinstance(v, (int, float)):
                    tensor_slots.append((base + j, v))
        values.extend(data.values())
    if tensor_slots:
        for slot, v in zip((s for s, _ in tensor_slots), tensors_to_floats([t for _, t in tensor_slots])):
            values[slot] = v
    return np.array(values, dtype=np.float64)


def key_stats(keys: list[str], id_col: np.ndarray, step_col: np.ndarray) -> KeyStats:
    """Per key of one chunk: how many values, the highest step, the step of the last value logged."""
    n = len(keys)
    count = np.bincount(id_col, minlength=n)
    max_step = np.full(n, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(max_step, id_col, step_col)
    last = np.zeros(n, np.int64)
    last[id_col] = np.arange(len(id_col))  # with repeated indices the last assignment wins: the last row
    present = np.flatnonzero(count)
    return [keys[i] for i in present], count[present], max_step[present], step_col[last[present]]


def concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch of ``batches`` (same schema; dictionary columns unified)."""
    if len(batches) == 1:
        return batches[0]
    table = pa.Table.from_batches(batches).unify_dictionaries().combine_chunks()
    return table.to_batches()[0] if table.num_rows else batches[0]


def kinds_together(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``layerstats`` rows grouped by kind, each kind's in step order (a stable sort by the kind's code): a reader
    splits a chunk into its kinds with four slices instead of gathering every column by index."""
    code = fmt.numpy_column(batch.column(fmt.LAYERSTATS.get_field_index("kind")).indices)
    if not len(code) or np.all(code[1:] >= code[:-1]):
        return batch
    return batch.take(pa.array(np.argsort(code, kind="stable")))


def tensors_to_floats(tensors: list[Any]) -> list[float]:
    """Bring many 0-d tensors to the host with one copy per device instead of one sync per value."""
    torch = sys.modules["torch"]
    out: list[float] = [0.0] * len(tensors)
    by_device: dict[Any, list[int]] = {}
    for i, t in enumerate(tensors):
        if isinstance(t, torch.Tensor):
            by_device.setdefault(t.device, []).append(i)
        else:
            out[i] = float(t)
    for idx in by_device.values():
        stacked = torch.stack([tensors[i].reshape(()).to(torch.float64) for i in idx]).cpu().numpy()
        for i, v in zip(idx, stacked.tolist()):
            out[i] = v
    return out


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def histogram_batch(hists: list[tuple]) -> pa.RecordBatch:
    keys, steps, walls, edges, counts = zip(*hists)
    return pa.record_batch(
        [
            pa.array(steps, pa.int64()),
            pa.array(walls, pa.float64()),
            pa.array(keys, pa.string()),
            pa.array([to_numpy(e) for e in edges], pa.list_(pa.float64())),
            pa.array([to_numpy(c) for c in counts], pa.list_(pa.float64())),
        ],
        schema=fmt.HISTOGRAMS,
    )


def event_batch(events: list[tuple]) -> pa.RecordBatch:
    steps, walls, kinds, severities, texts, keys = zip(*events)
    return pa.record_batch(
        [
            pa.array(steps, pa.int64()),
            pa.array(walls, pa.float64()),
            pa.array(kinds, pa.string()),
            pa.array(severities, pa.string()),
            pa.array(texts, pa.string()),
            pa.array(keys, pa.string()),
        ],
        schema=fmt.EVENTS,
    )
