"""Graphs from ``torch.export`` and ``torch.fx``: both give an fx graph, converted here to the schema.

Weights (parameters, buffers, constants) are not nodes: the operation that reads one counts its parameters.
Values are never computed with real weights: ``torch.export`` works on fake tensors, and fx shapes are
propagated through fake tensors too (a real pass, without gradients, only when fake tensors fail).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import operator
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .extract import ModuleTable, bind_inputs, dims, dtype_name, eval_mode, fake_state, leaf_name, tensors_in
from .schema import Edge, Node

_ROOT = "model"  # the attribute under which the output-flattening wrapper holds the model


class _FlatOutputs(nn.Module):
    """Calls the model and returns its output tensors as one tuple: ``torch.export`` needs outputs that it
    can flatten, and models return caches and other objects it cannot."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(tensors_in(self.model(*args, **kwargs)))


def trace_export(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], table: ModuleTable
) -> tuple[list[Node], list[Edge], list[str]]:
    # On failure torch.export prints the partial graph to stderr; the failure's reason goes to ``notes``.
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        ep = torch.export.export(_FlatOutputs(model), args, kwargs, strict=False)
    if captured.getvalue():
        sys.stderr.write(captured.getvalue())
    sig = ep.graph_signature
    params = set(sig.inputs_to_parameters)
    weights: dict[str, bool] = {name: name in params for name in sig.inputs_to_parameters}
    weights.update({name: False for name in sig.inputs_to_buffers})
    weights.update({name: False for name in sig.inputs_to_lifted_tensor_constants})
    weights.update({name: False for name in getattr(sig, "inputs_to_lifted_custom_objs", {})})
    input_names = _input_names(model, args, kwargs, list(sig.user_inputs))

    def module_of(node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        if path == _ROOT:
            return ""
        return table.owner(path.removeprefix(_ROOT + "."))

    def weight(node: fx.Node) -> int | None:
        if node.op == "placeholder" and node.name in weights:
            return _numel(node.meta.get("val")) if weights[node.name] else 0
        if node.op == "get_attr":  # constants and submodule graphs
            return 0
        return None

    nodes, edges = _convert(
        ep.graph, value=lambda n: n.meta.get("val"), weight=weight, module_of=module_of, table=table, names=input_names
    )
    return nodes, edges, []


class _OpenTracer(fx.Tracer):
    """fx's tracer, except that ``torch.nn`` modules made of other modules (``TransformerEncoder``, ``Transformer``,
    their layers) are opened, as the user's own modules are: their layers are nodes of the graph, not one box.
    Attention stays one node (the watched layer). A module whose code fx cannot trace fails the whole trace:
    the next method (forward hooks) shows its layers then."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if not super().is_leaf_module(m, module_qualified_name):
            return False
        return isinstance(m, nn.MultiheadAttention) or next(m.children(), None) is None


def trace_fx(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], table: ModuleTable
) -> tuple[list[Node], list[Edge], list[str]]:
    bound = bind_inputs(model, args, kwargs)
    concrete = _defaults_not_given(model, bound)
    # trace, not symbolic_trace: no Python code is generated, so any module name works.
    graph = _OpenTracer().trace(model, concrete_args=concrete or None)
    values, note = _propagate(model, graph, bound)
    params = {id(p) for p in model.parameters()}

    def module_of(node: fx.Node) -> str:
        if node.op == "call_module":
            return table.owner(str(node.target))
        stack = node.meta.get("nn_module_stack")
        return table.owner(str(list(stack.values())[-1][0])) if stack else ""

    def weight(node: fx.Node) -> int | None:
        if node.op != "get_attr":
            return None
        try:
            attr = _fetch(model, str(node.target))
        except AttributeError:
            return 0
        return attr.numel() if isinstance(attr, torch.Tensor) and id(attr) in params else 0

    nodes, edges = _convert(graph, value=values.get, weight=weight, module_of=module_of, table=table, names={})
    return nodes, edges, [note] if note else []


# ---- conversion ----------------------------------------------------------------------------------------
def _convert(
    graph: fx.Graph,
    *,
    value: Callable[[fx.Node], Any],
    weight: Callable[[fx.Node], int | None],
    module_of: Callable[[fx.Node], str],
    table: ModuleTable,
    names: dict[str, str],
) -> tuple[list[Node], list[Edge]]:
    """Schema nodes and edges from an fx graph whose nodes' values ``value(node)`` gives."""
    weight_numel: dict[fx.Node, int] = {}
    skipped: set[fx.Node] = set()
    for n in graph.nodes:
        w = weight(n)
        inputs = n.all_input_nodes
        if w is None and n.op.startswith("call_") and inputs and all(a in weight_numel for a in inputs):
            w = sum(weight_numel[a] for a in inputs)  # computed from weights only (a transpose, a counter)
        if w is not None:
            weight_numel[n] = w
        elif _is_guard(n):
            skipped.add(n)
    kept = [n for n in graph.nodes if n not in weight_numel and n not in skipped and _used(n, skipped)]
    nodes: list[Node] = []
    edges: list[Edge] = []
    for n in kept:
        in_shapes: list[Any] = []
        in_dtypes: list[str | None] = []
        n_params = 0
        for a in n.all_input_nodes:
            if a in weight_numel:
                n_params += weight_numel[a] if n.op != "output" else 0
                continue
            if a in skipped:
                continue
            shape, dtype = _edge_value(value(a), n)
            edges.append(Edge(src=a.name, dst=n.name, shape=shape, dtype=dtype))
            in_shapes.append(shape)
            in_dtypes.append(dtype)
        outs = tensors_in(value(n)) if n.op != "output" else []
        path = "" if n.op in ("placeholder", "output") else module_of(n)
        if n.op == "call_module":
            module = table.modules.get(str(n.target))
            n_params += sum(p.numel() for p in module.parameters()) if module is not None else 0
        nodes.append(
            Node(
                id=n.name,
                name=names.get(n.name, n.name),
                op={"placeholder": "input"}.get(n.op, n.op),
                target=names.get(n.name, n.name) if n.op == "placeholder" else _target_name(n, table),
                module_path=path,
                module_type="" if n.op in ("placeholder", "output") else table.types.get(path, ""),
                input_shapes=tuple(in_shapes),
                input_dtypes=tuple(in_dtypes),
                output_shapes=tuple(dims(t.shape) for t in outs),
                output_dtypes=tuple(dtype_name(t.dtype) for t in outs),
                n_params=n_params,
            )
        )
    return nodes, edges


def _used(n: fx.Node, skipped: set[fx.Node]) -> bool:
    """Inputs that nothing reads (a default left as ``None``) are not shown."""
    return n.op != "placeholder" or any(u not in skipped for u in n.users)


def _is_guard(n: fx.Node) -> bool:
    return n.op == "call_function" and getattr(n.target, "__name__", "") == "_assert_is_none"


def _edge_value(v: Any, dst: fx.Node) -> tuple[Any, str | None]:
    if isinstance(v, (tuple, list)) and dst.op == "call_function" and dst.target is operator.getitem:
        idx = dst.args[1]
        v = v[idx] if isinstance(idx, int) and -len(v) <= idx < len(v) else None
    if isinstance(v, torch.Tensor):
        return dims(v.shape), dtype_name(v.dtype)
    return None, None


def _target_name(n: fx.Node, table: ModuleTable) -> str:
    if n.op == "call_module":
        return table.types.get(str(n.target), "")
    if n.op == "call_function":
        t = n.target
        if isinstance(t, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
            return str(t)
        name = getattr(t, "__name__", None) or str(t)
        mod = getattr(t, "__module__", None)
        return f"{mod}.{name}" if mod and mod not in ("builtins",) else name
    return str(n.target)


def _numel(v: Any) -> int:
    return int(v.numel()) if isinstance(v, torch.Tensor) else 0


def _fetch(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _input_names(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], placeholders: list[str]) -> dict:
    """Export calls the inputs ``args_0``…; name them after the forward's parameters where they line up."""
    try:
        positional = [
            p.name
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        positional = []
    named = {(positional[i] if i < len(positional) else f"arg{i}"): a for i, a in enumerate(args)}
    named.update(kwargs)
    leaves = pytree.tree_flatten_with_path(named)[0]
    if len(leaves) != len(placeholders):
        return {}
    return {ph: leaf_name(path) for ph, (path, _) in zip(placeholders, leaves)}


def _defaults_not_given(model: nn.Module, bound: dict[str, Any]) -> dict[str, Any]:
    """Parameters the example leaves at their default are traced as constants (fx cannot branch on them)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default
        for p in params
        if p.name not in bound and p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }


def _meta_like(v: Any) -> Any:
    """Shape and dtype without data: tensors become meta tensors, containers keep their structure."""
    if isinstance(v, torch.Tensor):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    if isinstance(v, (tuple, list)):
        return tuple(_meta_like(x) for x in v)
    return None


class _Recorder(fx.Interpreter):
    def __init__(self, root: nn.Module, graph: fx.Graph) -> None:
        super().__init__(root, graph=graph)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = _meta_like(out)
        return out


class _Interpret(nn.Module):
    """Runs the recorder as a module's forward, so that ``functional_call`` can swap in fake weights."""

    def __init__(self, rec: _Recorder) -> None:
        super().__init__()
        self.model = rec.module
        self.rec = rec

    def forward(self, *args: Any) -> Any:
        return self.rec.run(*args)


def _propagate(model: nn.Module, graph: fx.Graph, bound: dict[str, Any]) -> tuple[dict[fx.Node, Any], str]:
    """Shapes of every node: with fake tensors if possible, else a real pass without gradients."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    inputs = [bound.get(str(n.target).lstrip("*")) for n in graph.nodes if n.op == "placeholder"]
    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in inputs]
        rec = _Recorder(model, graph)
        with mode, torch.no_grad(), fake_state(model, mode) as state:
            held = {f"model.{name}": t for name, t in state.items()}  # the wrapper holds the model as `model`
            torch.func.functional_call(_Interpret(rec), held, tuple(fake))
        return rec.values, ""
    except Exception as fake_error:  # noqa: BLE001 - data-dependent code: try for real
        reason = f"{type(fake_error).__name__}"
    rec = _Recorder(model, graph)
    try:
        with torch.no_grad(), eval_mode(model):
            rec.run(*inputs)
    except Exception as e:  # noqa: BLE001 - the structure is still right; shapes are partial
        return rec.values, f"fx: shapes incomplete ({type(e).__name__}: {str(e)[:200]})"
    return rec.values, f"fx: shapes from a real forward pass (fake tensors failed: {reason})"
