"""Readers: ``Store`` lists runs; ``RunReader`` tails one run's streams incrementally.

A refresh reads only the bytes appended since the last one, decodes the complete chunks among them and
appends their columns to in-memory series. Readers never write to the store and never lock it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..types import Downsampled, Event, Histogram, KeyInfo, RunInfo, Series, Tail
from . import format as fmt
from . import runmeta
from .layerstats import LayerMatrix, LayerStatsBuffer
from .series import SeriesBuffer

log = logging.getLogger("deepscope")


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
        self._lock = threading.Lock()

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
        """The reader of one run (cached): ``run_id`` must name an existing run of this store."""
        self._check(run_id)
        with self._lock:
            reader = self._readers.get(run_id)
            if reader is not None:
                return reader
            run_lock = self._run_locks.setdefault(run_id, threading.Lock())
        with run_lock:  # opening one run (reading its files) never holds up requests for another
            reader = self._readers.get(run_id)
            if reader is None:
                reader = RunReader(self, run_id)
                with self._lock:
                    self._readers[run_id] = reader
        return reader

    def is_open(self, run_id: str) -> bool:
        """Whether a reader of ``run_id`` is already in memory (queries on it are cheap)."""
        return run_id in self._readers

    def events(self, run_id: str, rank: int | None = None) -> list[Event]:
        """A run's events without loading its other data (a runs table asks this of every run)."""
        self._check(run_id)
        with self._lock:
            reader = self._readers.get(run_id) or self._event_readers.get(run_id)
            if reader is None:
                reader = self._event_readers[run_id] = RunReader(self, run_id, kinds=("events",))
                return reader.events(rank)
        reader.refresh()
        return reader.events(rank)

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
    offset: int = 0


@dataclass
class _ScalarChunk:
    """The columns of one scalars chunk, key codes mapped to the rank's key ids; split per key lazily."""

    step: np.ndarray
    wall: np.ndarray
    value: np.ndarray
    kid: np.ndarray


@dataclass
class _RankData:
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


class RunReader:
    """Tails one run: ``refresh()`` reads what was appended; queries answer from memory."""

    def __init__(self, store: Store, run_id: str, kinds: tuple[str, ...] = fmt.KINDS) -> None:
        self.store = store
        self.kinds = kinds  # the record kinds this reader reads (all, or only events for a cheap listing)
        self.id = run_id
        self.dir = store.root / run_id
        self._ranks: dict[int, _RankData] = {}
        self._lock = threading.RLock()
        self.corrupt_chunks = 0
        self.max_step: int | None = None
        self.refresh()

    @property
    def info(self) -> RunInfo:
        return self.store.info(self.id)

    def ranks(self) -> list[int]:
        return sorted(self._ranks)

    def refresh(self) -> Tail:
        """Read every complete chunk appended since the last refresh."""
        with self._lock:
            new_values = 0
            changed: set[str] = set()
            streams = self.dir / "streams"
            try:
                rank_dirs = [e for e in os.scandir(streams) if e.is_dir() and e.name.isdigit()]
            except OSError:
                rank_dirs = []
            for rd in rank_dirs:
                data = self._ranks.setdefault(int(rd.name), _RankData())
                for name in sorted(os.listdir(rd.path), key=_segment_order):
                    parsed = fmt.parse_segment_name(name)
                    if parsed is None or parsed[0] not in self.kinds:
                        continue
                    seg = data.segments.setdefault(name, _Segment(Path(rd.path) / name))
                    new_values += self._read_segment(int(rd.name), data, parsed[0], seg, changed)
            return Tail(self.id, self.max_step, new_values, tuple(sorted(changed)))

    def _read_segment(self, rank: int, data: _RankData, kind: str, seg: _Segment, changed: set[str]) -> int:
        try:
            size = seg.path.stat().st_size
            if size <= seg.offset:
                return 0
            with open(seg.path, "rb") as f:
                f.seek(seg.offset)
                buf = f.read(size - seg.offset)
        except OSError:
            return 0
        pos, n = 0, 0
        while True:
            try:
                for chunk in fmt.iter_chunks(buf, pos):
                    n += self._ingest(rank, data, kind, chunk.table, changed)
                    pos = chunk.end
                break
            except fmt.CorruptChunk:
                self.corrupt_chunks += 1
                nxt = buf.find(fmt.MAGIC, pos + 1)
                if nxt < 0:
                    break
                pos = nxt
        seg.offset += pos
        return n

    def _ingest(self, rank: int, data: _RankData, kind: str, table: pa.Table, changed: set[str]) -> int:
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
            self._bump(int(table["step"].to_numpy().max()))
            return table.num_rows
        if kind == "layerstats":
            data.layerstats.append(table)
            self._bump(int(table["step"].to_numpy().max()))
            changed.add("layerstats")
            return table.num_rows
        if kind == "events":
            for row in table.to_pylist():
                data.events.append(Event(rank=rank, **row))
            return table.num_rows
        return 0

    def _ingest_scalars(self, data: _RankData, table: pa.Table, changed: set[str]) -> int:
        # Only counts are computed now; a key's values are gathered when it is first queried, so opening
        # a run with many keys costs one pass over its bytes, not a sort of every value.
        keycol = table["key"].combine_chunks()
        remap = np.array([_key_id(data, n) for n in keycol.dictionary.to_pylist()], np.int32)
        kid = remap[keycol.indices.to_numpy()]
        step = table["step"].to_numpy()
        data.chunks.append(_ScalarChunk(step, table["wall_time"].to_numpy(), table["value"].to_numpy(), kid))
        counts = np.bincount(kid, minlength=len(data.key_names))
        last = np.full(len(data.key_names), -1, np.int64)
        last[kid] = np.arange(len(kid))  # with repeated indices the last assignment wins: the last row
        for i in np.flatnonzero(counts).tolist():
            data.key_count[i] += int(counts[i])
            data.key_last[i] = int(step[last[i]])
            changed.add(data.key_names[i])
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
        with self._lock:
            return self._buffer(key, rank).series()

    def downsample(
        self, key: str, start: int | None = None, end: int | None = None, buckets: int = 1000, rank: int = 0
    ) -> Downsampled:
        """``key`` over steps ``[start, end]`` in at most ``buckets`` buckets: min / max / mean / last each."""
        if not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"deepscope: buckets must be a positive int, got {buckets!r}")
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
        return runmeta.read_json(self.dir / "streams" / str(rank) / "watch.json")

    def layer_names(self, kind: str, rank: int = 0) -> list[str]:
        """Rows of a layer matrix in model order: module paths for act/grad, parameter paths otherwise."""
        manifest = self.watch_manifest(rank) or {}
        if kind in ("act", "grad"):
            names = [la["path"] for la in manifest.get("layers", [])]
        else:
            names = list(manifest.get("params", []))
        data = self._ranks.get(rank)
        if not names and data is not None:
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
