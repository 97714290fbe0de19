"""Series endpoint under load: 50 clients polling the tails of live runs, against one client alone.

A ``deepscope serve`` process serves a store that 5 writer processes keep logging into (10 keys, ~100
steps/s each). Each client polls ``/scalars`` for one (run, key) every 100 ms, asking only for the tail
(``start`` = last step it holds + 1), as the dashboard does. Latency per request, p50/p99; the baseline is
the same loop with a single client, in the same run.

The clients speak HTTP/1.1 over keep-alive connections with a few lines of asyncio (``Connection``): an
httpx client spends ~3.5 ms of CPU per request here, so 50 of them saturate a core by themselves and the
figure measured the load generator more than the server. ``--httpx`` measures with httpx all the same.

    .venv/bin/python -m benchmarks.bench_series_load
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pyarrow as pa

from benchmarks.bench_dashboard import Server
from benchmarks.common import percentiles, table

RUNS, KEYS, SECONDS = 5, 10, 10.0
WRITER = f"""
import sys, time, deepscope
run = deepscope.init(dir=sys.argv[1], id=sys.argv[2], flush_interval=0.2)
step, t0 = 0, time.time()
while time.time() - t0 < float(sys.argv[3]):
    run.log({{f"k{{i}}": step * 0.01 + i for i in range({KEYS})}}, step=step)
    step += 1
    time.sleep(0.01)
run.finish()
"""


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads ``content-length`` answers: the least
    work a client can do per request."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str, params: dict) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(f"GET {path}?{urlencode(params)} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        return int(head[0].split()[1]), await reader.readexactly(int(headers["content-length"]))

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            await self.streams[1].wait_closed()


async def client(get, run: str, key: str, until: float, lat: list[float]) -> None:  # noqa: ANN001
    last = -1
    while time.monotonic() < until:
        t = time.perf_counter()
        status, body = await get(f"/api/runs/{run}/scalars", {"key": key, "start": last + 1, "buckets": 1000})
        lat.append(time.perf_counter() - t)
        if status == 200:
            batch = pa.ipc.open_stream(body).read_all()
            if batch.num_rows:
                last = int(batch.column("step")[-1].as_py())
        await asyncio.sleep(0.1)


async def load(url: str, n_clients: int, seconds: float) -> list[float]:
    lat: list[float] = []
    until = time.monotonic() + seconds
    connections = [Connection(url) for _ in range(n_clients)]
    try:
        pairs = [(f"live-{i % RUNS}", f"k{i % KEYS}") for i in range(n_clients)]
        await asyncio.gather(*(client(c.get, run, key, until, lat) for c, (run, key) in zip(connections, pairs)))
    finally:
        for c in connections:
            await c.close()
    return lat


async def load_httpx(url: str, n_clients: int, seconds: float) -> list[float]:
    lat: list[float] = []
    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def get(path: str, params: dict) -> tuple[int, bytes]:
            r = await http.get(path, params=params)
            return r.status_code, r.content

        until = time.monotonic() + seconds
        await asyncio.gather(*(client(get, f"live-{i % RUNS}", f"k{i % KEYS}", until, lat) for i in range(n_clients)))
    return lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--httpx", action="store_true", help="clients made with httpx (CPU-heavy)")
    args = parser.parse_args()
    run_load = load_httpx if args.httpx else load
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        total = 3 * SECONDS + 15
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, d, f"live-{i}", str(total)], env=env) for i in range(RUNS)
        ]
        while not all((Path(d) / f"live-{i}" / "run.json").exists() for i in range(RUNS)):
            time.sleep(0.05)
        server = Server(Path(d))
        try:
            time.sleep(1.0)
            alone = asyncio.run(run_load(server.url, 1, SECONDS))
            loaded = asyncio.run(run_load(server.url, 50, SECONDS))
        finally:
            server.stop()
            for w in writers:
                w.wait(total + 30)
    a50, a95, a99 = percentiles(alone)
    l50, l95, l99 = percentiles(loaded)
    table(
        f"Series endpoint: {RUNS} live runs × {KEYS} keys, tails polled every 100 ms for {SECONDS:.0f} s"
        f" ({'httpx' if args.httpx else 'plain asyncio'} clients)",
        [
            ("1 client: p50 / p99", f"{a50 * 1e3:.1f} ms / {a99 * 1e3:.1f} ms ({len(alone)} requests)", ""),
            (
                "50 clients: p50 / p99",
                f"{l50 * 1e3:.1f} ms / {l99 * 1e3:.1f} ms ({len(loaded)} requests)",
                "p99 < 200 ms",
            ),
            ("50 clients: requests/s served", f"{len(loaded) / SECONDS:.0f}", ""),
            ("p99 under load / p99 alone", f"{l99 / a99:.1f}×", ""),
        ],
    )


if __name__ == "__main__":
    main()
