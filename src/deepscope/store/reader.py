"""Readers: ``Store`` lists runs; ``RunReader`` tails one run's streams incrementally.

A refresh reads only the bytes appended since the last one, decodes the complete chunks among them and
appends their columns to in-memory series. Readers never write to the store and never lock it.

Scalar values are read when the first scalar query needs them: until then a reader knows a run's keys from
the segments' key indexes (``scalars-<seq>.index``), so listing keys costs kilobytes, not the whole run.
Stores without indexes, or with data the index does not describe yet, are read whole as before.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..types import Downsampled, Event, Histogram, KeyInfo, RunInfo, Series, Tail
from . import format as fmt
from . import runmeta
from .layerstats import LayerMatrix, LayerStatsBuffer
from .series import SeriesBuffer

log = logging.getLogger("deepscope")


_GENERATIONS = itertools.count(1)  # every reader's data generations: never one number for two states
# A server left running holds the data of every run a user looked at (a million-step run with 50 keys: ~850 MB).
# The most recently asked-for readers stay; beyond them, a reader not asked for in a while is dropped — its run is
# read again if asked for. Running runs are refreshed every 200 ms by the live loop, so they never go idle.
READERS_KEPT = 8
READER_IDLE_S = 600.0


class Store:
    """A directory of runs. ``deepscope.open(root)`` returns one.

    >>> store = deepscope.open("deepscope-runs")
    >>> [r.name for r in store.runs()]
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"deepscope: no runs directory at {self.root}")
        self._meta_cache: dict[str, tuple[float, dict]] = {}
        self._readers: dict[str, RunReader] = {}
        self._event_readers: dict[str, RunReader] = {}
        self._run_locks: dict[str, threading.Lock] = {}
        self._used: dict[str, float] = {}  # run id -> when its reader was last asked for (``_clock``)
        self._clock = time.monotonic
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<deepscope.Store {str(self.root)!r}: {len(self.run_ids())} runs>"

    def run_ids(self) -> list[str]:
        """Ids of the runs that have a ``run.json``, sorted."""
        ids = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.is_dir() and os.path.exists(os.path.join(e.path, "run.json")):
                    ids.append(e.name)
        return sorted(ids)

    def runs(self) -> list[RunInfo]:
        """Every run, newest first. ``run.json`` is re-read only when its modification time changed."""
        now = time.time()
        out = []
        for rid in self.run_ids():
            meta = self._meta(rid)
            if meta is None:
                continue
            try:
                out.append(runmeta.run_info(self.root / rid, meta, now))
            except ValueError as e:  # written by a newer deepscope: list the others
                log.warning("%s", e)
        out.sort(key=lambda r: r.start_time, reverse=True)
        return out

    def info(self, run_id: str) -> RunInfo:
        meta = self._meta(self._check(run_id))
        if meta is None:
            raise KeyError(run_id)
        return runmeta.run_info(self.root / run_id, meta)

    def run(self, run_id: str) -> RunReader:
        """The reader of one run (cached): ``run_id`` must name an existing run of this store. A run deleted and
        made again under the same id (another start time in its ``run.json``) gets a new reader."""
        self._check(run_id)
        born = self._born(run_id)
        with self._lock:
            self._used[run_id] = self._clock()
            reader = self._readers.get(run_id)
            if reader is not None and reader.born == born:
                return reader
            run_lock = self._run_locks.setdefault(run_id, threading.Lock())
        with run_lock:  # opening one run (reading its files) never holds up requests for another
            reader = self._readers.get(run_id)
            if reader is None or reader.born != born:
                reader = RunReader(self, run_id)
                reader.born = born
                with self._lock:
                    self._readers[run_id] = reader
                    self._event_readers.pop(run_id, None)
                    self._drop_idle_readers()
        return reader

    def _drop_idle_readers(self) -> None:
        """Forget the readers (and their data) beyond the ``READERS_KEPT`` most recently asked for that nobody asked
        for in ``READER_IDLE_S``. A query still running on one keeps its own reference. Called under ``_lock``."""
        if len(self._readers) <= READERS_KEPT:
            return
        now = self._clock()
        by_use = sorted(self._readers, key=lambda rid: self._used.get(rid, 0.0), reverse=True)
        for rid in by_use[READERS_KEPT:]:
            if now - self._used.get(rid, 0.0) > READER_IDLE_S:
                del self._readers[rid]
                self._used.pop(rid, None)

    def is_open(self, run_id: str) -> bool:
        """Whether a reader of ``run_id`` is in memory with its values read (queries on it are cheap)."""
        reader = self._readers.get(run_id)
        return reader is not None and reader.loaded

    def events(self, run_id: str, rank: int | None = None) -> list[Event]:
        """A run's events without loading its other data (a runs table asks this of every run)."""
        self._check(run_id)
        born = self._born(run_id)
        with self._lock:
            reader = self._readers.get(run_id) or self._event_readers.get(run_id)
            if reader is None or reader.born != born:
                reader = self._event_readers[run_id] = RunReader(self, run_id, kinds=("events",))
                reader.born = born
                return reader.events(rank)
        reader.refresh()
        return reader.events(rank)

    def _born(self, run_id: str) -> Any:
        """What tells this run from an earlier one of the same id: its start time (``run.json``)."""
        meta = self._meta(run_id)
        return None if meta is None else meta.get("start_time")

    def _check(self, run_id: str) -> str:
        # Client strings never become paths unchecked: the id must match the pattern *and* exist.
        try:
            fmt.validate_run_id(run_id)
        except ValueError:
            raise KeyError(run_id) from None
        if not (self.root / run_id / "run.json").is_file():
            raise KeyError(run_id)
        return run_id

    def _meta(self, run_id: str) -> dict | None:
        path = self.root / run_id / "run.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._meta_cache.get(run_id)
        if cached and cached[0] == mtime:
            return cached[1]
        meta = runmeta.read_json(path)
        if meta is not None and "id" in meta:
            self._meta_cache[run_id] = (mtime, meta)
        return meta


