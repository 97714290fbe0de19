"""Analyze: activation extraction against a plain forward pass, then subset aggregates, neighbours and PCA.

100,000 synthetic instances through an MLP whose recorded layer is 512 wide (256 → 1024 → 512 → 10).
Baseline in the same run: the same batches through the same model under ``torch.inference_mode``, no hooks.

    .venv/bin/python -m benchmarks.bench_analyze
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import best_of, table
from deepscope.analyses import read
from deepscope.analyses.activations import Activations, ActivationsConfig
from deepscope.analyses.projection import PCAProjection

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


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, INPUTS, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    model = build().eval()
    forward_only(model, data)  # warm-up: allocator, kernels
    tags = {"half": np.where(np.arange(N) % 2 == 0, "even", "odd")}
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
        agg_class = best_of(lambda: reader.aggregate("3", where={"label": 3}), 10)
        agg_half = best_of(lambda: reader.aggregate("3", where={"half": "even"}), 10)
        agg_label = best_of(lambda: reader.aggregate("3", where={"label": [1, 2]}), 10)
        by_class = best_of(lambda: reader.aggregate("3", by="label"), 3)
        rows.append(("subset aggregate: one label (10%)", f"{agg_class * 1e3:.1f} ms", "< 50 ms"))
        rows.append(("subset aggregate: 2 of 10 labels (20%)", f"{agg_label * 1e3:.1f} ms", "< 50 ms"))
        rows.append(("subset aggregate: half the rows, metadata filter", f"{agg_half * 1e3:.1f} ms", "< 50 ms"))
        rows.append(("per-class aggregates, 10 classes × 512 neurons", f"{by_class * 1e3:.1f} ms", ""))
        reader.neighbors("3", 0, k=10)  # norms, once per layer
        for metric in ("cosine", "euclidean"):
            q = best_of(lambda m=metric: reader.neighbors("3", 12345, k=10, metric=m), 10)
            rows.append((f"neighbour query, exact {metric}, k=10", f"{q * 1e3:.1f} ms", "< 50 ms"))
        top = best_of(lambda: reader.top_instances("3", 7, k=20), 10)
        rows.append(("top-20 instances of a neuron", f"{top * 1e3:.1f} ms", ""))
        t = time.perf_counter()
        PCAProjection().run(run_dir)
        rows.append(("PCA to 2-d (scikit-learn)", f"{time.perf_counter() - t:.2f} s", ""))
    table(f"Analyze: {N:,} instances × 512 neurons (MLP {INPUTS}→1024→512→10, batch {BATCH})", rows)


if __name__ == "__main__":
    main()
