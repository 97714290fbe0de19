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


class _Binary(torch.nn.Module):
    """A binary head ``Linear(h, 1)`` after a ReLU that never fires (a constant layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.dead = torch.nn.ReLU()
        self.head = torch.nn.Linear(16, 1)
        with torch.no_grad():
            self.fc1.bias.fill_(-100.0)  # every pre-activation negative: the ReLU outputs 0 for every instance

    def forward(self, x):
        return self.head(self.dead(self.fc1(x)) + x.repeat(1, 2))


@pytest.fixture(scope="module")
def degenerate(tmp_path_factory):
    torch.manual_seed(0)
    x = torch.randn(60, 8)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 2, (60,)))
    r = deepscope.analyze(_Binary(), data, layers=["dead", "head"], run=tmp_path_factory.mktemp("flat"),
                          progress=False, full_maps=False)  # fmt: skip
    return r


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path.name} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("method", METHODS)
def test_a_one_neuron_layer_is_laid_out_against_a_zero_axis(degenerate, method):
    """The oracle: scikit-learn's first principal component of the one column (up to its sign), and zeros."""
    from sklearn.decomposition import PCA

    x = degenerate.matrix("head")
    assert x.shape[1] == 1
    coords = np.load(compute_projection(degenerate.run_dir, "head", method))
    want = PCA(1).fit_transform(x.astype(np.float64))[:, 0]
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(want), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(coords[:, 1], 0)
    info = _strict_json(degenerate.run_dir / f"artifacts/projection/head/{method}.json")
    assert "1 dimension" in info["note"] and info["components"] == 2
    if method == "pca":
        assert info["explained_variance_ratio"] == [1.0, 0.0]


@pytest.mark.parametrize("method", METHODS)
def test_a_constant_layer_is_a_point_said_so_and_never_nan(degenerate, method):
    assert np.ptp(degenerate.matrix("dead"), axis=0).max() == 0
    coords = np.load(compute_projection(degenerate.run_dir, "dead", method))
    np.testing.assert_array_equal(coords, np.zeros((60, 2), np.float32))
    info = _strict_json(degenerate.run_dir / f"artifacts/projection/dead/{method}.json")
    assert "same activations" in info["note"]
    if method == "pca":
        assert info["explained_variance_ratio"] == [0.0, 0.0]


def test_pca_written_by_analyze_is_strict_json_for_constant_layers(degenerate):
    info = _strict_json(degenerate.run_dir / "artifacts/projection/dead/pca.json")
    assert info["explained_variance_ratio"] == [0.0, 0.0] and "same activations" in info["note"]
