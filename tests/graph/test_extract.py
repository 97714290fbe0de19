"""extract_graph on real architectures, the demo models and awkward modules."""

from __future__ import annotations

import warnings

import pytest
import torch
from tests.graph import models
from torch import nn

from deepscope.demo.models import DeepSigmoidMLP, SmallCNN
from deepscope.graphs import extract_graph, from_json, to_json
from deepscope.graphs.schema import check

EXPECTED = {  # architecture → (method, sane node count range)
    "bert": ("export", (60, 400)),
    "gpt2": ("export", (80, 400)),
    "vit": ("export", (60, 400)),
    "resnet": ("export", (15, 200)),
    "convnext": ("export", (20, 200)),
}


def quiet(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers warns about tiny configs
        return build()


def assert_sound(graph, model):
    assert check(graph) == []
    paths = dict(model.named_modules(remove_duplicate=False))
    for n in graph.nodes:
        assert n.module_path in paths, n
        assert n.module_type == ("" if n.op in ("input", "output") else type_name(paths[n.module_path]))
    assert {m.path for m in graph.modules} == set(paths)
    assert from_json(to_json(graph)) == graph


def type_name(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def final_shapes(graph):
    """Shapes of the edges into the output node, in order."""
    out = [n for n in graph.nodes if n.op == "output"]
    assert len(out) == 1
    return [e.shape for e in graph.edges if e.dst == out[0].id]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_architectures(name):
    model, inputs = quiet(models.ARCHITECTURES[name])
    graph = extract_graph(model, inputs)
    method, (lo, hi) = EXPECTED[name]
    assert graph.method == method, graph.notes
    assert lo <= len(graph.nodes) <= hi
    assert_sound(graph, model)
    # the tensor that reaches the output has the shape a real forward pass gives
    with torch.no_grad():
        real = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    assert tuple(real.last_hidden_state.shape) in final_shapes(graph)
    # the hierarchy is there: ops sit deep inside the model's modules
    assert max(n.module_path.count(".") for n in graph.nodes) >= 3
    assert sum(n.n_params for n in graph.nodes) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls", [SmallCNN, DeepSigmoidMLP])
def test_demo_models(cls):
    model = cls() if cls is SmallCNN else cls(depth=3, hidden=32)
    x = torch.randn(2, 1, 28, 28)
    graph = extract_graph(model, x)
    assert graph.method == "export"
    assert_sound(graph, model)
    assert final_shapes(graph) == [(2, 10)]
    assert [n.module_path for n in graph.nodes if n.op == "call_function"][0] == "features.0"
    for method in ("fx", "hooks"):  # every method gives the same data flow at module level
        other = extract_graph(model, x, methods=(method,))
        assert other.method == method
        assert_sound(other, model)
        assert final_shapes(other) == [(2, 10)]


def test_torch_nn_composites_are_opened_and_attention_stays_one_node():
    """fx keeps torch.nn's own modules whole; a TransformerEncoder is layers, not one box (fx cannot trace its
    code: the hooks show them), while MultiheadAttention, the watched layer, stays one node."""

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Linear(8, 32)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2)
            self.head = nn.Linear(32, 3)

        def forward(self, x):
            return self.head(self.enc(self.emb(x)).mean(1))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = nn.MultiheadAttention(32, 4, batch_first=True)
            self.out = nn.Sequential(nn.Linear(32, 32), nn.ReLU())

        def forward(self, x):
            return self.out(self.att(x, x, x)[0] + x)

    model = Encoder()
    graph = extract_graph(model, torch.randn(2, 5, 8), methods=("fx", "hooks"))
    assert_sound(graph, model)
    inside = {n.module_path for n in graph.nodes if n.module_path.startswith("enc.")}
    assert {"enc.layers.0.linear1", "enc.layers.1.norm2"} <= inside
    model = Block()
    graph = extract_graph(model, torch.randn(2, 5, 32), methods=("fx", "hooks"))
    assert graph.method == "fx"  # the residual add is there
    assert [n.module_path for n in graph.nodes if n.module_path.startswith("att")] == ["att"]
    assert {"out.0", "out.1"} <= {n.module_path for n in graph.nodes}


def test_fx_shapes_come_from_fake_tensors_without_a_real_pass():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4))
    seen: list[type] = []
    model[0].register_forward_hook(lambda m, a, out: seen.append(type(out)))
    graph = extract_graph(model, torch.zeros(2, 3), methods=("fx",))
    assert graph.method == "fx" and graph.notes == ()  # no "shapes from a real forward pass"
    assert seen and torch.Tensor not in seen  # the weights were never read: fake tensors only
    assert int(model[2].num_batches_tracked) == 0


