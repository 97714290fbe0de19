"""Projection view in headless Chromium on 1,000,000 instances: the first render of the scatter.

The store holds a real ``deepscope.analyze`` of a tiny MLP (8 → 16 → 10) over 1M synthetic inputs drawn from ten
Gaussian blobs (labels = blob), with its PCA. Timings are the page's own (``performance.now()``):

- page → points: from navigation start until the 1M points have been painted (the app boots, loads the
  summary, asks for the projection and draws it — on the CPU first, at this size — in one colour if the
  instance table, which the colours need, has not arrived yet);
- page → WebGL frame: until regl-scatterplot's first frame of the points (uploaded, drawn through SwiftShader),
  from when pan and zoom work;
- page → colours: until every point has been painted in its class colour;
- page → index: until hover, click and the lasso can find the points (the k-d tree, built in a worker);
- request → points: from the projection's request until the points have been painted;
- baseline, same page: fetching and decoding the same 1M-point buffer and nothing else (``fetch`` →
  ``Float32Array``), best of 3.

Checks on the first load: the CPU picture and the WebGL frame that replaces it agree on almost every pixel;
and once the index is in, a lasso (a rectangle, through the plot's own lasso search) picks exactly the points
inside it — the index built in the worker is the one the plot searches.

Goal: first render of 1M points < 2 s.

    .venv/bin/python -m benchmarks.bench_scatter [--rows 1000000] [--loads 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tests.browser.browser_helpers import CHROMIUM, CHROMIUM_ARGS
from torch import nn

import deepscope
from benchmarks.common import table
from deepscope.server.launch import BackgroundServer

LAYER = "1"  # the hidden ReLU: 16 neurons


def write_store(root: Path, rows: int) -> str:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 8, generator=g) * 3
    labels = torch.randint(0, 10, (rows,), generator=g)
    x = centres[labels] + torch.randn(rows, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10))
    data = torch.utils.data.TensorDataset(x, labels)
    with deepscope.init(project="bench", name=f"scatter-{rows}", dir=root) as run:
        deepscope.analyze(model, data, layers=[LAYER], labels=labels, run=run, batch_size=65536, progress=False)
        return run.id


LASSO = """() => {
  const a = window.__deepscope.analysis;
  const c = a.projectionCoords();
  const [x0, y0, x1, y1] = [-0.31, -0.17, 0.23, 0.41];
  a.projectionLasso([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]);
  const want = [];
  for (let i = 0; i < c.x.length; i++) if (c.x[i] > x0 && c.x[i] < x1 && c.y[i] > y0 && c.y[i] < y1) want.push(i);
  return want;
}"""


def first_render(browser, url: str, rows: int, lasso: bool = False) -> dict:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})  # a fresh HTTP cache each load
    page = ctx.new_page()
    page.goto(url)
    ready = "(n) => { const p = window.__deepscope?.analysis?.projection?.(); return p && p.points === n && p.%s; }"
    for state in ("drawn", "colored", "indexed"):
        page.wait_for_function(ready % state, arg=rows, timeout=120_000, polling=10)
    timing = page.evaluate("() => window.__deepscope.analysis.projection().timing")
    if lasso:
        same = page.evaluate("() => window.__deepscope.analysis.projectionPreview()")
        assert same and same["preview"] > 10_000 and same["agree"] > 0.9, same
        print(f"CPU picture against the WebGL frame: {same['agree']:.1%} of the points' pixels alike, {same}")
        # the plot's lasso search, over the index from the worker, against a scan of the coordinates
        want = page.evaluate(LASSO)
        page.wait_for_function("() => window.__deepscope.analysis.projection().lassoCount > 0", timeout=60_000)
        got = page.evaluate("() => window.__deepscope.analysis.projection().lasso")
        assert len(want) > 1000 and got == want, (len(got), len(want))
        print(f"lasso over {rows:,} points: {len(got):,} picked, exactly those inside")
    ctx.close()
    return timing


def fetch_decode(browser, base: str, api: str) -> float:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(base)
    times = []
    for _ in range(3):
        ms = page.evaluate(
            """async (url) => { const t = performance.now(); const xy = new Float32Array(await (await fetch(url,
            { cache: "no-store" })).arrayBuffer()); return xy.length ? performance.now() - t : -1; }""",
            api,
        )
        times.append(ms)
    ctx.close()
    return min(times)


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--loads", type=int, default=3)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-scatter-"))
    t = time.perf_counter()
    run = write_store(root, args.rows)
    print(f"analysed {args.rows:,} instances in {time.perf_counter() - t:.1f} s")
    server = BackgroundServer(root, port=0).start()
    try:
        url = f"{server.url}?tab=analysis&runs={run}&run={run}&alayer={LAYER}"
        api = f"{server.url}api/runs/{run}/analysis/projection?layer={LAYER}&method=pca"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            first_render(browser, url, args.rows, lasso=True)  # also warms the server's reader and the OS caches
            loads = [first_render(browser, url, args.rows) for _ in range(args.loads)]
            base = fetch_decode(browser, server.url, api)
            browser.close()
    finally:
        server.stop()

    def med(f) -> float:
        return statistics.median(f(t) for t in loads)

    page_ms = med(lambda t: t["shownAt"])
    request_ms = med(lambda t: t["shownAt"] - t["requestedAt"])
    n = f"{args.rows:,}"
    table(
        f"Projection scatter, {n} points (median of {args.loads} page loads)",
        [
            ("page → points on screen", f"{page_ms / 1000:.2f} s", "< 2 s"),
            ("page → first WebGL frame (pan, zoom)", f"{med(lambda t: t['drawnAt']) / 1000:.2f} s", ""),
            ("page → points in their colours", f"{med(lambda t: t['coloredAt']) / 1000:.2f} s", ""),
            ("page → index ready (hover, click, lasso)", f"{med(lambda t: t['indexedAt']) / 1000:.2f} s", ""),
            ("projection request → points on screen", f"{request_ms:.0f} ms", ""),
            ("  of which fetch + decode + scale to the view", f"{med(lambda t: t['fetch']):.0f} ms", ""),
            ("  of which the CPU picture of the points", f"{med(lambda t: t['raster']):.0f} ms", ""),
            ("points arrived → first WebGL frame", f"{med(lambda t: t['firstDraw']):.0f} ms", ""),
            ("index built in the worker", f"{med(lambda t: t['index']):.0f} ms", ""),
            ("baseline: fetch + decode the same buffer alone", f"{base:.0f} ms", ""),
            ("request → points ÷ baseline", f"{request_ms / base:.1f}×", ""),
        ],
    )


if __name__ == "__main__":
    main()
