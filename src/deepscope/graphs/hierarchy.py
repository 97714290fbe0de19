"""Collapsed views of a graph: what is visible when only some module paths are expanded.

The top level (the root module) is always open. A module whose parent is open is shown as one box unless it
is expanded; inside an expanded module its own operations are shown, and its child modules as boxes. Edges
between boxes are merged (``count`` of them, the shape of the first as representative); edges inside a box
disappear. A leaf module called more than once (a ReLU a block applies twice) is one box per call — its
operations fall into separate connected pieces, each a box (``m:<path>``, then ``m:<path>@1`` …) — so that
a collapsed view draws no false loop through it; a shared module with children stays one box.

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
        box = lambda i, k, n: VisibleNode(  # noqa: E731 - module i's box of call k, holding n graph nodes
            f"m:{self.paths[i]}" + (f"@{k}" if k else ""), "module", self.paths[i].rpartition(".")[2], self.paths[i],
            info[self.paths[i]].type if info.get(self.paths[i]) else "", n,
            info[self.paths[i]].n_params if info.get(self.paths[i]) else 0,
        )  # fmt: skip
        self.module_views = [box(i, 0, int(size[i])) for i in range(len(self.paths))]
        # leaf modules called more than once: the graph nodes of their later calls, and a box for each call
        self.call, pieces = self._calls(self.paths, self.node_module)  # per node: its extra box (-1: none)
        extra = [(int(self.node_module[n]), k) for n, k in pieces]
        self.extra_views = [box(i, k, int(np.sum(self.call == j))) for j, (i, k) in enumerate(extra)]
        # such a module stays closed (opened, its calls would share one container, drawn as a loop); its
        # module_views entry keeps every call's nodes (the module's own size), its first box only the first call's
        self.shared_leaves = {i for i, _ in extra}
        counts = np.bincount(self.node_module[self.call < 0], minlength=len(self.paths))
        self.first_call_views = {i: box(i, 0, int(counts[i])) for i in self.shared_leaves}

    def _calls(self, paths: list[str], node_module: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Per graph node of a leaf module: -1 for the first call's piece, else the index of its extra box; and per
        extra box, (its first node, its call number k >= 1). The pieces are the connected components of the
        module's nodes under the edges between them and the tensors they read in common; a module's pieces after
        the first, in graph order, are its later calls (two calls on the same tensor read as one)."""
        has_child = np.zeros(len(paths), dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        call = np.full(len(node_module), -1, dtype=np.int64)
        extra: list[tuple[int, int]] = []
        leaf_node = ~has_child[node_module]
        if not leaf_node.any():
            return call, extra
        # union-find over the edges inside one leaf module
        root = np.arange(len(node_module))

        def find(a: int) -> int:
            while root[a] != a:
                root[a] = root[root[a]]
                a = int(root[a])
            return a

        def union(a: int, b: int) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                root[max(ra, rb)] = min(ra, rb)

        inside = (node_module[self.src] == node_module[self.dst]) & leaf_node[self.src]
        for a, b in zip(self.src[inside].tolist(), self.dst[inside].tolist()):
            union(a, b)
        # operations of one call that share nothing inside (a split: x[:, :2], x[:, 2:]) read the same tensor
        reader_of: dict[tuple[int, int], int] = {}  # (outside source, module) -> a node of the module it feeds
        entering = (node_module[self.src] != node_module[self.dst]) & leaf_node[self.dst]
        for a, b in zip(self.src[entering].tolist(), self.dst[entering].tolist()):
            first = reader_of.setdefault((a, int(node_module[b])), b)
            if first != b:
                union(first, b)
        pieces: dict[int, list[int]] = {}  # module -> roots of its pieces, in graph order
        for n in np.flatnonzero(leaf_node).tolist():
            r = find(n)
            seen = pieces.setdefault(int(node_module[n]), [])
            if r not in seen:
                seen.append(r)
        slot: dict[int, int] = {}
        for roots in pieces.values():
            for k, r in enumerate(roots[1:], start=1):
                slot[r] = len(extra)
                extra.append((r, k))
        if slot:
            for n in np.flatnonzero(leaf_node).tolist():
                call[n] = slot.get(find(n), -1)
        return call, extra

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
            if i in self.shared_leaves:
                continue  # a leaf called more than once stays one box per call
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
        # visible index: a node's own index when its module is open, else n_nodes + the box's module index, or,
        # for a later call of a collapsed leaf module, n_nodes + modules + its extra box
        vis = np.where(node_rep < 0, np.arange(self.n_nodes), self.n_nodes + node_rep)
        later = (self.call >= 0) & (node_rep == self.node_module)
        vis[later] = self.n_nodes + len(self.paths) + self.call[later]
        uniq, first = np.unique(vis, return_index=True)
        shown = uniq[np.argsort(first, kind="stable")]  # in graph order (first node of each box)
        nodes = [self._view(int(v)) for v in shown]

        s, d = vis[self.src], vis[self.dst]
        keep = np.flatnonzero(s != d)
        span = self.n_nodes + len(self.paths) + len(self.extra_views)
        key = s[keep] * span + d[keep]
        _, first_e, counts = np.unique(key, return_index=True, return_counts=True)
        order = np.argsort(first_e, kind="stable")
        edges = []
        for j, c in zip(keep[first_e[order]].tolist(), counts[order].tolist()):
            e = self.edges[j]
            edges.append(VisibleEdge(self._vid(int(s[j])), self._vid(int(d[j])), e.shape, e.dtype, c))
        return nodes, edges

    def _view(self, v: int) -> VisibleNode:
        if v < self.n_nodes:
            return self.node_views[v]
        v -= self.n_nodes
        if v >= len(self.paths):
            return self.extra_views[v - len(self.paths)]
        return self.first_call_views.get(v) or self.module_views[v]

    def _vid(self, v: int) -> str:
        return self._view(v).id


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
