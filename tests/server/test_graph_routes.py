"""``GET /api/runs/{run_id}/graph``: collapsed views of the run's graph, checked against ``collapse``."""

from __future__ import annotations

import json
import os

import pytest
from tests.server.helpers import make_client

import deepscope
from deepscope.graphs import Edge, Graph, ModuleInfo, Node, collapse, write_graph
from deepscope.server import create_app
from deepscope.server.graph_queries import graph_view

ODD = '<img src=x onerror="alert(1)">&ü,/?#%'  # a module name may hold anything but "."


def toy_graph() -> Graph:
    """in → enc(block0(lin, act), ODD(lin)) → head → out, with a skip edge around enc."""
    modules = (
        ModuleInfo("", "Toy", 30, None, ("enc", "head")),
        ModuleInfo("enc", "Encoder", 20, "", ("enc.block0", f"enc.{ODD}")),
        ModuleInfo("enc.block0", "Block", 10, "enc", ()),
        ModuleInfo(f"enc.{ODD}", "Odd", 10, "enc", ()),
        ModuleInfo("head", "torch.nn.Linear", 10, "", ()),
    )
    s, f = (2, 4), ("float32",)

    def op(id_, name, target, module, mtype, n_in=1, out=s, n_params=0):
        return Node(id_, name, "call_function", target, module, mtype, (s,) * n_in, f * n_in, (out,), f, n_params)

    nodes = (
        Node("x", "x", "input", "", "", "", output_shapes=(s,), output_dtypes=f),
        op("lin0", "linear", "aten.linear.default", "enc.block0", "Block", n_params=10),
        op("act0", "relu", "aten.relu.default", "enc.block0", "Block"),
        op("lin1", ODD, "aten.linear.default", f"enc.{ODD}", "Odd", n_params=10),
        op("add", "add", "aten.add.Tensor", "enc", "Encoder", n_in=2),
        op("fc", "linear_1", "aten.linear.default", "head", "torch.nn.Linear", out=(2, 3), n_params=10),
        Node("out", "output", "output", "output", "", "", ((2, 3),), f),
    )
    edges = (
        Edge("x", "lin0", s, "float32"),
        Edge("lin0", "act0", s, "float32"),
        Edge("act0", "lin1", s, "float32"),
        Edge("lin1", "add", s, "float32"),
        Edge("x", "add", s, "float32"),
        Edge("add", "fc", s, "float32"),
        Edge("fc", "out", (2, 3), "float32"),
    )
    return Graph(method="export", nodes=nodes, edges=edges, modules=modules, notes=("a note",))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphs")
    with deepscope.init(project="g", name="toy", dir=root) as run:
        write_graph(run.dir, toy_graph())
    with deepscope.init(project="g", name="no-graph", dir=root) as bare:
        pass
    return root, run.id, bare.id


@pytest.fixture(scope="module")
def client(root):
    return make_client(create_app(root[0]))


@pytest.mark.parametrize(
    "expanded", [(), ("enc",), ("enc", "enc.block0"), ("enc", f"enc.{ODD}", "head"), ("enc.block0",), ("nope",)]
)
def test_view_matches_collapse(client, root, expanded):
    r = client.get(f"/api/runs/{root[1]}/graph", params=[("expanded", p) for p in expanded])
    assert r.status_code == 200
    body = r.json()
    nodes, edges = collapse(toy_graph(), expanded)
    assert [n["id"] for n in body["nodes"]] == [n.id for n in nodes]
    assert [(n["kind"], n["label"], n["module_path"], n["type"], n["size"], n["n_params"]) for n in body["nodes"]] == [
        (n.kind, n.label, n.module_path, n.type, n.size, n.n_params) for n in nodes
    ]
    assert [(e["src"], e["dst"], e["count"], e["dtype"]) for e in body["edges"]] == [
        (e.src, e.dst, e.count, e.dtype) for e in edges
    ]
    assert [e["shape"] for e in body["edges"]] == [None if e.shape is None else list(e.shape) for e in edges]
    # only the paths that are really open come back (a child of a collapsed module is not)
    open_ = {"enc"} if "enc" in expanded else set()
    open_ |= {p for p in expanded if p.startswith("enc.") and "enc" in expanded} | ({"head"} & set(expanded))
    assert set(body["expanded"]) == open_
    assert body["method"] == "export" and body["notes"] == ["a note"] and body["version"] == 1


