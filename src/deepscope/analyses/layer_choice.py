"""Which layers an analysis records: module paths, globs or a function over ``named_modules()``, checked against
the model; by default the model's children. The model itself is recorded as :data:`MODEL_LAYER`.

A wrapped model (``torch.compile``, ``DataParallel``, ``DistributedDataParallel``) is named as the model inside it,
as ``run.watch`` names it: ``fc1``, not ``_orig_mod.fc1`` or ``module.fc1``; the wrapper is still what is called.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..capture.layers import unwrapped

MODEL_LAYER = "(model)"  # how the model itself (``""`` in ``named_modules()``) is named once recorded: a module's
# name holds no "." and is never empty, and the name must be a file's and a query's


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules by their recorded names: ``named_modules()``'s of the unwrapped model, itself as
    :data:`MODEL_LAYER`."""
    return {name or MODEL_LAYER: module for name, module in unwrapped(model).named_modules()}


GLOB_CHARS = "*?["


def expand_layers(model: nn.Module, layers: Any) -> list[str] | None:
    """``layers`` as module paths: a path, a glob on paths (``"encoder.*"``: every module under ``encoder``,
    containers too), a list of them, or ``f(path, module) -> bool`` (asked of every module; one it raises for is not
    chosen) — matches in the model's order. A glob or function that matches
    nothing raises ``ValueError``."""
    if layers is None:
        return None
    inner = unwrapped(model) if isinstance(model, nn.Module) else None
    paths = [(name, module) for name, module in inner.named_modules() if name] if inner is not None else []
    if callable(layers) and not isinstance(layers, str):
        chosen = [name for name, module in paths if _chooses(layers, name, module)]
        if not chosen:
            raise ValueError("deepscope.analyze: the layers function chose no module")
        return chosen
    out: list[str] = []
    for entry in [layers] if isinstance(layers, str) else list(layers):
        if not isinstance(entry, str):
            raise TypeError(f"deepscope.analyze: layers are module paths (text), globs or a function, not "
                            f"{type(entry).__name__}")  # fmt: skip
        if not any(c in entry for c in GLOB_CHARS):
            out += [entry] if entry not in out else []  # named again after a glob matched it: once
            continue
        hits = [name for name, _ in paths if fnmatch.fnmatchcase(name, entry)]
        if not hits:
            raise ValueError(f"deepscope.analyze: no layer matches {entry!r}; layers: "
                             f"{', '.join(n for n, _ in paths[:40])}{', …' if len(paths) > 40 else ''}")  # fmt: skip
        out += [h for h in hits if h not in out]
    return out


def _chooses(fn: Callable[[str, nn.Module], Any], name: str, module: nn.Module) -> bool:
    """Whether a layers function chooses a module; one that raises (it expected a leaf: ``m.out_features``) does not."""
    try:
        return bool(fn(name, module))
    except Exception:
        return False


def validate_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The layers to record, by their recorded names (the model itself, ``""``, is :data:`MODEL_LAYER`); an unknown
    name raises ``ValueError`` listing the valid ones."""
    model = unwrapped(model)
    if layers is None:
        return _unclashing([name or MODEL_LAYER for name in default_layers(model)])
    if isinstance(layers, str):
        layers = [layers]
    layers = [MODEL_LAYER if name == "" else name for name in layers]
    valid = [name for name, _ in model.named_modules() if name]
    if not layers:
        shown = ", ".join(valid[:60]) + (", …" if len(valid) > 60 else "")
        raise ValueError(f"deepscope.analyze: no layers given; name some (valid layers: {shown}) or leave layers "
                         "out for the model's children")  # fmt: skip
    known = {MODEL_LAYER, *valid}  # the model itself, "" as named_modules() names it
    unknown = [name for name in layers if name not in known]
    if unknown:
        shown = ", ".join(valid[:60]) + (f", … ({len(valid) - 60} more)" if len(valid) > 60 else "")
        raise ValueError(f"deepscope.analyze: no layer named {', '.join(map(repr, unknown))} in "
                         f"{type(model).__name__}; valid layers: {shown or 'none but the model'}, and '' for the "
                         "model itself")  # fmt: skip
    if len(set(layers)) != len(layers):
        twice = sorted({name for name in layers if layers.count(name) > 1})
        raise ValueError(f"deepscope.analyze: {', '.join(map(repr, twice))} named twice in layers")
    return _unclashing(list(layers))


def default_layers(model: nn.Module) -> list[str]:
    """The model's children — a container that is never called itself (``ModuleList``, ``ModuleDict``) stands for its
    own children, recursively —, or the model itself (``""``) when it has none."""
    model = unwrapped(model)
    out: list[str] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if type(child).forward is nn.Module.forward:  # never called (a ModuleList; an empty one adds nothing)
                walk(path, child)
            else:
                out.append(path)

    walk("", model)
    return out or [""]


def _unclashing(layers: list[str]) -> list[str]:
    """``layers``, if each can name its array's file. A module name may hold "/" (``add_module`` allows it): each
    layer's array is the file "<name>.zarr", which must not be the scores', labels' or previews' arrays, nor lie
    outside the analysis (an absolute path, "..")."""
    clash = [n for n in layers if n.startswith(("outputs/", "inputs/", "/")) or ".." in n.split("/") or "\\" in n]
    if clash:
        raise ValueError(f"deepscope.analyze: layer names {', '.join(map(repr, clash))} cannot name their arrays' "
                         "files (outputs/ and inputs/ hold the scores, labels and previews; a name must not be a path "
                         "outside the analysis); record other modules (layers=...), or rename them")  # fmt: skip
    return layers
