"""The layer × step overview at scale — a million watched steps, and thousands of layers: what the views ask of a
run's layer statistics (the whole-run matrix, another statistic, a zoomed window, a depth profile at a step, one
layer's series), answered by the reader (rows per kind in step order, rollups) against the full scan it replaced
(every row of the run masked by kind and range, the distinct steps sorted, at each query), in the same run and
from the same files.

    .venv/bin/python -m benchmarks.bench_layer_matrix [--steps 1000000 --layers 12]
        [--wide-layers 2000 --wide-steps 5000]

The runs are written by deepscope's own writer (one ZSTD chunk per flush) with one row per module (act, grad) and
per parameter (param_grad, weight) at every step, as ``run.watch(model)`` records them.
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa

import deepscope
from benchmarks.common import table
from deepscope.store import format as fmt

BUCKETS = 1000  # about the overview's width in pixels


def write_run(root: Path, steps: int, layers: int, per_chunk: int) -> str:
    """A run with ``layers`` modules and as many parameters, every statistic of every kind at every step."""
    modules = [f"blocks.{i}.fc" for i in range(layers)]
    params = [f"{m}.weight" for m in modules]
    names = pa.array(modules + params, pa.string())
    kinds = pa.array(fmt.LAYER_KINDS, pa.string())
    rng = np.random.default_rng(0)
    per_step = 4 * layers
    # one block of values reused with a drift: compresses like real statistics (noisy low bits), costs no RNG time
    base = rng.normal(size=(len(fmt.LAYER_STATS), per_chunk * per_step)).astype(np.float32)
    code = np.r_[np.arange(layers), np.arange(layers), layers + np.arange(layers), layers + np.arange(layers)]
    kind = np.repeat(np.arange(4, dtype=np.int8), layers)
    run = deepscope.init(dir=root, name=f"{steps}x{layers}")
    for s0 in range(0, steps, per_chunk):
        n = min(per_chunk, steps - s0)
        step = np.repeat(np.arange(s0, s0 + n, dtype=np.int64), per_step)
        cols = [
            pa.array(step),
            pa.array(1.7e9 + step * 0.05),
            pa.DictionaryArray.from_arrays(pa.array(np.tile(code, n).astype(np.int32)), names),
            pa.DictionaryArray.from_arrays(pa.array(np.tile(kind, n)), kinds),
            *(pa.array(base[j, : n * per_step] + np.float32(s0 * 1e-6)) for j in range(len(fmt.LAYER_STATS))),
        ]
        batch = pa.record_batch(cols, schema=fmt.LAYERSTATS)
        run._writer.add_job(lambda b=batch: [("layerstats", b)])
        if (s0 // per_chunk) % 8 == 7:
            run._writer.flush(timeout=600)
    run.finish()
    return run.id


def segments(root: Path, run_id: str) -> list[Path]:
    return sorted((root / run_id / "streams" / "0").glob("layerstats-*.arrows"))


class ScanBuffer:
    """The reader's layer statistics before rows were kept per kind with rollups: every row in one set of columns,
    each query masking all of them by kind and step range and sorting their steps."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, ...]] = []

    def append(self, t: pa.Table) -> None:
        layer = t["layer"].combine_chunks()
        kind = t["kind"].combine_chunks()
        remap = np.array([self._ids.setdefault(n, len(self._ids)) for n in layer.dictionary.to_pylist()], np.int32)
        self.names = list(self._ids)
        kinds = np.array([fmt.LAYER_KINDS.index(k) for k in kind.dictionary.to_pylist()], np.int8)
        stats = np.stack([t[s].to_numpy() for s in fmt.LAYER_STATS], axis=1)
        self._parts.append(
            (t["step"].to_numpy(), remap[layer.indices.to_numpy()], kinds[kind.indices.to_numpy()], stats)
        )

    def done(self) -> None:
        self.step, self.layer, self.kind, self.stats = (np.concatenate(c) for c in zip(*self._parts))
        self._parts = []

    def _select(self, kind: str, start: int | None, end: int | None) -> np.ndarray:
        sel = self.kind == fmt.LAYER_KINDS.index(kind)
        if start is not None:
            sel &= self.step >= start
        if end is not None:
            sel &= self.step <= end
        return np.flatnonzero(sel)

    def matrix(self, kind: str, stat: str, start: int | None, end: int | None, buckets: int, names: list[str]):
        rows = self._select(kind, start, end)
        col = self.stats[rows, fmt.LAYER_STATS.index(stat)].astype(np.float64)
        step = self.step[rows]
        order = np.full(len(self.names), -1, np.int64)
        for pos, name in enumerate(names):
            if name in self._ids:
                order[self._ids[name]] = pos
        lrow = order[self.layer[rows]]
        keep = (lrow >= 0) & np.isfinite(col)
        distinct = np.unique(step)
        if len(distinct) <= buckets:
            bucket, n_b = np.searchsorted(distinct, step), len(distinct)
        else:
            lo, hi = int(distinct[0]), int(distinct[-1])
            bucket, n_b = np.minimum(((step - lo) * buckets) // (hi - lo + 1), buckets - 1), buckets
        flat = lrow[keep] * n_b + bucket[keep]
        total = np.bincount(flat, weights=col[keep], minlength=len(names) * n_b)
        count = np.bincount(flat, minlength=len(names) * n_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / count).reshape(len(names), n_b)

    def profile(self, kind: str, stat: str, step: int | None) -> np.ndarray:
        rows = self._select(kind, None, step)
        at = self.step[rows].max()
        return self.stats[rows[self.step[rows] == at], fmt.LAYER_STATS.index(stat)]

    def steps(self) -> np.ndarray:
        return np.unique(self.step)

    def total_norm(self, buckets: int) -> np.ndarray:
        """√(Σ norm²) of the parameters' gradients at each step, then the mean over each of ``buckets``."""
        rows = self._select("param_grad", None, None)
        norm = self.stats[rows, fmt.LAYER_STATS.index("norm")].astype(np.float64)
        distinct, at = np.unique(self.step[rows], return_inverse=True)
        total = np.sqrt(np.bincount(at, weights=norm * norm))
        bucket = (np.arange(len(distinct)) * buckets) // max(len(distinct), 1)
        return np.bincount(bucket, weights=total) / np.maximum(np.bincount(bucket), 1)


def timed(fn, repeat: int = 1) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(root: Path, run_id: str, steps: int, title: str) -> list[tuple[str, str, str]]:
    zoom = (steps // 2, steps // 2 + max(steps // 100, 1))
    mid = steps // 3
    # the reader: open the run, then what the views ask in the order they ask it
    gc.collect()
    before = rss_mib()
    t0 = time.perf_counter()
    store = deepscope.open(root)
    reader = store.run(run_id)
    names = reader.layer_names("act")
    first = time.perf_counter()
    m = reader.layer_matrix("act", "mean", buckets=BUCKETS)
    opened = time.perf_counter() - t0
    first = time.perf_counter() - first
    held = rss_mib() - before
    new = reader_times(reader, zoom, mid)
    assert m.values.shape == (len(names), min(BUCKETS, steps))
    store = reader = m = None
    gc.collect()
    # the full scan, on the same files
    scan = ScanBuffer()
    t0 = time.perf_counter()
    for seg in segments(root, run_id):
        for c in fmt.iter_chunks(seg.read_bytes()):
            scan.append(c.table)
    scan.done()
    scan_first = time.perf_counter()
    scan.matrix("act", "mean", None, None, BUCKETS, names)
    scan_opened = time.perf_counter() - t0
    scan_first = time.perf_counter() - scan_first
    old = scan_times(scan, names, zoom, mid)
    scan = None
    gc.collect()
    ms = lambda s: f"{s * 1e3:,.0f} ms" if s >= 0.01 else f"{s * 1e3:.1f} ms"  # noqa: E731
    rows = [
        ("open (deepscope.open, every stream) + first whole-run matrix: reader", ms(opened), ""),
        ("read the layerstats segments + first whole-run matrix: full scan", ms(scan_opened), ""),
        ("of which the first matrix (rollups built): reader / full scan", f"{ms(first)} / {ms(scan_first)}", ""),
    ]
    for k in new:
        rows.append((f"{k}: reader / full scan", f"{ms(new[k])} / {ms(old[k])} ({old[k] / new[k]:,.0f}× faster)", ""))
    rows.append(("reader memory for the run's layer statistics (RSS growth)", f"{held:,.0f} MiB", ""))
    table(title, rows)
    return rows


def reader_times(reader, zoom: tuple[int, int], mid: int) -> dict[str, float]:  # noqa: ANN001
    return {
        "layer table (steps recorded)": timed(lambda: reader.layer_steps(), 3),
        "whole run, another statistic (its rollups built)": timed(
            lambda: reader.layer_matrix("act", "std", buckets=BUCKETS)
        ),
        "whole run, a statistic asked before": timed(lambda: reader.layer_matrix("act", "mean", buckets=BUCKETS), 3),
        "zoomed to 1 % of the steps": timed(lambda: reader.layer_matrix("act", "mean", *zoom, buckets=BUCKETS), 3),
        "depth profile at a step (gradient flow)": timed(lambda: reader.layer_profile("grad", "norm", mid), 3),
        "global gradient norm over the run, first asked (its series built)": timed(
            lambda: reader.total_norm("param_grad", buckets=BUCKETS)
        ),
        "global gradient norm over the run, asked before": timed(
            lambda: reader.total_norm("param_grad", buckets=BUCKETS), 3
        ),
    }


def scan_times(scan: ScanBuffer, names: list[str], zoom: tuple[int, int], mid: int) -> dict[str, float]:
    return {
        "layer table (steps recorded)": timed(lambda: scan.steps(), 3),
        "whole run, another statistic (its rollups built)": timed(
            lambda: scan.matrix("act", "std", None, None, BUCKETS, names)
        ),
        "whole run, a statistic asked before": timed(lambda: scan.matrix("act", "mean", None, None, BUCKETS, names), 3),
        "zoomed to 1 % of the steps": timed(lambda: scan.matrix("act", "mean", *zoom, BUCKETS, names), 3),
        "depth profile at a step (gradient flow)": timed(lambda: scan.profile("grad", "norm", mid), 3),
        "global gradient norm over the run, first asked (its series built)": timed(lambda: scan.total_norm(BUCKETS)),
        "global gradient norm over the run, asked before": timed(lambda: scan.total_norm(BUCKETS), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--wide-steps", type=int, default=5_000)
    parser.add_argument("--wide-layers", type=int, default=2_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for steps, layers, per_chunk in ((args.steps, args.layers, 4096), (args.wide_steps, args.wide_layers, 64)):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            t = time.perf_counter()
            run_id = write_run(root, steps, layers, per_chunk)
            size = sum(p.stat().st_size for p in segments(root, run_id))
            rows = 4 * layers * steps
            print(f"wrote {rows:,} rows ({size / 2**20:,.0f} MiB on disk) in {time.perf_counter() - t:.0f} s")
            measure(
                root,
                run_id,
                steps,
                f"{steps:,} steps × {layers:,} layers ({rows:,} layerstats rows, {BUCKETS} buckets)",
            )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
