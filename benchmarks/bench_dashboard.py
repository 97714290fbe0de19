"""The dashboard in headless Chromium against a ``deepscope serve`` process.

(a) log → visible: a value logged by a running run until the open chart holds it (median, p95);
(b) first meaningful paint: navigation until the first chart holds data, over a store of 100 runs × 20 keys;
(c) the size of the web bundle (raw and gzip).

    .venv/bin/python -m benchmarks.bench_dashboard [--runs 100] [--steps 100000] [--other-steps 100000]

The store (100 runs × 20 keys × 100k steps) takes ~3 minutes and 5.6 GB of temporary disk to write here
(two writer processes); ``--other-steps 10000`` keeps the five newest runs (the ones the page opens with) at
full size and makes the 95 others smaller, in 25 s and 0.8 GB.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.browser.browser_helpers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - the browser tests' flags

import deepscope  # noqa: E402
from benchmarks.common import percentiles, table  # noqa: E402
from deepscope.server.static_site import STATIC_DIR  # noqa: E402

KEYS = [f"{group}/metric_{i}" for group in ("train", "val", "grad", "sys") for i in range(5)]
TRIALS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``deepscope serve DIR`` in its own process, as a user runs it."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        exe = Path(sys.executable).with_name("deepscope")
        self.proc = subprocess.Popen(
            [str(exe), "serve", str(root), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("deepscope serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_run(args: tuple[str, int, int]) -> None:
    root, index, steps = args
    rnd = random.Random(index)
    run = deepscope.init(project="bench", name=f"run-{index:03d}", dir=root, config={"lr": 10 ** -rnd.uniform(2, 4)})
    base = [rnd.uniform(0.5, 2.0) for _ in KEYS]
    for s in range(steps):
        decay = 1.0 / (1 + s / 5000)
        run.log({k: b * decay + 0.01 * (s % 7) for k, b in zip(KEYS, base)}, step=s)
    run.finish()


def write_store(root: Path, runs: int, steps: int, other_steps: int) -> float:
    t = time.perf_counter()
    jobs = [(str(root), i, other_steps if i < runs - 5 else steps) for i in range(runs)]
    # One after the other for the start times (the newest five are the big ones), written by two processes.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(write_run, jobs[: runs - 5], chunksize=4)
        pool.map(write_run, jobs[runs - 5 :], chunksize=1)
    return time.perf_counter() - t


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def first_paint(browser, url: str) -> tuple[float, float]:
    """Seconds from navigation to the first chart holding data, and to every chart holding data."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("() => window.__deepscope?.firstData != null", timeout=120_000, polling=10)
    first = page.evaluate("() => window.__deepscope.firstData") / 1000
    page.wait_for_function(
        """() => {
            const c = Object.values(window.__deepscope.charts).map(Object.values);
            return c.length >= 20 && c.every(r => r.length && r.every(x => x.points > 0));
        }""",
        timeout=120_000,
        polling=20,
    )
    every = page.evaluate("() => performance.now()") / 1000
    ctx.close()
    return first, every


def log_to_visible(browser, root: Path) -> list[float]:
    run = deepscope.init(project="bench", name="live", dir=root)  # default flush interval (0.5 s)
    run.log({"live/value": 0.0}, step=0)
    run.flush()
    server = Server(root)
    try:
        page = browser.new_page()
        page.goto(f"{server.url}?runs={run.id}")
        page.wait_for_function(
            "(run) => window.__deepscope?.charts['live/value']?.[run]?.lastStep === 0", arg=run.id, timeout=30_000
        )
        times = []
        for step in range(1, TRIALS + 1):
            time.sleep(random.uniform(0.05, 0.35))  # not in phase with the writer's flushes
            t = time.perf_counter()
            run.log({"live/value": float(step)}, step=step)
            page.wait_for_function(
                "([run, step]) => window.__deepscope.charts['live/value'][run].lastStep === step",
                arg=[run.id, step],
                timeout=10_000,
                polling=5,
            )
            times.append(time.perf_counter() - t)
        page.close()
        return times
    finally:
        run.finish()
        server.stop()


def bundle() -> list[tuple[str, int, int]]:
    out = []
    for path in sorted((STATIC_DIR / "assets").iterdir()):
        raw = path.read_bytes()
        out.append((path.name, len(raw), len(gzip.compress(raw, 9))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100_000, help="steps of the five newest runs")
    parser.add_argument("--other-steps", type=int, default=100_000, help="steps of the other runs")
    parser.add_argument("--cold", type=int, default=3, help="cold servers to start (their median is reported)")
    args = parser.parse_args()
    if not (STATIC_DIR / "index.html").is_file():
        sys.exit("the web app is not built: run `make web`")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = launch(p)
        latencies = log_to_visible(browser, Path(tmp) / "live")

        root = Path(tmp) / "big"
        root.mkdir()
        wrote = write_store(root, args.runs, args.steps, args.other_steps)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        colds = []
        for _ in range(args.cold - 1):  # a new server process each time: it reads the runs for the first time
            server = Server(root)
            try:
                colds.append(first_paint(browser, server.url))
            finally:
                server.stop()
        server = Server(root)
        try:
            colds.append(first_paint(browser, server.url))
            warm = [first_paint(browser, server.url) for _ in range(3)]
        finally:
            server.stop()
        browser.close()

    med, p95, _ = percentiles(latencies)
    table(
        f"log → visible in the chart ({TRIALS} trials, writer flush interval 0.5 s, server tail poll 0.2 s)",
        [
            ("median", f"{med * 1000:.0f} ms", "< 1 s"),
            ("p95", f"{p95 * 1000:.0f} ms", "< 1 s"),
            ("max", f"{max(latencies) * 1000:.0f} ms", ""),
        ],
    )
    cold = (sorted(c[0] for c in colds)[len(colds) // 2], sorted(c[1] for c in colds)[len(colds) // 2])
    cold_all = ", ".join(f"{c[0] * 1000:.0f}" for c in colds)
    warm_first = sorted(w[0] for w in warm)[1]
    warm_every = sorted(w[1] for w in warm)[1]
    table(
        f"first meaningful paint: {args.runs} runs × {len(KEYS)} keys (5 newest × {args.steps:,} steps, "
        f"{args.runs - 5} × {args.other_steps:,}; {size / 1e9:.2f} GB, written in {wrote:.0f} s); "
        "the page opens on the 5 newest runs",
        [
            (
                f"first chart holds data, cold server (median of {len(colds)}: {cold_all} ms)",
                f"{cold[0] * 1000:.0f} ms",
                "< 2 s",
            ),
            (f"all 20 charts hold data, cold server (median of {len(colds)})", f"{cold[1] * 1000:.0f} ms", ""),
            ("first chart holds data, warm server (median of 3)", f"{warm_first * 1000:.0f} ms", "< 2 s"),
            ("all 20 charts hold data, warm server (median of 3)", f"{warm_every * 1000:.0f} ms", ""),
        ],
    )
    files = bundle()
    rows = [(name, f"{raw / 1024:.1f} KiB", f"{gz / 1024:.1f} KiB gzip") for name, raw, gz in files]
    js = [f for f in files if f[0].endswith(".js")]
    raw_js, gz_js = sum(f[1] for f in js) / 1024, sum(f[2] for f in js) / 1024
    rows.append(("all JavaScript", f"{raw_js:.1f} KiB", f"{gz_js:.1f} KiB gzip"))
    table("web bundle (src/deepscope/server/static/assets)", rows)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "default")
    main()
