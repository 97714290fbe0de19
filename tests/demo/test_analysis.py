"""The demo's analysis: both networks on all 5,000 digits, with previews, metadata, confusion, PCA and UMAP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepscope.demo.analysis import LAYERS, analyze_model, demo_instances, project_in_background
from deepscope.demo.data import load_mnist
from deepscope.demo.models import DeepSigmoidMLP, SmallCNN


@pytest.fixture(scope="module")
def digits():
    return load_mnist()


def test_metadata_columns_are_real_properties_of_the_digits(digits):
    x, y, meta = demo_instances(digits)
    assert x.shape == (5000, 1, 28, 28) and len(y) == 5000
    assert (meta["split"] == "validation").sum() == 1000 and (meta["split"][:4000] == "train").all()
    lit = (x > x.amin((1, 2, 3), keepdim=True)).float().mean((1, 2, 3)).numpy()
    np.testing.assert_allclose(meta["ink"], lit)
    thick, thin = meta["ink"][meta["stroke"] == "thick"], meta["ink"][meta["stroke"] == "thin"]
    assert thick.min() >= thin.max() and 1600 <= len(thick) <= 1700


@pytest.mark.slow
@pytest.mark.parametrize("model_class", [SmallCNN, DeepSigmoidMLP])
def test_each_network_is_analysed_into_its_run(tmp_path, digits, model_class):
    torch.manual_seed(0)
    model = model_class()
    r = analyze_model(model, tmp_path, digits)
    assert len(r) == 5000 and r.layers == list(LAYERS[model_class.__name__]) and r.complete
    assert r.class_names == [str(d) for d in range(10)]
    assert r.input_kind == "image" and r.image(0).shape == (28, 28, 1)
    t = r.instances()
    assert {"split", "ink", "stroke", "label", "prediction", "correct"} <= set(t.column_names)
    assert np.array(r.confusion()["matrix"]).sum() == 5000
    for layer in r.layers:
        assert r.projection(layer).shape == (5000, 2)
    val = r.aggregate("classifier", where={"split": "validation"})
    assert val.count[0] == 1000
    maps = {name: (info.shape, len(info.indices)) for name, info in r.feature_map_layers().items()}
    cnn = {"features.3": ((16, 14, 14), 30), "features.7": ((32, 7, 7), 30)}
    assert maps == (cnn if model_class is SmallCNN else {})  # three digits of each class; the MLP has no maps


@pytest.mark.slow
def test_umap_in_the_background(tmp_path, digits):
    torch.manual_seed(0)
    r = analyze_model(SmallCNN(), tmp_path, digits)
    thread = project_in_background({"SmallCNN": tmp_path, "DeepSigmoidMLP": tmp_path / "none"})
    thread.join(timeout=240)
    assert not thread.is_alive()
    assert r.projection("features.10", "umap").shape == (5000, 2)
    assert r.projection_info("features.10")["umap"]["input_dims"] == 50
