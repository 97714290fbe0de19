"""The graph artifact: ``<run_dir>/artifacts/graph/graph.json`` (see docs/store-format.md, "Artifacts: graph")."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..store.runmeta import write_json_atomic
from .schema import Graph, from_dict, to_dict

GRAPH_DIR = Path("artifacts") / "graph"
GRAPH_FILE = "graph.json"


def graph_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / GRAPH_DIR / GRAPH_FILE


def write_graph(run_dir: str | os.PathLike[str], graph: Graph) -> Path:
    """Write (atomically replace) the run's graph; returns the file's path."""
    path = graph_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, to_dict(graph))
    return path


def read_graph(run_dir: str | os.PathLike[str]) -> Graph | None:
    """The run's graph, or None when it has none. A damaged file or a newer format raises ``ValueError``."""
    path = graph_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"deepscope: {path} is not valid JSON: {e}") from None
    return from_dict(data)
