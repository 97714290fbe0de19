"""Record a watched model's computation graph once per run, from its first training forward pass.

The inputs of that pass are the example inputs: the graph is traced (``torch.fx`` on fake weights, else one
extra forward pass in eval mode without gradients, which the watcher's hooks ignore) before the real pass
runs. It happens once, is skipped when the run already holds a graph, and a failure only warns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..notices import notice
from .layers import eager, unwrapped
from .scope import HookScope

METHODS = ("fx", "hooks")  # cheap and side-effect free; torch.export is for deepscope.graph(...) on demand


def record_graph_once(model: nn.Module, run_dir: Path, scope: HookScope) -> None:
    """Register a forward pre-hook on ``model`` that records the graph at the first training pass."""
    from ..graphs.store import graph_path

    if graph_path(run_dir).exists():
        return
    state: dict[str, Any] = {"done": False}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if state["done"] or not (module.training and torch.is_grad_enabled()):
            return
        state["done"] = True  # first, so that the tracing pass itself does not recurse into this hook
        try:
            from ..graphs.extract import extract_graph
            from ..graphs.store import write_graph

            # eval mode without gradients: the watcher's hooks ignore the tracing passes; every module's
            # own mode is restored after (a user may keep some submodules in eval on purpose)
            modes = [(m, m.training) for m in module.modules()]
            try:
                module.eval()
                with torch.no_grad():
                    graph = extract_graph(unwrapped(module), tuple(args), example_kwargs=kwargs, methods=METHODS)
            finally:
                for m, training in modes:
                    m.training = training
            write_graph(run_dir, graph)
        except Exception as e:  # the graph is a nicety: training goes on
            notice(f"deepscope.watch: could not record the model's graph: {type(e).__name__}: {e}")

    scope.add(model.register_forward_pre_hook(eager(hook), with_kwargs=True))
