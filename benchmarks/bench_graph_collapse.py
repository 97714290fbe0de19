"""Graph view: the visible graph for one set of expanded modules, on a ≥ 10,000-node GPT-2 graph.

The graph is extracted with ``torch.export`` from a GPT-2 config with tiny width and enough layers to pass
10,000 nodes (built on the meta device: no weights). Baseline in the same run, building the same visible
graph: a plain Python loop over nodes and edges with dicts. (``networkx.quotient_graph`` took minutes on
the same graph, so it is left out.)

    .venv/bin/python -m benchmarks.bench_graph_collapse
"""

from __future__ import annotations

import time
import warnings

from benchmarks.common import best_of, table
from deepscope.graphs import Graph, collapse
from deepscope.graphs.hierarchy import GraphIndex

LAYERS = 216  # about 47 operations per block: 10,000 nodes


def gpt2_graph(layers: int = LAYERS) -> Graph:
    import torch
    from transformers import GPT2Config, GPT2Model

    from deepscope.graphs.extract import extract_graph

    cfg = GPT2Config(n_embd=8, n_layer=layers, n_head=2, vocab_size=64, n_positions=16, use_cache=False,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")  # fmt: skip
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT2Model(cfg).eval()
    return extract_graph(model, torch.zeros(1, 8, dtype=torch.long, device="meta"))


def python_loop(graph: Graph, expanded: set[str]) -> tuple[list[str], dict[tuple[str, str], int]]:
    """The obvious implementation: walk each node's path prefixes, merge edges in a dict."""

    def visible(path: str) -> str | None:
        parts = path.split(".") if path else []
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix not in expanded:
                return prefix
        return None

    group = {}
    shown: dict[str, None] = {}
    for n in graph.nodes:
        box = visible(n.module_path)
        group[n.id] = f"n:{n.id}" if box is None else f"m:{box}"
        shown.setdefault(group[n.id])
    merged: dict[tuple[str, str], int] = {}
    for e in graph.edges:
        s, d = group[e.src], group[e.dst]
        if s != d:
            merged[(s, d)] = merged.get((s, d), 0) + 1
    return list(shown), merged


def main() -> None:
    t = time.perf_counter()
    graph = gpt2_graph()
    extract_s = time.perf_counter() - t
    t = time.perf_counter()
    GraphIndex(graph)
    index_s = time.perf_counter() - t
    collapse(graph, ())  # builds the cached index once, as the server would on first request
    one = {"h", f"h.{LAYERS // 2}"}
    everything = {m.path for m in graph.modules}
    top = best_of(lambda: collapse(graph, ()), 20)
    expand = best_of(lambda: collapse(graph, one), 20)
    full = best_of(lambda: collapse(graph, everything), 5)
    loop_top = best_of(lambda: python_loop(graph, set()), 5)
    loop_expand = best_of(lambda: python_loop(graph, one), 5)
    n_top = len(collapse(graph, ())[0])
    n_one = len(collapse(graph, one)[0])
    table(
        f"Graph collapse: GPT-2, {LAYERS} layers, {len(graph.nodes):,} nodes, {len(graph.edges):,} edges "
        f"({graph.method})",
        [
            ("extract the graph (torch.export, meta device)", f"{extract_s:.1f} s", ""),
            ("build the index (once per graph)", f"{index_s * 1e3:.1f} ms", ""),
            (f"collapse: top level ({n_top} visible nodes)", f"{top * 1e3:.2f} ms", "< 20 ms"),
            (f"collapse: `h` and one layer expanded ({n_one} visible)", f"{expand * 1e3:.2f} ms", "< 20 ms"),
            ("collapse: every module expanded", f"{full * 1e3:.2f} ms", ""),
            ("baseline: Python loop, top level", f"{loop_top * 1e3:.2f} ms", ""),
            ("baseline: Python loop, one expansion", f"{loop_expand * 1e3:.2f} ms", ""),
            ("speed-up vs Python loop (one expansion)", f"{loop_expand / expand:.0f}×", ""),
        ],
    )


if __name__ == "__main__":
    main()
