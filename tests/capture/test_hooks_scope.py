"""No hook survives: unwatch, finish, and exceptions in forward or backward all remove every handle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepscope


def hook_count(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    for p in model.parameters():
        n += len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
    if opt is not None:
        n += len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)
    return n + bool(getattr(torch.nn.utils.clip_grad_norm_, "deepscope_wrapper", False))  # the clipping wrapper


class FailsInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x * 2

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        raise RuntimeError("boom in backward")


class Net(nn.Module):
    def __init__(self, fail: str | None = None) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.fail == "forward":
            raise ValueError("boom in forward")
        if self.fail == "backward":
            h = FailsInBackward.apply(h)
        return self.fc2(h)


@pytest.mark.parametrize("fail", ["forward", "backward"])
def test_exception_inside_watch_block_removes_hooks(root, fail):
    model, run = Net(fail), deepscope.init(dir=root)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises((ValueError, RuntimeError), match="boom"), run.watch(model, opt):
        assert hook_count(model, opt) > 0
        model(torch.randn(3, 4)).sum().backward()
    assert hook_count(model, opt) == 0
    run.finish()


@pytest.mark.parametrize("fail", ["forward", "backward"])
def test_exception_escaping_the_run_removes_hooks(root, fail):
    model = Net(fail)
    with pytest.raises((ValueError, RuntimeError), match="boom"), deepscope.init(dir=root) as run:
        run.watch(model)
        model(torch.randn(3, 4)).sum().backward()
    assert hook_count(model) == 0
    assert deepscope.open(root).info(run.id).status == "crashed"


def test_unwatch_and_finish_remove_hooks(root):
    model, run = Net(), deepscope.init(dir=root)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = hook_count(model, opt)
    run.watch(model, opt)
    run.unwatch()
    assert hook_count(model, opt) == before
    run.watch(model)
    run.finish()
    assert hook_count(model, opt) == before


def test_watch_argument_errors(root):
    run = deepscope.init(dir=root)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        run.watch("not a model")
    with pytest.raises(ValueError, match="no layer matches"):
        run.watch(Net(), layers="encoder.*")
    with pytest.raises(ValueError, match=r"no layer matches 'x\.\*'; the model \(Linear\) has no submodules"):
        run.watch(nn.Linear(2, 2), layers="x.*")
    with pytest.raises(ValueError, match="every"):
        run.watch(Net(), every=0)
    with pytest.raises(TypeError, match="Optimizer"):
        run.watch(Net(), optimizer="sgd")
    run.finish()


def test_a_containers_path_selects_the_layers_inside_it(root):
    from deepscope.capture.layers import select_layers

    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2))
    assert [la.path for la, _ in select_layers(model, "1")] == ["1.0", "1.1"]
    assert [la.path for la, _ in select_layers(model, ["2", "1"])] == ["1.0", "1.1", "2"]
    assert [la.path for la, _ in select_layers(model, "1.*")] == ["1.0", "1.1"]
    run = deepscope.init(dir=root)
    watcher = run.watch(model, layers="1")
    assert [la.path for la in watcher.layers] == ["1.0", "1.1"]
    run.finish()
