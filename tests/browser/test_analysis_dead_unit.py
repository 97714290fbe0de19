"""A neuron that has one value on every instance (a dead ReLU unit): the top-instances strip says so, and nothing
is highlighted, instead of listing arbitrary instances among equal values."""

from __future__ import annotations

import pytest
import torch
from browser_helpers import wait_for

import deepscope
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory, built_app):
    root = tmp_path_factory.mktemp("dead")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = -1.0  # unit 2 never fires
    with deepscope.init(project="dead", name="dead-unit", dir=root) as run:
        deepscope.analyze(model, torch.randn(200, 6), labels=[i % 3 for i in range(200)], layers=["1"], run=run,
                          progress=False)  # fmt: skip
    server = BackgroundServer(root, port=0).start()
    yield {"url": server.url, "run": run.id}
    server.stop()


def test_a_dead_unit_has_no_top_instances_and_says_why(page, site):
    page.goto(f"{site['url']}?tab=analysis&runs={site['run']}&layer=1&neuron=2")
    note = page.get_by_test_id("top-constant")
    note.wait_for(timeout=20_000)
    assert note.inner_text() == "It is 0 on every instance — a dead unit: none activates it more than another."
    top = page.evaluate("() => window.__deepscope.analysis.matrixTop()")
    assert top == {"neuron": 2, "indices": [], "values": [], "constant": 0}
    page.goto(f"{site['url']}?tab=analysis&runs={site['run']}&layer=1&neuron=0")
    wait_for(page, "() => window.__deepscope?.analysis?.matrixTop?.().indices.length > 0", timeout=20_000)
    assert page.get_by_test_id("top-constant").count() == 0
