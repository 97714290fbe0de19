"""collapse: the visible graph for a set of expanded modules."""

from __future__ import annotations

import time
import warnings

import torch
from tests.graph import models

from deepscope.demo.models import SmallCNN
from deepscope.graphs import collapse, extract_graph
from deepscope.graphs.hierarchy import GraphIndex


def small_graph():
    return extract_graph(SmallCNN(), torch.randn(2, 1, 28, 28))


def assert_no_dangling(nodes, edges):
    ids = {n.id for n in nodes}
    assert len(ids) == len(nodes)
    assert all(e.src in ids and e.dst in ids and e.src != e.dst for e in edges)
    assert len({(e.src, e.dst) for e in edges}) == len(edges)  # merged: one edge per pair


def test_top_level():
    g = small_graph()
    nodes, edges = collapse(g, set())
    assert [n.id for n in nodes] == ["n:args_0", "m:features", "m:classifier", "n:output"]
    assert [(e.src, e.dst, e.shape) for e in edges] == [
        ("n:args_0", "m:features", (2, 1, 28, 28)),
        ("m:features", "m:classifier", (2, 128)),
        ("m:classifier", "n:output", (2, 10)),
    ]
    features = nodes[1]
    assert (
        features.kind == "module"
        and features.size == 11
        and features.n_params == sum(p.numel() for p in SmallCNN().features.parameters())
    )
    assert_no_dangling(nodes, edges)


def test_expanding_one_module():
    g = small_graph()
    nodes, edges = collapse(g, {"features"})
    ids = [n.id for n in nodes]
    assert ids[:3] == ["n:args_0", "m:features.0", "m:features.1"]
    assert "m:features" not in ids and "m:classifier" in ids
    assert len([i for i in ids if i.startswith("m:features.")]) == 11
    assert_no_dangling(nodes, edges)
    # expanding a leaf shows its operation; a child expanded under a collapsed parent changes nothing
    leaf, _ = collapse(g, {"features", "features.0"})
    assert "n:conv2d" in {n.id for n in leaf}
    assert collapse(g, {"features.0"}) == collapse(g, set())
    assert collapse(g, {"no.such.module"}) == collapse(g, set())


def test_edges_merged_with_counts():
    g = extract_graph(models.DictAndTuple(), ({"a": torch.randn(2, 4), "b": torch.randn(2, 5)}, torch.tensor(2.0)))
    # the graph's whole body at the top level: both Linear boxes feed the same add node
    nodes, edges = collapse(g, set())
    assert_no_dangling(nodes, edges)
    shared = models.Shared()
    sg = extract_graph(shared, torch.randn(2, 4))
    nodes, edges = collapse(sg, set())
    # block (a leaf: Linear) is called twice: a box per call, so that no false loop runs through relu
    pairs = {(e.src, e.dst): e.count for e in edges}
    assert pairs[("m:block", "n:relu")] == 1 and pairs[("n:relu", "m:block@1")] == 1
    assert ("n:relu", "m:block") not in pairs and pairs[("m:block@1", "m:out")] == 1
    calls = {n.id: n for n in nodes if n.module_path == "block"}
    assert set(calls) == {"m:block", "m:block@1"} and all(n.size >= 1 and n.label == "block" for n in calls.values())
    assert sum(n.size for n in calls.values()) == sum(n.module_path == "block" for n in sg.nodes)
    assert_no_dangling(nodes, edges)
    # it stays one box per call when asked open (one container for both calls would draw the loop again)
    assert [n.id for n in collapse(sg, {"block"})[0]] == [n.id for n in nodes]
    # the module itself counts every call's operations (its details); each box its own call's
    idx = GraphIndex(sg)
    assert idx.module_views[idx.pos["block"]].size == sum(n.size for n in calls.values())


def test_a_leaf_whose_operations_read_one_tensor_is_one_call():
    """A leaf module called once whose operations do not connect to each other (two slices of its input) is one
    box, not two calls."""
    from torch import nn

    class Split(nn.Module):
        def forward(self, x):
            return x[:, :2], x[:, 2:]

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.split = nn.Linear(4, 4), Split()

        def forward(self, x):
            a, b = self.split(self.fc(x))
            return a * b

    g = extract_graph(Model(), torch.randn(2, 4))
    assert sum(n.module_path == "split" for n in g.nodes) >= 2
    nodes, edges = collapse(g, set())
    assert [n.id for n in nodes if n.module_path == "split"] == ["m:split"]
    assert_no_dangling(nodes, edges)


def test_a_block_reusing_its_relu_draws_no_loop():
    """torchvision's BasicBlock applies self.relu twice: collapsed inside the open block, the two calls are two
    boxes, each between its own neighbours."""
    from torch import nn

    model = nn.Sequential(models.ReusedReLU())
    g = extract_graph(model, torch.randn(1, 2, 5, 5))
    nodes, edges = collapse(g, {"0"})
    pairs = {(e.src, e.dst) for e in edges}
    assert ("m:0.conv1", "m:0.relu") in pairs and ("m:0.relu", "m:0.conv2") in pairs
    assert not any(d == "m:0.relu" for s, d in pairs if s != "m:0.conv1")  # only conv1 feeds the first call
    assert any(s == "m:0.relu@1" for s, _ in pairs) and not any(s == "m:0.relu" and d != "m:0.conv2" for s, d in pairs)
    assert_no_dangling(nodes, edges)


def test_every_module_expanded_is_the_graph():
    g = small_graph()
    nodes, edges = collapse(g, {m.path for m in g.modules})
    assert [n.id for n in nodes] == [f"n:{n.id}" for n in g.nodes]
    assert {(e.src, e.dst) for e in edges} == {(f"n:{e.src}", f"n:{e.dst}") for e in g.edges}


def test_real_architecture_levels():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, ids = models.gpt2()
    g = extract_graph(model, ids)
    top, _ = collapse(g, set())
    assert {n.id for n in top if n.kind == "module"} == {"m:wte", "m:wpe", "m:drop", "m:h", "m:ln_f"}
    layers, edges = collapse(g, {"h"})
    assert {"m:h.0", "m:h.1"} <= {n.id for n in layers}
    assert any(e.src == "m:h.0" and e.dst == "m:h.1" and e.shape == (2, 8, 32) for e in edges)
    assert_no_dangling(layers, edges)


def test_speed_on_10k_nodes():
    g = models.synthetic_transformer(layers=170)
    assert len(g.nodes) >= 10_000
    t = time.perf_counter()
    GraphIndex(g)
    build = time.perf_counter() - t
    collapse(g, ())  # the index, once
    timings = {}
    for label, expanded in [("top", set()), ("one", {"h", "h.85"}), ("all", {m.path for m in g.modules})]:
        t = time.perf_counter()
        nodes, edges = collapse(g, expanded)
        timings[label] = time.perf_counter() - t
        assert_no_dangling(nodes, edges)
    top, _ = collapse(g, ())
    assert [n.id for n in top] == ["n:x", "n:mask", "m:h", "n:output"]
    one, _ = collapse(g, {"h", "h.85"})
    # x, mask, output; 169 blocks; h.85's children (ln_1, attn, ln_2, mlp) and its 3 own ops
    assert len(one) == 3 + 169 + 4 + 3
    print(f"\ncollapse on {len(g.nodes):,} nodes: index {build * 1e3:.1f} ms, "
          + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items()))  # fmt: skip
    assert timings["top"] < 0.5 and timings["one"] < 0.5  # loose: about a millisecond on a laptop
