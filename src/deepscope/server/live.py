"""Live updates: a poller re-reads the tails of running runs and tells every subscriber what changed.

Every ``tail_interval`` (200 ms) the readers of running runs are refreshed; every ``runs_interval`` (~1 s)
the run list is re-read to notice new runs and status changes. Messages are server-sent events, already
encoded, broadcast through one bounded ``asyncio.Queue`` per subscriber.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from ..store import Store

log = logging.getLogger("deepscope.server")

QUEUE_SIZE = 256
WRITERS_BEAT = 5.0  # s: a run whose newest heartbeat is younger is still written by some rank (they beat each second)
_CLOSED = b""  # put in a subscriber's queue when the hub closes; no event is empty


def sse(event: str, data: dict) -> bytes:
    """One server-sent event: ``event: <name>`` and one ``data:`` line of JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class LiveHub:
    """Polls the store and broadcasts ``run`` / ``runs`` events to the subscribers of ``/api/live``."""

    def __init__(
        self,
        store: Store,
        *,
        tail_interval: float = 0.2,
        runs_interval: float = 1.0,
        keepalive_interval: float = 15.0,
    ) -> None:
        self.store = store
        self.tail_interval = tail_interval
        self.runs_interval = runs_interval
        self.keepalive_interval = keepalive_interval
        self._subscribers: set[asyncio.Queue[bytes]] = set()
        self._status: dict[str, str] | None = None  # run id -> status at the last run-list check
        self._contents: dict[str, tuple[str, ...]] = {}  # run id -> what it held at the last run-list check
        self._beats: dict[str, float | None] = {}  # run id -> its newest heartbeat at the last run-list check
        self._announced: dict[str, int | None] = {}  # run id -> max_step last announced
        self._closed = False
        self._failing = False

    # ---- polling (plain functions, run in a worker thread) ------------------------------------------
    def poll_runs(self) -> list[bytes]:
        """Re-read the run list: a new, vanished or re-statused run, or one that now holds more (a watch, a graph,
        an analysis), gives one ``runs`` event."""
        infos = self.store.runs()
        self._beats = {info.id: info.heartbeat for info in infos}
        status = {info.id: info.status for info in infos}
        contents = {info.id: info.contents for info in infos}
        previous, self._status = self._status, status
        held, self._contents = self._contents, contents
        if previous is None or (previous == status and held == contents):
            return []
        messages = []
        for run_id, now in status.items():
            if previous.get(run_id, "running") == "running" and now != "running":
                messages += self._tail(run_id, now, force=True)  # its last values, and the new status
        return [*messages, sse("runs", {})]

    def poll_tails(self) -> list[bytes]:
        """Refresh the readers of running runs — and of runs whose writers still beat: rank 0 finishing first ends a
        distributed run's status while the other ranks write on —: one ``run`` event for each that got new data."""
        messages = []
        now = time.time()
        for run_id, status in (self._status or {}).items():
            beat = self._beats.get(run_id)
            if status == "running" or (beat is not None and now - beat < WRITERS_BEAT):
                messages += self._tail(run_id, status)
        return messages

    def _tail(self, run_id: str, status: str, force: bool = False) -> list[bytes]:
        try:
            reader = self.store.run(run_id)
        except KeyError:  # removed since the last run-list check
            return []
        tail = reader.refresh()
        if status == "running" and not reader.loaded:
            # A running run's tail is what dashboards poll: read its values here, in the poller's thread,
            # so that every tail query is answered from memory on the event loop.
            reader.load()
        max_step = reader.max_step
        if not (force or tail.new_values or self._announced.get(run_id, -1) != max_step):
            return []
        self._announced[run_id] = max_step
        return [sse("run", {"run": run_id, "max_step": max_step, "status": status})]

    # ---- the loop and the subscribers -----------------------------------------------------------------
    async def run(self) -> None:
        """Poll until cancelled. A failing poll is logged once and retried; it never stops the loop."""
        loop = asyncio.get_running_loop()
        next_runs_check = 0.0
        while not self._closed:
            try:
                messages = []
                if loop.time() >= next_runs_check:
                    next_runs_check = loop.time() + self.runs_interval
                    messages += await asyncio.to_thread(self.poll_runs)
                messages += await asyncio.to_thread(self.poll_tails)
                self._failing = False
            except Exception:
                if not self._failing:
                    log.exception("deepscope: reading the store for live updates failed; retrying")
                self._failing = True
                messages = []
            for message in messages:
                self.publish(message)
            await asyncio.sleep(self.tail_interval)

    def publish(self, message: bytes) -> None:
        for queue in list(self._subscribers):
            _put_dropping_oldest(queue, message)

    async def events(self) -> AsyncIterator[bytes]:
        """The byte stream of one subscriber: a first comment, then events and keep-alive comments."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield b": connected\n\n"
            while not self._closed:
                try:
                    message = await asyncio.wait_for(queue.get(), self.keepalive_interval)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if message == _CLOSED:
                    return
                yield message
        finally:
            self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every subscriber's stream (so that a server can shut down) and stop polling."""
        self._closed = True
        for queue in list(self._subscribers):
            _put_dropping_oldest(queue, _CLOSED)


def _put_dropping_oldest(queue: asyncio.Queue[bytes], message: bytes) -> None:
    # A slow client loses its oldest notifications, never the newest: each says "data up to step S".
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(message)
