"""On-disk format, version 1: names, schemas and the chunk framing. Spec: ``docs/store-format.md``."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 1
MAGIC = b"DSCK"
HEADER = struct.Struct("<4sQI")  # magic, payload length (u64), crc32 of payload (u32)
SEGMENT_BYTES = 64 * 1024 * 1024  # a writer starts a new segment file past this size

KINDS = ("scalars", "histograms", "events", "layerstats")
# Kinds whose chunks' buffers are compressed (Arrow IPC body compression, ZSTD): a layerstats row takes ~22 bytes
# instead of ~66, a histogram row (edges and counts as float64 lists, mostly zeros) ~180 instead of ~4,100.
COMPRESSED_KINDS = frozenset({"histograms", "layerstats"})
# What a run holds beside its streams, told by a file's presence (``RunInfo.contents``); "watch" is any rank's
# ``streams/<rank>/watch.json``.
CONTENT_FILES = {"graph": "artifacts/graph/graph.json", "analysis": "artifacts/activations/instances.parquet"}
UNFINISHED_ANALYSIS = "artifacts/activations/progress.json"  # without the instance table: an analysis part-way
WATCH_MANIFEST = "watch.json"
MAX_KEY_LENGTH = 256
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: "$" also matches before a final newline
_SEGMENT = re.compile(r"^(scalars|histograms|events|layerstats)-(\d{6,})\.arrows$")


def _schema(kind: str, *fields: pa.Field) -> pa.Schema:
    return pa.schema(fields, metadata={"deepscope.kind": kind, "deepscope.format": str(FORMAT_VERSION)})


SCALARS = _schema(
    "scalars",
    pa.field("step", pa.int64(), nullable=False),
    pa.field("wall_time", pa.float64(), nullable=False),
    pa.field("key", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
)
HISTOGRAMS = _schema(
    "histograms",
    pa.field("step", pa.int64(), nullable=False),
    pa.field("wall_time", pa.float64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("edges", pa.list_(pa.float64()), nullable=False),
    pa.field("counts", pa.list_(pa.float64()), nullable=False),
)
EVENTS = _schema(
    "events",
    pa.field("step", pa.int64(), nullable=True),
    pa.field("wall_time", pa.float64(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("severity", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=True),
)
# Per-layer statistics recorded by ``run.watch``: one row per (step, layer, kind). Kinds: ``act`` (module
# output), ``grad`` (gradient of the module output), ``param_grad`` and ``weight`` (one parameter tensor).
LAYER_KINDS = ("act", "grad", "param_grad", "weight")
LAYER_STATS = (
    "mean", "std", "rms", "min", "max", "norm", "zero_frac", "sat_frac", "nonfinite_frac", "dead_frac", "update_ratio",
)  # fmt: skip
LAYERSTATS = _schema(
    "layerstats",
    pa.field("step", pa.int64(), nullable=False),
    pa.field("wall_time", pa.float64(), nullable=False),
    pa.field("layer", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("kind", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    *(pa.field(s, pa.float32(), nullable=False) for s in LAYER_STATS),
)
# The key index of a scalars segment (``scalars-<seq>.index`` beside ``scalars-<seq>.arrows``): one chunk per
# data chunk, one row per key that chunk holds, so that listing keys never reads the values.
SCALARS_INDEX = _schema(
    "scalars_index",
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("length", pa.int64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("count", pa.int64(), nullable=False),
    pa.field("max_step", pa.int64(), nullable=False),
    pa.field("last_step", pa.int64(), nullable=False),
)
SCHEMAS = {"scalars": SCALARS, "histograms": HISTOGRAMS, "events": EVENTS, "layerstats": LAYERSTATS}


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid key, else raise a ``ValueError``/``TypeError`` that names it."""
    if not isinstance(key, str):
        raise TypeError(f"deepscope: keys must be str, got {type(key).__name__} ({key!r})")
    if not key or key.strip() != key:
        raise ValueError(f"deepscope: key {key!r} is empty or has leading/trailing whitespace")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"deepscope: key {key[:40]!r}… is {len(key)} characters, the limit is {MAX_KEY_LENGTH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError(f"deepscope: key {key!r} contains control characters")
    return key


def validate_run_id(run_id: str) -> str:
    """Run ids become directory names, so they are restricted to ``[A-Za-z0-9._-]``, 1–128 characters."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise ValueError(f"deepscope: invalid run id {run_id!r}: use letters, digits, '.', '_' or '-'")
    return run_id


def segment_name(kind: str, seq: int) -> str:
    return f"{kind}-{seq:06d}.arrows"


def index_name(segment: str) -> str:
    """The key index of a scalars segment: ``scalars-000000.arrows`` -> ``scalars-000000.index``."""
    return segment.removesuffix(".arrows") + ".index"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    m = _SEGMENT.match(name)
    return (m.group(1), int(m.group(2))) if m else None


_ZSTD = pa.ipc.IpcWriteOptions(compression="zstd")


def encode_chunk(batch: pa.RecordBatch, compress: bool = False) -> bytes:
    """Frame one record batch: 16-byte header, then a complete Arrow IPC stream holding the batch (its buffers
    ZSTD-compressed with ``compress``; Arrow readers decompress them by themselves)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_ZSTD if compress else None) as w:
        w.write_batch(batch)
    payload = sink.getvalue().to_pybytes()
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Chunk:
    table: pa.Table
    end: int  # file offset just past this chunk


class CorruptChunk(Exception):
    """A chunk with a full length but a bad magic or checksum: skipped by readers."""


def iter_chunks(buf: memoryview | bytes, offset: int = 0) -> Iterator[Chunk]:
    """Decode complete chunks from ``buf[offset:]``; stop quietly at a torn or still-growing tail.

    A chunk whose header announces more bytes than exist is a tail still being written (or torn by a
    crash): iteration stops before it and a later call resumes at the same offset.
    """
    mv = memoryview(buf)
    n = len(mv)
    while offset + HEADER.size <= n:
        magic, length, crc = HEADER.unpack_from(mv, offset)
        if magic != MAGIC:
            raise CorruptChunk(f"bad magic at offset {offset}")
        start = offset + HEADER.size
        if start + length > n:
            return  # torn or growing tail
        payload = mv[start : start + length]
        if zlib.crc32(payload) != crc:
            # At the very end of the data this is a write still landing: wait for it.
            if start + length == n:
                return
            raise CorruptChunk(f"checksum mismatch at offset {offset}")
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
        offset = start + length
        yield Chunk(table, offset)


_NUMPY_TYPES = {pa.int8(): np.int8, pa.int32(): np.int32, pa.int64(): np.int64, pa.float32(): np.float32,
                pa.float64(): np.float64}  # fmt: skip


def numpy_column(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A column of a decoded chunk as NumPy, without copying.

    ``to_numpy`` would do, but its first call imports pandas (half a second): a cold server paid it on the
    first query of every kind of record.
    """
    arr = column.chunk(0) if isinstance(column, pa.ChunkedArray) and column.num_chunks == 1 else column
    dtype = _NUMPY_TYPES.get(arr.type) if isinstance(arr, pa.Array) and arr.null_count == 0 else None
    if dtype is None:
        return column.to_numpy()
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype, count=len(arr), offset=arr.offset * itemsize)
