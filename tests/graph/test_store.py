"""deepscope.graph: the artifact in the store, its reader, the JSON format and its version."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from tests.graph import models

import deepscope
from deepscope.demo.models import SmallCNN
from deepscope.graphs import GRAPH_VERSION, from_json, read_graph, to_json
from deepscope.graphs.store import graph_path


def test_graph_into_the_current_run(root):
    run = deepscope.init(dir=root, name="g")
    g = deepscope.graph(SmallCNN(), torch.randn(2, 1, 28, 28))
    assert g.method == "export"
    path = run.dir / "artifacts" / "graph" / "graph.json"
    assert path.exists() and json.loads(path.read_text())["version"] == GRAPH_VERSION
    assert read_graph(run.dir) == g
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    run.finish()


def test_graph_into_a_run_directory_and_onnx(root, tmp_path):
    model, x = models.resnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    run = deepscope.init(dir=root, name="onnx")
    g = deepscope.graph(str(tmp_path / "m.onnx"), run=run.dir)
    assert g.method == "onnx" and read_graph(run.dir) == g
    run.finish()


def test_without_a_run(root):
    with pytest.raises(RuntimeError, match="no active run"):
        deepscope.graph(SmallCNN(), torch.randn(1, 1, 28, 28))
    assert read_graph(root / "nothing-here") is None


def test_untraceable_model_is_stored_with_its_reasons(root):
    run = deepscope.init(dir=root, name="bad")
    g = deepscope.graph(models.AlwaysFails(), torch.randn(2, 4))
    stored = read_graph(run.dir)
    assert stored == g and stored.method == "modules" and len(stored.notes) == 3
    run.finish()


def test_unusual_names_roundtrip(root):
    run = deepscope.init(dir=root, name="weird")
    g = deepscope.graph(models.weird_names(), torch.randn(2, 4))
    text = graph_path(run.dir).read_text(encoding="utf-8")
    assert read_graph(run.dir) == g
    assert models.WEIRD in {n.module_path for n in read_graph(run.dir).nodes}
    assert json.loads(text)["modules"][1]["path"] == models.WEIRD
    run.finish()


def test_versions_and_damage(tmp_path):
    g = models.synthetic_transformer(layers=2)
    assert from_json(to_json(g)) == g
    newer = json.loads(to_json(g)) | {"version": GRAPH_VERSION + 1}
    with pytest.raises(ValueError, match="newer"):
        from_json(json.dumps(newer))
    with pytest.raises(ValueError, match="method"):
        from_json(json.dumps(json.loads(to_json(g)) | {"method": "magic"}))
    path = graph_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "meth')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_graph(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda g: g["nodes"][0].pop("op"), r"nodes\[0\] has no 'op'"),
        (lambda g: g["edges"][0].pop("dst"), r"edges\[0\] has no 'dst'"),
        (lambda g: g["modules"][0].pop("path"), r"modules\[0\] has no 'path'"),
        (lambda g: g.update(nodes={"a": 1}), r"'nodes' must be a list, not dict"),
        (lambda g: g["nodes"].__setitem__(0, "x"), r"nodes\[0\] must be an object, not str"),
        (lambda g: g["nodes"][1].update(output_shapes=[[2, {"d": 1}]]), r"nodes\[1\]: a shape is a list"),
        (lambda g: g["nodes"][1].update(input_shapes=[7]), r"nodes\[1\]: a shape is a list"),
        (lambda g: g["nodes"][1].update(n_params="many"), r"nodes\[1\]: 'n_params' must be an integer"),
        (lambda g: g["modules"][0].update(children="enc"), r"modules\[0\]: 'children' must be a list of strings"),
        (lambda g: g["modules"][1].update(parent=3), r"modules\[1\]: 'parent' must be a string or null"),
        (lambda g: g.update(notes="none"), r"'notes' must be a list of strings"),
    ],
)
def test_missing_or_mistyped_fields_are_value_errors(damage, message):
    """What the graph route turns into a 404 "unreadable graph" (a KeyError or TypeError was a 500)."""
    data = json.loads(to_json(models.synthetic_transformer(layers=1)))
    damage(data)
    with pytest.raises(ValueError, match=message):
        from_json(json.dumps(data))


def test_import_order_keeps_the_function():
    import deepscope.graphs.hierarchy  # noqa: F401 - a later import of the package must not shadow it

    assert callable(deepscope.graph) and "graph" in deepscope.__all__


def test_import_deepscope_does_not_import_torch():
    code = "import sys, deepscope, deepscope.graphs.hierarchy; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
