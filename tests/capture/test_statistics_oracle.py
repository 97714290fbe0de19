"""Recorded statistics against NumPy and autograd, on tensors small enough to be sampled whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope.capture import watch
from deepscope.capture.reducers import HIST_EDGES
from deepscope.capture.sampling import Sampler


class Probe(nn.Module):
    """Linear → ReLU, keeping what the oracle needs: outputs and output gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.kept: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h.retain_grad()
        a = self.act(h)
        a.retain_grad()
        self.kept = {"fc": h, "act": a}
        return a


@pytest.mark.parametrize("in_writer_thread", [False, True])
def test_layer_statistics_match_numpy(root, monkeypatch, in_writer_thread):
    """Both places a CPU step is reduced: the training thread (small models) and the writer thread."""
    monkeypatch.setattr(watch, "OFFLOAD_AFTER_STEP_TIME", 0.0 if in_writer_thread else float("inf"))
    torch.manual_seed(0)
    model = Probe()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = deepscope.init(dir=root)
    run.watch(model, opt, histograms_every=1, diagnose=False)
    truth = []
    for _ in range(3):
        x = torch.randn(32, 8)
        out = model(x)
        loss = (out**2).mean()
        opt.zero_grad()
        loss.backward()
        w_before = model.fc.weight.detach().clone()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        truth.append(
            {
                "act": {k: v.detach().numpy().astype(np.float64) for k, v in model.kept.items()},
                "grad": {k: v.grad.numpy().astype(np.float64) for k, v in model.kept.items()},
                "param_grad": grads,
                "update": (model.fc.weight.detach() - w_before).norm() / w_before.norm(),
            }
        )
    run.finish()
    r = reopen(root, run.id)
    for kind in ("act", "grad"):
        for layer in ("fc", "act"):
            for stat, fn in [
                ("mean", np.mean),
                ("min", np.min),
                ("max", np.max),
                ("rms", lambda a: np.sqrt((a**2).mean())),
            ]:
                got = r.layer_series(layer, kind, stat).last
                want = np.array([fn(t[kind][layer]) for t in truth])
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=f"{kind} {layer} {stat}")
            got_std = r.layer_series(layer, kind, "std").last
            np.testing.assert_allclose(got_std, [t[kind][layer].std(ddof=1) for t in truth], rtol=1e-4, atol=1e-6)
    zero = r.layer_series("act", "act", "zero_frac").last
    np.testing.assert_allclose(zero, [(t["act"]["act"] == 0).mean() for t in truth], rtol=1e-6)
    # parameter gradient norms are exact, whatever the sample
    norms = r.layer_series("fc.weight", "param_grad", "norm").last
    np.testing.assert_allclose(norms, [t["param_grad"]["fc.weight"].norm().item() for t in truth], rtol=1e-5)
    upd = r.layer_series("fc.weight", "weight", "update_ratio").last
    np.testing.assert_allclose(upd, [t["update"].item() for t in truth], rtol=1e-4)
    # histograms on the fixed edges, against numpy.histogram
    (h0, *_) = r.histograms("watch/act/fc")
    want, _ = np.histogram(truth[0]["act"]["fc"], HIST_EDGES)
    np.testing.assert_array_equal(h0.edges, HIST_EDGES)
    np.testing.assert_array_equal(h0.counts, want)


