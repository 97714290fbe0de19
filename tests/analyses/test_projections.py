"""Projections: PCA, UMAP and t-SNE written by ``compute_projection``, their progress, and what the reader lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.analyses.models import TinyCNN, image_data

import deepscope
from deepscope.analyses.projection import METHODS, compute_projection, reduce_dims


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("run")
    return deepscope.analyze(TinyCNN(), image_data(300), layers=["conv2", "fc1"], run=d, progress=False)


def test_pca_is_written_by_analyze_and_listed(reader):
    info = reader.projection_info("fc1")
    assert list(info) == ["pca"]
    assert info["pca"]["method"] == "pca" and info["pca"]["components"] == 2 and info["pca"]["rows"] == 300
    assert info["pca"]["seconds"] >= 0 and len(info["pca"]["explained_variance_ratio"]) == 2
    assert reader.projection("fc1", "umap") is None
    assert METHODS == ("pca", "umap", "tsne")


def test_compute_pca_reports_progress_and_matches_the_stored_one(reader):
    calls = []
    path = compute_projection(reader.run_dir, "conv2", "pca", on_progress=lambda f, m: calls.append((f, m)))
    assert path == reader.run_dir / "artifacts/projection/conv2/pca.npy"
    np.testing.assert_array_equal(np.load(path), reader.projection("conv2"))
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.slow
def test_tsne_keeps_clusters_apart(tmp_path):
    """Three well separated blobs in 64-d stay separated in 2-d: each point's nearest 2-d neighbours share its blob."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 64)) * 10
    x = np.concatenate([c + rng.normal(size=(60, 64)) for c in centers]).astype(np.float32)
    blob = np.repeat(np.arange(3), 60)
    reader = deepscope.analyze(torch.nn.Sequential(torch.nn.Identity()), torch.from_numpy(x), layers=["0"],
                               run=tmp_path, progress=False, projection=False)  # fmt: skip
    calls = []
    compute_projection(tmp_path, "0", "tsne", on_progress=lambda f, m: calls.append((f, m)))
    coords = reader.projection("0", "tsne")
    assert coords.shape == (180, 2) and coords.dtype == np.float32
    assert _neighbour_purity(coords, blob) > 0.95
    assert any("iteration" in m for _, m in calls) and calls[-1][0] == 1.0
    info = reader.projection_info("0")
    assert list(info) == ["tsne"] and info["tsne"]["params"]["perplexity"] == 30
    assert json.loads((tmp_path / "artifacts/projection/0/tsne.json").read_text())["provenance"]["analysis"]


@pytest.mark.slow
def test_umap_keeps_clusters_apart_and_reports_epochs(tmp_path):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 80)) * 10
    x = np.concatenate([c + rng.normal(size=(100, 80)) for c in centers]).astype(np.float32)
    blob = np.repeat(np.arange(3), 100)
    reader = deepscope.analyze(torch.nn.Sequential(torch.nn.Identity()), torch.from_numpy(x), layers=["0"],
                               run=tmp_path, progress=False)  # fmt: skip
    calls = []
    compute_projection(tmp_path, "0", "umap", on_progress=lambda f, m: calls.append((f, m)))
    coords = reader.projection("0", "umap")
    assert coords.shape == (300, 2) and np.isfinite(coords).all()
    assert _neighbour_purity(coords, blob) > 0.95
    epochs = [f for f, m in calls if "epoch" in m]
    assert epochs and epochs == sorted(epochs) and epochs[0] >= 0.5 and epochs[-1] <= 1.0
    info = reader.projection_info("0")
    assert set(info) == {"pca", "umap"} and info["umap"]["input_dims"] == 50  # 80 neurons → 50 components first
    again = compute_projection(tmp_path, "0", "umap")
    np.testing.assert_array_equal(np.load(again), coords)  # seeded: the same layout


def test_reduce_dims_keeps_narrow_layers_and_reduces_wide_ones():
    x = np.random.default_rng(0).normal(size=(100, 80)).astype(np.float32)
    assert reduce_dims(x, 50).shape == (100, 50)
    assert reduce_dims(x[:, :20], 50) is not None and reduce_dims(x[:, :20], 50).shape == (100, 20)
    assert reduce_dims(x, None).shape == (100, 80)


def test_unknown_method_is_refused(reader):
    with pytest.raises(ValueError, match="one of"):
        compute_projection(reader.run_dir, "fc1", "mds")


def _neighbour_purity(coords: np.ndarray, groups: np.ndarray, k: int = 5) -> float:
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, 1)[:, :k]
    return float((groups[nearest] == groups[:, None]).mean())