@dataclass
class _Segment:
    path: Path
    offset: int = 0  # data read up to here
    deferred_end: int = 0  # scalars: data up to here is known from the key index but not read yet
    index_offset: int = 0  # scalars: key index read up to here


@dataclass
class _ScalarChunk:
    """The columns of one scalars chunk, key codes mapped to the rank's key ids; split per key lazily."""

    step: np.ndarray
    wall: np.ndarray
    value: np.ndarray
    kid: np.ndarray


@dataclass
class _RankData:
    rank: int
    series: dict[str, SeriesBuffer] = field(default_factory=dict)  # materialized on first query of a key
    key_ids: dict[str, int] = field(default_factory=dict)
    key_names: list[str] = field(default_factory=list)
    key_count: list[int] = field(default_factory=list)
    key_last: list[int] = field(default_factory=list)  # step of the key's last logged value
    chunks: list[_ScalarChunk] = field(default_factory=list)  # not yet consumed by every key
    chunk_base: int = 0  # absolute index of chunks[0]
    cursor: dict[str, int] = field(default_factory=dict)  # per key: absolute index of its next chunk
    histograms: dict[str, list[Histogram]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    segments: dict[str, _Segment] = field(default_factory=dict)  # file name -> read position
    layerstats: LayerStatsBuffer = field(default_factory=LayerStatsBuffer)
    indexed_values: int = 0  # scalar values counted from key indexes, not read yet


class RunReader:
    """Tails one run: ``refresh()`` reads what was appended; queries answer from memory."""

    def __init__(self, store: Store, run_id: str, kinds: tuple[str, ...] = fmt.KINDS) -> None:
        self.store = store
        self.kinds = kinds  # the record kinds this reader reads (all, or only events for a cheap listing)
        self.id = run_id
        self.dir = store.root / run_id
        self.born: Any = None  # the start time of the run it reads (Store.run tells a run made again apart)
        self._ranks: dict[int, _RankData] = {}
        # Two locks: ``_refresh`` orders the readers of files (one refresh or load at a time) and is never
        # taken under ``_lock``; ``_lock`` guards the in-memory data and is held only while it changes or is
        # queried, never while files are read, so that queries never wait for the disk.
        self._refresh = threading.Lock()
        self._lock = threading.RLock()
        self._deferred = True  # scalar values are still only known from key indexes
        # grows whenever a refresh finds new data: answers computed before are stale. Unique across readers: a run
        # deleted and made again under its id gets a new reader, whose answers never pass for the old one's
        self.generation = next(_GENERATIONS)
        self.corrupt_chunks = 0
        self.max_step: int | None = None
        self.refresh()

    def __repr__(self) -> str:
        steps = "no steps yet" if self.max_step is None else f"steps to {self.max_step}"
        return f"<deepscope.RunReader {self.id!r}: {len(self._ranks)} rank(s), {steps}>"

    @property
    def info(self) -> RunInfo:
        return self.store.info(self.id)

    @property
    def loaded(self) -> bool:
        """Whether every scalar value on disk at the last refresh is in memory (queries read no file)."""
        return not self._deferred

    def ranks(self) -> list[int]:
        return sorted(self._ranks)

    def refresh(self) -> Tail:
        """Read every complete chunk appended since the last refresh."""
        with self._refresh:
            changed: set[str] = set()
            reads: list[tuple[_RankData, str, _Segment, list[tuple[pa.Table, int]], int]] = []
            indexes: list[tuple[_RankData, list[pa.Table]]] = []
            complete = True  # every scalars segment is described by its key index
            streams = self.dir / "streams"
            try:
                rank_dirs = [e for e in os.scandir(streams) if e.is_dir() and e.name.isdigit()]
            except OSError:
                rank_dirs = []
            for rd in rank_dirs:
                with self._lock:
                    data = self._ranks.setdefault(int(rd.name), _RankData(int(rd.name)))
                for name in sorted(os.listdir(rd.path), key=_segment_order):
                    parsed = fmt.parse_segment_name(name)
                    if parsed is None or parsed[0] not in self.kinds:
                        continue
                    seg = data.segments.setdefault(name, _Segment(Path(rd.path) / name))
                    if parsed[0] == "scalars" and self._deferred:
                        tables, described = self._read_index(seg)
                        indexes.append((data, tables))
                        complete &= described
                    else:
                        tables, end = self._read_chunks(seg, seg.offset)
                        reads.append((data, parsed[0], seg, tables, end))
            new_values = 0
            with self._lock:
                for data, tables in indexes:
                    new_values += sum(self._ingest_index(data, t, changed) for t in tables)
                for data, kind, seg, tables, end in reads:
                    new_values += sum(self._ingest(data, kind, t, changed) for t, _ in tables)
                    seg.offset = end
            if not complete:  # an old store, or data not indexed (yet): read the values now
                new_values += self._load(changed)
            if new_values or changed:
                self.generation = next(_GENERATIONS)
            return Tail(self.id, self.max_step, new_values, tuple(sorted(changed)))

    def _read_index(self, seg: _Segment) -> tuple[list[pa.Table], bool]:
        """New entries of a scalars segment's key index, and whether they describe all of its data."""
        try:
            size = seg.path.stat().st_size
        except OSError:
            return [], True
        try:
            with open(seg.path.with_name(fmt.index_name(seg.path.name)), "rb") as f:
                f.seek(seg.index_offset)
                buf = f.read()
        except OSError:
            buf = b""
        tables, used, trusted = [], 0, True
        try:
            for chunk in fmt.iter_chunks(buf):
                t = chunk.table
                offset = t["offset"][0].as_py() if t.num_rows else -1
                if offset != seg.deferred_end or offset + t["length"][0].as_py() > size:
                    trusted = False  # not the chunk that follows: stop trusting this index
                    break
                tables.append(t)
                seg.deferred_end = offset + t["length"][0].as_py()
                used = chunk.end
        except fmt.CorruptChunk:
            trusted = False
        seg.index_offset += used
        return tables, trusted and size <= seg.deferred_end

    def _read_chunks(self, seg: _Segment, offset: int) -> tuple[list[tuple[pa.Table, int]], int]:
        """The complete chunks of a segment from ``offset`` on (each with the offset just past it), and
        the offset just past the last one."""
        try:
            size = seg.path.stat().st_size
            if size <= offset:
                return [], offset
            with open(seg.path, "rb") as f:
                f.seek(offset)
                buf = f.read(size - offset)
        except OSError:
            return [], offset
        pos, tables = 0, []
        while True:
            try:
                for chunk in fmt.iter_chunks(buf, pos):
                    pos = chunk.end
                    tables.append((chunk.table, offset + pos))
                break
            except fmt.CorruptChunk:
                self.corrupt_chunks += 1
                nxt = buf.find(fmt.MAGIC, pos + 1)
                if nxt < 0:
                    break
                pos = nxt
        return tables, offset + pos

    def _load(self, changed: set[str]) -> int:
        """Read the scalar values known so far only from key indexes (the caller holds ``_refresh``)."""
        reads = []
        for data in list(self._ranks.values()):
            for name in sorted(data.segments, key=_segment_order):
                if fmt.parse_segment_name(name)[0] != "scalars":
                    continue
                seg = data.segments[name]
                tables, end = self._read_chunks(seg, seg.offset)
                reads.append((data, seg, tables, end, seg.deferred_end))
        new_values = 0
        with self._lock:
            known = {id(data): 0 for data in self._ranks.values()}
            for data, seg, tables, end, deferred_end in reads:
                for t, chunk_end in tables:
                    if chunk_end <= deferred_end:  # counted from the index already
                        known[id(data)] += self._ingest_scalars(data, t, changed, count=False)
                    else:
                        new_values += self._ingest_scalars(data, t, changed)
                seg.offset = end
                seg.deferred_end = 0
            for data in self._ranks.values():
                if known[id(data)] != data.indexed_values:  # an index that does not match its data
                    _recount(data)
                data.indexed_values = 0
            self._deferred = False
        return new_values

    def load(self) -> None:
        """Read the scalar values now (queries do it when first needed; a live poller does it ahead)."""
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._deferred:
            with self._refresh:
                if self._deferred:
                    self._load(set())

    def _ingest_index(self, data: _RankData, t: pa.Table, changed: set[str]) -> int:
        counts = t["count"].to_pylist()
        for name, count, last in zip(t["key"].to_pylist(), counts, t["last_step"].to_pylist()):
            i = _key_id(data, name)
            data.key_count[i] += count
            data.key_last[i] = last
            changed.add(name)
        self._bump(max(t["max_step"].to_pylist()))
        n = sum(counts)
        data.indexed_values += n
        return n

    def _ingest(self, data: _RankData, kind: str, table: pa.Table, changed: set[str]) -> int:
        if table.num_rows == 0:
            return 0
        if kind == "scalars":
            return self._ingest_scalars(data, table, changed)
        if kind == "histograms":
            for row in table.to_pylist():
                h = Histogram(
                    row["key"], row["step"], row["wall_time"], np.array(row["edges"]), np.array(row["counts"])
                )
                data.histograms.setdefault(h.key, []).append(h)
                changed.add(h.key)
            self._bump(int(fmt.numpy_column(table["step"]).max()))
            return table.num_rows
        if kind == "layerstats":
            data.layerstats.append(table)
            self._bump(int(fmt.numpy_column(table["step"]).max()))
            changed.add("layerstats")
            return table.num_rows
        if kind == "events":
            for row in table.to_pylist():
                data.events.append(Event(rank=data.rank, **row))
            return table.num_rows
        return 0

    def _ingest_scalars(self, data: _RankData, table: pa.Table, changed: set[str], count: bool = True) -> int:
        # Only counts are computed now; a key's values are gathered when it is first queried, so opening
        # a run with many keys costs one pass over its bytes, not a sort of every value.
        if table.num_rows == 0:
            return 0
        keycol = table["key"].combine_chunks()
        remap = np.array([_key_id(data, n) for n in keycol.dictionary.to_pylist()], np.int32)
        kid = remap[fmt.numpy_column(keycol.indices)]
        step = fmt.numpy_column(table["step"])
        wall, value = fmt.numpy_column(table["wall_time"]), fmt.numpy_column(table["value"])
        data.chunks.append(_ScalarChunk(step, wall, value, kid))
        if count:
            _count(data, kid, step, changed)
            self._bump(int(step.max()))
        return len(step)

    def _bump(self, step: int) -> None:
        if self.max_step is None or step > self.max_step:
            self.max_step = step

    # ---- queries -----------------------------------------------------------------------------------
    def keys(self, rank: int | None = None) -> list[KeyInfo]:
        """Every key, scalars then histograms, in name order; of one rank or of all."""
        out = []
        with self._lock:
            for r, data in sorted(self._ranks.items()):
                if rank is not None and r != rank:
                    continue
                for k in sorted(data.key_ids):
                    i = data.key_ids[k]
                    out.append(KeyInfo(k, "scalar", data.key_count[i], data.key_last[i], r))
                for k in sorted(data.histograms):
                    hs = data.histograms[k]
                    out.append(KeyInfo(k, "histogram", len(hs), max(h.step for h in hs), r))
        return out

    def series(self, key: str, rank: int = 0) -> Series:
        """Every value of ``key`` (full fidelity), sorted by step."""
        self._ensure_loaded()
        with self._lock:
            return self._buffer(key, rank).series()

    def downsample(
        self, key: str, start: int | None = None, end: int | None = None, buckets: int = 1000, rank: int = 0
    ) -> Downsampled:
        """``key`` over steps ``[start, end]`` in at most ``buckets`` buckets: min / max / mean / last each."""
        if not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"deepscope: buckets must be a positive int, got {buckets!r}")
        self._ensure_loaded()
        with self._lock:
            return self._buffer(key, rank).downsample(start, end, buckets)

    def histograms(self, key: str, rank: int = 0) -> list[Histogram]:
        with self._lock:
            data = self._ranks.get(rank)
            if data is None or key not in data.histograms:
                raise KeyError(f"no histogram {key!r} on rank {rank} of run {self.id!r}")
            return sorted(data.histograms[key], key=lambda h: h.step)

    def events(self, rank: int | None = None) -> list[Event]:
        with self._lock:
            out = [e for r, d in self._ranks.items() if rank is None or r == rank for e in d.events]
        return sorted(out, key=lambda e: e.wall_time)

    # ---- layer statistics (run.watch) ---------------------------------------------------------------
    def watch_manifest(self, rank: int = 0) -> dict | None:
        """The layer table ``watch`` wrote for ``rank`` (layers in model order, parameters, settings)."""
        return runmeta.read_watch_manifest(self.dir, rank)

    def layer_names(self, kind: str, rank: int = 0) -> list[str]:
        """Rows of a layer matrix in model order: module paths for act/grad, parameter paths otherwise."""
        if kind not in fmt.LAYER_KINDS:
            raise ValueError(f"deepscope: no layer statistics of kind {kind!r}; kinds: {', '.join(fmt.LAYER_KINDS)}")
        manifest = self.watch_manifest(rank)
        manifest = manifest if isinstance(manifest, dict) else {}  # a damaged watch.json: names from the rows
        entries = manifest.get("layers" if kind in ("act", "grad") else "params")
        entries = entries if isinstance(entries, list) else []
        paths = (e.get("path") if isinstance(e, dict) else e for e in entries)  # layers are dicts, params names
        names = [p for p in paths if isinstance(p, str)]
        data = self._ranks.get(rank)
        if not names and data is not None:
            with self._lock:  # reading them converts what arrived
                names = list(data.layerstats.names)
        return names

    def layer_matrix(
        self, kind: str, stat: str, start: int | None = None, end: int | None = None, buckets: int = 500, rank: int = 0
    ) -> LayerMatrix:
        """Layers × step buckets of one statistic of one kind: the data of the layer × step overview."""
        names = self.layer_names(kind, rank)
        with self._lock:
            return self._layers(rank).matrix(kind, stat, start, end, buckets, names)

    def layer_profile(
        self, kind: str, stat: str, step: int | None = None, rank: int = 0
    ) -> tuple[int | None, list[str], np.ndarray]:
        """One statistic across depth at a step (the latest recorded one ≤ ``step``): gradient flow."""
        names = self.layer_names(kind, rank)
        with self._lock:
            at, values = self._layers(rank).profile(kind, stat, step, names)
        return at, names, values

    def layer_series(
        self,
        layer: str,
        kind: str,
        stat: str,
        start: int | None = None,
        end: int | None = None,
        buckets: int = 1000,
        rank: int = 0,
    ) -> Downsampled:
        with self._lock:
            return self._layers(rank).series(layer, kind, stat, start, end, buckets)

    def total_norm(
        self,
        kind: str = "param_grad",
        start: int | None = None,
        end: int | None = None,
        buckets: int = 1000,
        rank: int = 0,
    ) -> Downsampled:
        """The norm of all parameters' gradients (or weights) together at each recorded step, over time."""
        with self._lock:
            return self._layers(rank).total_norm(kind, start, end, buckets)

    def layer_steps(self, rank: int = 0) -> np.ndarray:
        with self._lock:
            return self._layers(rank).steps()

    def _layers(self, rank: int) -> LayerStatsBuffer:
        data = self._ranks.get(rank)
        if data is None or not len(data.layerstats):
            raise KeyError(f"run {self.id!r} has no layer statistics on rank {rank} (was run.watch(model) called?)")
        return data.layerstats

    def _buffer(self, key: str, rank: int) -> SeriesBuffer:
        data = self._ranks.get(rank)
        if data is None or key not in data.key_ids:
            raise KeyError(f"no scalar {key!r} on rank {rank} of run {self.id!r}")
        buf = data.series.get(key)
        if buf is None:
            buf = data.series[key] = SeriesBuffer(key)
        start = data.cursor.get(key, 0)
        kid = data.key_ids[key]
        for chunk in data.chunks[max(start - data.chunk_base, 0) :]:
            sel = np.flatnonzero(chunk.kid == kid)
            if len(sel):
                buf.append(chunk.step[sel], chunk.wall[sel], chunk.value[sel])
        data.cursor[key] = data.chunk_base + len(data.chunks)
        _drop_consumed(data)
        return buf


