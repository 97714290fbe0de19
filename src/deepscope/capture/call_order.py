"""The order in which the watched layers run, recorded over the first training forward pass: the views list layers as
the data flows through them, where a module declares its children in another order (``nn.TransformerEncoderLayer``
declares ``linear1`` before ``norm1`` and runs ``self_attn``, ``dropout1``, ``norm1``, ``linear1``…).

The hooks live for that one pass (they remove themselves once the model's forward returns), so the steps after it
pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .layers import Layer, eager
from .scope import HookScope


def record_call_order(model: nn.Module, selected: list[tuple[Layer, nn.Module]], scope: HookScope,
                      done: Callable[[list[str]], None]) -> None:  # fmt: skip
    """Hooks on ``selected`` and on ``model`` that call ``done(paths)`` — the layers' paths in the order of their
    first call — at the end of the first training forward pass that called any of them, then remove themselves."""
    order: list[str] = []
    handles: list[Any] = []

    def first_call(path: str) -> Callable[..., None]:
        def hook(mod: nn.Module, _args: Any, _out: Any) -> None:
            if mod.training and torch.is_grad_enabled() and path not in order:
                order.append(path)

        return hook

    def end(_mod: nn.Module, _args: Any, _out: Any) -> None:
        if not order:  # an evaluation pass, or one that called no watched layer
            return
        for h in handles:
            h.remove()
        done([*order, *(layer.path for layer, _ in selected if layer.path not in order)])

    for layer, module in selected:
        handles.append(module.register_forward_hook(eager(first_call(layer.path))))
    handles.append(model.register_forward_hook(eager(end)))
    for h in handles:
        scope.add(h)
