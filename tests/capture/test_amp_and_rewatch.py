"""Mixed precision (a GradScaler's loss scale and skipped steps) and a run watched more than once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))  # 4,096 weights: larger than the sample


def _watched(root, model: nn.Module | None = None, **watch_kwargs):
    """A model (default ``_model()``), its SGD optimizer and a new run watching both, without diagnoses."""
    model = _model() if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, diagnose=False, **watch_kwargs)
    return model, opt, run


def test_gradients_unscaled_by_a_grad_scaler_are_recorded_unscaled(root):
    """Parameter gradients are read after the scaler's unscaling (its kernel bumps no version counter); output
    gradients, which come from the scaled loss, are divided by the scale when the scaler is given."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, diagnose=False, scaler=scaler)
    norms, out_rms = [], []
    for _ in range(3):
        out = model(torch.randn(8, 64))
        out.retain_grad()
        scaler.scale(out.square().sum()).backward()
        out_rms.append((out.grad / scaler.get_scale()).square().mean().sqrt().item())
        scaler.unscale_(opt)
        norms.append(model[0].weight.grad.norm().item())
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    run.finish()
    r = reopen(root, run.id)
    np.testing.assert_allclose(r.layer_series("0.weight", "param_grad", "norm").last, norms, rtol=1e-5)
    np.testing.assert_allclose(r.layer_series("2", "grad", "rms").last, out_rms, rtol=1e-5)


@pytest.mark.parametrize("unscale_first", [False, True])
def test_a_fused_optimizer_under_a_grad_scaler_is_recorded_unscaled_and_its_skips_seen(
    root, unscale_first, monkeypatch
):
    """A fused optimizer unscales and skips by itself: the GradScaler always calls its step, with the gradients
    still scaled (unless the user unscaled them first, to clip). Recorded gradients are unscaled all the same, and
    the step whose gradients overflowed is a skipped step (an info finding, no NaN/Inf error). The step rewrites the
    gradients in place without a version bump: they are read before it, never beside it in the side thread."""
    from deepscope.capture import param_stats

    monkeypatch.setattr(param_stats, "SIDE_MIN_BYTES", 0)  # what the side thread would take, it is offered
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, scaler=scaler, print_findings=False)  # 0.weight sampled, the rest whole
    big, small = [], []
    for step in range(4):
        scale = scaler.get_scale()
        loss = model(torch.randn(8, 64)).square().mean()
        scaler.scale(loss * (1e35 if step == 0 else 1.0)).backward()  # the first backward overflows float32
        if unscale_first:
            scaler.unscale_(opt)
            scale = 1.0
        big.append(model[0].weight.grad.norm().item() / scale)
        small.append(model[2].weight.grad.norm().item() / scale)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    run.finish()
    assert scaler.get_scale() < 2.0**20  # the first step was skipped
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(r.layer_series("0.weight", "param_grad", "norm").last[1:], big[1:], rtol=1e-5)
    np.testing.assert_allclose(r.layer_series("2.weight", "param_grad", "norm").last[1:], small[1:], rtol=1e-5)
    kinds = [(e.kind, e.step) for e in r.events() if e.kind.startswith("diagnosis/")]
    assert ("diagnosis/skipped_step", 0) in kinds
    assert not [k for k in kinds if k[0] == "diagnosis/nonfinite"]