def test_sampled_statistics_are_close(root):
    """Past ``sample`` elements the moments come from a fixed random sample: close, not exact."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(100, 2000), nn.Sigmoid())
    run = deepscope.init(dir=root)
    run.watch(model, sample=4096, diagnose=False)
    x = torch.randn(64, 100)
    out = model(x)
    out.sum().backward()
    run.finish()
    r = reopen(root, run.id)
    y = out.detach().numpy()
    assert r.layer_series("1", "act", "mean").last[0] == pytest.approx(y.mean(), abs=0.01)
    assert r.layer_series("1", "act", "std").last[0] == pytest.approx(y.std(), rel=0.05)
    sat = ((y <= 0.05) | (y >= 0.95)).mean()
    assert r.layer_series("1", "act", "sat_frac").last[0] == pytest.approx(sat, abs=0.02)


def test_update_ratio_of_a_sampled_weight_every_step(root, monkeypatch):
    """A weight larger than the sample, shrunk by weight decay alone at a learning rate that changes every step:
    Δw = −lr·wd·w on every element, so each step's ratio is exactly lr·wd, whichever positions are sampled — across
    the steps where the sample after one step serves as the sample before the next, and where positions change."""
    torch.manual_seed(2)
    model = nn.Linear(64, 64, bias=False)  # 4,096 elements > the sample of 256
    opt = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=0.1)
    starts = []  # steps whose weight sample before the update was drawn anew, not carried over
    draw = Sampler.start
    monkeypatch.setattr(Sampler, "start", lambda self, n: starts.append(len(want)) or draw(self, n))
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, diagnose=False)
    want = []
    for step in range(40):
        lr = 0.01 * (1 + step % 5)
        opt.param_groups[0]["lr"] = lr
        (model(torch.randn(4, 64)) * 0).sum().backward()  # zero gradients: the decay is the whole update
        opt.step()
        opt.zero_grad()
        want.append(lr * 0.1)
    run.finish()
    got = reopen(root, run.id).layer_series("weight", "weight", "update_ratio")
    assert got.step.tolist() == list(range(40))
    np.testing.assert_allclose(got.last, want, rtol=1e-4)
    assert starts == [0, 16, 32]  # new positions every WEIGHT_POSITIONS_STEPS; carried over in between


def test_exact_gradient_norm_of_a_sampled_weight_with_accumulation(root):
    """A gradient larger than the sample: its norm is still exact, that of the gradient the optimizer steps with
    (two backward passes accumulated per step)."""
    torch.manual_seed(3)
    model = nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, diagnose=False)
    want = []
    for _ in range(4):
        for _ in range(2):
            (model(torch.randn(8, 64)) ** 2).mean().backward()
        want.append(model.weight.grad.norm().item())
        opt.step()
        opt.zero_grad()
    run.finish()
    got = reopen(root, run.id).layer_series("weight", "param_grad", "norm").last
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_weight_changed_between_steps_is_sampled_again(root):
    """A weight clamped after every optimizer step that itself changes nothing (lr 0): each step's update is 0.
    Carrying the sample taken after a step over to the next would count the clamp as the next step's update."""
    torch.manual_seed(4)
    model = nn.Linear(64, 64, bias=False)  # larger than the sample: its samples are carried between steps
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, diagnose=False)
    for _ in range(4):
        model(torch.randn(4, 64)).sum().backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            model.weight.clamp_(-0.01, 0.01)
    run.finish()
    got = reopen(root, run.id).layer_series("weight", "weight", "update_ratio").last
    np.testing.assert_array_equal(got, np.zeros(4))


def test_gradients_are_the_ones_the_optimizer_steps_with(root):
    """Clipped (as GradScaler's unscaling or DDP's averaging also change them) before the step: the recorded norms
    are those of the clipped gradients, large parameters and small ones alike."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))  # 4,096 and 128 weights
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, diagnose=False)
    want = {"0.weight": [], "2.weight": []}
    for _ in range(3):
        (model(torch.randn(8, 64)) * 1000).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for name in want:
            want[name].append(model.get_parameter(name).grad.norm().item())
        opt.step()
        opt.zero_grad()
    run.finish()
    r = reopen(root, run.id)
    for name, norms in want.items():
        np.testing.assert_allclose(r.layer_series(name, "param_grad", "norm").last, norms, rtol=1e-5)


def test_total_gradient_norm_is_what_clipping_measures(root):
    """The stored global gradient norm of each step against ``clip_grad_norm_``'s own, taken before the step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    truth = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 3, (16,)))
        opt.zero_grad()
        loss.backward()
        truth.append(float(nn.utils.clip_grad_norm_(model.parameters(), float("inf"))))
        opt.step()
    run.finish()
    total = reopen(root, run.id).total_norm("param_grad")
    assert total.exact and total.step.tolist() == list(range(6))
    np.testing.assert_allclose(total.last, truth, rtol=1e-5)


def test_the_norm_before_clipping_is_kept_beside_the_clipped_one(root):
    """With ``clip_grad_norm_`` the stored per-parameter norms are those the optimizer used (clipped); the norm
    ``clip_grad_norm_`` returned — before clipping — and its limit are recorded at each step as well, and torch's
    function is itself again once the watch ends."""
    original = torch.nn.utils.clip_grad_norm_
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    other = nn.Linear(4, 4)  # a model not watched: its clipping is not this run's
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    assert torch.nn.utils.clip_grad_norm_ is not original
    before, after = [], []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(torch.randn(16, 8) * 10), torch.randint(0, 3, (16,)))
        opt.zero_grad()
        loss.backward()
        other(torch.randn(2, 4)).sum().backward()
        torch.nn.utils.clip_grad_norm_(other.parameters(), 0.01)
        params = (p for p in model.parameters())  # a generator: read once, by torch
        before.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm=0.05)))
        after.append(float(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))))
        opt.step()
    run.finish()
    assert torch.nn.utils.clip_grad_norm_ is original
    r = reopen(root, run.id)
    np.testing.assert_allclose(r.series("watch/grad_norm").value, before, rtol=1e-6)
    assert r.series("watch/grad_norm").step.tolist() == list(range(5))
    assert r.series("watch/grad_clip").value.tolist() == [0.05] * 5
    assert min(before) > 0.05  # the premise: every step clipped
    np.testing.assert_allclose(r.total_norm("param_grad").last, after, rtol=1e-5)
    np.testing.assert_allclose(after, 0.05, rtol=1e-4)
