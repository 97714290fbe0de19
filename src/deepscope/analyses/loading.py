"""What ``deepscope analyze`` loads: ``module:attr`` objects and a checkpoint's weights."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any


def load_object(spec: str, what: str, call: bool = True) -> Any:
    """``pkg.module:attr`` (dots in ``attr`` walk attributes); a function or class is called without arguments
    (with ``call``; a plain value — labels, a table — is taken as it is either way).

    The working directory is importable, as for ``python -m``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"deepscope analyze: {what} must be given as module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"deepscope analyze: cannot import {module_name!r} for the {what}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"deepscope analyze: {module_name!r} has no attribute {attr!r}") from None
    if inspect.isfunction(obj) or (call and inspect.isclass(obj)):
        obj = obj()
    return obj


def load_checkpoint(model: Any, path: str | os.PathLike[str]) -> None:
    """Load weights into ``model``: a ``.safetensors`` file, or a ``torch.save`` file read with ``weights_only``."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only load failed" not in str(e).lower():
                raise ValueError(f"deepscope analyze: {path} is no checkpoint torch can read: {e}") from None
            raise ValueError(f"deepscope analyze: {path} holds pickled objects (a whole model saved with "
                             "torch.save(model)?), which are not loaded: unpickling can run any code. Save "
                             "the weights instead: torch.save(model.state_dict(), path), or safetensors"
                             ) from None  # fmt: skip
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a Lightning-style checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"deepscope analyze: {path} holds a {type(state).__name__}, not a state dict")
    state = without_prefix(state, set(model.state_dict()))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"deepscope analyze: {path} does not fit {type(model).__name__}: {e}") from None


def without_prefix(state: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    """``state`` as the model names its weights: when its keys carry a prefix (``module.`` from
    DistributedDataParallel, ``_orig_mod.`` from ``torch.compile``, ``model.`` from a LightningModule that holds
    the model), the entries under the one prefix whose keys are exactly the model's, renamed; else ``state``."""
    if set(state) >= wanted:
        return state
    prefixes = {".".join(k.split(".")[:i]) + "." for k in state for i in range(1, min(4, k.count(".") + 1))}
    for p in sorted(prefixes, key=len):
        under = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
        if set(under) == wanted:
            return under
    return state
