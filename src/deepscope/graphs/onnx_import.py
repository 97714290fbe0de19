"""``graph_from_onnx``: an ONNX model file as a deepscope graph.

Module paths come from the exporter's scoped node names (``/encoder/layer.0/attention/self/query/MatMul`` →
``encoder.layer.0.attention.self.query``), or from the ``pkg.torch.onnx.name_scopes`` metadata that the
``dynamo`` exporter writes. Initializers (weights) are not nodes: the node that reads one counts its size;
nodes that only transform constants (``Constant``, ``Identity`` of a weight) are folded away the same way.
Shapes come from ONNX shape inference.

>>> g = graph_from_onnx("model.onnx")
"""

from __future__ import annotations

import ast
import math
import os
from dataclasses import replace
from typing import Any

from .schema import Edge, Graph, ModuleInfo, Node


def graph_from_onnx(path: str | os.PathLike[str]) -> Graph:
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)  # weights' shapes suffice
    notes: list[str] = []
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # noqa: BLE001 - a graph without shapes is still a graph
        notes.append(f"onnx: shape inference failed ({type(e).__name__}: {str(e)[:200]})")
    g = model.graph
    types: dict[str, tuple[Any, str | None]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        types[vi.name] = _value_type(vi)
    params: dict[str, int] = {}  # constant tensor → parameters it holds
    for init in g.initializer:
        params[init.name] = math.prod(init.dims)
        types.setdefault(init.name, (tuple(int(d) for d in init.dims), _dtype(init.data_type)))

    nodes: list[Node] = []
    edges: list[Edge] = []
    producer: dict[str, str] = {}
    taken: set[str] = set()
    for vi in g.input:
        if vi.name in params:
            continue
        node_id = _unique(f"input:{vi.name}", taken)
        producer[vi.name] = node_id
        shape, dtype = types.get(vi.name, (None, None))
        nodes.append(Node(node_id, vi.name, "input", vi.name, "", "", (), (), _one(shape), _one(dtype)))

    module_types: dict[str, str] = {}
    for i, n in enumerate(g.node):
        data = [x for x in n.input if x and x not in params]
        if not data:  # Constant, or a transformation of weights only: fold it into its readers
            folded = sum(params.get(x, 0) for x in n.input if x)
            for out in n.output:
                params[out] = folded if n.op_type != "Constant" else 0
            continue
        node_id = _unique(n.name or f"{n.op_type}_{i}", taken)
        path, classes = _module_path(n)
        if classes:
            module_types.setdefault(path, classes[-1])
        in_shapes, in_dtypes = [], []
        for x in data:
            shape, dtype = types.get(x, (None, None))
            if x in producer:
                edges.append(Edge(producer[x], node_id, shape, dtype))
            in_shapes.append(shape)
            in_dtypes.append(dtype)
        outs = [types.get(o, (None, None)) for o in n.output if o]
        nodes.append(
            Node(
                id=node_id,
                name=(n.name.rsplit("/", 1)[-1] or n.op_type) if n.name else n.op_type,
                op="call_function",
                target=f"{n.domain or 'ai.onnx'}::{n.op_type}",
                module_path=path,
                module_type="",  # filled below, once every node's class metadata is known
                input_shapes=tuple(in_shapes),
                input_dtypes=tuple(in_dtypes),
                output_shapes=tuple(s for s, _ in outs if s is not None),
                output_dtypes=tuple(d for s, d in outs if s is not None and d is not None),
                n_params=sum(params.get(x, 0) for x in n.input if x in params),
            )
        )
        for o in n.output:
            if o:
                producer[o] = node_id
    out_id = _unique("output", taken)
    in_shapes, in_dtypes = [], []
    for vo in g.output:
        shape, dtype = types.get(vo.name, (None, None))
        if vo.name in producer:
            edges.append(Edge(producer[vo.name], out_id, shape, dtype))
        in_shapes.append(shape)
        in_dtypes.append(dtype)
    nodes.append(Node(out_id, "output", "output", "output", "", "", tuple(in_shapes), tuple(in_dtypes)))
    nodes = [n if n.op in ("input", "output") else _with_type(n, module_types.get(n.module_path, "")) for n in nodes]
    modules = _modules(nodes, module_types, root_type=g.name or "onnx")
    return Graph(method="onnx", nodes=tuple(nodes), edges=tuple(edges), modules=modules, notes=tuple(notes))


def _with_type(n: Node, module_type: str) -> Node:
    return replace(n, module_type=module_type) if module_type else n


def module_path_from_name(name: str) -> str:
    """``/encoder/layer.0/attention/self/query/MatMul`` → ``encoder.layer.0.attention.self.query``.

    A scope such as ``layer.0`` right after ``layer`` names a child of that module (a ``Sequential``'s
    item), so it replaces the previous part rather than extending it: ``/layer/layer.0/conv/Conv`` →
    ``layer.0.conv``, as ``named_modules()`` spells it.
    """
    scopes = [s for s in name.split("/")[:-1] if s]
    parts: list[str] = []
    for s in scopes:
        if parts and s.startswith(parts[-1] + "."):
            parts[-1] = s
        else:
            parts.append(s)
    return ".".join(parts)


def _module_path(n: Any) -> tuple[str, list[str]]:
    meta = {p.key: p.value for p in n.metadata_props}
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
    classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy"))
    if scopes:
        return scopes[-1], classes
    return (module_path_from_name(n.name) if n.name.startswith("/") else ""), []


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _modules(nodes: list[Node], module_types: dict[str, str], root_type: str) -> tuple[ModuleInfo, ...]:
    """The module tree implied by the nodes' dotted paths, children in order of first appearance."""
    children: dict[str, list[str]] = {"": []}
    n_params: dict[str, int] = {"": 0}
    for n in nodes:
        parts = n.module_path.split(".") if n.module_path else []
        for k in range(1, len(parts) + 1):
            p = ".".join(parts[:k])
            if p not in children:
                children[".".join(parts[: k - 1])].append(p)
                children[p] = []
                n_params[p] = 0
        for k in range(len(parts) + 1):  # parameters count in the node's module and every ancestor
            n_params[".".join(parts[:k])] += n.n_params
    return tuple(
        ModuleInfo(
            path=p,
            type=root_type if p == "" else module_types.get(p, ""),
            n_params=n_params[p],
            parent=None if p == "" else p.rpartition(".")[0],
            children=tuple(kids),
        )
        for p, kids in children.items()
    )


def _value_type(vi: Any) -> tuple[Any, str | None]:
    t = vi.type
    if not t.HasField("tensor_type"):
        return None, None
    tt = t.tensor_type
    dtype = _dtype(tt.elem_type) if tt.elem_type else None
    if not tt.HasField("shape"):
        return None, dtype
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
    return shape, dtype


def _dtype(elem_type: int) -> str | None:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return None


def _one(x: Any) -> tuple[Any, ...]:
    return () if x is None else (x,)


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}#{k}", k + 1
    taken.add(out)
    return out
