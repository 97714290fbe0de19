"""Live updates: the poller's messages, the subscriber streams, and SSE end to end over a real server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

import deepscope
from deepscope.server.launch import BackgroundServer
from deepscope.server.live import LiveHub, sse


def parse(message: bytes) -> tuple[str, dict]:
    event, data = message.decode().strip().split("\n")
    return event.removeprefix("event: "), json.loads(data.removeprefix("data: "))


def test_sse_framing():
    assert sse("run", {"run": "a", "max_step": 3}) == b'event: run\ndata: {"run":"a","max_step":3}\n\n'


def test_poller_announces_new_data_status_changes_and_new_runs(root):
    run = deepscope.init(project="p", name="a", dir=root, flush_interval=0.05)
    run.log({"loss": 1.0}, step=0)
    run.flush()
    hub = LiveHub(deepscope.open(root))
    assert hub.poll_runs() == []  # the first look only learns the run list
    assert [parse(m) for m in hub.poll_tails()] == [("run", {"run": run.id, "max_step": 0, "status": "running"})]
    assert hub.poll_tails() == []  # nothing new

    run.log({"loss": 0.5}, step=7)
    run.flush()
    assert [parse(m) for m in hub.poll_tails()] == [("run", {"run": run.id, "max_step": 7, "status": "running"})]

    run.log({"loss": 0.25}, step=8)
    run.finish()  # the last values and the new status arrive together
    assert [parse(m) for m in hub.poll_runs()] == [
        ("run", {"run": run.id, "max_step": 8, "status": "finished"}),
        ("runs", {}),
    ]
    assert hub.poll_tails() == []  # finished runs are no longer polled

    with deepscope.init(project="p", name="b", dir=root):
        assert [parse(m) for m in hub.poll_runs()] == [("runs", {})]


def test_a_rank_writing_after_rank_0_finished_is_still_followed(root):
    """Rank 0 finishes first — the run's status is its — while rank 1 writes on: its steps still reach the reader
    the server answers from, until its writer stops beating."""
    r0 = deepscope.init(project="p", id="ddp", dir=root, rank=0, world_size=2, flush_interval=0.05)
    r1 = deepscope.init(project="p", id="ddp", dir=root, rank=1, world_size=2, flush_interval=0.05)
    for s in range(5):
        r0.log({"loss": 1.0}, step=s)
        r1.log({"loss": 1.0}, step=s)
    r0.flush()
    r1.flush()
    store = deepscope.open(root)
    hub = LiveHub(store)
    hub.poll_runs()
    hub.poll_tails()
    r0.finish()
    hub.poll_runs()
    for s in range(5, 100):
        r1.log({"loss": 1.0}, step=s)
    r1.finish()
    hub.poll_runs()
    hub.poll_tails()
    assert store.run("ddp").series("loss", rank=1).step[-1] == 99


def test_a_run_deleted_and_made_again_is_read_anew(root):
    import shutil

    with deepscope.init(project="p", id="same", dir=root) as run:
        for s in range(1000):
            run.log({"loss": 1.0, "acc": 0.5}, step=s)
    store = deepscope.open(root)
    assert len(store.run("same").series("loss")) == 1000
    shutil.rmtree(root / "same")
    time.sleep(0.01)  # another start time
    with deepscope.init(project="p", id="same", dir=root) as run:
        for s in range(10):
            run.log({"loss": 7.0}, step=s)
    reader = store.run("same")
    assert reader.series("loss").value.tolist() == [7.0] * 10
    assert [k.key for k in reader.keys()] == ["loss"]


def test_subscribers_get_events_keepalives_and_an_end():
    async def scenario():
        hub = LiveHub(store=None, keepalive_interval=0.05)  # no store needed to fan out messages
        stream = hub.events()
        assert await anext(stream) == b": connected\n\n"
        assert hub.subscriber_count == 1
        hub.publish(sse("runs", {}))
        assert await anext(stream) == b"event: runs\ndata: {}\n\n"
        assert await anext(stream) == b": keep-alive\n\n"
        hub.close()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert hub.subscriber_count == 0

    asyncio.run(scenario())


def test_a_slow_subscriber_loses_the_oldest_messages():
    async def scenario():
        hub = LiveHub(store=None)
        stream = hub.events()
        await anext(stream)
        for i in range(1000):
            hub.publish(sse("run", {"i": i}))
        first = await anext(stream)
        assert parse(first)[1]["i"] == 1000 - 256  # the queue holds the newest 256
        await stream.aclose()

    asyncio.run(scenario())


def read_events(lines: Iterator[str], until, timeout: float) -> list[tuple[str, dict]]:
    """Parse ``event:``/``data:`` pairs off SSE lines until ``until(events)`` holds or the deadline passes."""
    events: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event is not None:
            events.append((event, json.loads(line.removeprefix("data: "))))
            if until(events):
                return events
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"not received within {timeout} s; got {events}")


def test_a_live_writer_reaches_the_browser_over_sse(root):
    with (
        BackgroundServer(root, port=0) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
        client.stream("GET", "/api/live") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        run = deepscope.init(project="p", name="live", dir=root, flush_interval=0.05)
        # The new run is announced within the run-list interval (~1 s)…
        read_events(lines, lambda evs: ("runs", {}) in evs, timeout=10)
        run.log({"train/loss": 0.5}, step=41)
        run.flush()
        # …and its new data within the tail interval (200 ms).
        events = read_events(lines, lambda evs: any(e == "run" and d["max_step"] == 41 for e, d in evs), timeout=10)
        assert ("run", {"run": run.id, "max_step": 41, "status": "running"}) in events
        run.finish()
        read_events(lines, lambda evs: any(d.get("status") == "finished" for _, d in evs), timeout=10)


def test_the_server_stops_promptly_while_a_browser_listens(root):
    server = BackgroundServer(root, port=0).start()
    with httpx.Client(base_url=server.url, timeout=10.0) as client, client.stream("GET", "/api/live") as response:
        lines = response.iter_lines()
        assert next(lines) == ": connected"
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
        assert list(lines) == [""]  # the stream ended cleanly


def test_a_run_that_now_holds_a_watch_or_a_graph_is_announced(root):
    """The run list says what each run holds (``contents``): the views ask for a layer table, a graph or an
    analysis only when it is there, so a run that gains one must reach them."""
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with deepscope.init(project="p", name="a", dir=root) as run:
        hub = LiveHub(deepscope.open(root))
        hub.poll_runs()
        assert deepscope.open(root).info(run.id).contents == ()
        run.watch(model)
        assert [parse(m) for m in hub.poll_runs()] == [("runs", {})]
        assert hub.poll_runs() == []  # announced once
        assert deepscope.open(root).info(run.id).contents == ("watch",)
        import torch

        deepscope.graph(model, torch.zeros(1, 3), run=run)
        assert [parse(m) for m in hub.poll_runs()] == [("runs", {})]
        assert deepscope.open(root).info(run.id).contents == ("watch", "graph")