def test_operations_carry_shapes_and_dtypes(client, root):
    body = client.get(f"/api/runs/{root[1]}/graph", params={"expanded": "head"}).json()
    fc = next(n for n in body["nodes"] if n["id"] == "n:fc")
    assert fc["op"] == "call_function" and fc["target"] == "aten.linear.default"
    assert fc["input_shapes"] == [[2, 4]] and fc["output_shapes"] == [[2, 3]] and fc["output_dtypes"] == ["float32"]
    enc = next(n for n in body["nodes"] if n["id"] == "m:enc")
    assert enc["kind"] == "module" and enc["op"] is None and enc["size"] == 4 and enc["n_params"] == 20


def test_module_tree(client, root):
    body = client.get(f"/api/runs/{root[1]}/graph").json()
    tree = {m["path"]: m for m in body["modules"]}
    assert tree[""]["children"] == ["enc", "head"] and tree[""]["parent"] is None
    assert tree["enc"]["children"] == ["enc.block0", f"enc.{ODD}"] and tree["enc"]["size"] == 4
    assert tree[f"enc.{ODD}"]["parent"] == "enc" and tree[f"enc.{ODD}"]["type"] == "Odd"
    assert client.get(f"/api/runs/{root[1]}/graph", params={"tree": "false"}).json()["modules"] is None


def test_unusual_names_roundtrip(client, root):
    body = client.get(f"/api/runs/{root[1]}/graph", params=[("expanded", "enc"), ("expanded", f"enc.{ODD}")]).json()
    assert f"enc.{ODD}" in body["expanded"]
    lin1 = next(n for n in body["nodes"] if n["id"] == "n:lin1")
    assert lin1["label"] == ODD and lin1["module_path"] == f"enc.{ODD}"


def test_search_finds_nodes_and_modules_anywhere(client, root):
    body = client.get(f"/api/runs/{root[1]}/graph", params={"q": "RELU", "tree": "false"}).json()
    assert [(m["id"], m["module_path"]) for m in body["matches"]] == [("n:act0", "enc.block0")]
    body = client.get(f"/api/runs/{root[1]}/graph", params={"q": "onerror"}).json()
    assert [m["id"] for m in body["matches"]] == [f"m:enc.{ODD}", "n:lin1"]
    assert client.get(f"/api/runs/{root[1]}/graph").json()["matches"] == []


def test_404s(client, root):
    assert client.get(f"/api/runs/{root[2]}/graph").status_code == 404
    assert client.get("/api/runs/nope/graph").status_code == 404
    assert client.get("/api/runs/..%2F..%2Fetc/graph").status_code == 404


def test_a_graph_with_a_node_without_op_is_404(tmp_path):
    with deepscope.init(project="g", name="odd", dir=tmp_path) as run:
        path = write_graph(run.dir, toy_graph())
    data = json.loads(path.read_text())
    del data["nodes"][1]["op"]
    path.write_text(json.dumps(data))
    r = make_client(create_app(tmp_path)).get(f"/api/runs/{run.id}/graph")
    assert r.status_code == 404 and r.json()["detail"].endswith(
        "unreadable graph: deepscope: graph nodes[1] has no 'op'"
    )


def test_cache_follows_the_file(root):
    store = deepscope.open(root[0])
    assert len(graph_view(store, root[1]).nodes) == 4
    run_dir = root[0] / root[1]
    g = toy_graph()
    smaller = Graph(method="fx", nodes=g.nodes[:2], edges=g.edges[:1], modules=g.modules)
    path = write_graph(run_dir, smaller)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        view = graph_view(store, root[1])
        assert view.method == "fx" and [n.id for n in view.nodes] == [n.id for n in collapse(smaller, ())[0]]
    finally:
        write_graph(run_dir, g)


def test_extracted_model(tmp_path):
    torch = pytest.importorskip("torch")
    from deepscope.demo.models import SmallCNN

    with deepscope.init(project="g", name="cnn", dir=tmp_path) as run:
        g = deepscope.graph(SmallCNN(), (torch.zeros(2, 1, 28, 28),), run=run)
    client = make_client(create_app(tmp_path))
    expanded = ["features"]
    body = client.get(f"/api/runs/{run.id}/graph", params={"expanded": expanded}).json()
    nodes, edges = collapse(g, expanded)
    assert [n["id"] for n in body["nodes"]] == [n.id for n in nodes]
    assert [(e["src"], e["dst"]) for e in body["edges"]] == [(e.src, e.dst) for e in edges]
