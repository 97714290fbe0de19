"""Which modules ``watch`` records, in model order, and what kind of activation each one is."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


# Modules whose children are not called as modules (MultiheadAttention uses its out_proj's weights in a function
# call): watched as one layer, with all their parameters.
OPAQUE = (nn.MultiheadAttention,)


def uncompiled(model: nn.Module) -> nn.Module:
    """The module ``torch.compile(model)`` wraps (its layer paths have no ``_orig_mod.`` prefix), else ``model``."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule" else model


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile``, ``DistributedDataParallel`` and ``DataParallel`` wrappers: its layer paths
    are those of the same model trained in one process, uncompiled (no ``_orig_mod.`` or ``module.`` prefix)."""
    for _ in range(4):
        inner = uncompiled(model)
        if inner is model and isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = model.module
        if inner is model:
            return model
        model = inner
    return model


def eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a hook that ``torch.compile`` never traces: it runs as Python between compiled graphs (traced, its
    random sample positions were specialised as constants and recompiled at every step). 0.3 µs a call in eager mode.

    Under ``torch.export`` it does nothing: an export's pass over fake tensors is no training step, and a
    ``torch.compiler.disable``-d function would stop a strict export.
    """
    inner = torch.compiler.disable(fn)

    def hook(*args: Any, **kwargs: Any) -> Any:
        if _exporting():
            return None
        return inner(*args, **kwargs)

    return hook


# torch.compiler.is_exporting: torch 2.6 and later; before, an export ran the hooks as any pass
_exporting: Callable[[], bool] = getattr(torch.compiler, "is_exporting", lambda: False)


def own_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters a watched module stands for: its own, and its children's when it is opaque."""
    return list(module.named_parameters(recurse=isinstance(module, OPAQUE)))


def _matches(layers: LayerFilter, patterns: list[str] | None, path: str, module: nn.Module) -> bool:
    """Whether the filter selects ``module``; an opaque module also when it selects one of its children's paths.
    A callable that raises (it expected leaf modules: ``m.out_features``) does not select it."""
    if patterns is not None:
        paths = [path] + ([f"{path}.{n}" for n, _ in module.named_modules() if n] if isinstance(module, OPAQUE) else [])
        return any(fnmatch.fnmatchcase(q, p) for q in paths for p in patterns)
    if layers is None:
        return True
    try:
        return bool(layers(path, module))
    except Exception:
        return False


def _patterns(layers: LayerFilter, model: nn.Module | None = None) -> list[str] | None:
    """The globs of a filter (None for a callable or no filter); a container's path (``"encoder"``) also stands for
    the layers inside it (``"encoder.*"``), as a user naming it means."""
    globs = [layers] if isinstance(layers, str) else list(layers) if isinstance(layers, (list, tuple)) else None
    if globs is None or model is None:
        return globs
    containers = {n for n, m in model.named_modules() if n and next(m.children(), None) is not None}
    return globs + [f"{g}.*" for g in globs if g in containers]


def _inside_opaque(path: str, opaque: list[str]) -> bool:
    return any(path.startswith(o + ".") if o else path != "" for o in opaque)


def select_layers(model: nn.Module, layers: LayerFilter = None) -> list[tuple[Layer, nn.Module]]:
    """Leaf modules of ``model`` (those without children) and opaque ones (``OPAQUE``), in definition order,
    filtered by ``layers``.

    ``layers`` is a glob on module paths (``"encoder.*"``; a container's path selects the layers inside it), a list
    of globs, or ``f(path, module) -> bool``.
    The root module itself is used when it has no children.
    """
    if layers is not None and not (callable(layers) or isinstance(layers, (str, list, tuple))):
        raise TypeError(f"deepscope.watch: layers must be a glob, a list of globs or a callable, got {layers!r}")
    patterns = _patterns(layers, model)
    seen: set[int] = set()
    opaque: list[str] = []
    out: list[tuple[Layer, nn.Module]] = []
    for path, module in model.named_modules():
        if _inside_opaque(path, opaque):
            continue
        if isinstance(module, OPAQUE):
            opaque.append(path)
        elif next(module.children(), None) is not None or id(module) in seen:
            continue  # containers repeat their children's outputs; a shared module is watched once
        if id(module) in seen or not _matches(layers, patterns, path, module):
            continue
        seen.add(id(module))
        own = [(f"{path}.{n}" if path else n, p) for n, p in own_parameters(module)]
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
        names = [n for n, m in model.named_modules() if n and not _inside_opaque(n, opaque)
                 and (next(m.children(), None) is None or isinstance(m, OPAQUE))][:20]  # fmt: skip
        if not names:  # the model is its only layer
            raise ValueError(f"deepscope.watch: no layer matches {layers!r}; the model ({type(model).__name__}) has no "
                             "submodules: it is one layer, watched with layers=None")  # fmt: skip
        raise ValueError(f"deepscope.watch: no layer matches {layers!r}; leaf modules include {names}")
    return out


def loose_parameters(
    model: nn.Module, layers: LayerFilter, selected: list[nn.Module]
) -> list[tuple[str, nn.Parameter]]:
    """Parameters no watched layer stands for: owned by a container (a ViT's ``pos_embed`` and ``cls_token``, a
    block's layer-scale ``gamma``), matched by ``layers`` on their own path (a callable sees the owner)."""
    patterns = _patterns(layers, model)
    chosen = {id(m) for m in selected}
    opaque = [path for path, m in model.named_modules() if isinstance(m, OPAQUE)]
    out = []
    for path, module in model.named_modules():
        if id(module) in chosen or isinstance(module, OPAQUE) or _inside_opaque(path, opaque):
            continue  # an opaque module's parameters are its layer's: with it, or not at all
        if next(module.children(), None) is None:
            continue  # a leaf that was not selected was filtered out, with its parameters
        for name, p in module.named_parameters(recurse=False):
            full = f"{path}.{name}" if path else name
            if patterns is not None and not any(fnmatch.fnmatchcase(full, pat) for pat in patterns):
                continue
            if patterns is None and not _matches(layers, None, path, module):
                continue
            out.append((full, p))
    return out


def watched_parameters(
    model: nn.Module, layers: LayerFilter, selected: list[tuple[Layer, nn.Module]]
) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[Layer, nn.Module]]]:
    """The parameters to record, in model order: the selected layers' and the loose ones (``loose_parameters``). A
    parameter shared by several modules (tied weights) is recorded once, under its first name; the layers are
    returned with their ``params`` naming where each shared one is recorded."""
    params: list[tuple[str, nn.Parameter]] = []
    seen: dict[int, str] = {}
    named = []
    for layer, module in selected:
        names = []
        for name, (_, p) in zip(layer.params, own_parameters(module)):
            if id(p) not in seen and p.requires_grad:
                params.append((name, p))
            seen.setdefault(id(p), name)
            names.append(seen[id(p)])
        named.append(
            (dataclasses.replace(layer, params=tuple(names)) if tuple(names) != layer.params else layer, module)
        )
    for name, p in loose_parameters(model, layers, [m for _, m in selected]):
        if id(p) not in seen and p.requires_grad:
            params.append((name, p))
            seen[id(p)] = name
    order = {id(p): k for k, p in enumerate(model.parameters())}
    params.sort(key=lambda item: order.get(id(item[1]), len(order)))
    return params, named


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
