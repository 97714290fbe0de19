"""A new optimizer that replaces the watched one (unfreezing layers, then a new optimizer — a common fine-tuning
recipe) is followed: steps keep counting, and the parameters it trains now are recorded. Two optimizers of
different parameters (a GAN, a critic stepping more often) are left as they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 16, generator=g)
    y = x[:, :3].argmax(1)
    for _ in range(n):
        i = torch.randint(0, 256, (32,), generator=g)
        yield x[i], y[i]


def test_a_replacing_optimizer_is_followed_with_the_parameters_it_trains(root):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with deepscope.init(dir=root) as run:
        run.watch(model, optimizer=opt, diagnose=False)
        with pytest.warns(RuntimeWarning, match="another optimizer steps the watched model .* from step 12") as seen:
            for step, (x, y) in enumerate(batches(20)):
                if step == 10:  # unfreeze the first layer, and train everything with a new optimizer
                    for p in model.parameters():
                        p.requires_grad_(True)
                    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log({"train/loss": loss})
        assert len([w for w in seen if "another optimizer" in str(w.message)]) == 1
    r = reopen(root, run.id)
    assert r.series("train/loss").step.tolist() == list(range(20))  # were all at step 10 from there on
    # each of the two steps in which it was found is a step of its own (they were pooled in step 10, 11 had none)
    assert r.layer_steps().tolist() == list(range(20))
    grads = r.layer_matrix("param_grad", "norm")
    frozen_then = np.isfinite(grads.values[grads.names.index("0.weight")])
    assert not frozen_then[:10].any() and frozen_then[-8:].all()  # recorded once it trains
    assert np.isfinite(r.layer_matrix("weight", "update_ratio").values[:, -8:]).all()  # measured with the new one


def test_optimizers_of_other_parameters_are_not_followed(root):
    """A generator's optimizer watched; a discriminator's steps three times for each of its steps."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"g": nn.Linear(16, 16), "d": nn.Linear(16, 1)})
    g_opt = torch.optim.SGD(model["g"].parameters(), lr=1e-2)
    d_opt = torch.optim.SGD(model["d"].parameters(), lr=1e-2)
    with deepscope.init(dir=root) as run:
        run.watch(model, optimizer=g_opt, diagnose=False)
        for x, _ in batches(6):
            for _ in range(3):
                d_opt.zero_grad()
                model["d"](model["g"](x).detach()).mean().backward()
                d_opt.step()
            g_opt.zero_grad()
            (-model["d"](model["g"](x)).mean()).backward()
            g_opt.step()
            run.log({"loss": 1.0})
        assert run._watchers[-1].optimizer is g_opt
    r = reopen(root, run.id)
    assert r.layer_steps().tolist() == list(range(6)) and r.series("loss").step.tolist() == list(range(6))


def test_a_model_trained_in_eval_mode_is_recorded_after_one_warning(root):
    """model.eval() for training (frozen BatchNorm statistics): the first step shows no training-mode pass, only
    passes with gradients in eval mode — one warning, then those are recorded; evaluations under no_grad are not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.eval()
    with deepscope.init(dir=root) as run:
        run.watch(model, optimizer=opt, diagnose=False)
        with pytest.warns(RuntimeWarning, match=r"trained in eval mode .* from step 1 on") as seen:
            for x, y in batches(5):
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    model(x * 100)  # an evaluation: not recorded
        assert len([w for w in seen if "eval mode" in str(w.message)]) == 1
    r = reopen(root, run.id)
    acts = r.layer_matrix("act", "mean")
    assert acts.step.tolist() == [1, 2, 3, 4]
    assert np.isfinite(acts.values).all() and np.abs(acts.values[acts.names.index("0")]).max() < 5  # not x * 100


def test_a_parameter_group_added_to_the_watched_optimizer_is_recorded_from_then_on(root):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(model[2].parameters(), lr=1e-2)
    with deepscope.init(dir=root) as run:
        run.watch(model, optimizer=opt, diagnose=False)
        with pytest.warns(RuntimeWarning, match="new parameter groups .* from step 6"):
            for step, (x, y) in enumerate(batches(10)):
                if step == 5:  # unfreeze the first layer into the same optimizer
                    for p in model[0].parameters():
                        p.requires_grad_(True)
                    opt.add_param_group({"params": list(model[0].parameters()), "lr": 1e-3})
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log({"train/loss": loss})
    r = reopen(root, run.id)
    assert r.series("train/loss").step.tolist() == list(range(10))
    assert r.layer_steps().tolist() == list(range(10))
    grads = r.layer_matrix("param_grad", "norm")
    assert np.isfinite(grads.values[grads.names.index("0.weight")]).tolist() == [False] * 6 + [True] * 4


def test_logged_steps_that_drift_from_a_watch_without_an_optimizer_are_warned_about_once(root):
    """No optimizer given, four micro-batches a step, the loop logs its own step: the watch counts four steps per
    logged one — one warning names the way out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with deepscope.init(dir=root) as run:
        run.watch(model, diagnose=False)
        with pytest.warns(RuntimeWarning, match=r"counted \d+ training forward passes .* optimizer=opt") as seen:
            data = batches(4 * 30)
            for step in range(30):
                for _ in range(4):
                    x, y = next(data)
                    (nn.functional.cross_entropy(model(x), y) / 4).backward()
                opt.step()
                opt.zero_grad()
                run.log({"train/loss": 1.0}, step=step)
        assert len([w for w in seen if "training forward passes" in str(w.message)]) == 1
