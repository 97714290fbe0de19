"""A compiled or wrapped model is the model inside it: the same digest and class as uncompiled (a resume, a comparison
and ``deepscope.feature_maps`` recognise it), and every analysis of it sees its layers — a second one of other layers
too, though torch.compile cached a graph from the first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.analyses.models import TinyCNN, image_data
from tests.conftest import new_dir
from torch import nn

import deepscope
from deepscope.analyses.base import model_class
from deepscope.analyses.resume import weights_digest

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def analyze(model, d, run, **kw):
    return deepscope.analyze(model, d, run=new_dir(run), progress=False, full_maps=False, projection=False, **kw)


def compiled_in_place(model: nn.Module) -> nn.Module:
    model.compile()
    return model


@pytest.mark.parametrize("wrap", [torch.compile, compiled_in_place], ids=["torch.compile", "Module.compile"])
def test_a_compiled_model_analysed_again_with_other_layers_records_them(tmp_path, wrap):
    torch._dynamo.reset()
    model = MLP().eval()
    compiled = wrap(MLP().eval())
    x, y = data()
    with torch.no_grad():
        want = {"fc1": model.fc1(x), "act": model.act(model.fc1(x)), "fc2": model(x)}
    for i, layers in enumerate([["fc1"], ["fc2"], ["act", "fc1"]]):  # no reset between them: a graph is cached
        r = analyze(compiled, (x, y), tmp_path / str(i), layers=layers)
        for layer in layers:
            np.testing.assert_allclose(r.matrix(layer), want[layer].numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def single_process_group():
    """A process group of one (gloo, on this CPU), which DistributedDataParallel needs; gone after the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("wrap", [torch.compile, nn.DataParallel], ids=["compile", "DataParallel"])
def test_a_wrapped_model_has_the_digest_and_class_of_the_model_inside(wrap):
    model = MLP()
    assert weights_digest(wrap(model)) == weights_digest(model)
    assert model_class(wrap(model)) == model_class(model) == f"{__name__}.MLP"
    assert weights_digest(torch.compile(nn.DataParallel(model))) == weights_digest(model)


def test_a_distributed_data_parallel_model_has_the_digest_and_class_of_the_model_inside(single_process_group):
    model = MLP()
    wrapped = nn.parallel.DistributedDataParallel(model)
    assert weights_digest(wrapped) == weights_digest(model)
    assert model_class(wrapped) == model_class(model)


def test_the_analysis_of_a_model_and_of_it_compiled_have_one_fingerprint_and_feature_maps_take_either(tmp_path):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, images = TinyCNN().eval(), image_data(40)
    analyze(model, images, tmp_path / "plain", layers=["conv1"])
    analyze(torch.compile(model), images, tmp_path / "compiled", layers=["conv1"])
    progress = [json.loads((tmp_path / run / "artifacts/activations/progress.json").read_text())["fingerprint"]
                for run in ("plain", "compiled")]  # fmt: skip
    assert progress[0] == progress[1]
    maps = deepscope.feature_maps(torch.compile(model), images, layer="conv1", indices=[3], run=tmp_path / "plain")
    with torch.no_grad():
        np.testing.assert_allclose(maps["conv1"][0], model.conv1(images.tensors[0][3:4])[0].numpy(), rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
