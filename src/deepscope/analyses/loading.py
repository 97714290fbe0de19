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
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a Lightning-style checkpoint
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"deepscope analyze: {path} does not fit {type(model).__name__}: {e}") from None
