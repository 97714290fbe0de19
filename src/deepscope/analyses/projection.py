"""Projections of a layer's activations to 2-D: PCA (written by ``deepscope.analyze``), UMAP and t-SNE on request.

Each is written as ``projection/<layer>/<method>.npy`` (N, 2) float32 and ``<method>.json`` (docs/store-format.md,
"Artifacts: analyses"). UMAP and t-SNE take seconds to minutes: :func:`compute_projection` reports its progress
through a callback, so that a server can run it in the background.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..store.runmeta import write_json_atomic
from .base import artifact_dir, provenance, write_provenance

NAME = "projection"
METHODS = ("pca", "umap", "tsne")
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class PCAConfig:
    """``layers``: default every stored layer. ``components``: output dimensions."""

    layers: tuple[str, ...] | None = None
    components: int = 2
    seed: int = 0


def pca(x: np.ndarray, components: int = 2, seed: int = 0) -> tuple[np.ndarray, Any]:
    """The projected rows (N, components) float32, and the fitted ``sklearn.decomposition.PCA``; a layer narrower
    than ``components`` (one neuron) gets zero columns after its own, so that a 2-D view always has an x and a y."""
    from sklearn.decomposition import PCA

    k = min(components, x.shape[0], x.shape[1])
    model = PCA(n_components=k, random_state=seed)
    with np.errstate(invalid="ignore", divide="ignore"):  # a layer without variance: its ratios are 0 / 0
        coords = np.asarray(model.fit_transform(x), dtype=np.float32)  # float32 in, float32 out: no copy
    if k < components:  # (N, k) -> (N, components): the missing axes are zero, said so by ``pca_info``
        coords = np.pad(coords, ((0, 0), (0, components - k)))
    return coords, model


def pca_info(fitted: Any, components: int) -> dict[str, Any]:
    """What the JSON of a PCA says: ``explained_variance_ratio`` (0 for a padded axis, and for every axis of a
    layer without variance, where scikit-learn divides 0 by 0), and a ``note`` when the layout is degenerate."""
    ratio = np.nan_to_num(np.asarray(fitted.explained_variance_ratio_, dtype=np.float64), nan=0.0).tolist()
    info: dict[str, Any] = {"explained_variance_ratio": ratio + [0.0] * (components - len(ratio))}
    if not float(np.sum(fitted.explained_variance_)) > 0:
        info["note"] = "every instance has the same activations in this layer: all points lie at the origin"
    elif len(ratio) < components:
        info["note"] = f"the layer has {len(ratio)} dimension(s): the other axes are zero"
    return info


def flat_layout(z: np.ndarray, method: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The honest layout of rows that UMAP and t-SNE cannot embed — fewer than 2 dimensions, or no variance at all
    (those libraries fail or return NaN): the rows' principal components, zero where there are none, with a
    ``note`` saying so; ``None`` for rows they can embed."""
    if z.shape[1] >= 2 and np.ptp(z, axis=0).max(initial=0) > 0:
        return None
    coords, fitted = pca(z, 2)
    info = pca_info(fitted, 2)
    info["note"] = f"{info['note']}; {method} needs two varying dimensions, so this is the layer's PCA"
    del info["explained_variance_ratio"]
    return coords, info | {"input_dims": int(z.shape[1]), "fallback": "pca"}


