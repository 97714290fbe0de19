"""watch records the model's graph once, numbers steps from start_step, and names the run in findings."""

from __future__ import annotations

import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope.graphs.store import read_graph


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it, the hooks fallback can."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if h.sum() > 0:
            h = h * 2
        return self.b(h)


def test_graph_recorded_once_from_the_first_training_pass(root):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    frozen = model[1]
    with deepscope.init(dir=root) as run:
        run.watch(model, opt, diagnose=False)
        with torch.no_grad():
            model.eval()
            model(torch.randn(3, 4))  # an eval pass first: not the one that records
            model.train()
        frozen.eval()  # kept in eval on purpose: recording the graph must not change that
        for _ in range(3):
            model(torch.randn(5, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    assert not frozen.training and model[0].training
    g = read_graph(run.dir)
    assert g is not None and g.method == "fx"
    assert {m.path for m in g.modules} >= {"0", "1", "2"}
    r = reopen(root, run.id)
    assert r.layer_series("0", "act", "mean").step.tolist() == [0, 1, 2]  # the tracing pass was not recorded


def test_graph_falls_back_to_hooks_and_training_is_untouched(root):
    torch.manual_seed(0)
    model = Branchy()
    with deepscope.init(dir=root) as run:
        run.watch(model, diagnose=False)
        out = model(torch.ones(2, 4))
    assert out.shape == (2, 2)
    assert read_graph(run.dir).method == "hooks"


def test_start_step_and_run_name_in_findings(root, capsys):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with deepscope.init(dir=root, name="resumed-run") as run:
        run.watch(model, opt, start_step=1000, graph=False)
        for i in range(2):
            x = torch.randn(8, 4)
            if i == 1:
                x[0, 0] = float("nan")
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    r = reopen(root, run.id)
    assert r.layer_series("0", "act", "mean").step.tolist() == [1000, 1001]
    assert r.series("sys/step_time").step.tolist() == [1000, 1001]
    assert "deepscope [error] resumed-run step 1001" in capsys.readouterr().err
    assert read_graph(run.dir) is None
