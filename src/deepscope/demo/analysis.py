"""After training, the demo analyses both networks on all 5,000 digits, so that the instance views have data.

Each digit gets its split (``train`` or ``validation``) and how much ink it has (the fraction of lit pixels,
and a ``thin`` / ``medium`` / ``thick`` stroke by tertiles of it): real properties to filter and compare by.
The CNN's pooled feature maps (``features.3``, ``features.7``) are also kept whole for three digits of each class
(``full_maps="auto"``), which the instance view draws as channel heatmaps.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import CLASSES, Digits

# Layers recorded per network: its pooled feature maps or hidden layers, and the classifier's logits.
LAYERS = {
    "SmallCNN": ("features.3", "features.7", "features.10", "classifier"),
    "DeepSigmoidMLP": ("features.2", "features.4", "features.6", "features.8", "classifier"),
}
UMAP_LAYER = {"SmallCNN": "features.10"}  # the projection computed in the background, 5,000 × 128


def demo_instances(digits: Digits) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """All digits (training ones first), their labels, and the metadata columns."""
    x = torch.cat([digits.train_x, digits.val_x])  # (5000, 1, 28, 28)
    y = torch.cat([digits.train_y, digits.val_y])
    split = np.array(["train"] * len(digits.train_y) + ["validation"] * len(digits.val_y))
    lit = x > x.amin((1, 2, 3), keepdim=True)  # pixels above the background
    ink = lit.float().mean((1, 2, 3)).numpy().astype(np.float32)  # (5000,)
    cuts = np.quantile(ink, [1 / 3, 2 / 3])
    stroke = np.array(["thin", "medium", "thick"])[np.searchsorted(cuts, ink, side="right")]
    return x, y, {"split": split, "ink": ink, "stroke": stroke}


def analyze_model(model: torch.nn.Module, run_dir: str | Path, digits: Digits) -> Any:
    """``deepscope.analyze`` of one demo network into its run; returns the reader."""
    from ..analyses.pipeline import analyze

    x, y, metadata = demo_instances(digits)
    data = torch.utils.data.TensorDataset(x, y)
    names = [str(d) for d in range(CLASSES)]
    layers = LAYERS[type(model).__name__]
    return analyze(model, data, run_dir, layers=layers, class_names=names, metadata=metadata, batch_size=500,
                   full_maps="auto", progress=False)  # fmt: skip


def project_in_background(run_dirs: dict[str, Path]) -> threading.Thread | None:
    """UMAP of the CNN's hidden layer in a daemon thread (about 10–30 s, most of it compiling umap-learn's code),
    so the dashboard answers meanwhile; a failure only prints."""
    jobs = [(run_dir, UMAP_LAYER[name]) for name, run_dir in run_dirs.items() if name in UMAP_LAYER]
    if not jobs:
        return None

    def work() -> None:
        from ..analyses.projection import compute_projection

        for run_dir, layer in jobs:
            try:
                compute_projection(run_dir, layer, "umap")
            except Exception as e:  # noqa: BLE001 - the views offer to compute it on request
                print(f"deepscope: no UMAP of {layer}: {type(e).__name__}: {e}", flush=True)
            else:
                print(f"deepscope: UMAP of {layer} ready", flush=True)

    thread = threading.Thread(target=work, name="deepscope-demo-umap", daemon=True)
    thread.start()
    return thread
