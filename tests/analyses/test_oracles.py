"""Aggregates, top instances, PCA, neighbours and confusion against NumPy and scikit-learn on stored activations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix as sk_confusion
from tests.analyses.models import TinyCNN, image_data

import deepscope
from deepscope.analyses import ANALYSES
from deepscope.analyses.aggregates import group_aggregate, top_instances
from deepscope.analyses.neighbors import ExactNeighbors, NeighborsConfig, nearest_neighbors


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("run")
    data = image_data(400)
    tags = np.array(["odd" if i % 2 else "even" for i in range(400)])
    return deepscope.analyze(TinyCNN(), data, layers=["conv2", "fc1"], class_names=list("abcd"),
                             metadata={"tag": tags}, run=d, progress=False)  # fmt: skip


def test_class_aggregates_equal_numpy_group_means(reader):
    x = reader.activations("fc1")[:]
    y = reader.instances().column("label").to_numpy()
    agg = reader.aggregate("fc1", by="label")
    assert agg.groups == list("abcd")
    for c in range(4):
        np.testing.assert_allclose(agg.mean[c], x[y == c].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(agg.std[c], x[y == c].std(0), rtol=1e-4, atol=1e-5)
        assert agg.count[c] == (y == c).sum()


def test_subset_aggregates_equal_numpy(reader):
    x = reader.activations("conv2")[:]
    t = reader.instances()
    pred, label = t.column("prediction").to_numpy(), t.column("label").to_numpy()
    where = {"predicted": [int(pred[0]), int(pred[1])], "label": [0, 1, 2], "tag": "odd"}
    mask = np.isin(pred, pred[:2]) & (label <= 2) & (np.arange(400) % 2 == 1)
    agg = reader.aggregate("conv2", where=where)
    assert agg.count[0] == mask.sum() > 0
    np.testing.assert_allclose(agg.mean[0], x[mask].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(agg.std[0], x[mask].std(0), rtol=1e-4, atol=1e-6)
    half = reader.aggregate("conv2", where={"tag": "odd"})  # a large subset: the matrix-vector path
    np.testing.assert_allclose(half.mean[0], x[1::2].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half.std[0], x[1::2].std(0), rtol=1e-4, atol=1e-5)
    correct = t.column("correct").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(reader.mask({"correct": False}), ~correct)
    pinned = reader.rows("conv2", [5, 9, 1])
    np.testing.assert_array_equal(pinned, x[[5, 9, 1]])
    assert reader.aggregate("conv2", where={"index": [5, 9, 1]}).count[0] == 3
    empty = reader.aggregate("conv2", where={"label": 99})
    assert empty.count[0] == 0 and np.isnan(empty.mean).all()
    with pytest.raises(KeyError, match="no column 'nope'"):
        reader.mask({"nope": 1})


def test_group_aggregate_by_prediction_within_a_subset(reader):
    x = reader.activations("fc1")[:]
    pred = reader.instances().column("prediction").to_numpy()
    agg = reader.aggregate("fc1", by="prediction", where={"tag": "even"})
    even = np.arange(400) % 2 == 0
    for c in range(4):
        if ((pred == c) & even).any():
            np.testing.assert_allclose(agg.mean[c], x[(pred == c) & even].mean(0), rtol=1e-5, atol=1e-6)
    raw = group_aggregate(x, pred)
    assert raw.count.sum() == 400


def test_top_instances_equal_a_full_sort(reader):
    x = reader.activations("fc1")[:]
    idx, vals = reader.top_instances("fc1", 3, k=7)
    expected = np.argsort(-x[:, 3], kind="stable")[:7]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(vals, x[expected, 3])
    mask = np.arange(400) < 50
    idx, _ = top_instances(x, 3, 5, mask)
    np.testing.assert_array_equal(idx, np.argsort(-x[:50, 3], kind="stable")[:5])
    with pytest.raises(IndexError):
        top_instances(x, 12, 5)


def test_top_instances_are_those_above_the_neurons_lowest_value():
    """A ReLU unit that fires on three instances has three top instances; a dead one (0 everywhere) none."""
    x = np.zeros((50, 2), np.float32)
    x[[7, 3, 40], 0] = [0.5, 2.0, 0.5]
    idx, vals = top_instances(x, 0, 10)
    assert idx.tolist() == [3, 7, 40] and vals.tolist() == [2.0, 0.5, 0.5]
    idx, vals = top_instances(x, 1, 10)
    assert len(idx) == 0 and len(vals) == 0


def test_pca_equals_sklearn_up_to_sign(reader):
    for layer in ("conv2", "fc1"):
        x = reader.activations(layer)[:]
        ours = reader.projection(layer)
        ref = PCA(n_components=2, random_state=0).fit_transform(x)
        assert ours.shape == (400, 2)
        for j in range(2):
            sign = np.sign(ours[:, j] @ ref[:, j])
            np.testing.assert_allclose(ours[:, j] * sign, ref[:, j], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbors_equal_brute_force(reader, metric):
    x = reader.activations("fc1")[:].astype(np.float64)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - xn @ xn.T
    else:
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    for q in (0, 17, 399):
        idx, dist = reader.neighbors("fc1", q, k=6, metric=metric)
        np.testing.assert_allclose(dist, np.sort(d[q])[:6], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d[q, idx], dist, rtol=1e-4, atol=1e-5)
    # blocked search over a small block size gives the same answer
    idx_b, dist_b = nearest_neighbors(
        x.astype(np.float32), x[[17]].astype(np.float32), 6, metric, block_rows=7, exclude=np.array([17])
    )
    np.testing.assert_allclose(dist_b[0], np.sort(d[17])[:6], rtol=1e-4, atol=1e-5)


def test_neighbor_graph_artifact(reader):
    ExactNeighbors(NeighborsConfig(layers=("fc1",), k=3, block_rows=64)).run(reader.run_dir)
    idx = np.load(reader.run_dir / "artifacts/neighbors/fc1/indices.npy")
    assert idx.shape == (400, 3)
    for q in (0, 123):
        np.testing.assert_array_equal(idx[q], reader.neighbors("fc1", q, k=3)[0])


def test_confusion_equals_sklearn(reader):
    t = reader.instances()
    y, p = t.column("label").to_numpy(), t.column("prediction").to_numpy()
    c = reader.confusion()
    assert c["class_names"] == list("abcd")
    np.testing.assert_array_equal(np.array(c["matrix"]), sk_confusion(y, p, labels=range(4)))


def test_every_registered_analysis_has_the_same_small_surface():
    for name, cls in ANALYSES.items():
        assert cls.name == name
        assert callable(cls.run) and isinstance(cls.is_compatible(TinyCNN(), image_data(4)), bool)
        assert cls().config is not None  # a config dataclass with defaults


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_index_and_numpy_scan_give_the_same_neighbours(reader, metric):
    pytest.importorskip("faiss")
    from deepscope.analyses.neighbors import FlatIndex

    x = reader.activations("conv2")[:]
    queries = np.array([0, 5, 17, 256, 399])
    want_i, want_d = nearest_neighbors(x, x[queries], 8, metric, exclude=queries)
    got_i, got_d = FlatIndex(x, metric).search(x[queries], 8, exclude=queries)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-4, atol=1e-5)
    # through the reader: a threshold of 0 rows sends every query to FAISS, the index is built once and kept
    numpy_answer = reader.neighbors("conv2", 17, k=8, metric=metric)
    reader.faiss_min_rows = 0
    try:
        faiss_answer = reader.neighbors("conv2", 17, k=8, metric=metric)
        assert ("conv2", metric) in reader._indices
    finally:
        reader.faiss_min_rows = 10**9
    np.testing.assert_array_equal(faiss_answer[0], numpy_answer[0])
    np.testing.assert_allclose(faiss_answer[1], numpy_answer[1], rtol=1e-4, atol=1e-5)


def test_faiss_search_drops_a_duplicate_not_found_as_itself():
    pytest.importorskip("faiss")
    from deepscope.analyses.neighbors import FlatIndex

    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)  # rows 0-2 identical: distance 0 to each other
    idx, dist = FlatIndex(x, "euclidean").search(x[[2]], 2, exclude=np.array([2]))
    assert 2 not in idx[0] and idx.shape == (1, 2)
    np.testing.assert_allclose(dist[0], [0, 0])


def test_label_and_prediction_filters_read_cell_sums_and_equal_numpy(reader):
    x = reader.activations("fc1")[:].astype(np.float64)
    t = reader.instances()
    y, p = t.column("label").to_numpy(), t.column("prediction").to_numpy()
    cases = {
        "two labels": ({"label": [0, 1]}, np.isin(y, [0, 1])),
        "a confusion cell": ({"label": 2, "predicted": int(p[0])}, (y == 2) & (p == p[0])),
        "errors": ({"correct": False}, y != p),
        "errors of a class": ({"correct": False, "label": 3}, (y != p) & (y == 3)),
        "nothing": ({"label": 99}, np.zeros(len(y), bool)),
    }
    assert reader.cells("fc1") is not None
    for name, (where, mask) in cases.items():
        agg = reader.aggregate("fc1", where=where)
        assert agg.count[0] == mask.sum(), name
        if mask.any():
            np.testing.assert_allclose(agg.mean[0], x[mask].mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
            np.testing.assert_allclose(agg.std[0], x[mask].std(0), rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            assert np.isnan(agg.mean).all()
    by_pred = reader.aggregate("fc1", by="prediction", where={"correct": True})
    for c in range(4):
        sel = (p == c) & (y == p)
        assert by_pred.count[c] == sel.sum()
        if sel.any():
            np.testing.assert_allclose(by_pred.mean[c], x[sel].mean(0), rtol=1e-5, atol=1e-6)


def test_cells_with_missing_labels(tmp_path):
    torch.manual_seed(2)
    data = image_data(120)
    labels = data.tensors[1].clone()
    labels[::3] = -1  # a third unlabelled
    r = deepscope.analyze(TinyCNN(), data.tensors[0], labels=labels, layers=["fc1"], run=tmp_path, progress=False)
    x = r.activations("fc1")[:].astype(np.float64)
    t = r.instances()
    assert t.column("label").null_count == 40
    p = t.column("prediction").to_numpy()
    y = labels.numpy()
    for where, mask in (
        ({"predicted": int(p[0])}, p == p[0]),
        ({"correct": True}, (y >= 0) & (y == p)),
        ({"label": [1, 2]}, np.isin(y, [1, 2])),
    ):
        agg = r.aggregate("fc1", where=where)
        assert agg.count[0] == mask.sum()
        np.testing.assert_allclose(agg.mean[0], x[mask].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r.aggregate("fc1", by="label").count, np.bincount(y[y >= 0], minlength=4))


def test_cells_of_many_classes():
    import pyarrow as pa

    from deepscope.analyses.aggregates import Cells, Moments

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 300, 2000), rng.integers(0, 300, 2000)  # ~2,000 cells of about one row
    x = rng.normal(size=(2000, 5)).astype(np.float32)
    table = pa.table({"label": y, "prediction": p, "correct": y == p})
    moments = Moments.of(x)
    cells = Cells.of(table.append_column("big", pa.array(np.zeros(2000))), x, moments)
    assert len(cells.count) > 1000
    for where, mask in (({"label": [3, 4, 5]}, np.isin(y, [3, 4, 5])), ({"correct": False}, y != p)):
        agg = cells.subset(where, moments)
        np.testing.assert_allclose(agg.mean[0], x[mask].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(agg.std[0], x[mask].std(0), rtol=1e-4, atol=1e-5)


def test_a_unit_dead_in_one_class_has_no_spread_there_by_every_path():
    """A ReLU unit that is 0 on every instance of class 0 (and large elsewhere) has standard deviation exactly 0 for
    class 0 — by cell sums, by a gathered subset, by a large subset, by groups —, as NumPy says; the float32 sums
    against the global centre left ~1e-4 of its square there."""
    from deepscope.analyses.aggregates import Cells, Moments, group_aggregate, subset_aggregate

    rng = np.random.default_rng(0)
    n, d = 20_000, 8
    label = rng.integers(0, 10, n)
    x = rng.uniform(0, 1, (n, d)).astype(np.float32)
    x[:, 3] = np.where(label == 0, 0.0, 50 + rng.uniform(0, 1, n)).astype(np.float32)  # dead for class 0 only
    x[:, 5] = np.where(label == 0, 0.0, -30 + rng.uniform(0, 1, n)).astype(np.float32)  # signed: no shortcut
    assert x[label == 0, 3].std() == 0
    m = Moments.of(x)
    table = pa.table({"label": label, "prediction": label})
    by_cells = Cells.of(table, x, m).groups("label", 10, None, m)
    by_groups = group_aggregate(x, label, 10, m)
    big = subset_aggregate(x, label != 9, m)  # a large subset: one matrix product
    small = subset_aggregate(x, (label == 0) & (np.arange(n) < 1000), m)  # a small one: gathered rows
    for agg in (by_cells, by_groups):
        assert agg.std[0, 3] == 0 and agg.mean[0, 3] == 0
        np.testing.assert_allclose(agg.std[1:], np.stack([x[label == c].std(0) for c in range(1, 10)]), rtol=1e-2)
    assert small.std[0, 3] == 0
    np.testing.assert_allclose(big.std[0], x[label != 9].std(0), rtol=2e-3)
