"""UMAP (McInnes, Healy & Melville 2018) of a layer's activations with umap-learn, with progress reports."""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .projection import flat_layout, reduce_dims, write_projection

NAME = "umap"


@dataclass(frozen=True)
class UMAPConfig:
    """umap-learn's defaults; ``pca_dims``: wider layers are first reduced to this many principal components.

    ``seed=None`` runs umap-learn on every core (a seed makes it single-threaded and reproducible).
    """

    layers: tuple[str, ...] | None = None
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    pca_dims: int | None = 50
    seed: int | None = 0


class _EpochProgress:
    """A file for umap-learn's tqdm bar: each redraw ``"<n> <total>"`` becomes a progress report."""

    pattern = re.compile(r"(\d+) (\d+)")

    def __init__(self, report: Callable[[float, str], None], lo: float, hi: float) -> None:
        self.report, self.lo, self.hi = report, lo, hi

    def write(self, text: str) -> None:
        if m := self.pattern.search(text):
            n, total = int(m.group(1)), max(1, int(m.group(2)))
            self.report(self.lo + (self.hi - self.lo) * n / total, f"optimising the layout: epoch {n} of {total}")

    def flush(self) -> None:
        pass


def umap(
    x: np.ndarray, config: UMAPConfig | None = None, report: Callable[[float, str], None] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows of ``x`` embedded in 2-D (N, 2) float32, and facts about the fit (input dimensions)."""
    cfg = config or UMAPConfig()
    report = report or (lambda fraction, message: None)
    report(0.02, "reducing to principal components")
    z = reduce_dims(x, cfg.pca_dims, cfg.seed or 0)
    if (flat := flat_layout(z, "UMAP")) is not None:  # one neuron, or none that varies
        return flat
    report(0.1, f"nearest neighbours of {len(z):,} rows in {z.shape[1]} dimensions")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)  # "Tensorflow not installed" (ParametricUMAP is not used)
        import umap as umap_learn

    model = umap_learn.UMAP(
        n_components=2, n_neighbors=min(cfg.n_neighbors, len(z) - 1), min_dist=cfg.min_dist, metric=cfg.metric,
        random_state=cfg.seed, n_jobs=1 if cfg.seed is not None else (os.cpu_count() or 1),
        tqdm_kwds={"disable": False, "file": _EpochProgress(report, 0.5, 0.98), "bar_format": "{n} {total}",
                   "mininterval": 0.25},
    )  # fmt: skip
    with warnings.catch_warnings():
        # umap-learn warns about its own choices (spectral initialisation fallbacks, graph disconnection).
        warnings.simplefilter("ignore", UserWarning)
        coords = model.fit_transform(z)
    return np.asarray(coords, dtype=np.float32), {"input_dims": int(z.shape[1])}


class UMAPProjection:
    """UMAP of each stored layer (``projection/<layer>/umap.npy``); one at a time with :func:`compute_projection`."""

    name = NAME

    def __init__(self, config: UMAPConfig | None = None) -> None:
        self.config = config or UMAPConfig()

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        import importlib.util

        return importlib.util.find_spec("umap") is not None

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> list[Path]:
        from .reader import AnalysisReader

        reader = AnalysisReader(run_dir)
        written = []
        for layer in self.config.layers or reader.layers:
            started = time.perf_counter()
            coords, info = umap(reader.matrix(layer), self.config)
            seconds = time.perf_counter() - started
            config = asdict(self.config)
            written.append(write_projection(run_dir, layer, "umap", coords, config, seconds=seconds, **info))
        return written
