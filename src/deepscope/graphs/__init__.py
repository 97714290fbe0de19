"""Computation graphs: extraction (torch.export → torch.fx → forward hooks), ONNX import, storage, and the
collapsed views of the module hierarchy that the graph view shows.

Importing this package does not import torch; ``extract_graph`` and ``graph_from_onnx`` load what they need.

>>> from deepscope.graphs import extract_graph, collapse
>>> g = extract_graph(model, example_inputs)
>>> nodes, edges = collapse(g, expanded={"encoder"})
"""

from __future__ import annotations

from typing import Any

from .hierarchy import VisibleEdge, VisibleNode, collapse
from .schema import GRAPH_VERSION, METHODS, Edge, Graph, ModuleInfo, Node, from_json, to_json
from .store import read_graph, write_graph

__all__ = [
    "GRAPH_VERSION",
    "METHODS",
    "Edge",
    "Graph",
    "ModuleInfo",
    "Node",
    "VisibleEdge",
    "VisibleNode",
    "collapse",
    "extract_graph",
    "from_json",
    "graph_from_onnx",
    "read_graph",
    "to_json",
    "write_graph",
]


def __getattr__(name: str) -> Any:  # torch and onnx load only when these are used
    if name == "extract_graph":
        from .extract import extract_graph

        return extract_graph
    if name == "graph_from_onnx":
        from .onnx_import import graph_from_onnx

        return graph_from_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
