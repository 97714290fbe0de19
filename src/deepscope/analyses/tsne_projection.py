"""t-SNE (van der Maaten & Hinton 2008) of a layer's activations with openTSNE (FFT-accelerated), with progress."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .projection import flat_layout, reduce_dims, write_projection

NAME = "tsne"


@dataclass(frozen=True)
class TSNEConfig:
    """openTSNE's defaults (PCA initialisation, 250 early-exaggeration + 500 iterations); ``pca_dims`` as UMAP's."""

    layers: tuple[str, ...] | None = None
    perplexity: float = 30.0
    early_exaggeration_iter: int = 250
    n_iter: int = 500
    pca_dims: int | None = 50
    seed: int | None = 0


def tsne(
    x: np.ndarray, config: TSNEConfig | None = None, report: Callable[[float, str], None] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows of ``x`` embedded in 2-D (N, 2) float32, and facts about the fit."""
    from openTSNE import TSNE

    cfg = config or TSNEConfig()
    report = report or (lambda fraction, message: None)
    report(0.02, "reducing to principal components")
    z = reduce_dims(x, cfg.pca_dims, cfg.seed or 0)
    if (flat := flat_layout(z, "t-SNE")) is not None:  # one neuron, or none that varies
        return flat
    total = cfg.early_exaggeration_iter + cfg.n_iter
    done = [0]

    def callback(iteration: int, error: float, embedding: Any) -> None:
        done[0] += 50  # openTSNE restarts the count for each phase
        report(0.2 + 0.78 * min(done[0], total) / total, f"iteration {min(done[0], total)} of {total}")

    report(0.05, f"affinities of {len(z):,} rows in {z.shape[1]} dimensions")
    model = TSNE(
        perplexity=min(cfg.perplexity, (len(z) - 1) / 3), early_exaggeration_iter=cfg.early_exaggeration_iter,
        n_iter=cfg.n_iter, n_jobs=os.cpu_count() or 1, random_state=cfg.seed, callbacks=callback,
        callbacks_every_iters=50,
    )  # fmt: skip
    coords = np.asarray(model.fit(z), dtype=np.float32)
    return coords, {"input_dims": int(z.shape[1])}


class TSNEProjection:
    """t-SNE of each stored layer (``projection/<layer>/tsne.npy``)."""

    name = NAME

    def __init__(self, config: TSNEConfig | None = None) -> None:
        self.config = config or TSNEConfig()

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        import importlib.util

        return importlib.util.find_spec("openTSNE") is not None

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> list[Path]:
        from .reader import AnalysisReader

        reader = AnalysisReader(run_dir)
        written = []
        for layer in self.config.layers or reader.layers:
            started = time.perf_counter()
            coords, info = tsne(reader.matrix(layer), self.config)
            seconds = time.perf_counter() - started
            config = asdict(self.config)
            written.append(write_projection(run_dir, layer, "tsne", coords, config, seconds=seconds, **info))
        return written
