"""Full feature maps: what keeping them costs ``deepscope.analyze``, a later request for more, and serving one.

A small CNN on 3 × 64 × 64 synthetic images (conv 3→32 at 64 × 64, conv 32→64 at 32 × 32: 768 KiB of float32 maps
per instance), 4,000 instances in 10 classes. Baselines in the same run: ``analyze`` with ``full_maps=False``; the
forward pass of the requested instances alone; reading the raw chunk file of one instance's maps.

    .venv/bin/python -m benchmarks.bench_feature_maps
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import deepscope
from benchmarks.common import best_of, table
from deepscope.analyses import read
from deepscope.analyses.feature_maps import analyze_maps, maps_dir
from deepscope.server import analysis_queries as q
from deepscope.store import Store

N = 4000
LAYERS = ["conv1", "conv2", "fc"]


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)  # (B, 32, 64, 64)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)  # (B, 64, 32, 32)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean((2, 3)))  # (B, 64, 32, 32) -> (B, 64)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = CNN().eval()
    data = torch.utils.data.TensorDataset(torch.randn(N, 3, 64, 64), torch.arange(N) % 10)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with deepscope.init(project="bench", name="feature-maps", dir=root) as run:
            pass
        run_dir, run_id = run.dir, run.id

        def analyze(full_maps):
            return deepscope.analyze(model, data, layers=LAYERS, run=run_dir, progress=False,
                                     projection=False, full_maps=full_maps)  # fmt: skip

        analyze(False)  # warm-up
        plain = min(timed(lambda: analyze(False)) for _ in range(2))

        def maps_step():  # what full_maps="auto" adds to analyze, from scratch each time
            shutil.rmtree(maps_dir(run_dir), ignore_errors=True)
            analyze_maps(run_dir, model, data, "auto")

        step = best_of(maps_step, repeat=3)
        info = read(run_dir).feature_map_layers()
        stored = len(info["conv1"].indices)
        nbytes = sum(f.stat().st_size for f in maps_dir(run_dir).rglob("*") if f.is_file() and "/c/" in str(f))

        more = [i for i in range(0, N, 97) if i not in info["conv1"].indices][:8]
        x = data.tensors[0]

        def forward_more():
            with torch.inference_mode():
                model(x[more])

        request = timed(lambda: deepscope.feature_maps(model, data, run=run_dir, indices=more))
        forward = best_of(forward_more)

        store = Store(root)
        index = info["conv1"].indices[0]
        q.feature_maps(store, run_id, index, "conv1")  # opens the reader once
        serve = best_of(lambda: q.feature_maps(store, run_id, index, "conv1"), repeat=20)
        chunk = maps_dir(run_dir) / "conv1.zarr" / "c" / "0" / "0" / "0" / "0"
        raw = best_of(lambda: np.fromfile(chunk, np.float32), repeat=20)

    table(
        f"Feature maps: {N:,} instances, 3 × 64 × 64, maps of conv1 (32 × 64 × 64) and conv2 (64 × 32 × 32)",
        [
            ("analyze, full_maps=False", f"{plain:.2f} s", ""),
            (f"full_maps='auto' step ({stored} instances, {nbytes / 2**20:.1f} MiB)", f"{step * 1e3:.0f} ms", ""),
            ("step ÷ analyze", f"{step / plain:.3f}", "≤ 0.05"),
            (f"deepscope.feature_maps for {len(more)} more instances", f"{request * 1e3:.0f} ms", ""),
            ("baseline: their forward pass alone", f"{forward * 1e3:.1f} ms", ""),
            ("one instance's conv1 maps (512 KiB) as the route answers them", f"{serve * 1e3:.2f} ms", "< 50 ms"),
            ("baseline: reading its raw chunk file", f"{raw * 1e3:.2f} ms", ""),
            ("route ÷ raw read", f"{serve / raw:.1f}×", ""),
            ("request ÷ forward pass", f"{request / forward:.1f}×", ""),
        ],
    )


if __name__ == "__main__":
    main()
