"""What the graph route answers: collapsed views of a run's computation graph, as plain functions.

The parsed graph and its hierarchy index are cached per run, keyed by the file's modification time and size,
so an expansion costs one ``collapse`` (about a millisecond on a 10,000-node graph) plus serialisation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ..graphs.hierarchy import GraphIndex, index
from ..graphs.schema import Graph
from ..graphs.store import graph_path, read_graph
from ..store import Store
from . import schemas
from .queries import NotFound, run_info


@dataclass(frozen=True)
class _Cached:
    stamp: tuple[int, int]  # (mtime_ns, size) of graph.json
    graph: Graph
    index: GraphIndex
    tree: list[schemas.GraphModule]
    haystack: list[tuple[str, schemas.GraphMatch]]  # (lower-cased searchable text, what it finds)


log = logging.getLogger("deepscope")
_cache: dict[tuple[str, str], _Cached] = {}
_lock = threading.Lock()
_loading: dict[tuple[str, str], threading.Lock] = {}
_MAX_CACHED = 16  # graphs held at once (a 10k-node graph is a few tens of MB parsed)


def warm(store: Store) -> None:
    """Parse the graphs of the newest runs ahead of the first request (run in the background at start)."""
    try:
        for info in store.runs()[:_MAX_CACHED]:
            if graph_path(store.root / info.id).exists():
                try:
                    _load(store, info.id)
                except NotFound:
                    pass
    except Exception:  # a head start only: requests load what they need anyway
        log.warning("deepscope: could not pre-load graphs", exc_info=True)


def _load(store: Store, run_id: str) -> _Cached:
    run_info(store, run_id)  # validates the id against the store (NotFound otherwise) without reading data
    path = graph_path(store.root / run_id)
    try:
        st = path.stat()
    except OSError:
        raise NotFound(f"run {run_id!r} has no graph") from None
    key, stamp = (str(store.root), run_id), (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
        loading = _loading.setdefault(key, threading.Lock())
    if hit is not None and hit.stamp == stamp:
        return hit
    with loading:  # one parse per graph: a request arriving mid-way waits for the background one
        with _lock:
            hit = _cache.get(key)
        if hit is not None and hit.stamp == stamp:
            return hit
        return _parse(store, run_id, key, stamp)


def _parse(store: Store, run_id: str, key: tuple[str, str], stamp: tuple[int, int]) -> _Cached:
    try:
        graph = read_graph(store.root / run_id)
    except ValueError as e:
        raise NotFound(f"run {run_id!r}: unreadable graph: {e}") from None
    if graph is None:  # removed between stat and read
        raise NotFound(f"run {run_id!r} has no graph")
    idx = index(graph)
    entry = _Cached(stamp, graph, idx, _tree(graph, idx), _haystack(graph, idx))
    with _lock:
        if len(_cache) >= _MAX_CACHED and key not in _cache:
            _cache.pop(next(iter(_cache)))
        _cache[key] = entry
    return entry


def module_types(store: Store, run_id: str) -> dict[str, str]:
    """Each module's class by path, from the run's graph (cached); ``NotFound`` without a graph."""
    return {m.path: m.type for m in _load(store, run_id).tree}


def _tree(graph: Graph, idx: GraphIndex) -> list[schemas.GraphModule]:
    """Every module of the index (implicit ones included), parents before children, with the index's parents."""
    info = {m.path: m for m in graph.modules}
    children: dict[str, list[str]] = {p: [] for p in idx.paths}
    parents: list[str | None] = [None if i < 0 else idx.paths[i] for i in idx.parent.tolist()]
    for p, parent in zip(idx.paths, parents):
        if parent is not None:
            children[parent].append(p)
    out = []
    for i, (p, parent) in enumerate(zip(idx.paths, parents)):
        m = info.get(p)
        if m is not None and set(m.children) == set(children[p]):
            kids = list(m.children)  # registration order
        else:
            kids = children[p]
        out.append(
            schemas.GraphModule(
                path=p,
                type=m.type if m else "",
                n_params=m.n_params if m else 0,
                size=idx.module_views[i].size,
                parent=parent,
                children=kids,
            )
        )
    return out


def _haystack(graph: Graph, idx: GraphIndex) -> list[tuple[str, schemas.GraphMatch]]:
    out = [
        (
            f"{m.module_path}\n{m.type}".lower(),
            schemas.GraphMatch(id=m.id, kind="module", label=m.label, module_path=m.module_path, type=m.type),
        )
        for m in idx.module_views[1:]  # not the root
    ]
    out += [
        (
            f"{n.name}\n{n.target}".lower(),
            schemas.GraphMatch(id=f"n:{n.id}", kind="node", label=n.name, module_path=n.module_path, type=n.target),
        )
        for n in graph.nodes
    ]
    return out


def _search(c: _Cached, q: str, limit: int) -> list[schemas.GraphMatch]:
    """Modules and nodes whose name, path, type or op contains ``q`` (case-insensitive), in model order."""
    needle = q.lower()
    out = []
    for text, match in c.haystack:
        if needle in text:
            out.append(match)
            if len(out) >= limit:
                break
    return out


def _shape(s) -> list[int | str] | None:
    return None if s is None else list(s)


def graph_view(
    store: Store, run_id: str, expanded: Iterable[str] = (), tree: bool = True, q: str | None = None, limit: int = 50
) -> schemas.GraphView:
    """The visible nodes and merged edges when the modules in ``expanded`` are open (see ``graphs.hierarchy``).

    ``expanded`` in the answer keeps only the paths that are open (known, and every ancestor open too);
    ``tree=False`` leaves the module tree out (a client that holds it); ``q`` fills ``matches``.
    """
    c = _load(store, run_id)
    asked = list(dict.fromkeys(expanded))
    nodes_v, edges_v = c.index.collapse(asked)
    rep = c.index.representatives(asked)
    open_paths = [p for p in asked if p in c.index.pos and rep[c.index.pos[p]] < 0]
    nodes = []
    for v in nodes_v:
        common = dict(id=v.id, kind=v.kind, label=v.label, module_path=v.module_path, type=v.type, size=v.size)
        if v.kind != "node":
            nodes.append(schemas.GraphNode(**common, n_params=v.n_params))
            continue
        n = c.graph.node(v.id[2:])
        nodes.append(
            schemas.GraphNode(
                **common,
                n_params=v.n_params,
                op=n.op,
                target=n.target,
                module_type=n.module_type,
                input_shapes=[_shape(x) for x in n.input_shapes],
                input_dtypes=list(n.input_dtypes),
                output_shapes=[_shape(x) for x in n.output_shapes],
                output_dtypes=list(n.output_dtypes),
            )
        )
    edges = [
        schemas.GraphEdge(src=e.src, dst=e.dst, shape=_shape(e.shape), dtype=e.dtype, count=e.count) for e in edges_v
    ]
    return schemas.GraphView(
        method=c.graph.method,
        notes=list(c.graph.notes),
        version=c.graph.version,
        expanded=open_paths,
        nodes=nodes,
        edges=edges,
        modules=c.tree if tree else None,
        matches=_search(c, q, limit) if q else [],
    )
