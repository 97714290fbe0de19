"""Which modules ``watch`` records, in model order, and what kind of activation each one is."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

LayerFilter = str | list[str] | tuple[str, ...] | Callable[[str, nn.Module], bool] | None

_RELU_LIKE = (nn.ReLU, nn.ReLU6)
_SIGMOID_LIKE = (nn.Sigmoid, nn.Hardsigmoid)
_TANH_LIKE = (nn.Tanh, nn.Hardtanh, nn.Softsign)


@dataclass(frozen=True)
class Layer:
    """A watched module: its path in the model, type name, activation role and own parameters."""

    index: int
    path: str
    type: str
    role: str | None  # "relu" | "sigmoid" | "tanh" | None
    params: tuple[str, ...]  # full paths of the parameters the module owns directly
    n_params: int

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "path": self.path,
            "type": self.type,
            "role": self.role,
            "params": list(self.params),
            "n_params": self.n_params,
        }


def activation_role(module: nn.Module) -> str | None:
    if isinstance(module, _RELU_LIKE):
        return "relu"
    if isinstance(module, _SIGMOID_LIKE):
        return "sigmoid"
    if isinstance(module, _TANH_LIKE):
        return "tanh"
    return None


def select_layers(model: nn.Module, layers: LayerFilter = None) -> list[tuple[Layer, nn.Module]]:
    """Leaf modules of ``model`` (those without children), in definition order, filtered by ``layers``.

    ``layers`` is a glob on module paths (``"encoder.*"``), a list of globs, or ``f(path, module) -> bool``.
    The root module itself is used when it has no children.
    """
    if layers is not None and not (callable(layers) or isinstance(layers, (str, list, tuple))):
        raise TypeError(f"deepscope.watch: layers must be a glob, a list of globs or a callable, got {layers!r}")
    patterns = [layers] if isinstance(layers, str) else list(layers) if isinstance(layers, (list, tuple)) else None
    seen: set[int] = set()
    out: list[tuple[Layer, nn.Module]] = []
    for path, module in model.named_modules():
        if next(module.children(), None) is not None or id(module) in seen:
            continue  # containers repeat their children's outputs; a shared module is watched once
        if patterns is not None and not any(fnmatch.fnmatchcase(path, p) for p in patterns):
            continue
        if callable(layers) and not isinstance(layers, (str, list, tuple)) and not layers(path, module):
            continue
        seen.add(id(module))
        own = [(f"{path}.{n}" if path else n, p) for n, p in module.named_parameters(recurse=False)]
        layer = Layer(
            index=len(out),
            path=path or type(module).__name__,
            type=type(module).__name__,
            role=activation_role(module),
            params=tuple(n for n, _ in own),
            n_params=sum(p.numel() for _, p in own),
        )
        out.append((layer, module))
    if not out:
        names = [n for n, m in model.named_modules() if n and next(m.children(), None) is None][:20]
        raise ValueError(f"deepscope.watch: no layer matches {layers!r}; leaf modules include {names}")
    return out


def is_float_tensor(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and not x.is_sparse


def first_tensor(output: object) -> torch.Tensor | None:
    """The tensor a module's output stands for: itself, or the first floating tensor inside a tuple,
    list or dict (an LSTM's ``(output, (h, c))``, a Hugging Face ``ModelOutput``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        items = output
    elif isinstance(output, dict):
        items = list(output.values())
    else:
        return None
    for item in items:
        if is_float_tensor(item):
            return item
    return None
