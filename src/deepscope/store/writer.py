"""The writer of one (run, rank) stream: a background thread that batches records into framed Arrow chunks.

The training thread only appends references to a list (``add_*``); this thread converts them to columns,
frames them (``format.encode_chunk``) and appends them to the segment files of ``streams/<rank>/``.
It never raises into the training loop: a failed write keeps the encoded chunks in memory up to a bound
and retries; past the bound the oldest chunks are dropped and counted. Problems become messages in
``warnings`` that the training thread emits as Python warnings (warnings raised in a thread are lost).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import format as fmt
from . import record_batches as rb
from . import stream_files
from .record_batches import KeyStats, ScalarRecord

DROP_REPORT_INTERVAL = 300.0  # seconds between the reports of what a failing disk costs
MAX_QUEUED_WARNINGS = 100  # warnings the writer keeps for the training thread to emit


class StreamWriter:
    """Owns every file of one stream directory; one per (run, rank); only this thread writes them."""

    def __init__(
        self,
        stream_dir: Path,
        *,
        flush_interval: float = 0.5,
        flush_values: int = 500_000,
        max_pending_values: int = 4_000_000,
        max_retained_bytes: int = 64 * 1024 * 1024,
        ensure_dir: Callable[[], None] | None = None,
    ) -> None:
        self.dir = Path(stream_dir)
        self.flush_interval = flush_interval
        self.flush_values = flush_values
        self.max_pending_values = max_pending_values
        self.max_retained_bytes = max_retained_bytes
        self._ensure_dir = ensure_dir or (lambda: self.dir.mkdir(parents=True, exist_ok=True))

        # The training thread appends to deques and the writer pops from them: both are atomic under the
        # GIL, so the hot path takes no lock (a lock here starves the writer thread: a lock convoy).
        self._scalars: deque[ScalarRecord] = deque()
        self._histograms: deque[tuple] = deque()
        self._events: deque[tuple] = deque()
        self._jobs: deque[Callable[[], list[tuple[str, pa.RecordBatch]]]] = deque()
        self._added_values = 0  # written by the training thread only
        self._taken_values = 0  # written by the writer thread only
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._flush_waiters: list[threading.Event] = []
        self._scalar_callbacks: list[Callable] = []
        self.on_closed: Callable[[], None] | None = None  # called in this thread once it has closed the stream

        self._key_ids: dict[str, int] = {}
        self._keys: list[str] = []
        self._ids_by_keyset: dict[tuple[str, ...], np.ndarray] = {}
        self._files: dict[str, Any] = {}
        self._indexes: dict[str, Any] = {}  # kind -> key index of the open segment (None: given up on it)
        # kind, chunk, rows (scalars: values), max step, key stats (scalars)
        self._retained: deque[tuple[str, bytes, int, int | None, KeyStats | None]] = deque()
        self._retained_bytes = 0
        self._failing = False
        self._write_error = ""  # the last write failure, as the OS said it
        self._drops_said_at: float | None = None  # when dropping was last reported, in this failure (monotonic)

        self.warnings: deque[str] = deque()  # at most MAX_QUEUED_WARNINGS while nobody emits them
        self.dropped_values = 0  # logged (scalar) values dropped while writing failed
        self.dropped_rows = 0  # and rows of the other kinds (layer statistics, histograms, events)
        self.flushed_values = 0  # scalar values known to be on disk
        self.write_errors = 0
        self.unconvertible: dict[str, int] = {}  # kind -> values (scalars) or records left out: not convertible
        self._conversion_errors: set[str] = set()

        self._heartbeat = self.dir / "heartbeat"
        _warm_up()
        # the lock first: a second writer of a live stream is refused before it changes any file (the caller's
        # ensure_dir writes the run's metadata)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = stream_files.lock_stream(self.dir)
        try:
            self._ensure_dir()
        except BaseException:
            stream_files.unlock_stream(self._lock_fd)
            raise
        self._seq = self._first_free_seq()
        self.flushed_step = stream_files.last_step_on_disk(self.dir)  # highest step known to be on disk (-1: none)
        self._touch_heartbeat()
        self._thread = threading.Thread(target=self._loop, name=f"deepscope-writer-{self.dir.name}", daemon=True)
        self._thread.start()

    # ---- training thread -------------------------------------------------------------------------
    def add_scalars(self, record: ScalarRecord, n_values: int) -> None:
        self._scalars.append(record)
        self._added_values += n_values
        pending = self._added_values - self._taken_values
        if pending >= self.flush_values:
            self._wake.set()
            if pending >= self.max_pending_values:
                self._wait_for_room()

    def add_histogram(self, key: str, step: int, wall: float, edges: Any, counts: Any) -> None:
        self._histograms.append((key, step, wall, edges, counts))

    def add_event(self, step: int | None, wall: float, kind: str, severity: str, text: str, key: str | None) -> None:
        self._events.append((step, wall, kind, severity, text, key))

    def add_job(self, job: Callable[[], list[tuple[str, pa.RecordBatch]]]) -> None:
        """Run ``job`` in the writer thread and write the ``(kind, batch)`` pairs it returns."""
        self._jobs.append(job)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything added so far has been handed to the OS (or retained after a failure)."""
        done = threading.Event()
        with self._lock:
            self._flush_waiters.append(done)
        self._wake.set()
        done.wait(timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Write out what is left and close the files; False when that takes longer than ``timeout`` (a stalled
        disk): the thread goes on and calls ``on_closed`` when done."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a closing writer to finish; False while it has not."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending_values(self) -> int:
        """Logged (scalar) values neither on disk, nor dropped, nor left out as unconvertible: still to be written."""
        lost = self.dropped_values + self.unconvertible.get("scalars", 0)
        return max(0, self._added_values - self.flushed_values - lost)

    def _wait_for_room(self) -> None:
        # Backpressure only when conversion falls behind ingestion; bounded so a stuck disk cannot hang us.
        deadline = time.monotonic() + 5.0
        while self._added_values - self._taken_values >= self.max_pending_values and time.monotonic() < deadline:
            if not self._thread.is_alive():
                return
            time.sleep(0.005)

    # ---- writer thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        last_beat = 0.0
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            closing = self._closing
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            try:
                self._drain()
                # what the drain itself produced (diagnoses of this batch) goes out in the same round
                while self._events or self._jobs or (closing and (self._scalars or self._histograms)):
                    self._drain()
                now = time.time()
                if now - last_beat >= 1.0:
                    self._touch_heartbeat()
                    last_beat = now
            except Exception as e:  # never let the thread die: the training loop depends on it
                self._warn(f"deepscope: writer error {type(e).__name__}: {e}")
            for w in waiters:
                w.set()
            if closing:
                if self._retained:
                    self._say_lost_at_close()
                self._close_files()
                self._touch_heartbeat()
                stream_files.unlock_stream(self._lock_fd)
                if self.on_closed is not None:
                    try:
                        self.on_closed()
                    except Exception:
                        pass
                return

    def _drain(self) -> None:
        by_kind: dict[str, list[pa.RecordBatch]] = {}
        for job in _take(self._jobs):
            try:
                for kind, batch in job():
                    by_kind.setdefault(kind, []).append(batch)
            except Exception as e:  # a bad job loses its own data only
                self._warn(f"deepscope: could not convert recorded statistics: {type(e).__name__}: {e}")
        for kind, batches in by_kind.items():  # the steps converted since the last drain: one chunk per kind
            try:
                batch = rb.concat(batches)
            except Exception as e:
                self._warn(f"deepscope: could not convert recorded statistics: {type(e).__name__}: {e}")
                continue
            if kind == "layerstats":
                try:
                    batch = rb.kinds_together(batch)
                except Exception:  # only an ordering: readers take the rows in any order
                    pass
            if batch.num_rows:
                max_step = int(pc.max(batch.column(0)).as_py())  # every kind starts with step
                self._retain(kind, fmt.encode_chunk(batch, kind in fmt.COMPRESSED_KINDS), batch.num_rows, max_step)
        scalars = _take(self._scalars)
        hists = _take(self._histograms)
        events = _take(self._events)
        self._taken_values += sum(len(r[2]) for r in scalars)
        # each kind on its own: a record that cannot be converted costs neither the other kinds nor its own kind's rest
        if scalars:
            batch = self._convert("scalars", scalars, self._scalar_batch)
            if batch is not None:
                batch, max_step, stats = batch
                self._retain("scalars", fmt.encode_chunk(batch), batch.num_rows, max_step, stats)
        if hists:
            batch = self._convert("histograms", hists, rb.histogram_batch)
            if batch is not None:
                self._retain("histograms", fmt.encode_chunk(batch, compress=True), batch.num_rows, None)
        if events:
            batch = self._convert("events", events, rb.event_batch)
            if batch is not None:
                self._retain("events", fmt.encode_chunk(batch), batch.num_rows, None)
        self._write_retained()

    def _convert(self, kind: str, records: list, convert: Callable[[list], Any]) -> Any:
        """``convert(records)``; where that fails, ``convert`` of the records that convert on their own (None: none
        do). Each record left out is counted in ``unconvertible``; each kind of failure is said once."""
        try:
            return convert(records)
        except Exception:
            pass
        check = rb.scalar_values if kind == "scalars" else convert  # conversion alone: no observer sees a value twice
        good = []
        for record in records:
            try:
                check([record])
            except Exception as e:
                self._left_out(kind, record, e)
            else:
                good.append(record)
        return convert(good) if good else None

    def _left_out(self, kind: str, record: tuple, error: Exception) -> None:
        if kind == "scalars":
            n, what = len(record[2]), f"the values of {', '.join(map(repr, record[2]))} at step {record[0]}"
        else:
            n, what = 1, f"histogram {record[0]!r} at step {record[1]}" if kind == "histograms" else "an event"
        self.unconvertible[kind] = self.unconvertible.get(kind, 0) + n
        reason = f"{kind} {type(error).__name__}: {error}"
        if reason not in self._conversion_errors and len(self._conversion_errors) < 20:
            self._conversion_errors.add(reason)
            self._warn(f"deepscope: could not convert {what} ({type(error).__name__}: {error}); not recorded, the "
                       "rest is (this warning is shown once per kind of failure)")  # fmt: skip

    def _retain(
        self, kind: str, chunk: bytes, n_rows: int, max_step: int | None, stats: KeyStats | None = None
    ) -> None:
        self._retained.append((kind, chunk, n_rows, max_step, stats))
        self._retained_bytes += len(chunk)
        while self._retained_bytes > self.max_retained_bytes and len(self._retained) > 1:
            old_kind, old, n, _, _ = self._retained.popleft()
            self._retained_bytes -= len(old)
            if old_kind == "scalars":
                self.dropped_values += n
            else:
                self.dropped_rows += n
            # said when it starts, then every few minutes with the totals: a full disk is no stream of warnings
            now = time.monotonic()
            if self._drops_said_at is None:
                self._drops_said_at = now
                self._warn(f"deepscope: still cannot write to {self.dir}: dropping the oldest buffered data to stay "
                           f"within {self.max_retained_bytes >> 20} MiB of memory (how much is said every "
                           f"{DROP_REPORT_INTERVAL / 60:.0f} minutes while it lasts, and at finish)")  # fmt: skip
            elif now - self._drops_said_at >= DROP_REPORT_INTERVAL:
                self._drops_said_at = now
                self._warn(f"deepscope: still cannot write to {self.dir} ({self._write_error}): "
                           f"{_amount(self.dropped_values, self.dropped_rows)} dropped so far")  # fmt: skip

    def _say_lost_at_close(self) -> None:
        """What could not be written before the stream closed: lost with the process, said once with the totals."""
        values = sum(n for kind, _, n, _, _ in self._retained if kind == "scalars")
        rows = sum(n for kind, _, n, _, _ in self._retained if kind != "scalars")
        lost = _amount(values + self.dropped_values, rows + self.dropped_rows)
        self._warn(f"deepscope: could not write to {self.dir} ({self._write_error}) before the run finished: {lost} "
                   f"are lost ({_amount(values, rows)} still held in memory, the rest dropped while writing failed)",
                   always=True)  # fmt: skip

    def _write_retained(self) -> None:
        while self._retained:
            kind, chunk, n, max_step, stats = self._retained[0]
            try:
                offset = self._append(kind, chunk)
            except OSError as e:
                self.write_errors += 1
                self._write_error = e.strerror or str(e)
                if not self._failing:
                    self._failing = True
                    self._warn(
                        f"deepscope: cannot write to {self.dir} ({e.strerror or e}); keeping up to "
                        f"{self.max_retained_bytes >> 20} MiB in memory and retrying"
                    )
                self._close_files()
                return
            self._retained.popleft()
            self._retained_bytes -= len(chunk)
            if stats is not None:
                self._append_index(kind, offset, len(chunk), stats)
            if kind == "scalars":
                self.flushed_values += n
            if max_step is not None and max_step > self.flushed_step:
                self.flushed_step = max_step
                # at once, not with the next second's beat: a resume after a SIGKILL counts on from the heartbeat
                # (it reads only the last chunks written after it)
                self._touch_heartbeat()
            if self._failing:
                self._failing = False
                dropped = ""
                if self._drops_said_at is not None:
                    self._drops_said_at = None
                    dropped = f" ({_amount(self.dropped_values, self.dropped_rows)} dropped while it failed)"
                self._warn(f"deepscope: writing to {self.dir} works again; buffered data written{dropped}")

    def _append(self, kind: str, chunk: bytes) -> int:
        """Append ``chunk`` to the open segment of ``kind`` (a new one when needed); return its offset."""
        f = self._files.get(kind)
        if f is not None and os.fstat(f.fileno()).st_nlink == 0:
            # Someone removed the run directory: recreate it rather than write into an unlinked file.
            self._warn(f"deepscope: {self.dir} was removed while the run was writing; recreating it")
            self._close_files()
            f = None
        if f is not None and f.tell() + len(chunk) > fmt.SEGMENT_BYTES:
            f.close()
            del self._files[kind]
            self._close_index(kind)
            self._seq += 1
            f = None
        if f is None:
            self._ensure_dir()
            f = self._new_segment(kind)
            self._files[kind] = f
        offset = f.tell()
        view = memoryview(chunk)
        while view:
            view = view[f.write(view) :]
        return offset

    def _append_index(self, kind: str, offset: int, length: int, stats: KeyStats) -> None:
        """Describe the chunk just written in the segment's key index (after it: the index never runs ahead).

        A failure here loses only the index: the segment's remaining chunks go unindexed and readers scan them.
        """
        if kind in self._indexes and self._indexes[kind] is None:
            return
        keys, count, max_step, last_step = stats
        n = len(keys)
        batch = pa.record_batch(
            [pa.array(np.full(n, offset, np.int64)), pa.array(np.full(n, length, np.int64)),
             pa.array(keys, pa.string()), pa.array(count), pa.array(max_step), pa.array(last_step)],
            schema=fmt.SCALARS_INDEX,
        )  # fmt: skip
        try:
            f = self._indexes.get(kind)
            if f is None:
                name = fmt.index_name(os.path.basename(self._files[kind].name))
                f = self._indexes[kind] = open(self.dir / name, "xb", buffering=0)  # noqa: SIM115
            view = memoryview(fmt.encode_chunk(batch))
            while view:
                view = view[f.write(view) :]
        except OSError:
            self._close_index(kind)
            self._indexes[kind] = None

    def _close_index(self, kind: str) -> None:
        f = self._indexes.pop(kind, None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def _new_segment(self, kind: str) -> Any:
        # "x": create, never append to an existing file (a torn tail, or a file of another process)
        for _ in range(10_000):
            name = fmt.segment_name(kind, self._seq)
            try:
                if os.path.exists(self.dir / fmt.index_name(name)):  # a stale index must never describe it
                    raise FileExistsError(name)
                return open(self.dir / name, "xb", buffering=0)  # noqa: SIM115
            except FileExistsError:
                self._seq += 1
        raise OSError(f"no free segment name in {self.dir}")

    def _close_files(self) -> None:
        for kind in list(self._indexes):
            self._close_index(kind)
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
        if self._files:
            self._files = {}
            self._seq += 1  # never append to a file that may end in a torn chunk

    def _first_free_seq(self) -> int:
        seqs = [p[1] for p in map(fmt.parse_segment_name, os.listdir(self.dir)) if p] if self.dir.exists() else []
        return max(seqs, default=-1) + 1

    def _touch_heartbeat(self) -> None:
        try:
            # "<unix time> <highest step on disk>": lets a run listing show progress without reading data, and a
            # resumed run count on. Written after the chunk that raised the step, beside and renamed over: a process
            # killed mid-write left an empty heartbeat, and a resumed run counted its steps from 0 again.
            tmp = self._heartbeat.with_name("heartbeat.tmp")
            tmp.write_text(f"{time.time():.3f} {self.flushed_step}\n")
            os.replace(tmp, self._heartbeat)
        except OSError:
            pass

    def _warn(self, message: str, always: bool = False) -> None:
        # bounded: a script that never calls log() (a watch alone) emits none of them
        if always or len(self.warnings) < MAX_QUEUED_WARNINGS:
            self.warnings.append(message)

    # ---- conversion (writer thread) --------------------------------------------------------------
    def on_scalars(self, callback: Callable[[np.ndarray, list[str], np.ndarray, np.ndarray], None]) -> None:
        """Call ``callback(step, keys, key_ids, values)`` in the writer thread for each scalar batch (until
        ``remove_on_scalars``). The list is replaced, never changed in place: the writer thread iterates it."""
        self._scalar_callbacks = [*self._scalar_callbacks, callback]

    def remove_on_scalars(self, callback: Callable[[np.ndarray, list[str], np.ndarray, np.ndarray], None]) -> None:
        """Stop calling ``callback`` (a watch that ended: its diagnoser no longer reports, nor keeps it alive)."""
        self._scalar_callbacks = [cb for cb in self._scalar_callbacks if cb != callback]

    def _scalar_batch(self, records: list[ScalarRecord]) -> tuple[pa.RecordBatch, int, KeyStats]:
        value_arr = rb.scalar_values(records)  # first: a record it cannot convert has changed nothing yet
        steps = np.empty(len(records), np.int64)
        walls = np.empty(len(records), np.float64)
        lengths = np.empty(len(records), np.int64)
        ids: list[np.ndarray] = []
        for i, (step, wall, data, _) in enumerate(records):
            steps[i] = step
            walls[i] = wall
            lengths[i] = len(data)
            keyset = tuple(data)
            key_ids = self._ids_by_keyset.get(keyset)
            if key_ids is None:
                key_ids = self._ids_by_keyset[keyset] = np.array([self._key_id(k) for k in keyset], np.int32)
            ids.append(key_ids)
        step_col, id_col = np.repeat(steps, lengths), np.concatenate(ids)
        batch = pa.record_batch(
            [
                pa.array(step_col),
                pa.array(np.repeat(walls, lengths)),
                pa.DictionaryArray.from_arrays(pa.array(id_col), pa.array(self._keys, pa.string())),
                pa.array(value_arr),
            ],
            schema=fmt.SCALARS,
        )
        if self._scalar_callbacks:  # last: once the batch is sure to be written
            for cb in self._scalar_callbacks:
                try:
                    cb(step_col, self._keys, id_col, value_arr)
                except Exception as e:  # an observer must never cost the user's values
                    self._warn(f"deepscope: scalar observer failed: {type(e).__name__}: {e}")
        return batch, int(steps.max()), rb.key_stats(self._keys, id_col, step_col)

    def _key_id(self, key: str) -> int:
        kid = self._key_ids.get(key)
        if kid is None:
            kid = self._key_ids[key] = len(self._keys)
            self._keys.append(key)
        return kid


def _amount(values: int, rows: int) -> str:
    """``"1,200 logged values"``, with the rows of the other kinds when there are any."""
    text = f"{values:,} logged values"
    return text + (f" and {rows:,} rows of layer statistics, histograms or events" if rows else "")


_warmed_up = False


def _warm_up() -> None:
    """Run each conversion once in the caller's thread: pyarrow imports modules on first use, and an
    import in the writer thread while the training loop holds the GIL takes seconds, not milliseconds."""
    global _warmed_up
    if _warmed_up:
        return
    keys = pa.array(["k"], pa.string())
    batch = pa.record_batch(
        [pa.array(np.zeros(1, np.int64)), pa.array(np.zeros(1)),
         pa.DictionaryArray.from_arrays(pa.array(np.zeros(1, np.int32)), keys), pa.array(np.zeros(1))],
        schema=fmt.SCALARS,
    )  # fmt: skip
    for b in (
        batch,
        rb.histogram_batch([("k", 0, 0.0, np.zeros(2), np.zeros(1))]),
        rb.event_batch([(0, 0.0, "k", "info", "t", None)]),
    ):
        for compress in (False, True):
            list(fmt.iter_chunks(fmt.encode_chunk(b, compress)))
    pc.max(batch.column(0))
    rb.concat([batch, batch])
    _warmed_up = True


def _take(q: deque) -> list:
    """Pop what is in ``q`` now; items appended meanwhile stay for the next drain."""
    return [q.popleft() for _ in range(len(q))]