def test_a_fused_step_never_races_the_side_thread(root):
    """Large gradients (read beside the optimizer's step on CPU) of a fused step: it unscales them in place during
    the step, without a version bump — read in the side thread, they came out half unscaled, then divided again."""
    torch.manual_seed(0)
    model = nn.Linear(1200, 1200)  # 5.8 MB of gradient: above the side thread's threshold
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    run = deepscope.init(dir=root)
    run.watch(model, opt, scaler=scaler, diagnose=False, histograms_every=0)
    want = []
    for _ in range(4):
        scaler.scale(model(torch.randn(16, 1200)).square().mean()).backward()
        want.append(model.weight.grad.norm().item() / scaler.get_scale())
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    run.finish()
    got = reopen(root, run.id).layer_series("weight", "param_grad", "norm").last
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_gradients_changed_behind_autograd_are_the_ones_recorded(root):
    """A write through ``.data`` bumps no version counter: the norms are still those the step uses."""
    model, opt, run = _watched(root, sample=256)
    want = []
    for step in range(4):
        model(torch.randn(8, 64)).sum().backward()
        if step % 2:
            model[0].weight.grad.data.mul_(0.5)
        want.append(model[0].weight.grad.norm().item())
        opt.step()
        opt.zero_grad()
    run.finish()
    np.testing.assert_allclose(
        reopen(root, run.id).layer_series("0.weight", "param_grad", "norm").last, want, rtol=1e-5
    )


def test_a_step_the_scaler_skips_is_a_step_of_its_own(root, capsys):
    """An overflow makes the GradScaler skip the optimizer step: that iteration is still one step (steps keep
    counting the loop, as the user's own step numbers do), with an info finding and no NaN/Inf error."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    run = deepscope.init(dir=root, name="amp")
    run.watch(model, opt, scaler=scaler)
    skipped = []
    for step in range(5):
        opt.zero_grad()
        loss = model(torch.randn(8, 64)).square().mean()
        before = scaler.get_scale()
        scaler.scale(loss * (1e35 if step == 0 else 1.0)).backward()  # the first backward overflows float32
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            skipped.append(step)
        run.log({"train/loss": loss}, step=step)
    run.finish()
    assert skipped == [0]
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == [0, 1, 2, 3, 4]
    assert r.series("sys/step_time").step.tolist() == [0, 1, 2, 3, 4]
    assert sorted(set(r.series("sys/forward_time").step.tolist())) == [0, 1, 2, 3, 4]
    kinds = [(e.kind, e.severity, e.step) for e in r.events() if e.kind.startswith("diagnosis/")]
    assert ("diagnosis/skipped_step", "info", 0) in kinds
    assert not [k for k in kinds if k[0] == "diagnosis/nonfinite"]
    assert "[error]" not in capsys.readouterr().err
    norms = r.layer_series("0.weight", "param_grad", "norm")
    assert norms.step.tolist() == [1, 2, 3, 4] and np.isfinite(norms.last).all()  # a skipped step reads no gradients


def test_a_skip_is_only_what_the_scaler_skips(root):
    """Without a scaler's skip nothing is closed early: a discriminator whose gradients the generator's backward
    reached and then cleared (a GAN), or a recomputing checkpoint, are ordinary steps."""
    d = _model()
    opt = torch.optim.SGD(d.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(d, opt, diagnose=False)
    for _ in range(4):
        d(torch.randn(8, 64)).sum().backward()  # the discriminator's own step
        opt.step()
        opt.zero_grad()
        fake = torch.randn(8, 64, requires_grad=True)
        d(fake).sum().backward()  # the generator's loss goes through d: its gradients appear …
        opt.zero_grad()  # … and are cleared
        torch.utils.checkpoint.checkpoint(d, torch.randn(8, 64), use_reentrant=False).sum().backward()
        opt.step()
        opt.zero_grad()
    run.finish()
    assert reopen(root, run.id).layer_steps().tolist() == list(range(8))


def test_nesterov_changes_gradients_in_place_and_norms_stay_right(root, monkeypatch):
    """Foreach Nesterov SGD adds to the gradients in place during its step: read meanwhile in a second thread they
    would be half changed. That step's parameter-gradient statistics are dropped, later ones read before the step."""
    from deepscope.capture import param_stats

    monkeypatch.setattr(param_stats, "SIDE_MIN_BYTES", 0)  # these gradients are small: read in the side thread anyway
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, foreach=True)
    run = deepscope.init(dir=root)
    run.watch(model, opt, sample=256, diagnose=False)
    want = []
    for _ in range(6):
        model(torch.randn(8, 64)).square().sum().backward()
        want.append(model[0].weight.grad.norm().item())
        opt.step()
        opt.zero_grad()
    run.finish()
    got = reopen(root, run.id).layer_series("0.weight", "param_grad", "norm")
    assert got.step.tolist()[-5:] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(got.last[-5:], want[1:], rtol=1e-5)
    if got.step[0] == 0:  # read before the step changed it (a thread may finish first)
        assert got.last[0] == pytest.approx(want[0], rel=1e-5)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # torch's own advice
