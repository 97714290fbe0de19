"""Glorot & Bengio (2010), from the stored statistics alone.

The demo's deep sigmoid MLP (4 × 1000, W ~ U[−1/√n, 1/√n], MNIST) saturates: its top hidden layer's mean
activation falls toward 0 early in training while the lower layers stay near 0.5. The demo CNN with
BatchNorm and ReLU shows nothing of the kind. The test reads the store, never the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepscope
from deepscope.demo.data import load_mnist
from deepscope.demo.models import DeepSigmoidMLP, SmallCNN
from deepscope.demo.train import TrainConfig

STEPS = 200


def train(model: torch.nn.Module, root, name: str) -> str:
    digits = load_mnist()
    config = TrainConfig()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    g = torch.Generator().manual_seed(0)
    with deepscope.init(dir=root, name=name) as run:
        run.watch(model, opt, print_findings=False)
        for step in range(STEPS):
            idx = torch.randint(len(digits.train_y), (config.batch_size,), generator=g)
            loss = F.cross_entropy(model(digits.train_x[idx]), digits.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss}, step=step)
    return run.id


@pytest.mark.slow
def test_sigmoid_mlp_top_layer_saturates_and_cnn_does_not(root):
    torch.manual_seed(0)
    mlp_id = train(DeepSigmoidMLP(), root, "mlp")
    cnn_id = train(SmallCNN(), root, "cnn")
    store = deepscope.open(root)

    mlp = store.run(mlp_id)
    layers = mlp.watch_manifest()["layers"]
    sigmoids = [la["path"] for la in layers if la["role"] == "sigmoid"]
    assert len(sigmoids) == 4
    m = mlp.layer_matrix("act", "mean", buckets=STEPS)
    mean = dict(zip(m.names, m.values))
    top, lower = mean[sigmoids[-1]], [mean[p] for p in sigmoids[:2]]
    assert m.exact and len(m.step) == STEPS
    assert top[0] > 0.3  # starts unsaturated …
    assert np.nanmean(top[STEPS // 2 :]) < 0.1  # … and falls toward 0 early in training
    assert top[STEPS // 4] < top[0] / 2
    for series in lower:  # the lower layers stay near 0.5 throughout
        assert np.all(np.abs(series - 0.5) < 0.1)
    sat = dict(zip(*(lambda x: (x.names, x.values))(mlp.layer_matrix("act", "sat_frac", buckets=STEPS))))
    assert np.nanmean(sat[sigmoids[-1]][STEPS // 2 :]) > 0.5
    findings = [e for e in mlp.events() if e.kind == "diagnosis/saturation"]
    assert [e.key for e in findings] == [sigmoids[-1]]

    cnn = store.run(cnn_id)
    relus = [la["path"] for la in cnn.watch_manifest()["layers"] if la["role"] == "relu"]
    c = cnn.layer_matrix("act", "mean", buckets=STEPS)
    for path, series in zip(c.names, c.values):
        if path in relus:  # ReLU outputs keep a healthy mean: no collapse toward 0
            assert np.nanmin(series) > 0.1, path
    assert not [e for e in cnn.events() if e.kind in ("diagnosis/saturation", "diagnosis/dead_units")]
