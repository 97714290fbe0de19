"""Nearest neighbours against an exact NumPy float64 oracle, far from the origin too, and the bounds of ``k``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deepscope
from deepscope.analyses.neighbors import FlatIndex, faiss_available, nearest_neighbors


def exact(x: np.ndarray, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: every distance in float64, sorted (ties: lower index first)."""
    d = np.sqrt(((x.astype(np.float64) - x[i].astype(np.float64)) ** 2).sum(1))
    d[i] = np.inf
    order = np.lexsort((np.arange(len(x)), d))[:k]
    return order, d[order]


@pytest.fixture
def offset():
    """Activations with a large common offset (~500, D=64): float32 ``|q|² - 2q·x + |x|²`` loses their differences."""
    return (500 + np.random.default_rng(0).standard_normal((2000, 64))).astype(np.float32)


def test_euclidean_neighbours_far_from_the_origin_are_exact(offset):
    for i in (7, 1234):
        idx, dist = nearest_neighbors(offset, offset[[i]], k=10, metric="euclidean", exclude=np.array([i]))
        want_i, want_d = exact(offset, i, 10)
        np.testing.assert_array_equal(idx[0], want_i)
        np.testing.assert_allclose(dist[0], want_d, rtol=1e-6)
    rows = np.arange(0, 2000, 97)  # many queries at once, scanned in blocks
    idx, dist = nearest_neighbors(offset, offset[rows], k=5, metric="euclidean", block_rows=300, exclude=rows)
    for q, i in enumerate(rows):
        np.testing.assert_array_equal(idx[q], exact(offset, int(i), 5)[0])


def test_a_duplicate_row_is_at_distance_zero(offset):
    x = offset.copy()
    x[11] = x[7]
    idx, dist = nearest_neighbors(x, x[[7]], k=3, metric="euclidean", exclude=np.array([7]))
    assert idx[0, 0] == 11 and dist[0, 0] == 0


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_faiss_euclidean_neighbours_far_from_the_origin_are_exact(offset):
    rows = np.arange(2000)  # many queries: FAISS takes its matrix-product path (``|q|² - 2q·x + |x|²``)
    idx, dist = FlatIndex(offset, "euclidean").search(offset[rows], 10, exclude=rows)
    for i in rows[::40]:
        want_i, want_d = exact(offset, int(i), 10)
        np.testing.assert_array_equal(idx[i], want_i)
        np.testing.assert_allclose(dist[i], want_d, rtol=1e-5)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_k_below_one_is_refused(tmp_path, k):
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="number of neighbours, must be a whole number of at least 1"):
        nearest_neighbors(x, x[[0]], k=k)
    if faiss_available():
        with pytest.raises(ValueError, match="at least 1"):
            FlatIndex(x, "cosine").search(x[[0]], k)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.zeros(20, dtype=torch.long))
    r = deepscope.analyze(torch.nn.Sequential(torch.nn.Linear(3, 4)), data, layers=["0"], run=tmp_path,
                          progress=False, full_maps=False)  # fmt: skip
    with pytest.raises(ValueError, match="at least 1"):
        r.neighbors("0", 0, k=k)
    assert len(r.neighbors("0", 0, k=30)[0]) == 19  # more than there are: every other instance