def test_second_order_gradients_are_recorded(root, monkeypatch):
    """``backward(create_graph=True)`` leaves gradients that require grad; reading them must not build a graph (grad
    mode is per thread: the side thread has its own)."""
    from deepscope.capture import param_stats

    monkeypatch.setattr(param_stats, "SIDE_MIN_BYTES", 0)
    model, opt, run = _watched(root, sample=256)
    want = []
    for _ in range(3):
        model(torch.randn(8, 64)).square().sum().backward(create_graph=True)
        want.append(model[0].weight.grad.norm().item())
        opt.step()
        opt.zero_grad(set_to_none=True)
    run.finish()
    r = reopen(root, run.id)
    np.testing.assert_allclose(r.layer_series("0.weight", "param_grad", "norm").last, want, rtol=1e-5)
    assert np.isfinite(r.layer_series("2", "grad", "rms").last).all()  # output gradients that require grad


def test_accumulated_micro_batches_stay_one_step(root):
    """Forward passes after a backward with the gradients still there are gradient accumulation, not a skip."""
    model, opt, run = _watched(root)
    for _ in range(3):
        for _ in range(4):
            model(torch.randn(8, 64)).sum().backward()
        opt.step()
        opt.zero_grad()
    run.finish()
    assert reopen(root, run.id).layer_steps().tolist() == [0, 1, 2]


def test_accumulated_micro_batches_time_their_forward_passes_alone(root):
    """sys/forward_time is the step's forward passes (three of 20 ms), not the span from the first to the last (which
    held two backward passes and waits: 160 ms); the rest of the step is backward_time."""
    import time

    class Slow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return self.fc(x)

    model = Slow()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, diagnose=False, graph=False)
    for _ in range(2):
        for _ in range(3):
            model(torch.randn(2, 4)).sum().backward()
            time.sleep(0.05)
        opt.step()
        opt.zero_grad()
    run.finish()
    r = reopen(root, run.id)
    forward, backward = r.series("sys/forward_time").value, r.series("sys/backward_time").value
    assert len(forward) == 2 and all(0.06 <= f < 0.13 for f in forward), forward
    assert all(b >= 0.15 for b in backward), backward


def test_an_optimizer_that_never_steps_draws_one_warning(root, monkeypatch):
    """Nothing steps the model's parameters through a torch optimizer (the one given to watch is not used, and no
    other replaces it — a hand-written update): steps never end. One warning says so, instead of statistics silently
    pooled into a step that never comes. (An optimizer that does step them is followed: test_follow_optimizer.)"""
    from deepscope.capture import watch

    monkeypatch.setattr(watch, "STALLED_PASSES", 20)
    model = _model()
    run = deepscope.init(dir=root)
    run.watch(model, torch.optim.SGD(model.parameters(), lr=0.01), diagnose=False, every=10)  # unrecorded steps too
    with pytest.warns(RuntimeWarning, match="20 training forward passes without a step") as caught:
        for _ in range(60):
            model(torch.randn(8, 64)).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
                    p.grad = None
    assert len([w for w in caught if "forward passes" in str(w.message)]) == 1
    run.finish()


