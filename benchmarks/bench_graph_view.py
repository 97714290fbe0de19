"""Graph view in headless Chromium on a ≥ 10,000-node graph: first paint, and expanding a module.

The graph is GPT-2 with 216 layers extracted with ``torch.export`` on the meta device (the same graph as
``bench_graph_collapse``), written with ``deepscope.graphs.store.write_graph``. Timings are the page's own
(``performance.now()``): first paint from script start to the first drawn frame; an expansion from the click
to the redrawn frame (request, collapse on the server, per-level layout in the worker, canvas draw).
Goals: first paint < 1 s, expanding a module < 200 ms.

    .venv/bin/python -m benchmarks.bench_graph_view
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from tests.browser.browser_helpers import CHROMIUM, CHROMIUM_ARGS

import deepscope
from benchmarks.bench_graph_collapse import LAYERS, gpt2_graph
from benchmarks.common import table
from deepscope.graphs.store import write_graph
from deepscope.server.launch import BackgroundServer

STATE = "() => JSON.parse(JSON.stringify(window.__deepscope.graph()))"


def expand(page, path: str) -> tuple[float, list[dict]]:
    """Click the box of ``path``; the page's click-to-frame time and the levels it laid out."""
    before = page.evaluate(STATE)
    box = next(n for n in before["nodes"] if n["id"] == f"m:{path}")
    canvas = page.locator("canvas").bounding_box()
    page.mouse.click(canvas["x"] + box["sx"], canvas["y"] + box["sy"])
    page.wait_for_function(
        "([p, last]) => window.__deepscope.graph().expanded.includes(p) && "
        "window.__deepscope.graph().lastExpand !== last",
        arg=[path, before["lastExpand"]],
        polling=10,
    )
    page.wait_for_timeout(50)
    after = page.evaluate(STATE)
    return after["lastExpand"], after["levels"]


def focus(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(
        "() => window.__deepscope.graph && window.__deepscope.graph().firstPaint !== null", polling=10
    )
    page.wait_for_timeout(200)


def main() -> None:
    from playwright.sync_api import sync_playwright

    graph = gpt2_graph()
    root = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    with deepscope.init(project="bench", name="gpt2", dir=root) as run:
        write_graph(run.dir, graph)
    server = BackgroundServer(root, port=0).start()
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            paints, expands_h, expands_block, expands_attn = [], [], [], []
            levels_seen: list[dict] = []
            for _ in range(3):
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                # a fresh server cache each time would cost the parse once: measure the warm server, as in use
                page.goto(f"{server.url}?tab=graph&run={run.id}")
                page.wait_for_function(
                    "() => window.__deepscope.graph && window.__deepscope.graph().firstPaint !== null", polling=10
                )
                paints.append(page.evaluate(STATE)["firstPaint"])
                ms, lv = expand(page, "h")
                expands_h.append(ms)
                levels_seen += lv
                # a link that selects a layer centres it: open a block, then its attention, from such links
                block = f"h.{LAYERS // 2 + len(expands_block)}"
                focus(page, f"{server.url}?tab=graph&run={run.id}&gx=h&layer={block}")
                ms, lv = expand(page, block)
                expands_block.append(ms)
                levels_seen += lv
                focus(page, f"{server.url}?tab=graph&run={run.id}&gx=h&gx={block}&layer={block}.attn")
                ms, lv = expand(page, f"{block}.attn")
                expands_attn.append(ms)
                levels_seen += lv
                page.close()
            browser.close()
    finally:
        server.stop()
    by_engine: dict[str, list[dict]] = {}
    for lv in levels_seen:
        by_engine.setdefault(lv["engine"], []).append(lv)
    med = statistics.median
    rows += [
        ("first paint, cold server (parses graph.json, builds the index)", f"{paints[0]:.0f} ms", ""),
        ("first paint (top level), warm server, median of the next 2", f"{med(paints[1:]):.0f} ms", "< 1,000 ms"),
        (f"expand `h` ({LAYERS} blocks in one level), median", f"{med(expands_h):.0f} ms", "< 200 ms"),
        ("expand one block inside it, median", f"{med(expands_block):.0f} ms", "< 200 ms"),
        ("expand that block's attention, median", f"{med(expands_attn):.0f} ms", "< 200 ms"),
    ]
    for engine, lvs in sorted(by_engine.items()):
        sizes = sorted({lv["n"] for lv in lvs})
        rows.append(
            (f"layout in the worker, {engine} (level sizes {sizes[0]}–{sizes[-1]})",
             f"median {med([lv['ms'] for lv in lvs]):.1f} ms, max {max(lv['ms'] for lv in lvs):.1f} ms", "")
        )  # fmt: skip
    table(f"Graph view: GPT-2, {LAYERS} layers, {len(graph.nodes):,} nodes, {len(graph.edges):,} edges", rows)


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t:.0f} s)")
