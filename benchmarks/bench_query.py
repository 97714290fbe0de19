"""Query: a 1M-point series downsampled to 2,000 buckets, and listing 1,000 runs.

Baselines in the same run: the same downsampling as a DuckDB ``GROUP BY`` over the in-memory Arrow
table, and as NumPy over the raw arrays without rollups.

    .venv/bin/python -m benchmarks.bench_query
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import deepscope
from benchmarks.common import best_of, table
from deepscope.store import runmeta
from deepscope.store.series import SeriesBuffer

N = 1_000_000
BUCKETS = 2000


def write_long_run(root: Path) -> str:
    run = deepscope.init(dir=root, name="long")
    rng = np.random.default_rng(0)
    values = rng.normal(size=N).cumsum()
    for step in range(N):
        run.log({"train/loss": values[step]}, step=step)
    run.finish()
    return run.id


def duckdb_downsample(step: np.ndarray, value: np.ndarray) -> object:
    import duckdb
    import pyarrow as pa

    tbl = pa.table({"step": step, "value": value})  # noqa: F841 - read by name in the query
    lo, hi = int(step[0]), int(step[-1])
    width = (hi - lo + 1) / BUCKETS
    return duckdb.sql(
        f"""select floor((step - {lo}) / {width})::int as b, min(value), max(value), avg(value),
                   arg_max(value, step), max(step), count(*)
            from tbl group by b order by b"""
    ).fetchnumpy()


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t = time.perf_counter()
        run_id = write_long_run(root)
        write_s = time.perf_counter() - t
        t = time.perf_counter()
        reader = deepscope.open(root).run(run_id)
        open_s = time.perf_counter() - t
        reader.downsample("train/loss", buckets=BUCKETS)  # builds the rollups once, as a live reader would
        ours = best_of(lambda: reader.downsample("train/loss", buckets=BUCKETS), 20)
        zoom = best_of(lambda: reader.downsample("train/loss", 250_000, 750_000, BUCKETS), 20)
        s = reader.series("train/loss")
        raw = SeriesBuffer("raw")
        raw.append(s.step, s.wall_time, s.value)
        no_rollup = best_of(lambda: raw._units_for(s.step, s.wall_time, s.value, 0, N, 10**9) and None, 5)
        duck = best_of(lambda: duckdb_downsample(s.step, s.value), 5)

        runs_root = root / "many"
        runs_root.mkdir()
        for i in range(1000):  # run.json + heartbeat exactly as the writer leaves them
            rid = f"run-{i:04d}"
            (runs_root / rid / "streams" / "0").mkdir(parents=True)
            (runs_root / rid / "streams" / "0" / "heartbeat").write_text("0\n")
            meta = {"format_version": 1, "id": rid, "name": rid, "project": "p", "status": "finished",
                    "start_time": time.time() - i, "config": {"lr": 1e-3 * i, "model": {"depth": i % 7}},
                    "tags": ["sweep"]}  # fmt: skip
            runmeta.write_json_atomic(runs_root / rid / "run.json", meta)
        cold = best_of(lambda: deepscope.open(runs_root).runs(), 1)
        store = deepscope.open(runs_root)
        warm = best_of(lambda: store.runs(), 5)
    table(
        f"Query: 1M-point series → {BUCKETS} buckets; listing runs",
        [
            ("write 1M steps (one key) with run.log", f"{write_s:.2f} s", ""),
            ("open + read the 1M-point run", f"{open_s * 1e3:.0f} ms", ""),
            ("downsample whole series (rollups)", f"{ours * 1e3:.2f} ms", "< 20 ms"),
            ("downsample a zoomed half", f"{zoom * 1e3:.2f} ms", "< 20 ms"),
            ("baseline: NumPy over raw points, no rollups", f"{no_rollup * 1e3:.2f} ms", ""),
            ("baseline: DuckDB GROUP BY over Arrow", f"{duck * 1e3:.2f} ms", ""),
            ("speed-up vs DuckDB", f"{duck / ours:.0f}×", ""),
            ("list 1,000 runs, cold", f"{cold * 1e3:.0f} ms", "< 200 ms"),
            ("list 1,000 runs, warm (run.json cached by mtime)", f"{warm * 1e3:.0f} ms", "< 200 ms"),
        ],
    )


if __name__ == "__main__":
    main()
