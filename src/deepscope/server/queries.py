"""What each route answers, as plain functions over a ``Store``: testable without HTTP.

Every function raises :class:`NotFound` for an unknown run, key or rank; the app turns it into a 404.
Run ids reach the filesystem only through ``Store.run``/``Store.info``, which check them against the store.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from ..store import RunReader, Store
from ..types import Downsampled, RunInfo
from . import schemas

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_BUCKETS = 10_000
# A /scalars question over at most this many steps of a run in memory (a live tail, polled) is answered on the event
# loop: in well under a millisecond, and a thread hop per poll cost 50 clients' tails 3-5x their median latency
TAIL_STEPS = 4096

SCALARS_SCHEMA = pa.schema(
    [
        pa.field("step", pa.float64(), nullable=False),
        pa.field("wall_time", pa.float64(), nullable=False),
        pa.field("min", pa.float64(), nullable=False),
        pa.field("max", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("last", pa.float64(), nullable=False),
        pa.field("count", pa.int32(), nullable=False),
        pa.field("nonfinite", pa.int32(), nullable=False),
    ]
)


class NotFound(LookupError):
    """A run, key or rank that the store does not hold."""


def reader(store: Store, run_id: str) -> RunReader:
    try:
        return store.run(run_id)
    except KeyError:
        raise NotFound(f"no run {run_id!r}") from None


def run_info(store: Store, run_id: str) -> RunInfo:
    try:
        return store.info(run_id)
    except KeyError:
        raise NotFound(f"no run {run_id!r}") from None


def _summary_fields(info: RunInfo, max_step: int | None) -> dict:
    return {
        "id": info.id,
        "project": info.project,
        "name": info.name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "heartbeat": info.heartbeat,
        "tags": list(info.tags),
        "notes": info.notes,
        "config_flat": info.config_flat,
        "world_size": info.world_size,
        "max_step": max_step,
        "exit_reason": info.exit_reason,
        "contents": list(info.contents),
    }


def list_runs(store: Store) -> schemas.RunList:
    """Every run, newest first, with how far its data reaches."""
    # max_step comes from the writers' heartbeats: listing never loads a run's data
    runs = []
    for i in store.runs():
        try:
            runs.append(schemas.RunSummary(**_summary_fields(i, i.max_step)))
        except ValueError as e:  # a run.json written by hand, or damaged: that run is left out, not every run
            log.warning("run %s left out of the list: %s", i.id, e)
    return schemas.RunList(runs=runs)


def run_detail(store: Store, run_id: str) -> schemas.RunDetail:
    info = run_info(store, run_id)
    r = reader(store, run_id)
    return schemas.RunDetail(
        **_summary_fields(info, r.max_step),
        config=info.config,
        host=info.host,
        git_commit=info.git_commit,
        python_version=info.python_version,
        torch_version=info.torch_version,
        ranks=r.ranks(),
    )


def scalar_summaries(store: Store, run_id: str, rank: int | None = None) -> schemas.ScalarSummaryList:
    """Each scalar key's last value, minimum and maximum: one bucket of the rollups per key, no full read."""
    r = reader(store, run_id)
    out = []
    for k in r.keys(rank):
        if k.kind != "scalar":
            continue
        d = r.downsample(k.key, buckets=1, rank=k.rank)  # one row: the whole series (min/max over finite values)
        if len(d):
            out.append(schemas.ScalarSummary(
                key=k.key, rank=k.rank, count=int(d.count[0]), last_step=int(d.step[0]), last=_finite(d.last[0]),
                min=_finite(d.min[0]), max=_finite(d.max[0]), nonfinite=int(d.nonfinite[0]),
            ))  # fmt: skip
    return schemas.ScalarSummaryList(scalars=out)


def _finite(v: float) -> float | None:
    """A number for JSON: NaN and ±Inf become null."""
    return float(v) if np.isfinite(v) else None


def run_keys(store: Store, run_id: str, rank: int | None = None) -> schemas.KeyList:
    keys = reader(store, run_id).keys(rank)
    return schemas.KeyList(keys=[schemas.KeyInfo(**asdict(k)) for k in keys])


def scalars(
    store: Store,
    run_id: str,
    key: str,
    start: int | None = None,
    end: int | None = None,
    buckets: int = 1000,
    rank: int = 0,
) -> Downsampled:
    """``key`` over steps ``[start, end]`` in at most ``buckets`` buckets (see ``RunReader.downsample``)."""
    try:
        return reader(store, run_id).downsample(key, start, end, buckets, rank)
    except KeyError as e:
        raise NotFound(str(e.args[0]) if e.args else key) from None


