"""Collapsed views of a graph: what is visible when only some module paths are expanded.

The top level (the root module) is always open. A module whose parent is open is shown as one box unless it
is expanded; inside an expanded module its own operations are shown, and its child modules as boxes. Edges
between boxes are merged (``count`` of them, the shape of the first as representative); edges inside a box
disappear. A module called twice (shared) is one box, so a collapsed view may hold a cycle.

The work per call is a few NumPy passes over the node and edge arrays, which are built once per graph.

>>> nodes, edges = collapse(graph, expanded=set())          # the top level
>>> nodes, edges = collapse(graph, expanded={"encoder", "encoder.layer.0"})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .schema import Graph, Shape


@dataclass(frozen=True)
class VisibleNode:
    """A node of a collapsed view: one operation (``kind="node"``) or one collapsed module (``"module"``)."""

    id: str  # "n:<node id>" or "m:<module path>": never ambiguous
    kind: str
    label: str  # node name, or the module's last path component
    module_path: str  # the owning module (a node) or the module itself (a box)
    type: str  # the node's target or the module's class
    size: int  # graph nodes inside (1 for a node)
    n_params: int


@dataclass(frozen=True)
class VisibleEdge:
    src: str
    dst: str
    shape: Shape | None  # the representative (first) tensor's
    dtype: str | None
    count: int  # graph edges merged into this one


class GraphIndex:
    """The arrays behind ``collapse``, built once per graph (O(nodes + edges + modules))."""

    def __init__(self, graph: Graph) -> None:
        paths = [""] + [m.path for m in graph.modules if m.path != ""]
        info = {m.path: m for m in graph.modules}
        for n in graph.nodes:  # a module path only the nodes know (an ONNX name, say) gets an implicit module
            p = n.module_path
            while p not in info and p != "":
                info[p] = None  # type: ignore[assignment]
                paths.append(p)
                p = p.rpartition(".")[0]
        # parents before children: sort by depth, stable
        depth = [0 if p == "" else p.count(".") + 1 for p in paths]
        order = sorted(range(len(paths)), key=depth.__getitem__)
        self.paths = [paths[i] for i in order]
        self.pos = {p: i for i, p in enumerate(self.paths)}
        self.depth = np.array([depth[i] for i in order], dtype=np.int32)
        self.parent = np.array([-1 if p == "" else self.pos[self._parent_path(p)] for p in self.paths], dtype=np.int64)
        self.levels = [np.flatnonzero(self.depth == d) for d in range(1, int(self.depth.max(initial=0)) + 1)]
        self.node_module = np.array([self.pos[n.module_path] for n in graph.nodes], dtype=np.int64)
        ids = {n.id: i for i, n in enumerate(graph.nodes)}
        self.edges = [e for e in graph.edges if e.src in ids and e.dst in ids]  # a damaged file: skip, not fail
        self.src = np.array([ids[e.src] for e in self.edges], dtype=np.int64)
        self.dst = np.array([ids[e.dst] for e in self.edges], dtype=np.int64)
        self.n_nodes = len(graph.nodes)
        self.node_views = [
            VisibleNode(f"n:{n.id}", "node", n.name, n.module_path, n.target, 1, n.n_params) for n in graph.nodes
        ]
        size = np.bincount(self.node_module, minlength=len(self.paths))
        for level in reversed(self.levels):  # nodes inside each module, descendants included
            np.add.at(size, self.parent[level], size[level])
        self.module_views = [
            VisibleNode(
                f"m:{p}",
                "module",
                p.rpartition(".")[2],
                p,
                info[p].type if info.get(p) else "",
                int(size[i]),
                info[p].n_params if info.get(p) else 0,
            )
            for i, p in enumerate(self.paths)
        ]

    def _parent_path(self, p: str) -> str:
        parent = p.rpartition(".")[0]
        while parent not in self.pos and parent != "":  # a gap in the module list
            parent = parent.rpartition(".")[0]
        return parent

    def representatives(self, expanded: Iterable[str]) -> np.ndarray:
        """For each module: -1 if it is open, else the index of the collapsed box that holds it."""
        m = len(self.paths)
        want = np.zeros(m, dtype=bool)
        for p in expanded:
            i = self.pos.get(p)
            if i is not None:
                want[i] = True
        is_open = np.zeros(m, dtype=bool)
        is_open[0] = True  # the root
        rep = np.full(m, -1, dtype=np.int64)
        for level in self.levels:
            par = self.parent[level]
            parent_open = is_open[par]
            is_open[level] = parent_open & want[level]
            rep[level] = np.where(parent_open, np.where(want[level], -1, level), rep[par])
        return rep

    def collapse(self, expanded: Iterable[str]) -> tuple[list[VisibleNode], list[VisibleEdge]]:
        rep = self.representatives(expanded)
        node_rep = rep[self.node_module]
        # visible index: a node's own index when its module is open, else n_nodes + the box's module index
        vis = np.where(node_rep < 0, np.arange(self.n_nodes), self.n_nodes + node_rep)
        uniq, first = np.unique(vis, return_index=True)
        shown = uniq[np.argsort(first, kind="stable")]  # in graph order (first node of each box)
        nodes = [self.node_views[v] if v < self.n_nodes else self.module_views[v - self.n_nodes] for v in shown]

        s, d = vis[self.src], vis[self.dst]
        keep = np.flatnonzero(s != d)
        span = self.n_nodes + len(self.paths)
        key = s[keep] * span + d[keep]
        _, first_e, counts = np.unique(key, return_index=True, return_counts=True)
        order = np.argsort(first_e, kind="stable")
        edges = []
        for j, c in zip(keep[first_e[order]].tolist(), counts[order].tolist()):
            e = self.edges[j]
            edges.append(VisibleEdge(self._vid(int(s[j])), self._vid(int(d[j])), e.shape, e.dtype, c))
        return nodes, edges

    def _vid(self, v: int) -> str:
        return self.node_views[v].id if v < self.n_nodes else self.module_views[v - self.n_nodes].id


def index(graph: Graph) -> GraphIndex:
    """The graph's index, built on first use and kept with the graph."""
    idx = graph._cache.get("hierarchy")
    if idx is None:
        idx = graph._cache["hierarchy"] = GraphIndex(graph)
    return idx


def collapse(graph: Graph, expanded: Iterable[str] = ()) -> tuple[list[VisibleNode], list[VisibleEdge]]:
    """The visible nodes and merged edges when only the module paths in ``expanded`` are open.

    An expanded path whose parent is collapsed changes nothing; unknown paths are ignored.
    """
    return index(graph).collapse(expanded)