def _key_id(data: _RankData, name: str) -> int:
    i = data.key_ids.get(name)
    if i is None:
        i = data.key_ids[name] = len(data.key_names)
        data.key_names.append(name)
        data.key_count.append(0)
        data.key_last.append(-1)
    return i


def _count(data: _RankData, kid: np.ndarray, step: np.ndarray, changed: set[str]) -> None:
    """Add one chunk's values to the keys' counts and last steps."""
    counts = np.bincount(kid, minlength=len(data.key_names))
    last = np.full(len(data.key_names), -1, np.int64)
    last[kid] = np.arange(len(kid))  # with repeated indices the last assignment wins: the last row
    for i in np.flatnonzero(counts).tolist():
        data.key_count[i] += int(counts[i])
        data.key_last[i] = int(step[last[i]])
        changed.add(data.key_names[i])


def _recount(data: _RankData) -> None:
    """Count every key again from the chunks in memory (none consumed yet when this is called)."""
    data.key_count[:] = [0] * len(data.key_count)
    data.key_last[:] = [-1] * len(data.key_last)
    for chunk in data.chunks:
        _count(data, chunk.kid, chunk.step, set())


def _drop_consumed(data: _RankData) -> None:
    """Forget chunks that every key has gathered from (memory stays ~1× the data)."""
    if len(data.cursor) < len(data.key_ids):
        return
    done = min(data.cursor.values()) - data.chunk_base
    if done > 0:
        del data.chunks[:done]
        data.chunk_base += done


def _segment_order(name: str) -> tuple[int, str]:
    parsed = fmt.parse_segment_name(name)
    return (parsed[1], name) if parsed else (-1, name)
