"""``extract_graph``: the computation graph of any ``nn.Module``, by the best method that works on it.

Methods, tried in order, each failure recorded in ``graph.notes``:

1. ``export`` — ``torch.export.export(strict=False)``: ATen operations, each attached to its module through
   the ``nn_module_stack`` metadata, shapes from fake tensors (no real computation, no weight copies).
2. ``fx`` — ``torch.fx`` symbolic tracing: module calls and functions, shapes propagated with fake tensors.
3. ``hooks`` — forward hooks on every leaf module during one forward pass (with fake tensors when the model
   allows it, else a real pass in eval mode without gradients): leaf-module calls in call order, and the
   tensors between them followed through the functions in between.
4. ``modules`` — nothing traced (the model fails on the example input): only the module tree.

>>> g = extract_graph(model, torch.randn(1, 3, 224, 224))
>>> g.method, len(g.nodes)
('export', 59)
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .schema import Graph, ModuleInfo, Node

METHOD_ORDER = ("export", "fx", "hooks")
# Loggers through which a failing trace prints whole graphs; a failure here is expected and lands in ``notes``.
_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch._export", "torch.export")
Tracer = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], "ModuleTable"], tuple[list[Node], list[Any], list[str]]]


def extract_graph(
    model: nn.Module,
    example_inputs: Any = (),
    *,
    methods: tuple[str, ...] = METHOD_ORDER,
    example_kwargs: Mapping[str, Any] | None = None,
) -> Graph:
    """Trace ``model`` on ``example_inputs``: a tuple is positional arguments, a dict keyword arguments,
    anything else (a tensor) the single argument; ``example_kwargs`` adds keyword arguments to positional ones
    (a call ``model(x, mask=m)``). Never raises for a model that cannot be traced: the result's ``method`` says
    what worked and ``notes`` why the others did not.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"deepscope: extract_graph takes an nn.Module, got {type(model).__name__}")
    args, kwargs = split_inputs(example_inputs)
    kwargs.update(example_kwargs or {})
    table = ModuleTable(model)
    notes: list[str] = []
    for method in methods:
        tracer = _tracers()[method]
        try:
            with warnings.catch_warnings(record=True) as caught, _quiet():  # keep a short summary instead
                warnings.simplefilter("always")
                nodes, edges, method_notes = tracer(model, args, kwargs, table)
        except Exception as e:  # noqa: BLE001 - any failure means: try the next method
            notes.append(f"{method} failed: {_reason(e)}")
            continue
        notes += method_notes
        notes += _warning_notes(method, caught)
        return Graph(method=method, nodes=tuple(nodes), edges=tuple(edges), modules=table.infos(), notes=tuple(notes))
    return Graph(method="modules", modules=table.infos(), notes=tuple(notes))


def _tracers() -> dict[str, Tracer]:
    from .fxgraph import trace_export, trace_fx
    from .hooks import trace_hooks

    return {"export": trace_export, "fx": trace_fx, "hooks": trace_hooks}


def split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The one rule for example inputs: tuple → ``*args``, dict → ``**kwargs``, else one argument."""
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, Mapping):
        if not all(isinstance(k, str) for k in example_inputs):
            raise TypeError("deepscope: a dict of example inputs is keyword arguments: its keys must be str")
        return (), dict(example_inputs)
    return (example_inputs,), {}


def bind_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Example inputs by the forward's parameter names (``arg0``… when the signature cannot be bound)."""
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out.update({f"{name}_{i}": v for i, v in enumerate(value)})
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


# ---- the module tree ---------------------------------------------------------------------------------
def type_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class ModuleTable:
    """Every module path of a model (shared modules under each of their names) with type and parameters."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: dict[str, nn.Module] = dict(model.named_modules(remove_duplicate=False))
        self.types = {p: type_name(m) for p, m in self.modules.items()}

    def owner(self, path: str) -> str:
        """``path`` if it is a module, else its nearest ancestor that is one (``""`` at worst)."""
        while path and path not in self.modules:
            path = path.rpartition(".")[0]
        return path

    def infos(self) -> tuple[ModuleInfo, ...]:
        out = []
        for path, module in self.modules.items():
            seen: set[int] = set()
            n = 0
            for p in module.parameters():  # each shared parameter once
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
            children = tuple(f"{path}.{c}" if path else c for c, _ in module.named_children())
            parent = None if path == "" else path.rpartition(".")[0]
            out.append(ModuleInfo(path=path, type=self.types[path], n_params=n, parent=parent, children=children))
        return tuple(out)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for a real pass (BatchNorm must not update its running statistics); restores every flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def fake_state(model: nn.Module, mode: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Fake copies (no data) of every parameter and buffer, for ``functional_call`` in eval mode: a fake
    pass then reads no weight and mutates no buffer of the real model (``num_batches_tracked += 1``)."""
    state = {
        name: mode.from_tensor(t)
        for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    }
    with eval_mode(model):
        yield state


# ---- values -----------------------------------------------------------------------------------------
def dims(shape: Any) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for d in shape:
        try:
            out.append(int(d))
        except (TypeError, ValueError, RuntimeError):  # an unbacked symbolic size
            out.append(str(d))
    return tuple(out)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Tensors inside nested tuples, lists, dicts and dataclass-like outputs (``ModelOutput`` is a dict)."""
    out: list[torch.Tensor] = []
    stack = [value]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif id(v) in seen:
            continue
        elif isinstance(v, (tuple, list)):
            seen.add(id(v))
            stack.extend(reversed(v))
        elif isinstance(v, Mapping):
            seen.add(id(v))
            stack.extend(reversed(list(v.values())))
        elif hasattr(v, "__dataclass_fields__"):
            seen.add(id(v))
            stack.extend(reversed([getattr(v, f, None) for f in v.__dataclass_fields__]))
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def leaf_name(path: tuple[Any, ...]) -> str:
    """A pytree key path as a dotted name: ``(["batch"], ["a"])`` → ``batch.a``."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:300]}"


def _warning_notes(method: str, caught: list[warnings.WarningMessage], limit: int = 3) -> list[str]:
    seen: list[str] = []
    for w in caught:
        msg = str(w.message).strip().splitlines()[0][:200] if str(w.message).strip() else w.category.__name__
        if msg not in seen:
            seen.append(msg)
    notes = [f"{method} warned: {m}" for m in seen[:limit]]
    if len(seen) > limit:
        notes.append(f"{method} warned {len(seen) - limit} more distinct warnings")
    return notes
