"""The fallback graph: leaf-module calls seen by forward hooks, for models that no tracer can follow.

One forward pass runs with a hook on every leaf module. Each call becomes a node (a module called twice
gives two nodes, ``@1`` marking the second call). Edges follow the tensors: a ``TorchFunctionMode`` carries,
for every tensor the pass creates, the set of nodes it was computed from, through the functions called
between modules (``x + y``, ``view``…), so that data flow is right even when it leaves the modules.
The pass uses fake tensors when the model allows it; data-dependent code (``if x.sum() > 0``) needs real
values, and then the pass is real, in eval mode and without gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from ..capture.scope import HookScope
from .extract import ModuleTable, bind_inputs, dims, dtype_name, eval_mode, fake_state, leaf_name, tensors_in
from .schema import Edge, Node

OUTPUT_ID = "out"


class _Provenance(TorchFunctionMode):
    """For each tensor (by identity, kept alive for the pass), the nodes whose outputs it depends on."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[int, frozenset[str]] = {}
        self._alive: list[torch.Tensor] = []

    def mark(self, t: torch.Tensor, srcs: frozenset[str]) -> None:
        self.sources[id(t)] = srcs
        self._alive.append(t)  # an id stays valid only while its tensor lives

    def of(self, value: Any) -> dict[str, torch.Tensor]:
        """``{source node: one tensor of value carrying it}``, in the order the tensors appear."""
        out: dict[str, torch.Tensor] = {}
        for t in tensors_in(value):
            for s in sorted(self.sources.get(id(t), ())):
                out.setdefault(s, t)
        return out

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        srcs: set[str] = set()
        for leaf in pytree.tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor):
                srcs |= self.sources.get(id(leaf), frozenset())
        if srcs:
            frozen = frozenset(srcs)
            for t in tensors_in(result):
                self.mark(t, frozen)
        return result


def trace_hooks(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], table: ModuleTable
) -> tuple[list[Node], list[Edge], list[str]]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake_args, fake_kwargs = pytree.tree_map_only(torch.Tensor, mode.from_tensor, (args, kwargs))
        with mode, torch.no_grad(), fake_state(model, mode) as state:
            call = lambda *a, **k: torch.func.functional_call(model, state, a, k)  # noqa: E731
            return (*_record(model, fake_args, fake_kwargs, table, call), [])
    except Exception as e:  # noqa: BLE001 - data-dependent code needs real values
        reason = f"{type(e).__name__}"
    with torch.no_grad(), eval_mode(model):
        nodes, edges = _record(model, args, kwargs, table)
    return nodes, edges, [f"hooks: a real forward pass in eval mode (fake tensors failed: {reason})"]


def _record(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], table: ModuleTable, call: Any = None
) -> tuple[list[Node], list[Edge]]:
    prov = _Provenance()
    nodes: list[Node] = []
    edges: list[Edge] = []
    calls: dict[str, int] = {}

    def connect(dst: str, value: Any) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        for src, t in prov.of(value).items():
            edges.append(Edge(src=src, dst=dst, shape=dims(t.shape), dtype=dtype_name(t.dtype)))
        ts = tensors_in(value)
        return tuple(dims(t.shape) for t in ts), tuple(dtype_name(t.dtype) for t in ts)

    for path, t in pytree.tree_flatten_with_path(bind_inputs(model, args, kwargs))[0]:
        if not isinstance(t, torch.Tensor):
            continue
        node_id = f"in:{leaf_name(path)}"
        if id(t) not in prov.sources:  # one tensor given twice (input_ids=x, labels=x): its first name carries it
            prov.mark(t, frozenset([node_id]))
        name = node_id.removeprefix("in:")
        nodes.append(Node(node_id, name, "input", name, "", "", (), (), (dims(t.shape),), (dtype_name(t.dtype),)))

    def hook(module: nn.Module, h_args: Any, h_kwargs: Any, output: Any, *, path: str) -> None:
        k = calls.get(path, 0)
        calls[path] = k + 1
        node_id = f"call:{path}" if k == 0 else f"call:{path}@{k}"
        in_shapes, in_dtypes = connect(node_id, (h_args, h_kwargs))
        outs = tensors_in(output)
        for t in outs:
            prov.mark(t, frozenset([node_id]))
        label = path.rpartition(".")[2] or type(module).__name__
        nodes.append(
            Node(
                id=node_id,
                name=label if k == 0 else f"{label}@{k}",
                op="call_module",
                target=table.types.get(path, ""),
                module_path=path,
                module_type=table.types.get(path, ""),
                input_shapes=in_shapes,
                input_dtypes=in_dtypes,
                output_shapes=tuple(dims(t.shape) for t in outs),
                output_dtypes=tuple(dtype_name(t.dtype) for t in outs),
                n_params=sum(p.numel() for p in module.parameters()),
            )
        )

    leaves = [(p, m) for p, m in model.named_modules() if next(iter(m.children()), None) is None]
    with HookScope() as scope:
        for path, module in leaves:
            scope.add(module.register_forward_hook(_bind(hook, path), with_kwargs=True))
        with prov:
            result = (call or model)(*args, **kwargs)
    in_shapes, in_dtypes = connect(OUTPUT_ID, result)
    nodes.append(Node(OUTPUT_ID, "output", "output", "output", "", "", in_shapes, in_dtypes))
    return nodes, edges


def _bind(hook: Any, path: str) -> Any:
    def bound(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        hook(module, args, kwargs, output, path=path)

    return bound
