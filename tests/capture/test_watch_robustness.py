"""The watch under conditions that once broke it: optimizers given closures, watches renewed many times, modules that
return their own parameters, a writer stalled by its disk, models whose parameters with gradients change each step,
and an error while the last step is recorded."""

from __future__ import annotations

import gc
import time
import warnings
import weakref

import numpy as np
import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope.capture.param_stats import SIDE_MIN_BYTES
from deepscope.capture.sampling import INDEX_SIZES_KEPT, Sampler
from deepscope.capture.step_buffers import NORM_INDEX_KEPT
from deepscope.store import writer as writer_module


def test_lbfgs_steps_count_and_record_each_steps_last_closure_gradient(root):
    """LBFGS evaluates its closure inside ``step()``: the gradients it steps with exist only after the step began
    (read before it, they were the previous step's), and its ``zero_grad()`` frees the gradients the side thread
    was reading (the watch stopped counting steps after one; every later loss piled onto one step)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1100), nn.ReLU(), nn.Linear(1100, 1))
    assert sum(p.numel() for p in model.parameters()) * 4 > SIDE_MIN_BYTES  # the premise: the side thread is used
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    x, y = torch.randn(16, 1024), torch.randn(16, 1)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    last = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):

            def closure():  # noqa: ANN202
                opt.zero_grad()
                loss = (model(x) - y).pow(2).mean()
                loss.backward()
                return loss

            run.log({"train/loss": opt.step(closure)})
            last.append(float(model[2].bias.grad.norm()))
    run.finish()
    assert not [w for w in caught if "deepscope" in str(w.message)]
    r = reopen(root, run.id)
    assert r.series("train/loss").step.tolist() == list(range(6))
    m = r.layer_matrix("param_grad", "norm")
    assert m.step.tolist() == list(range(6))
    np.testing.assert_allclose(m.values[m.names.index("2.bias")], last, rtol=1e-5)


def test_an_ended_watch_stops_observing_and_is_not_kept_alive(root):
    """Five watches of one run, one after another: one loss spike is one finding, not one per watch that was."""
    run = deepscope.init(dir=root)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    refs = []
    for _ in range(5):
        refs.append(weakref.ref(run.watch(model, opt, print_findings=False)))
        for _ in range(3):
            loss = model(torch.randn(16, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        run.unwatch()
    del loss  # its graph holds the last step's output-gradient hooks
    run._writer.flush()  # a job queued by a watch holds it until the writer thread ran it
    gc.collect()
    assert run._writer._scalar_callbacks == [] and all(r() is None for r in refs)
    run.watch(model, opt, print_findings=False)
    for s in range(30):
        run.log({"train/loss": 1.0 + 0.01 * (s % 3)}, step=100 + s)
    run.log({"train/loss": 1000.0}, step=131)
    run.finish()
    spikes = [e for e in reopen(root, run.id).events() if e.kind == "diagnosis/loss_spike"]
    assert len(spikes) == 1


class Queries(nn.Module):
    """Learned queries: the module returns its own parameter, a leaf that lives across steps."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Parameter(torch.randn(4, 8))

    def forward(self) -> torch.Tensor:
        return self.q


class WithQueries(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.queries = Queries()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) @ self.queries().t()


def test_a_module_returning_its_parameter_gets_no_hook_per_step(root):
    torch.manual_seed(0)
    model = WithQueries()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    for _ in range(50):
        loss = model(torch.randn(32, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not model.queries.q._backward_hooks  # one more each step before, kept after finish
    run.finish()
    r = reopen(root, run.id)
    assert np.isfinite(r.layer_matrix("param_grad", "norm").values).all()  # its gradient: the parameter's


def test_a_stalled_writer_holds_training_up_once_then_drops_statistics(root, monkeypatch):
    """The disk hangs for 8 s: the training thread waits 5 s once, then goes on at its own pace while the oldest
    waiting steps' statistics are dropped (one warning); every step's loss is kept."""
    original = writer_module.StreamWriter._append
    stalled = []

    def append(self, kind, chunk):  # noqa: ANN001, ANN202
        if not stalled:
            stalled.append(True)
            time.sleep(8)
        return original(self, kind, chunk)

    monkeypatch.setattr(writer_module.StreamWriter, "_append", append)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    slow = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(1200):
            t = time.perf_counter()
            loss = model(torch.randn(4, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss})
            slow += time.perf_counter() - t > 2
    run.finish()
    assert slow <= 1  # every step of the stall waited 5 s before
    assert len([w for w in caught if "has not kept up" in str(w.message)]) == 1
    r = reopen(root, run.id)
    assert len(r.series("train/loss")) == 1200
    assert 0 < len(r.layer_steps()) < 1200


def test_the_sampler_keeps_positions_of_a_bounded_number_of_sizes():
    s = Sampler(4096)
    row = torch.empty(4096)
    for n in range(4097, 4097 + 3 * INDEX_SIZES_KEPT):  # sizes sampled by gathering (sequence lengths that vary)
        assert s.into(torch.randn(n), row) == 4096
    assert len(s._index) <= INDEX_SIZES_KEPT


def test_parameters_with_gradients_changing_each_step_keep_memory_bounded(root):
    """A mixture of experts: two of 40 large experts get gradients each step (``set_to_none``)."""
    torch.manual_seed(0)
    experts = nn.ModuleList(nn.Linear(80, 80) for _ in range(40))
    opt = torch.optim.SGD(experts.parameters(), lr=1e-3)
    run = deepscope.init(dir=root)
    watcher = run.watch(experts, opt, print_findings=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        x = torch.randn(4, 80)
        loss = sum(experts[int(k)](x).pow(2).mean() for k in torch.randperm(40, generator=g)[:2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    buffers = list(watcher._buffers.values())
    run.finish()
    assert buffers and all(len(b._norm_index) <= NORM_INDEX_KEPT for b in buffers)


def test_an_error_while_the_last_step_is_recorded_does_not_escape_finish(root):
    run = deepscope.init(dir=root)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    watcher = run.watch(model, print_findings=False)  # no optimizer: finish() closes the last step
    model(torch.randn(2, 4)).sum().backward()

    def fail(*args):  # noqa: ANN002, ANN202
        raise RuntimeError("lost")

    watcher._collect = fail
    with pytest.warns(RuntimeWarning, match="the last step"):
        run.finish()
    assert deepscope.open(root).info(run.id).status == "finished"


def test_a_frozen_batchnorm_inside_a_training_model_is_recorded(root):
    """Fine-tuning with BatchNorm frozen (``bn.eval()`` after ``model.train()``): its outputs are recorded like
    every other layer's; the model's evaluation passes (``model.eval()``, no gradients) still are not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    for _ in range(4):
        model.train()
        model[1].eval()
        loss = model(torch.randn(32, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            model(torch.randn(4, 8) * 1e6)  # an evaluation pass: not recorded
    run.finish()
    m = reopen(root, run.id).layer_matrix("act", "mean")
    assert m.step.tolist() == [0, 1, 2, 3]
    assert np.isfinite(m.values[m.names.index("1")]).all()
    assert np.abs(m.values[m.names.index("0")]).max() < 1e3  # the evaluation's huge inputs left out
