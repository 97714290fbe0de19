"""Analyze: activation extraction against a plain forward pass, then subset aggregates, neighbours, projections.

100,000 synthetic instances through an MLP whose recorded layer is 512 wide (256 → 1024 → 512 → 10).
Baseline in the same run: the same batches through the same model under ``torch.inference_mode``, no hooks.
The two alternate ``--repeats`` times (each extraction into a fresh directory); the ratios are the medians of the
pairs' ratios, in wall time and in CPU time (the process's, all threads), so that the load of other processes on
a shared machine weighs on both sides alike. The same for ``--cnn-rows`` 3 × 32 × 32 images through a small
convolutional network whose last convolution (512 channels, stored pooled) is recorded, image previews included:
a model whose forward pass costs what real ones do, where the MLP's is so cheap that storing its rows dominates.
UMAP: deepscope's ``compute_projection`` (read the layer, 50 principal components, umap-learn, write) against
umap-learn alone on the same stored matrix with the same parameters — on the raw 512 columns (what a user would
otherwise run) and on the same 50 components (the cost of deepscope's wrapper) — over the first ``--umap-rows``
rows, after numba has compiled, in rotating order ``--umap-repeats`` times (medians).

    .venv/bin/python -m benchmarks.bench_analyze [--umap-rows 20000] [--tsne-rows 20000] [--repeats 5]
        [--cnn-rows 10000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import best_of, table
from deepscope.analyses import read
from deepscope.analyses.activations import Activations, ActivationsConfig
from deepscope.analyses.neighbors import FAISS_MIN_ROWS, faiss_available
from deepscope.analyses.projection import PCAProjection, compute_projection, reduce_dims

N = 100_000
INPUTS = 256
BATCH = 1024


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(INPUTS, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))


def forward_only(model: nn.Module, data: torch.utils.data.TensorDataset) -> float:
    x = data.tensors[0]
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), BATCH):
            model(x[i : i + BATCH])
    return time.perf_counter() - t


def extraction_pairs(model: nn.Module, data: torch.utils.data.TensorDataset, cfg: ActivationsConfig,
                     metadata: dict | None, run_dir: Path, repeats: int, what: str) -> list:  # fmt: skip
    """Forward passes alone and extractions, alternating (the machine's noise hits both alike); medians."""
    pairs = []
    n = len(data)
    for _ in range(repeats):
        fwd = timed(lambda: forward_only(model, data))
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a fresh directory each time: removing the last one is not extraction
        pairs.append((fwd, timed(lambda: Activations(cfg, metadata=metadata).run(run_dir, model, data))))
    fwd_w, fwd_c = (statistics.median(p[0][i] for p in pairs) for i in (0, 1))
    ext_w, ext_c = (statistics.median(p[1][i] for p in pairs) for i in (0, 1))
    wall, cpu = (statistics.median(f[i] / e[i] for f, e in pairs) for i in (0, 1))
    spread = ", ".join(f"{f[0] / e[0]:.2f}" for f, e in pairs)
    return [
        (f"forward only, {what} (median)", f"{n / fwd_w:,.0f} rows/s ({fwd_w:.2f} s, CPU {fwd_c:.2f} s)", ""),
        (f"activation extraction (hooks, Zarr, table), {what} (median)",
         f"{n / ext_w:,.0f} rows/s ({ext_w:.2f} s, CPU {ext_c:.2f} s)", ""),
        (f"extraction ÷ forward throughput, {what}, median of {repeats} alternating pairs",
         f"{wall:.2f}× wall ({spread}), {cpu:.2f}× CPU", "≥ 0.8×"),
    ]  # fmt: skip


def cnn_extraction(rows: int, repeats: int, run_dir: Path) -> list:
    """The same measurement for a small convolutional network on 3 × 32 × 32 inputs whose last convolution has 512
    channels (stored pooled: 512 neurons), a model whose forward pass is not nearly free."""
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 128)):
        blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]  # 32 -> 16 -> 8 -> 4
    blocks += [nn.Conv2d(128, 512, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    model = nn.Sequential(*blocks).eval()
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(rows, 3, 32, 32, generator=g), torch.randint(0, 10, (rows,)))
    forward_only(model, data)  # warm-up
    cfg = ActivationsConfig(layers=("10",), batch_size=BATCH, resume=False, progress=False)  # with image previews
    return extraction_pairs(model, data, cfg, None, run_dir, repeats, f"{rows // 1000}k images, CNN")


def timed(fn) -> tuple[float, float]:
    """Wall and CPU time (this process, all its threads) of one call, in seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def umap_learn(x: np.ndarray) -> None:
    """umap-learn alone, with deepscope's parameters (its defaults, seed 0)."""
    import umap

    umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit_transform(x)


class NumbaCompilations:
    """Counts numba compilations (and their seconds) while it is installed: a timed run must compile nothing."""

    def __init__(self) -> None:
        from numba.core import event

        self.count, self.seconds, self._depth, self._t = 0, 0.0, 0, 0.0
        listener = self

        class _Listener(event.Listener):
            def on_start(self, e: event.Event) -> None:
                listener._depth += 1
                if listener._depth == 1:
                    listener._t = time.perf_counter()

            def on_end(self, e: event.Event) -> None:
                listener._depth -= 1
                if listener._depth == 0:
                    listener.count += 1
                    listener.seconds += time.perf_counter() - listener._t

        event.register("numba:compile", _Listener())


def umap_comparison(d: str, n: int, repeats: int, compiled: NumbaCompilations) -> list:
    """deepscope's UMAP against umap-learn alone on the same stored matrix, in rotating order."""
    x = read(d).matrix("3")
    t = time.perf_counter()
    z = reduce_dims(x, 50)
    pca_s = time.perf_counter() - t
    runs = {
        "ours": lambda: compute_projection(d, "3", "umap"),
        "raw": lambda: umap_learn(x),
        "pca": lambda: umap_learn(z),
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    before = compiled.count
    order = list(runs)
    for r in range(repeats):  # rotating order: none is always first or last
        for k in order[r % 3 :] + order[: r % 3]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # umap-learn's fit warnings
                times[k].append(timed(runs[k]))
    med = {k: tuple(statistics.median(run[i] for run in v) for i in (0, 1)) for k, v in times.items()}
    wall, cpu = (
        statistics.median(o[i] / a[i] for o, a in zip(times["ours"], times["raw"], strict=True)) for i in (0, 1)
    )
    fig = {k: f"{w:.1f} s (CPU {c:.1f} s)" for k, (w, c) in med.items()}
    label = f"UMAP, {n:,} × 512"
    return [
        (f"{label}: deepscope compute_projection (read, 50 components, UMAP, write)", fig["ours"], ""),
        (f"{label}: umap-learn alone on the 512 columns", fig["raw"], ""),
        (f"UMAP, {n:,} × 50: umap-learn alone on the same components", fig["pca"], ""),
        (f"{label}: deepscope ÷ umap-learn alone on the 512 columns, median of {repeats} pairs",
         f"{wall:.2f}× wall, {cpu:.2f}× CPU", f"≤ 1: {'met' if wall <= 1 and cpu <= 1 else 'not met'}"),
        (f"{label}: of which PCA to 50 components (measured apart)", f"{pca_s:.2f} s", ""),
        (f"{label}: numba compilations during the timed runs", f"{compiled.count - before}", "0"),
    ]  # fmt: skip


def projections(model: nn.Module, data: torch.utils.data.TensorDataset, umap_rows: int, tsne_rows: int,
                repeats: int) -> list:  # fmt: skip
    compiled = NumbaCompilations()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap-learn's import and fit warnings
        # numba compiles once per process; 5,000 rows, so that the approximate neighbour search (≥ 4,096 rows) does
        warm = timed(lambda: umap_learn(np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32)))[0]
    rows = [("UMAP's first use in a process: numba compilation (once per process)",
             f"{compiled.seconds:.1f} s of {warm:.1f} s", "")]  # fmt: skip
    for what, n in (("umap", umap_rows), ("tsne", tsne_rows)):
        with tempfile.TemporaryDirectory() as d:
            subset = torch.utils.data.TensorDataset(*(t[:n] for t in data.tensors))
            cfg = ActivationsConfig(layers=("3",), batch_size=BATCH, progress=False)
            Activations(cfg).run(d, model, subset)
            if what == "umap":
                rows += umap_comparison(d, n, repeats, compiled)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                compute_projection(d, "3", "tsne")
            rows.append((f"t-SNE, {n:,} × 512 (openTSNE, after 50 components)", f"{time.perf_counter() - t:.1f} s", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--umap-rows", type=int, default=20_000, help="rows projected by UMAP (at most 100,000)")
    parser.add_argument("--tsne-rows", type=int, default=20_000, help="rows projected by t-SNE (at most 100,000)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating forward / extraction pairs")
    parser.add_argument("--umap-repeats", type=int, default=3, help="rounds of the three UMAP runs")
    parser.add_argument("--cnn-rows", type=int, default=10_000, help="images for the CNN's extraction (0: none)")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, INPUTS, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    model = build().eval()
    forward_only(model, data)  # warm-up: allocator, kernels
    tags = {"half": np.where(np.arange(N) % 2 == 0, "even", "odd"), "quarter": np.arange(N) % 4}
    with tempfile.TemporaryDirectory() as d:
        run_dir = Path(d) / "run"
        cfg = ActivationsConfig(layers=("3",), batch_size=BATCH, resume=False, progress=False)
        rows = extraction_pairs(model, data, cfg, tags, run_dir, args.repeats, "100k rows of the MLP")
        if args.cnn_rows:
            rows += cnn_extraction(args.cnn_rows, args.repeats, Path(d) / "cnn")
        reader = read(run_dir)
        t = time.perf_counter()
        reader.matrix("3")
        reader.instances()
        rows.append(
            ("load a 100k × 512 layer from Zarr (once per layer)", f"{(time.perf_counter() - t) * 1e3:.0f} ms", "")
        )
        t = time.perf_counter()
        reader.aggregate("3", where={"label": 0})
        rows.append(
            ("per-cell sums (label × prediction), once per layer", f"{(time.perf_counter() - t) * 1e3:.0f} ms", "")
        )
        agg_class = best_of(lambda: reader.aggregate("3", where={"label": 3}), 10)
        agg_half = best_of(lambda: reader.aggregate("3", where={"half": "even"}), 10)
        agg_quarter = best_of(lambda: reader.aggregate("3", where={"quarter": 1}), 10)
        agg_tenth = best_of(lambda: reader.aggregate("3", where={"quarter": 1, "label": [1, 2, 3, 4]}), 10)
        agg_label = best_of(lambda: reader.aggregate("3", where={"label": [1, 2]}), 10)
        by_class = best_of(lambda: reader.aggregate("3", by="label"), 3)
        rows.append(("subset aggregate: one label (10%)", f"{agg_class * 1e3:.1f} ms", "< 50 ms"))
        rows.append(("subset aggregate: 2 of 10 labels (20%)", f"{agg_label * 1e3:.1f} ms", "< 50 ms"))
        rows.append(
            ("subset aggregate: a quarter of the rows, metadata filter", f"{agg_quarter * 1e3:.1f} ms", "< 50 ms")
        )
        rows.append(("subset aggregate: metadata and labels (10%)", f"{agg_tenth * 1e3:.1f} ms", "< 50 ms"))
        rows.append(("subset aggregate: half the rows, metadata filter", f"{agg_half * 1e3:.1f} ms", "< 50 ms"))
        rows.append(("per-class aggregates, 10 classes × 512 neurons", f"{by_class * 1e3:.1f} ms", ""))
        reader.neighbors("3", 0, k=10)  # norms, once per layer
        for metric in ("cosine", "euclidean"):
            q = best_of(lambda m=metric: reader.neighbors("3", 12345, k=10, metric=m), 10)
            rows.append((f"neighbour query, exact {metric}, k=10, NumPy scan", f"{q * 1e3:.1f} ms", "< 50 ms"))
        if faiss_available():
            reader.faiss_min_rows = 0
            for metric in ("cosine", "euclidean"):
                t = time.perf_counter()
                reader.neighbors("3", 0, k=10, metric=metric)
                built = time.perf_counter() - t
                q = best_of(lambda m=metric: reader.neighbors("3", 12345, k=10, metric=m), 10)
                rows.append((f"neighbour query, exact {metric}, k=10, FAISS flat index (built once: {built:.2f} s)",
                             f"{q * 1e3:.1f} ms", "< 50 ms"))  # fmt: skip
            reader.faiss_min_rows = FAISS_MIN_ROWS
        top = best_of(lambda: reader.top_instances("3", 7, k=20), 10)
        rows.append(("top-20 instances of a neuron", f"{top * 1e3:.1f} ms", ""))
        t = time.perf_counter()
        PCAProjection().run(run_dir)
        rows.append(("PCA to 2-d (scikit-learn)", f"{time.perf_counter() - t:.2f} s", "< 1 s on screen: stored"))
        t = time.perf_counter()
        read(run_dir).projection("3", "pca")
        rows.append(("read the stored PCA (100k × 2)", f"{(time.perf_counter() - t) * 1e3:.1f} ms", ""))
    rows += projections(model, data, min(args.umap_rows, N), min(args.tsne_rows, N), args.umap_repeats)
    table(f"Analyze: {N:,} instances × 512 neurons (MLP {INPUTS}→1024→512→10, batch {BATCH})", rows)


if __name__ == "__main__":
    main()
