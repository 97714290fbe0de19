"""Analyze: activation extraction against a plain forward pass, then subset aggregates, neighbours, projections.

100,000 synthetic instances through an MLP whose recorded layer is 512 wide (256 → 1024 → 512 → 10).
Baseline in the same run: the same batches through the same model under ``torch.inference_mode``, no hooks.
UMAP: deepscope's ``compute_projection`` (50 principal components, then umap-learn) against umap-learn alone on
the same stored matrix with the same parameters — on the raw 512 columns (what a user would otherwise run) and on
the same 50 components (the cost of deepscope's wrapper) — over the first ``--umap-rows`` rows.

    .venv/bin/python -m benchmarks.bench_analyze [--umap-rows 20000] [--tsne-rows 20000]
"""

from __future__ import annotations

import argparse
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
        for i in range(0, N, BATCH):
            model(x[i : i + BATCH])
    return time.perf_counter() - t


def umap_learn(x: np.ndarray) -> float:
    """umap-learn alone, with deepscope's parameters (its defaults, seed 0)."""
    import umap

    t = time.perf_counter()
    umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit_transform(x)
    return time.perf_counter() - t


def projections(model: nn.Module, data: torch.utils.data.TensorDataset, umap_rows: int, tsne_rows: int) -> list:
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap-learn's import and fit warnings
        # numba compiles once; 5,000 rows, so that umap-learn's approximate neighbour search (≥ 4,096 rows) compiles too
        umap_learn(np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32))
    for what, n in (("umap", umap_rows), ("tsne", tsne_rows)):
        with tempfile.TemporaryDirectory() as d:
            subset = torch.utils.data.TensorDataset(*(t[:n] for t in data.tensors))
            cfg = ActivationsConfig(layers=("3",), batch_size=BATCH, progress=False)
            Activations(cfg).run(d, model, subset)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compute_projection(d, "3", what)
            ours = time.perf_counter() - t
            if what == "tsne":
                rows.append((f"t-SNE, {n:,} × 512 (openTSNE, after 50 components)", f"{ours:.1f} s", ""))
                continue
            x = read(d).matrix("3")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                alone_raw = umap_learn(x)
                alone_pca = umap_learn(reduce_dims(x, 50))
            verdict = f"≤ umap-learn alone: {'met' if ours <= alone_raw else 'not met'}"
            rows.append((f"UMAP, {n:,} × 512: deepscope compute_projection (50 components, then UMAP)",
                         f"{ours:.1f} s", verdict))  # fmt: skip
            rows.append((f"UMAP, {n:,} × 512: umap-learn alone on the 512 columns", f"{alone_raw:.1f} s", ""))
            rows.append((f"UMAP, {n:,} × 50: umap-learn alone on the same components", f"{alone_pca:.1f} s", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--umap-rows", type=int, default=20_000, help="rows projected by UMAP (at most 100,000)")
    parser.add_argument("--tsne-rows", type=int, default=20_000, help="rows projected by t-SNE (at most 100,000)")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, INPUTS, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    model = build().eval()
    forward_only(model, data)  # warm-up: allocator, kernels
    tags = {"half": np.where(np.arange(N) % 2 == 0, "even", "odd"), "quarter": np.arange(N) % 4}
    with tempfile.TemporaryDirectory() as d:
        run_dir = Path(d)
        rows = []
        forward_s, extract_s = [], []
        for _ in range(2):  # interleaved, best of two each: the machine's noise hits both alike
            forward_s.append(forward_only(model, data))
            t = time.perf_counter()
            cfg = ActivationsConfig(layers=("3",), batch_size=BATCH, resume=False, progress=False)
            Activations(cfg, metadata=tags).run(run_dir, model, data)
            extract_s.append(time.perf_counter() - t)
        fwd, ext = min(forward_s), min(extract_s)
        rows.append(("forward only, 100k rows", f"{N / fwd:,.0f} rows/s ({fwd:.2f} s)", ""))
        rows.append(("activation extraction (hooks, Zarr, table)", f"{N / ext:,.0f} rows/s ({ext:.2f} s)", ""))
        rows.append(("extraction ÷ forward throughput", f"{fwd / ext:.2f}×", "≥ 0.8×"))

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
    rows += projections(model, data, min(args.umap_rows, N), min(args.tsne_rows, N))
    table(f"Analyze: {N:,} instances × 512 neurons (MLP {INPUTS}→1024→512→10, batch {BATCH})", rows)


if __name__ == "__main__":
    main()
