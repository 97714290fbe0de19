"""PCA projection of a layer's activations (scikit-learn), written as ``projection/<layer>/pca.npy``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..store.runmeta import write_json_atomic
from .base import artifact_dir, provenance, write_provenance

NAME = "projection"


@dataclass(frozen=True)
class PCAConfig:
    """``layers``: default every stored layer. ``components``: output dimensions."""

    layers: tuple[str, ...] | None = None
    components: int = 2
    seed: int = 0


def pca(x: np.ndarray, components: int = 2, seed: int = 0) -> tuple[np.ndarray, Any]:
    """The projected rows (N, components) float32, and the fitted ``sklearn.decomposition.PCA``."""
    from sklearn.decomposition import PCA

    k = min(components, x.shape[0], x.shape[1])
    model = PCA(n_components=k, random_state=seed)
    return model.fit_transform(x).astype(np.float32), model


class PCAProjection:
    """Principal components of each stored layer's activations (Pearson 1901; scikit-learn's ``PCA``)."""

    name = NAME

    def __init__(self, config: PCAConfig | None = None) -> None:
        self.config = config or PCAConfig()

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        return True  # any layer with at least one neuron

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> list[Path]:
        from .reader import AnalysisReader

        reader = AnalysisReader(run_dir)
        written = []
        for layer in self.config.layers or reader.layers:
            x = reader.matrix(layer)
            if x.shape[0] < 2:
                continue
            coords, fitted = pca(x, self.config.components, self.config.seed)
            out = artifact_dir(run_dir, NAME, layer)
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / ".pca.npy.tmp"
            with open(tmp, "wb") as f:
                np.save(f, coords)
            os.replace(tmp, out / "pca.npy")
            write_json_atomic(out / "pca.json", {
                "version": 1, "layer": layer, "components": int(coords.shape[1]),
                "explained_variance_ratio": fitted.explained_variance_ratio_.tolist(),
            })  # fmt: skip
            write_provenance(out, provenance(NAME, asdict(self.config), layer=layer, method="pca", rows=len(x)))
            written.append(out)
        return written
