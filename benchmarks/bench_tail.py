"""Tail: time from ``run.log`` in a writer process to the value being visible to a polling reader.

The baseline in the same run is the writer's flush interval: the latency is mostly that wait.

    .venv/bin/python -m benchmarks.bench_tail
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import deepscope
from benchmarks.common import percentiles, table

TRIALS = 30
WRITER = """
import sys, time, deepscope
run = deepscope.init(dir=sys.argv[1], id="tail", flush_interval=float(sys.argv[2]))
for i in range(int(sys.argv[3])):
    sys.stdin.readline()
    run.log({"t": time.time()}, step=i)
    run.log({"noise": 0.0}, step=i)
run.finish()
"""


def measure(flush_interval: float) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, d, str(flush_interval), str(TRIALS)],
            stdin=subprocess.PIPE,
            text=True,
            env=env,
        )
        while not (Path(d) / "tail" / "run.json").exists():
            time.sleep(0.01)
        reader = deepscope.open(d).run("tail")
        lat = []
        for i in range(TRIALS):
            p.stdin.write("\n")
            p.stdin.flush()
            while True:
                reader.refresh()
                if reader.max_step is not None and reader.max_step >= i and "t" in {k.key for k in reader.keys()}:
                    s = reader.series("t")
                    if s.step[-1] >= i:
                        lat.append(time.time() - s.value[-1])
                        break
                time.sleep(0.01)
        p.stdin.close()
        p.wait()
    return lat


def main() -> None:
    rows = []
    for fi in (0.5, 0.1):
        med, p95, _ = percentiles(measure(fi))
        rows.append(
            (
                f"log → visible to a reader, flush interval {fi} s",
                f"median {med * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms",
                "< 1 s",
            )
        )
        rows.append((f"  latency / flush interval ({fi} s)", f"{med / fi:.2f}", ""))
    table("Tail: a newly flushed value reaches a reader", rows)


if __name__ == "__main__":
    main()
