"""The computation graph of a model, as stored in ``artifacts/graph/graph.json`` (see docs/store-format.md).

A graph is a flat list of operations (``Node``) and the tensors between them (``Edge``). Every node names
the module that owns it (``module_path``, dotted as in ``model.named_modules()``, ``""`` for the top level),
and ``modules`` holds the module tree, so any level of the hierarchy can be shown (see ``hierarchy.py``).

>>> g = from_json(to_json(graph))
>>> g == graph
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

GRAPH_VERSION = 1
# How a graph was obtained. "modules": no tracer worked; only the module tree is known (``notes`` says why).
METHODS = ("export", "fx", "hooks", "onnx", "modules")
# Node kinds: graph inputs and the output, an operation, or a whole module seen as one call (fx, hooks).
OPS = ("input", "output", "call_function", "call_method", "call_module", "get_attr")

Dim = int | str  # a symbolic dimension (ONNX "batch") is a string
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class Node:
    """One operation. ``target`` is what it computes: ``aten.conv2d.default``, ``relu``, an ONNX op type."""

    id: str  # unique in the graph
    name: str
    op: str  # one of OPS
    target: str
    module_path: str  # the owning module's dotted path, "" for the top level
    module_type: str  # that module's class, "torch.nn.modules.conv.Conv2d" ("" when unknown)
    input_shapes: tuple[Shape | None, ...] = ()  # one per data input (weights excluded); None: not a tensor
    input_dtypes: tuple[str | None, ...] = ()
    output_shapes: tuple[Shape, ...] = ()  # one per output tensor
    output_dtypes: tuple[str, ...] = ()
    n_params: int = 0  # parameters this node reads directly (a module call: the module's parameters)


@dataclass(frozen=True)
class Edge:
    """A tensor from ``src`` to ``dst`` (node ids); ``shape`` is None when the value is not one tensor."""

    src: str
    dst: str
    shape: Shape | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class ModuleInfo:
    """One module of the tree. The root has path ``""`` and parent None; ``children`` in registration order."""

    path: str
    type: str
    n_params: int = 0  # parameters of the module and its descendants, each counted once
    parent: str | None = None
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Graph:
    """The computation graph of one model on one example input."""

    method: str  # one of METHODS
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    modules: tuple[ModuleInfo, ...] = ()
    notes: tuple[str, ...] = ()  # why earlier methods failed, what was approximated
    version: int = GRAPH_VERSION
    # Derived lookups (not serialised): filled lazily by ``hierarchy.index``.
    _cache: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False, hash=False)

    def node(self, node_id: str) -> Node:
        """The node with this id (a dict built once per graph)."""
        by_id = self._cache.get("by_id")
        if by_id is None:
            by_id = self._cache["by_id"] = {n.id: n for n in self.nodes}
        return by_id[node_id]


# ---- JSON -------------------------------------------------------------------------------------------
def to_dict(graph: Graph) -> dict[str, Any]:
    """A JSON-ready dict: lists instead of tuples, ``version`` first."""
    return {
        "version": graph.version,
        "method": graph.method,
        "notes": list(graph.notes),
        "modules": [
            {"path": m.path, "type": m.type, "n_params": m.n_params, "parent": m.parent, "children": list(m.children)}
            for m in graph.modules
        ],
        "nodes": [
            {
                "id": n.id,
                "name": n.name,
                "op": n.op,
                "target": n.target,
                "module_path": n.module_path,
                "module_type": n.module_type,
                "input_shapes": [None if s is None else list(s) for s in n.input_shapes],
                "input_dtypes": list(n.input_dtypes),
                "output_shapes": [list(s) for s in n.output_shapes],
                "output_dtypes": list(n.output_dtypes),
                "n_params": n.n_params,
            }
            for n in graph.nodes
        ],
        "edges": [
            {"src": e.src, "dst": e.dst, "shape": None if e.shape is None else list(e.shape), "dtype": e.dtype}
            for e in graph.edges
        ],
    }


def to_json(graph: Graph) -> str:
    return json.dumps(to_dict(graph), ensure_ascii=False, separators=(",", ":"))


def _shape(s: Any) -> Shape | None:
    if s is None:
        return None
    if not isinstance(s, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in s):
        raise ValueError(f"a shape is a list of integers and names, not {s!r:.60}")
    return tuple(s)


def _texts(v: Any, what: str, *, nullable: bool = False) -> tuple[Any, ...]:
    """A list of strings (``None`` among them where ``nullable``) as a tuple; ``ValueError`` naming ``what``."""
    if not isinstance(v, list) or not all(isinstance(x, str) or (nullable and x is None) for x in v):
        raise ValueError(f"{what} must be a list of strings, not {v!r:.60}")
    return tuple(v)


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{what} must be an integer, not {v!r:.60}")
    return v


def _module(m: dict[str, Any]) -> ModuleInfo:
    parent = m.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise ValueError(f"'parent' must be a string or null, not {parent!r:.60}")
    return ModuleInfo(
        path=str(m["path"]),
        type=str(m.get("type", "")),
        n_params=_int(m.get("n_params", 0), "'n_params'"),
        parent=parent,
        children=_texts(m.get("children", []), "'children'"),
    )


def _node(n: dict[str, Any]) -> Node:
    return Node(
        id=str(n["id"]),
        name=str(n.get("name", n["id"])),
        op=str(n["op"]),
        target=str(n.get("target", "")),
        module_path=str(n.get("module_path", "")),
        module_type=str(n.get("module_type", "")),
        input_shapes=tuple(_shape(s) for s in _list(n.get("input_shapes", []), "'input_shapes'")),
        input_dtypes=_texts(n.get("input_dtypes", []), "'input_dtypes'", nullable=True),
        output_shapes=tuple(_shape(s) for s in _list(n.get("output_shapes", []), "'output_shapes'")),
        output_dtypes=_texts(n.get("output_dtypes", []), "'output_dtypes'"),
        n_params=_int(n.get("n_params", 0), "'n_params'"),
    )


def _edge(e: dict[str, Any]) -> Edge:
    dtype = e.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise ValueError(f"'dtype' must be a string or null, not {dtype!r:.60}")
    return Edge(src=str(e["src"]), dst=str(e["dst"]), shape=_shape(e.get("shape")), dtype=dtype)


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list, not {type(v).__name__}")
    return v


def _each(data: dict[str, Any], name: str, parse: Any) -> tuple[Any, ...]:
    """``parse`` of each object of the list ``data[name]``; ``ValueError`` naming the entry and the field at fault."""
    out = []
    for i, item in enumerate(_list(data.get(name, []), f"deepscope: graph {name!r}")):
        if not isinstance(item, dict):
            raise ValueError(f"deepscope: graph {name}[{i}] must be an object, not {type(item).__name__}")
        try:
            out.append(parse(item))
        except KeyError as e:
            raise ValueError(f"deepscope: graph {name}[{i}] has no {e.args[0]!r}") from None
        except ValueError as e:
            raise ValueError(f"deepscope: graph {name}[{i}]: {e}") from None
    return tuple(out)


def from_dict(data: dict[str, Any]) -> Graph:
    """Parse a stored graph; a newer version than this code knows is refused with both versions named, a missing or
    mistyped field with the entry that holds it (``ValueError``)."""
    if not isinstance(data, dict):
        raise ValueError(f"deepscope: a graph is a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if not isinstance(version, int):
        raise ValueError("deepscope: graph JSON has no integer 'version'")
    if version > GRAPH_VERSION:
        raise ValueError(
            f"deepscope: graph format {version} is newer than this deepscope reads ({GRAPH_VERSION}); upgrade it"
        )
    method = data.get("method")
    if method not in METHODS:
        raise ValueError(f"deepscope: graph method must be one of {METHODS}, got {method!r}")
    modules = _each(data, "modules", _module)
    nodes = _each(data, "nodes", _node)
    edges = _each(data, "edges", _edge)
    notes = _texts(data.get("notes", []), "deepscope: graph 'notes'")
    return Graph(method=method, nodes=nodes, edges=edges, modules=modules, notes=notes)


def from_json(text: str | bytes) -> Graph:
    return from_dict(json.loads(text))


def check(graph: Graph) -> list[str]:
    """Problems that make a graph inconsistent (empty when it is sound): dangling edges, duplicate ids."""
    problems: list[str] = []
    ids = [n.id for n in graph.nodes]
    if len(set(ids)) != len(ids):
        problems.append("duplicate node ids")
    known = set(ids)
    problems += [f"edge {e.src!r} -> {e.dst!r} has an unknown end" for e in graph.edges if {e.src, e.dst} - known]
    paths = {m.path for m in graph.modules}
    if graph.modules:
        problems += [
            f"node {n.id!r}: unknown module {n.module_path!r}" for n in graph.nodes if n.module_path not in paths
        ]
    if graph.method not in METHODS:
        problems.append(f"unknown method {graph.method!r}")
    return problems
