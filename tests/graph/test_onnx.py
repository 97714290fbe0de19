"""ONNX import: a model exported with torch.onnx reads back with the same module hierarchy and shapes."""

from __future__ import annotations

import warnings

import pytest
import torch
from tests.graph import models

from deepscope.graphs import collapse, extract_graph, from_json, to_json
from deepscope.graphs.onnx_import import graph_from_onnx, module_path_from_name
from deepscope.graphs.schema import check

onnx = pytest.importorskip("onnx")


def export(model, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=["pixel_values"])


def test_resnet_roundtrip(tmp_path):
    model, x = models.resnet()
    export(model, (x,), tmp_path / "resnet.onnx")
    g = graph_from_onnx(tmp_path / "resnet.onnx")
    assert g.method == "onnx" and check(g) == []
    assert from_json(to_json(g)) == g
    paths = dict(model.named_modules())
    assert all(n.module_path in paths for n in g.nodes)
    assert {n.module_path for n in g.nodes if n.target == "ai.onnx::Conv"} == {
        p for p, m in paths.items() if isinstance(m, torch.nn.Conv2d)
    }
    # the weights are counted, not shown (the exporter folded BatchNorm into the convolutions, and shares
    # identical constants between readers, each of which counts them)
    initializers = onnx.load(str(tmp_path / "resnet.onnx")).graph.initializer
    assert all(n.n_params > 0 for n in g.nodes if n.target == "ai.onnx::Conv")
    assert sum(n.n_params for n in g.nodes) >= sum(int(torch.tensor(i.dims).prod()) for i in initializers)
    with torch.no_grad():
        out = model(x)
    assert tuple(out.last_hidden_state.shape) in {e.shape for e in g.edges if e.dst == "output"}
    # the same top level as the PyTorch graph
    native = extract_graph(model, x)
    onnx_top = [n.id for n in collapse(g, set())[0] if n.kind == "module"]
    assert onnx_top == [n.id for n in collapse(native, set())[0] if n.kind == "module"]


def test_module_paths_from_scoped_names():
    assert (
        module_path_from_name("/encoder/layer.0/attention/self/query/MatMul") == "encoder.layer.0.attention.self.query"
    )
    assert module_path_from_name("/encoder/stages.0/layers.0/layer/layer.0/convolution/Conv") == (
        "encoder.stages.0.layers.0.layer.0.convolution"
    )
    assert module_path_from_name("/Add") == "" and module_path_from_name("Add_3") == ""


def test_hand_built_model_without_scopes(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Add", ["y", "x"], ["z"], name="")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(path))
    g = graph_from_onnx(path)
    assert check(g) == [] and [n.op for n in g.nodes] == ["input", "call_function", "call_function", "output"]
    assert g.nodes[0].output_shapes == (("batch", 4),)
    assert len({n.id for n in g.nodes}) == 4
