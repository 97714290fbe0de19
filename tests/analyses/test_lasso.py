"""A lasso on a stored projection as a subset filter: points inside a polygon against an independent oracle (the
winding number, by summing the angles each edge subtends), through the reader and its aggregates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.analyses.models import TinyCNN, image_data

import deepscope
from deepscope.analyses.aggregates import subset_mask
from deepscope.analyses.lasso import inside_polygon

STAR = np.array([[np.cos(a) * r, np.sin(a) * r] for a, r in zip(np.linspace(0, 2 * np.pi, 10, endpoint=False),
                                                                   [1.0, 0.4] * 5, strict=True)])  # fmt: skip


def winding(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Inside a simple polygon: the angles its edges subtend from the point sum to ±2π (0 outside)."""
    a = polygon[None, :, :] - points[:, None, :]  # (P, V, 2)
    b = np.roll(a, -1, axis=1)
    angles = np.arctan2(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], (a * b).sum(-1))
    return np.abs(angles.sum(1)) > np.pi


def test_points_inside_a_nonconvex_polygon_match_the_winding_number():
    points = np.random.default_rng(0).uniform(-1.2, 1.2, (20_000, 2))
    got = inside_polygon(points, STAR)
    np.testing.assert_array_equal(got, winding(points, STAR))
    assert 0.1 < got.mean() < 0.5  # the star's points and its notches are both exercised


def test_points_that_are_not_finite_are_never_inside():
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    pts = np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, np.inf], [0.5, 0.5]])
    np.testing.assert_array_equal(inside_polygon(pts, square), [True, False, False, True])


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("lasso")
    return deepscope.analyze(TinyCNN(), image_data(400), layers=["fc1"], run=run_dir, progress=False)


def test_a_lasso_on_the_pca_selects_the_instances_inside_it_and_combines_with_filters(reader):
    xy = reader.projection("fc1", "pca")[:, :2].astype(np.float64)
    centre, spread = np.median(xy, 0), xy.std(0)
    polygon = centre + STAR * spread
    want = winding(xy, polygon)
    where = {"lasso": {"layer": "fc1", "method": "pca", "polygon": polygon.tolist()}}
    np.testing.assert_array_equal(reader.mask(where), want)
    assert 20 < want.sum() < 380
    label = reader.instances().column("label").to_numpy()
    np.testing.assert_array_equal(reader.mask({**where, "label": 1}), want & (label == 1))
    x = reader.matrix("fc1")
    np.testing.assert_allclose(reader.aggregate("fc1", where=where).mean[0], x[want].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("lasso", "says"),
    [
        ({"layer": "fc1", "method": "umap", "polygon": [[0, 0], [1, 0], [1, 1]]}, "not computed"),
        ({"layer": "nope", "method": "pca", "polygon": [[0, 0], [1, 0], [1, 1]]}, "nope"),
        ({"layer": "fc1", "method": "mds", "polygon": [[0, 0], [1, 0], [1, 1]]}, "method among"),
        ({"layer": "fc1", "method": "pca", "polygon": [[0, 0], [1, 0]]}, "3 to"),
        ({"layer": "fc1", "method": "pca", "polygon": [[0, 0], [1, "x"], [1, 1]]}, "pairs of numbers"),
        ({"layer": "fc1", "method": "pca", "polygon": [[0, 0], [1, float("nan")], [1, 1]]}, "finite"),
        ({"layer": "fc1"}, "polygon"),
    ],
)
def test_a_bad_lasso_says_what_is_wrong(reader, lasso, says):
    with pytest.raises((ValueError, KeyError), match=says):
        reader.mask({"lasso": lasso})


def test_a_lasso_needs_its_projection(reader):
    with pytest.raises(ValueError, match="AnalysisReader.mask"):
        subset_mask(
            reader.instances(), {"lasso": {"layer": "fc1", "method": "pca", "polygon": [[0, 0], [1, 0], [1, 1]]}}
        )


def test_a_lasso_on_a_one_component_projection_reads_y_as_zero():
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    x = np.array([[-2.0], [0.0], [0.5], [3.0]])
    np.testing.assert_array_equal(inside_polygon(x, square), inside_polygon(np.hstack([x, 0 * x]), square))
    np.testing.assert_array_equal(inside_polygon(x, square), [False, True, True, False])


def test_a_lasso_on_the_pca_of_a_one_neuron_layer(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    data = torch.utils.data.TensorDataset(torch.randn(50, 4), torch.randint(0, 2, (50,)))
    r = deepscope.analyze(model, data, layers=["2"], run=tmp_path, progress=False, full_maps=False)
    xy = r.projection("2", "pca")
    assert xy.shape == (50, 2)
    lo, hi = np.quantile(xy[:, 0], [0.25, 0.75])
    box = [[lo, -1.0], [hi, -1.0], [hi, 1.0], [lo, 1.0]]
    got = r.mask({"lasso": {"layer": "2", "method": "pca", "polygon": box}})
    np.testing.assert_array_equal(got, (xy[:, 0] > lo) & (xy[:, 0] < hi))