def test_training_mode_is_left_alone():
    model = SmallCNN().train()
    bn = model.features[1]
    before = bn.running_mean.clone(), int(bn.num_batches_tracked)
    for method in ("export", "fx", "hooks"):
        extract_graph(model, torch.randn(2, 1, 28, 28), methods=(method,))
    assert torch.equal(bn.running_mean, before[0]) and int(bn.num_batches_tracked) == before[1]
    assert model.training and bn.training


def test_meta_device_needs_no_weights():
    model, ids = quiet(lambda: models.gpt2(layers=2, device="meta"))
    graph = extract_graph(model, ids)
    assert graph.method == "export"
    assert_sound(graph, model)
    assert all(p.is_meta for p in model.parameters())


def test_data_dependent_control_flow_falls_back_to_hooks():
    model = models.DataDependent()
    x = torch.randn(3, 4)
    graph = extract_graph(model, x)
    assert graph.method == "hooks"
    notes = " ".join(graph.notes)
    assert "export failed" in notes and "fx failed" in notes and "real forward pass" in notes
    assert_sound(graph, model)
    calls = [n.module_path for n in graph.nodes if n.op == "call_module"]
    assert calls == ["a", "b", "head"]
    pairs = {(e.src, e.dst) for e in graph.edges}
    # b → head passes through relu and + outside any module: followed all the same
    assert ("call:b", "call:head") in pairs and ("call:head", "out") in pairs
    assert final_shapes(graph) == [(3, 2)]


def test_model_that_fails_every_tracer():
    model = models.AlwaysFails()
    graph = extract_graph(model, torch.randn(2, 4))
    assert graph.method == "modules" and graph.nodes == () and graph.edges == ()
    assert [m.path for m in graph.modules] == ["", "lin"]
    assert len(graph.notes) == 3 and all("this model refuses every input" in n for n in graph.notes)


def test_dict_and_tuple_inputs_and_outputs():
    model = models.DictAndTuple()
    batch = {"a": torch.randn(2, 4), "b": torch.randn(2, 5)}
    for method in ("export", "fx", "hooks"):
        graph = extract_graph(model, (batch, torch.tensor(2.0)), methods=(method,))
        assert graph.method == method, graph.notes
        assert_sound(graph, model)
        out = next(n for n in graph.nodes if n.op == "output")
        assert out.input_shapes == ((2, 3), (2,))  # the output tuple, the dict inside it flattened
        inputs = [n.name for n in graph.nodes if n.op == "input"]
        # export and hooks see the dict's tensors; fx sees the dict as one argument
        assert inputs == (["batch", "scale"] if method == "fx" else ["batch.a", "batch.b", "scale"])
    # a dict is keyword arguments
    kw = extract_graph(model, {"batch": batch, "scale": torch.tensor(3.0)})
    assert kw.method == "export" and {n.name for n in kw.nodes if n.op == "input"} == {"batch.a", "batch.b", "scale"}


def test_shared_module_called_twice():
    model = models.Shared()
    for method in ("export", "fx", "hooks"):
        graph = extract_graph(model, torch.randn(2, 4), methods=(method,))
        assert_sound(graph, model)
        owners = [n.module_path for n in graph.nodes if n.module_path in ("block", "alias")]
        assert len(owners) == 2, (method, owners)  # two calls, two nodes, one module
    hooks = extract_graph(model, torch.randn(2, 4), methods=("hooks",))
    assert {n.id for n in hooks.nodes} >= {"call:block", "call:block@1"}


def test_deep_nesting():
    model = models.deep(60)
    graph = extract_graph(model, torch.randn(2, 3))
    assert graph.method == "export"
    assert_sound(graph, model)
    assert max(n.module_path.count(".") + 1 for n in graph.nodes) == 60  # the Linear: "0.0.….0", 60 levels


def test_unusual_module_names_survive_json():
    model = models.weird_names()
    for method in ("export", "fx", "hooks"):
        graph = extract_graph(model, torch.randn(2, 4), methods=(method,))
        assert graph.method == method, graph.notes
        assert_sound(graph, model)
        assert {n.module_path for n in graph.nodes} >= {models.WEIRD, "ünï cödé", "with space"}


def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        extract_graph(lambda x: x, torch.randn(2))
    with pytest.raises(TypeError, match="keys must be str"):
        extract_graph(nn.Linear(2, 2), {0: torch.randn(2)})


def test_one_tensor_given_as_two_inputs_flows_from_its_first_name():
    """A causal LM called as model(input_ids=x, labels=x): the embedding reads input_ids, not labels."""

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 10)

        def forward(self, input_ids, labels=None):
            logits = self.head(self.embed(input_ids))
            return logits if labels is None else (logits, labels.float().mean())

    ids = torch.randint(10, (2, 5))
    graph = extract_graph(LM(), {"input_ids": ids, "labels": ids}, methods=("hooks",))
    into_embed = [e.src for e in graph.edges if e.dst.endswith("embed")]
    assert into_embed == ["in:input_ids"]