def scalars_table(d: Downsampled) -> pa.RecordBatch:
    """The wire form of a downsampled series: float64 steps so that JavaScript gets plain numbers."""
    schema = SCALARS_SCHEMA.with_metadata({"key": d.key, "exact": "true" if d.exact else "false"})
    f64 = [d.step, d.wall_time, d.min, d.max, d.mean, d.last]
    columns = [_arrow(c, np.float64, pa.float64()) for c in f64]
    columns += [_arrow(c, np.int32, pa.int32()) for c in (d.count, d.nonfinite)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _arrow(values: np.ndarray, dtype: type, type_: pa.DataType) -> pa.Array:
    """A NumPy column as an Arrow array of the same type, sharing its memory.

    Faster than ``pa.array`` for the few points of a live tail, and unlike it, never imports pandas (half a
    second, on the first answer of a cold server).
    """
    a = np.ascontiguousarray(values, dtype)
    return pa.Array.from_buffers(type_, len(a), [None, pa.py_buffer(a)])


class _Answers:
    """Encoded ``/scalars`` answers of one store, each valid while its run's data has not grown.

    Clients polling the same live tail ask the same question between two writes: they share one answer,
    computed once. Bounded by entries and by bytes (2,048 answers of 10,000 buckets were a gigabyte): past
    either bound, the oldest answers go first. Threads put answers side by side; lookups take no lock.
    """

    def __init__(self, size: int = 2048, max_bytes: int = 64 << 20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: dict[tuple, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, generation: int) -> bytes | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == generation else None

    def put(self, key: tuple, generation: int, answer: bytes) -> None:
        if len(answer) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self.nbytes -= 0 if old is None else len(old[1])
            while self._entries and (len(self._entries) >= self.size or self.nbytes + len(answer) > self.max_bytes):
                self.nbytes -= len(self._entries.pop(next(iter(self._entries)))[1])  # the oldest
            self._entries[key] = (generation, answer)
            self.nbytes += len(answer)


_answers: weakref.WeakKeyDictionary[Store, _Answers] = weakref.WeakKeyDictionary()
_answers_lock = threading.Lock()


def _answers_of(store: Store) -> _Answers:
    answers = _answers.get(store)
    if answers is None:
        with _answers_lock:
            answers = _answers.setdefault(store, _Answers())
    return answers


def scalars_answer_now(
    store: Store,
    run_id: str,
    key: str,
    start: int | None = None,
    end: int | None = None,
    buckets: int = 1000,
    rank: int = 0,
) -> bytes | None:
    """``scalars_answer(...)`` when it costs less than a thread hop — an answer already shared, or a live tail (at
    most ``TAIL_STEPS`` steps of a run whose values are in memory) —, else None: no file read, no long scan, so the
    event loop can call it."""
    if not store.is_open(run_id):
        return None
    r = reader(store, run_id)
    answers = _answers.get(store)
    hit = None if answers is None else answers.get((run_id, key, start, end, buckets, rank), r.generation)
    if hit is not None:
        return hit
    last = -1 if r.max_step is None else r.max_step
    if start is not None and min(last, last if end is None else end) - start < TAIL_STEPS:
        return scalars_answer(store, run_id, key, start, end, buckets, rank)
    return None


def scalars_answer(
    store: Store,
    run_id: str,
    key: str,
    start: int | None = None,
    end: int | None = None,
    buckets: int = 1000,
    rank: int = 0,
) -> bytes:
    """``scalars(...)`` as the Arrow IPC stream the route sends, shared by identical questions."""
    r = reader(store, run_id)
    generation = r.generation  # read before the answer: a refresh meanwhile makes it stale, never wrong
    answers = _answers_of(store)
    question = (run_id, key, start, end, buckets, rank)
    answer = answers.get(question, generation)
    if answer is None:
        answer = arrow_stream(scalars_table(scalars(store, run_id, key, start, end, buckets, rank)))
        answers.put(question, generation, answer)
    return answer


def arrow_stream(batch: pa.RecordBatch) -> bytes:
    """One record batch as an Arrow IPC stream (schema message, batch, end-of-stream marker)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def histograms(store: Store, run_id: str, key: str, rank: int = 0) -> schemas.HistogramList:
    try:
        hs = reader(store, run_id).histograms(key, rank)
    except KeyError as e:
        raise NotFound(str(e.args[0]) if e.args else key) from None
    points = [
        schemas.HistogramPoint(step=h.step, wall_time=h.wall_time, edges=h.edges.tolist(), counts=h.counts.tolist())
        for h in hs
    ]
    return schemas.HistogramList(histograms=points)


def events(store: Store, run_id: str, rank: int | None = None) -> schemas.EventList:
    try:
        evs = store.events(run_id, rank)
    except KeyError:
        raise NotFound(f"no run {run_id!r}") from None
    return schemas.EventList(events=[schemas.Event(**asdict(e)) for e in evs])
