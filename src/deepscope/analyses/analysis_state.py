"""The activations analysis on disk while it is computed: its Zarr arrays, written a chunk at a time, and
``progress.json``, which records the rows they hold so that an interrupted analysis resumes after them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..store.runmeta import write_json_atomic
from .chunk_files import aligned_empty, write_chunk_file

CHUNK_BYTES = 8 << 20  # rows per chunk: about 8 MiB of the widest array


class AnalysisState:
    """The arrays on disk and the rows they hold (``progress.json``)."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], chunk_rows: int | None) -> None:
        self.dir = out_dir
        self.fingerprint = fingerprint
        self.length: int | None = fingerprint.get("length")  # None: an iterable of unknown length
        self.chunk_rows = chunk_rows
        self.rows_done = 0
        self.widths: dict[str, int] = {}
        self.outputs: dict[str, dict[str, Any]] = {}  # layer -> {"shape": per instance, unpooled; "maps": bool; "type"}
        self.inputs: str | None = None  # what the model read: "images", "tokens" (integer ids) or "features"
        self.data: str | None = None  # the digest of the data's first rows (rows_digest of data_rows rows)
        self.data_rows = 0
        # the digest of the rows just before rows_done: {"start", "stop", "digest"} (rows_digest), or None
        self.tail: dict[str, Any] | None = None
        self.stopped: str | None = None  # why the last call stopped before the end: "interrupted", or the error
        self.arrays: dict[str, Any] = {}
        self._dirs: set[Path] = set()  # chunk directories known to exist
        self._saved = 0.0  # when progress.json was last written (time.monotonic())
        self._synced = 0  # rows whose chunk files are known to be on the disk itself (fsynced), not in a cache

    @classmethod
    def reopen(cls, out_dir: Path, progress: dict[str, Any]) -> AnalysisState:
        import zarr

        s = cls(out_dir, progress["fingerprint"], progress["chunk_rows"])
        s.rows_done = int(progress["rows_done"])
        s.widths = dict(progress["widths"])
        s.outputs = dict(progress.get("outputs", {}))
        s.inputs = progress.get("inputs")
        s.data = progress.get("data")
        s.data_rows = int(progress.get("data_rows") or 0)
        s.tail = progress.get("tail")
        s._synced = s.rows_done  # recorded after their chunks were synced
        for key in progress["arrays"]:
            arr = zarr.open_array(str(out_dir / key), mode="r+")
            arr.resize((s.rows_done, *arr.shape[1:]))  # rows written after the last progress record are redone
            if s.length:
                arr.resize((s.length, *arr.shape[1:]))  # back to the full length, without their chunks
            s.arrays[key] = arr
        return s

    def plan(self, widths: dict[str, int], outputs: dict[str, tuple[int, ...]],
             layer_outputs: dict[str, dict[str, Any]]) -> dict[str, tuple[tuple[int, ...], Any]]:  # fmt: skip
        """The arrays to create, once the first batch tells the widths (and each layer's unpooled output shape):
        ``{key: (shape after the first dimension, dtype)}``; the chunk rows are chosen."""
        self.widths = widths
        self.outputs = layer_outputs
        specs = {f"{layer}.zarr": ((w,), "float32") for layer, w in widths.items()}
        specs |= {f"{k}.zarr": v for k, v in outputs.items()}
        if self.chunk_rows is None:
            widest = max(math.prod(tail) * np.dtype(dtype).itemsize for tail, dtype in specs.values())
            self.chunk_rows = int(min(8192, max(256, 2 ** math.floor(math.log2(max(1, CHUNK_BYTES // widest))))))
        return specs

    def create(self, specs: dict[str, tuple[tuple[int, ...], Any]]) -> None:
        """Create the planned arrays (:meth:`plan`) and record them."""
        import zarr

        arrays = {}  # all or none: an interrupted creation must not leave a progress record of some of them
        for key, (tail, dtype) in specs.items():
            # Uncompressed: written once, read often; zstd made extraction about 3x slower here.
            # The full length at once, when known: growing an array writes its metadata (1–2 ms) at every chunk.
            # Chunk files side by side (c.0.0, c.1.0, …), not a directory per chunk row (c/0/0): making those
            # directories cost the writer 14 ms per 100k rows of one layer.
            arrays[key] = zarr.create_array(
                store=str(self.dir / key), shape=(self.length or 0, *tail), dtype=dtype,
                chunks=(self.chunk_rows, *tail), compressors=None, overwrite=True,
                chunk_key_encoding={"name": "default", "separator": "."},
            )  # fmt: skip
        self.arrays = arrays
        self.save()

    def write(self, start: int, chunk: dict[str, np.ndarray]) -> int:
        stop = start + len(next(iter(chunk.values())))
        for key, values in chunk.items():
            arr = self.arrays[key]
            if arr.shape[0] < stop:  # a dataset of unknown length
                arr.resize((stop, *arr.shape[1:]))
            if not self._write_whole_chunk(key, arr, start, values):
                arr[start:stop] = values
        return stop

    def _write_whole_chunk(self, key: str, arr: Any, start: int, values: np.ndarray) -> bool:
        """Write one whole chunk (or the array's last one, padded) straight to its file: an uncompressed Zarr v3
        chunk is the C-order bytes of its values (the ``bytes`` codec alone). Half the CPU time of
        ``arr[...] = values``, which competes with the forward pass for the same cores. False (nothing written) for
        anything else: zarr writes those."""
        rows = arr.chunks[0]
        from zarr.codecs import BytesCodec

        codecs = arr.metadata.codecs
        n = len(values)
        edge = n < rows and start + n == arr.shape[0]  # the array's last chunk: stored whole, padded, as zarr does
        if start % rows or (n != rows and not edge) or len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
            return False
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if values.dtype.itemsize > 1 and endian != sys.byteorder:
            return False
        if edge:
            padded = aligned_empty((rows, *values.shape[1:]), arr.dtype)
            padded[:n] = values
            padded[n:] = arr.fill_value
            values = padded
        path = self.dir / key / arr.metadata.encode_chunk_key((start // rows,) + (0,) * (arr.ndim - 1))
        if path.parent not in self._dirs:  # one directory per chunk row: made once, not asked again per chunk
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        write_chunk_file(path, values if values.dtype == arr.dtype else values.astype(arr.dtype))
        return True

    def save_progress(self) -> None:
        """Record the rows on disk at most twice a second: a resumed run redoes the rows after the last record. Not
        flushed to the disk (``fsync`` there cost up to 6% of an extraction's time): a crash of the machine, not of
        the process, may lose rows these records count."""
        if time.monotonic() - self._saved >= 0.5:
            self.save(sync=False)

    def save(self, complete: bool = False, sync: bool = True) -> None:
        """Record the rows on disk; ``sync``: flushed to the disk first (at the end, interrupted or failed), so that
        the rows it records survive a crash of the machine, not just of the process."""
        if sync and self.rows_done > self._synced:
            self._sync(self._synced, self.rows_done)
            self._synced = self.rows_done
        self._saved = time.monotonic()
        write_json_atomic(self.dir / "progress.json", {
            "version": 1, "fingerprint": self.fingerprint, "rows_done": self.rows_done, "complete": complete,
            "chunk_rows": self.chunk_rows, "widths": self.widths, "outputs": self.outputs,
            "arrays": sorted(self.arrays), "inputs": self.inputs, "data": self.data, "data_rows": self.data_rows,
            "stopped": self.stopped,
            "tail": self.tail if self.tail and self.tail["stop"] == self.rows_done else None,
        })  # fmt: skip

    def _sync(self, start: int, stop: int) -> None:
        """Flush the chunk files of rows ``start:stop`` to the disk (``fsync``), with each array's metadata and the
        directories that name them: written with ``O_DIRECT`` or through the page cache, a file's data and size may
        sit in a cache that a crash loses. Chunks never written (all the fill value: zarr stores none) are skipped."""
        paths: list[Path] = []
        dirs = {self.dir}
        for key, arr in self.arrays.items():
            rows = arr.chunks[0]
            for i in range(start // rows, -(-stop // rows)):
                paths.append(self.dir / key / arr.metadata.encode_chunk_key((i,) + (0,) * (arr.ndim - 1)))
            paths.append(self.dir / key / "zarr.json")
            dirs.update(p for p in (self.dir / key).parents if self.dir in p.parents or p == self.dir)
            dirs.add(self.dir / key)
        dirs.update(p.parent for p in paths)
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if os.name == "posix":  # a directory cannot be opened elsewhere (Windows)
            for d in dirs:
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def finish(self) -> None:
        for arr in self.arrays.values():
            if arr.shape[0] != self.rows_done:
                arr.resize((self.rows_done, *arr.shape[1:]))
        self.save(complete=True)
