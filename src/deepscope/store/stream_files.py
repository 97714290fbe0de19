"""A stream's files apart from writing them: the lock that makes one live writer per (run, rank), and the highest
step on disk that a resumed run counts on from.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import pyarrow as pa

from . import format as fmt
from . import runmeta


def lock_stream(stream_dir: Path) -> int | None:
    """Hold ``writer.lock`` for the writer's lifetime: a second live writer of the stream is an error.

    ``flock`` locks die with their process, so a crashed writer never blocks the next one.
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, one writer per stream is then the caller's promise
        return None
    fd = os.open(stream_dir / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise RuntimeError(
            f"deepscope: {stream_dir} is being written by another live process (pid {holder}); "
            "each (run, rank) has one writer — use another run id or rank"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock_stream(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)  # closing the descriptor releases the flock
        except OSError:
            pass


TAIL_CHUNKS = 4  # chunks read from the end of a segment written after its stream's heartbeat


def last_step_on_disk(stream_dir: Path) -> int:
    """The highest step in a stream's files, -1 for none: its heartbeat's, or a higher one in the last chunks of a
    segment written after it (the heartbeat follows each chunk that raises the step: a process killed between the
    two left one chunk past it); every chunk's when the heartbeat is missing or unreadable."""
    try:
        fd = os.open(stream_dir / "heartbeat", os.O_RDONLY)
        try:
            since: int | None = os.fstat(fd).st_mtime_ns
            step = runmeta.heartbeat_step(os.read(fd, 64).decode("ascii", "replace").split())
        finally:
            os.close(fd)
    except OSError:
        step = -1
    if step < 0:
        since = None  # read them all
    for seg in sorted(stream_dir.glob("*.arrows")):
        try:
            # same mtime: written in the same clock tick as the heartbeat, before or after it
            if since is not None and seg.stat().st_mtime_ns < since:
                continue
            for chunk in fmt.iter_chunks(_last_chunks(seg, TAIL_CHUNKS if since is not None else None)):
                if "step" in chunk.table.column_names:
                    steps = chunk.table["step"].drop_null().to_numpy()
                    if len(steps):
                        step = max(step, int(steps.max()))
        except (OSError, pa.ArrowException, fmt.CorruptChunk):
            continue  # a torn tail (a power loss zero-fills it) or a foreign file: the steps read before it count
    return step


def _last_chunks(path: Path, n: int | None) -> bytes:
    """The bytes of the last ``n`` chunks of a segment (all with None), found by reading only the chunk headers."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if n is None:
            return os.pread(fd, size, 0)
        starts: deque[int] = deque(maxlen=n)
        offset = 0
        while offset + fmt.HEADER.size <= size:
            magic, length, _ = fmt.HEADER.unpack(os.pread(fd, fmt.HEADER.size, offset))
            if magic != fmt.MAGIC:
                break  # a zero-filled tail: the chunks before it
            starts.append(offset)
            offset += fmt.HEADER.size + length
        return os.pread(fd, size - starts[0], starts[0]) if starts else b""
    finally:
        os.close(fd)
