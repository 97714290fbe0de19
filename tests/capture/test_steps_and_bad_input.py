"""What a step is, and modules that return awkward things: recorded or skipped with one warning."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from tests.conftest import reopen
from torch import nn

import deepscope


def test_optimizer_steps_define_steps_and_eval_is_not_recorded(root):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, diagnose=False)
    for _ in range(5):
        for _ in range(2):  # gradient accumulation: two forwards per optimizer step
            model(torch.randn(8, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        model.eval()
        with torch.no_grad():
            model(torch.full((8, 4), 1e6))  # an eval pass with absurd inputs must not show up
        model.train()
    run.finish()
    r = reopen(root, run.id)
    s = r.layer_series("0", "act", "max")
    assert s.step.tolist() == [0, 1, 2, 3, 4]
    assert np.all(s.last < 100)
    assert r.layer_series("0", "act", "mean").count.tolist() == [1] * 5


def test_forward_passes_define_steps_without_optimizer(root):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    run = deepscope.init(dir=root)
    run.watch(model, every=2, diagnose=False)
    for _ in range(6):
        model(torch.randn(8, 4)).sum().backward()
    run.finish()
    r = reopen(root, run.id)
    assert r.layer_series("0", "act", "mean").step.tolist() == [0, 2, 4]
    assert len(r.series("sys/step_time")) == 6


class Awkward(nn.Module):
    """Children that return tuples, dicts, None, integer and boolean tensors, complex numbers."""

    class Tuple(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return x * 2, (x, x)

    class Dict(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return {"logits": x + 1, "n": 3}

    class Nothing(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return None

    class Integer(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return x.argmax(-1)

    class Boolean(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return x > 0

    class Complex(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return torch.complex(x, x)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.tup, self.dct, self.none = self.Tuple(), self.Dict(), self.Nothing()
        self.int, self.bool, self.cplx = self.Integer(), self.Boolean(), self.Complex()
        self.relu = nn.ReLU(inplace=True)
        self.shared = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.fc(x))  # in-place activation
        h, _ = self.tup(h)
        h = self.dct(h)["logits"]
        self.none(h)
        self.int(h)
        self.bool(h)
        self.cplx(h)
        return self.shared(self.shared(h))  # one module, two calls per step


def test_values_logged_without_a_step_while_watching_take_the_step_of_the_latest_forward_pass(root):
    """A loss and a learning rate logged apart, or a loss per micro-batch, belong to the step whose layer statistics
    they explain (each call took a step of its own: the loss at 0, 2, 4…, the statistics at 0, 1, 2…)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root, id="w")
    run.log({"before": 1.0})  # nothing trained yet: the run's own count
    run.watch(model, opt, histograms_every=0, print_findings=False)
    run.log({"val/loss": 2.0})  # an evaluation before training: the first step's, both of them
    run.log({"val/acc": 0.1})
    for _ in range(4):
        for _ in range(3):  # gradient accumulation: three micro-batches a step
            loss = model(torch.randn(2, 4)).square().mean()
            loss.backward()
            run.log({"micro/loss": loss})  # before the optimizer's step
        opt.step()
        opt.zero_grad()
        run.log({"train/loss": loss})  # after it
        run.log({"lr": opt.param_groups[0]["lr"]})
    run.unwatch()
    run.log({"after": 1.0})  # the watch is over: the count goes on
    run.finish()
    r = reopen(root, "w")
    steps = r.layer_steps().tolist()
    assert steps == [1, 2, 3, 4]
    assert r.series("train/loss").step.tolist() == steps and r.series("lr").step.tolist() == steps
    assert r.series("micro/loss").step.tolist() == [s for s in steps for _ in range(3)]
    assert r.series("before").step.tolist() == [0] and r.series("after").step.tolist() == [5]
    assert r.series("val/loss").step.tolist() == r.series("val/acc").step.tolist() == [1]


def test_awkward_modules_never_crash_training(root):
    model = Awkward()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.watch(model, opt, diagnose=False)
        for _ in range(4):
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
        model.double()  # parameters change dtype mid-run: buffers follow
        model(torch.randn(8, 4, dtype=torch.float64)).sum().backward()
        opt.step()
        run.finish()
    messages = [str(w.message) for w in caught]
    for layer in ("none", "int", "bool", "cplx"):
        assert sum(f"layer {layer} returned" in m for m in messages) == 1, (layer, messages)
    assert any("layer int returned an integer or boolean tensor (torch.int64)" in m for m in messages)
    assert any("layer cplx returned a complex tensor" in m for m in messages)
    # each points at the user's line that ran the hooks (here: model(...)), not at deepscope or torch
    assert {w.filename for w in caught if "returned" in str(w.message)} == {__file__}
    r = reopen(root, run.id)
    recorded = set(r.layer_matrix("act", "mean").names)
    assert {"tup", "dct", "relu", "shared"} <= recorded
    # the shared module's two calls both count: 2 × 8 rows × 4 outputs per step
    assert r.layer_series("shared", "act", "mean").step.tolist() == [0, 1, 2, 3, 4]
    g = r.layer_series("relu", "grad", "rms").last
    assert np.all(np.isfinite(g))


def test_a_diverging_training_is_recorded_without_numpy_warnings_or_dying_under_w_error(root, monkeypatch, capsys):
    """Weights blown up to ~1e38: float32 sums of the samples overflow — reduced in float64, no numpy warning
    (filterwarnings = error would raise it here); and a deepscope notice under an "error" filter is printed, never
    raised into the training loop."""
    from deepscope.notices import notice

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root, name="diverged")
    run.watch(model, opt, histograms_every=0, diagnose=False)
    for step in range(4):
        if step == 2:
            with torch.no_grad():
                model[0].weight.fill_(3e37)  # outputs and their sums beyond float32
        loss = model(torch.randn(16, 8)).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"loss": loss}, step=step)
    run.finish()
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == [0, 1, 2, 3]  # no step's statistics dropped
    monkeypatch.delenv("DEEPSCOPE_RAISE_NOTICES")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notice("deepscope: a notice")  # not raised
    assert "RuntimeWarning: deepscope: a notice" in capsys.readouterr().err