def reduce_dims(x: np.ndarray, dims: int | None, seed: int = 0) -> np.ndarray:
    """``x`` reduced to its first ``dims`` principal components when it is wider (the usual step before UMAP and
    t-SNE: neighbour search in 50 dimensions is faster and loses little); otherwise ``x`` itself, as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dims is None or x.shape[1] <= dims or x.shape[0] <= dims:
        return x
    return pca(x, dims, seed)[0]


def write_projection(
    run_dir: str | os.PathLike[str],
    layer: str,
    method: str,
    coords: np.ndarray,
    config: dict[str, Any],
    *,
    analysis: dict[str, Any] | None = None,
    **info: Any,
) -> Path:
    """Write ``<method>.npy`` then ``<method>.json`` atomically (a reader sees the old pair or the new array).
    ``analysis``: the activations' ``analysis_key`` (read from ``run_dir`` when not given)."""
    out = artifact_dir(run_dir, NAME, layer)
    out.mkdir(parents=True, exist_ok=True)
    coords = np.ascontiguousarray(coords, dtype=np.float32)
    path = out / f"{method}.npy"
    tmp = out / f".{method}.npy.{os.getpid()}.{threading.get_ident()}.tmp"  # unique: jobs may run side by side
    try:
        with open(tmp, "wb") as f:
            np.save(f, coords)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    from .feature_maps import analysis_key
    from .reader import AnalysisReader

    record = provenance(NAME, config, layer=layer, method=method, rows=len(coords))
    write_json_atomic(out / f"{method}.json", {
        "version": 1, "layer": layer, "method": method, "components": int(coords.shape[1]), "rows": len(coords),
        **info, "params": config, "provenance": record,
        # a projection of these activations, not of an earlier analysis of the run
        "analysis": analysis if analysis is not None else analysis_key(AnalysisReader(run_dir)),
    })  # fmt: skip
    write_provenance(out, record)
    return path


class PCAProjection:
    """Principal components of each stored layer's activations (Pearson 1901; scikit-learn's ``PCA``)."""

    name = NAME

    def __init__(self, config: PCAConfig | None = None) -> None:
        self.config = config or PCAConfig()

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        return True  # any layer with at least one neuron

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> list[Path]:
        from .feature_maps import analysis_key
        from .reader import AnalysisReader

        reader = AnalysisReader(run_dir)
        written = []
        for layer in self.config.layers or reader.layers:
            x = reader.matrix(layer)
            if x.shape[0] < 2:
                continue
            started = time.perf_counter()
            coords, fitted = pca(x, self.config.components, self.config.seed)
            path = write_projection(
                run_dir, layer, "pca", coords, asdict(self.config) | {"layers": None}, analysis=analysis_key(reader),
                seconds=time.perf_counter() - started, **pca_info(fitted, self.config.components),
            )  # fmt: skip
            written.append(path.parent)
        return written


def compute_projection(
    run_dir: str | os.PathLike[str],
    layer: str,
    method: str,
    *,
    on_progress: Progress | None = None,
    seed: int | None = 0,
) -> Path:
    """Compute one 2-D projection of a stored layer and write it; returns the ``.npy`` path.

    ``method``: ``"pca"``, ``"umap"`` (umap-learn) or ``"tsne"`` (openTSNE). UMAP and t-SNE first reduce layers
    wider than 50 neurons to their 50 principal components. ``on_progress(fraction, message)`` is called now and
    then, possibly from another thread. ``seed=None`` lets UMAP use every core, at the price of reproducibility.

    >>> compute_projection(run.dir, "fc1", "umap", on_progress=lambda f, m: print(f"{f:.0%} {m}"))
    """
    from .feature_maps import analysis_key
    from .reader import AnalysisReader

    if method not in METHODS:
        raise ValueError(f"deepscope: projection method must be one of {METHODS}, not {method!r}")
    report = on_progress or (lambda fraction, message: None)
    report(0.0, "loading activations")
    reader = AnalysisReader(run_dir)
    x = reader.matrix(layer)
    if len(x) < 3:
        raise ValueError(f"deepscope: {len(x)} instances are too few to project")
    started = time.perf_counter()
    if method == "pca":
        coords, fitted = pca(x, 2, seed or 0)
        info: dict[str, Any] = pca_info(fitted, 2)
        config: dict[str, Any] = asdict(PCAConfig(seed=seed or 0)) | {"layers": None}
    elif method == "umap":
        from .umap_projection import UMAPConfig, umap

        cfg = UMAPConfig(seed=seed)
        coords, info = umap(x, cfg, report)
        config = asdict(cfg)
    else:
        from .tsne_projection import TSNEConfig, tsne

        tcfg = TSNEConfig(seed=seed)
        coords, info = tsne(x, tcfg, report)
        config = asdict(tcfg)
    report(0.99, "writing")
    seconds = time.perf_counter() - started
    path = write_projection(
        run_dir, layer, method, coords, config, analysis=analysis_key(reader), seconds=seconds, **info
    )
    report(1.0, "done")
    return path