def test_forward_passes_after_the_last_optimizer_step_are_no_step(root):
    """A training-mode forward after the last step (accuracy measured in train mode) is not closed as a step."""
    model, opt, run = _watched(root)
    for _ in range(3):
        model(torch.randn(8, 64)).sum().backward()
        opt.step()
        opt.zero_grad()
    model(torch.randn(8, 64))  # grad enabled, train mode, no step follows
    run.finish()
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == [0, 1, 2]
    assert r.series("sys/step_time").step.tolist() == [0, 1, 2]


def test_a_module_called_many_times_in_one_pass_is_no_stalled_optimizer(root, monkeypatch):
    """A recurrent cell looped over 30 time steps inside one forward pass: one pass, not 30."""
    from deepscope.capture import watch

    monkeypatch.setattr(watch, "STALLED_PASSES", 20)

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.zeros(x.shape[0], 4)
            for t in range(x.shape[1]):
                h = self.cell(x[:, t], h)
            return h

    model, opt, run = _watched(root, Loop())  # a warning would fail this test
    for _ in range(3):
        model(torch.randn(2, 30, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    run.finish()


def test_watch_again_continues_the_step_count(root):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def train(n: int) -> None:
        for _ in range(n):
            model(torch.randn(8, 64)).sum().backward()
            opt.step()
            opt.zero_grad()

    run = deepscope.init(dir=root)
    run.watch(model, opt, diagnose=False)
    train(3)
    run.unwatch()
    train(2)  # not watched, not counted
    run.watch(model, opt, diagnose=False)
    train(3)
    run.finish()
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == [0, 1, 2, 3, 4, 5]
    assert r.series("sys/step_time").step.tolist() == [0, 1, 2, 3, 4, 5]


def test_watch_again_after_logged_steps_lines_up_with_them(root):
    """Steps 0–9 watched, 10–19 only logged, then watched again: the layer statistics of steps 20–29 are stored at
    20–29, beside the loss logged there (they were stored at 10–19, and diagnoses pointed at the wrong steps)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)

    def train(steps: range) -> None:
        for s in steps:
            loss = model(torch.randn(8, 64)).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
            run.log({"loss": loss.item()}, step=s)

    run.watch(model, opt, diagnose=False)
    train(range(10))
    run.unwatch()
    train(range(10, 20))
    run.watch(model, opt, diagnose=False)
    train(range(20, 30))
    run.finish()
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == [*range(10), *range(20, 30)]


def test_another_selection_of_the_same_model_later_is_recorded_beside_the_first(root):
    """layers= changed between two watches of one model (narrowed to the output layer mid-training): no exception in
    the training loop; the run lists both selections' layers and parameters, in model order, each with the steps
    it recorded."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)

    def train(steps) -> None:  # noqa: ANN001
        for _ in steps:
            model(torch.randn(8, 64)).sum().backward()
            opt.step()
            opt.zero_grad()

    run.watch(model, opt, layers="2", diagnose=False)
    train(range(3))
    run.unwatch()
    run.watch(model, opt, layers=["0", "1"], diagnose=False)
    train(range(3, 5))
    run.finish()
    r = reopen(root, run.id)
    manifest = r.watch_manifest()
    assert [(la["index"], la["path"]) for la in manifest["layers"]] == [(0, "0"), (1, "1"), (2, "2")]
    assert manifest["params"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert r.layer_series("2", "act", "mean").step.tolist() == [0, 1, 2]
    assert r.layer_series("0", "act", "mean").step.tolist() == [3, 4]
    assert r.layer_series("2.weight", "weight", "norm").step.tolist() == [0, 1, 2]


def test_a_tied_weight_keeps_the_name_it_is_recorded_under_when_watches_merge(root):
    """The head shares the embedding's weight: the layer table says the head's parameter is recorded as
    'emb.weight' — also after a second watch of other layers adds them to the table."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.mid, self.head = nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.mid(self.emb(x)))

    model = Tied()
    run = deepscope.init(dir=root)
    run.watch(model, layers=["emb", "head"], diagnose=False)
    model(torch.tensor([1, 2])).sum().backward()
    run.unwatch()
    run.watch(model, layers=["mid"], diagnose=False)
    model(torch.tensor([1, 2])).sum().backward()
    run.finish()
    layers = {la["path"]: la for la in reopen(root, run.id).watch_manifest()["layers"]}
    assert list(layers) == ["emb", "mid", "head"] and layers["head"]["params"] == ["emb.weight"]


def test_a_second_model_at_once_or_other_layers_later_are_refused(root):
    g, d = _model(), nn.Sequential(nn.Linear(3, 1))
    run = deepscope.init(dir=root)
    run.watch(g)
    with pytest.raises(RuntimeError, match="already watches a model.*run of its own"):
        run.watch(d)
    run.unwatch()
    with pytest.raises(ValueError, match="another model.*new run"):
        run.watch(d)
    assert not g[0]._forward_hooks and not d[0]._forward_hooks  # a refused watch leaves no hook
    run.watch(g)  # the same model again is fine
    g(torch.randn(2, 64)).sum().backward()
    run.finish()
    assert not g[0]._forward_hooks


def test_tied_weights_are_recorded_once_and_named_where_recorded(root):
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.head = nn.Linear(16, 50, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(ids))

    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root)
    run.watch(model, opt, diagnose=False)
    model(torch.randint(50, (4, 8))).sum().backward()
    want = model.emb.weight.grad.norm().item()
    opt.step()
    run.finish()
    r = reopen(root, run.id)
    manifest = r.watch_manifest()
    assert manifest["params"] == ["emb.weight"]
    assert {la["path"]: la["params"] for la in manifest["layers"]} == {"emb": ["emb.weight"], "head": ["emb.weight"]}
    assert r.layer_series("emb.weight", "param_grad", "norm").last[0] == pytest.approx(want, rel=1e-5)


def test_watching_the_watched_model_again_keeps_the_running_watch_with_a_warning(root):
    """A loop that calls watch at every epoch (or a callback that does) must not end the training."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root)
    first = run.watch(model, opt, diagnose=False)
    hooks = len(model[0]._forward_hooks)  # the watch's, and until a training pass the order-of-calls one
    with pytest.warns(RuntimeWarning, match="already watches this model; the running watch goes on"):
        again = run.watch(model, opt, diagnose=False)
    assert again.watcher is first and again.step == first.step
    assert len(model[0]._forward_hooks) == hooks  # no second set of hooks
    with pytest.warns(RuntimeWarning, match="the running watch goes on"), run.watch(model, opt, diagnose=False):
        pass
    assert len(model[0]._forward_hooks) == hooks and not first.scope.closed  # leaving the block left it running
    with pytest.raises(RuntimeError, match="already watches a model"):  # with another optimizer: another watch
        run.watch(model, torch.optim.SGD(model.parameters(), lr=0.1))
    run.finish()


def test_a_model_still_watched_by_another_open_run_is_said_so(root):
    """A notebook cell that raised leaves its run open and watching: a new run's watch of the same model would record
    alongside it, the old run counting the new run's steps."""
    model = _model()
    left_open = deepscope.init(dir=root, name="left open")
    left_open.watch(model, diagnose=False)
    run = deepscope.init(dir=root, name="new")
    with pytest.warns(RuntimeWarning, match=f"also watched by run '{left_open.id}', which is not finished"):
        run.watch(model, diagnose=False)
    left_open.finish()
    other = _model()
    run.unwatch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.watch(model, diagnose=False)  # the other run is finished: nothing to say
        third = deepscope.init(dir=root, name="third")
        third.watch(other, diagnose=False)  # another model: nothing to say
    third.finish()
    run.finish()


def test_the_running_watch_handed_back_copies_without_recursion(root):
    import copy

    from deepscope.run import RunningWatch

    model = _model()
    run = deepscope.init(dir=root)
    first = run.watch(model, diagnose=False)
    assert copy.copy(RunningWatch(first)).watcher is first
    run.finish()
