"""The neuron activation matrix and the projection in headless Chromium, over a real analysed run (a small CNN on
MNIST digits), checked against NumPy over the stored activations: class means, column orders, top instances,
projection coordinates, lasso subsets, and a UMAP computed in the background."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator

import numpy as np
import pytest
from analysis_data import CLASS_NAMES, Analysed, write_analysed
from browser_helpers import NEURON_AT, point_until, wait_for

from deepscope.analyses import read
from deepscope.analyses.lasso import inside_polygon
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

LAYER = "features.10"  # the hidden ReLU layer: 128 neurons
TOP_K = 24  # what the matrix asks for
SELECTED_NEURON = "([n]) => window.__deepscope.analysis.matrix().selectedNeuron === n"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Analysed:
    return write_analysed(tmp_path_factory.mktemp("analysed-neurons"))


@pytest.fixture(scope="module")
def server_url(analysed, built_app) -> Iterator[str]:
    s = BackgroundServer(analysed.root, port=0).start()
    yield s.url
    s.stop()


@pytest.fixture(scope="module")
def reader(analysed):
    return read(analysed.root / analysed.run)


def open_analysis(page, base: str, run: str, query: str = "") -> None:
    page.goto(f"{base}?tab=analysis&runs={run}&run={run}&alayer={LAYER}{'&' + query if query else ''}")
    page.wait_for_function("() => window.__deepscope?.analysis?.matrix !== undefined", timeout=15_000)


def held(page, name: str):
    return page.evaluate(f"() => JSON.parse(JSON.stringify(window.__deepscope.analysis.{name}?.() ?? null))")


def matrix_ready(page, rows: int = 10) -> dict:
    wait_for(
        page,
        "([layer, rows]) => { const m = window.__deepscope.analysis.matrix(); "
        "return m.layer === layer && m.rows.length === rows && !m.loading && m.width > 0; }",
        [LAYER, rows],
        timeout=15_000,
    )
    return held(page, "matrix")


def projection_ready(page, method: str = "pca", timeout: float = 20_000) -> dict:
    wait_for(
        page,
        "(m) => { const p = window.__deepscope.analysis.projection?.(); return p && p.method === m && p.drawn; }",
        method,
        timeout=timeout,
    )
    return held(page, "projection")


def class_means(reader) -> tuple[np.ndarray, np.ndarray]:
    x = reader.matrix(LAYER).astype(np.float64)
    labels = reader.instances().column("label").to_numpy()
    means = np.stack([x[labels == c].mean(0) for c in range(10)])
    return means, np.bincount(labels, minlength=10)


def ndc(xy: np.ndarray) -> np.ndarray:
    """What the view draws: coordinates centred and scaled into [-0.95, 0.95], aspect kept."""
    lo, hi = xy.min(0), xy.max(0)
    return (xy - (lo + hi) / 2) * (0.95 / ((hi - lo).max() / 2))


def test_matrix_rows_sorting_and_top_instances(page, analysed, server_url, reader):
    open_analysis(page, server_url, analysed.run)
    m = matrix_ready(page)
    means, counts = class_means(reader)
    assert m["rows"] == CLASS_NAMES and m["keys"] == [f"class:{c}" for c in range(10)]
    assert m["counts"] == counts.tolist() and m["neurons"] == 128
    np.testing.assert_allclose(m["values"], means[0], rtol=1e-5, atol=1e-6)
    assert m["order"] == list(range(20)) and m["sortedBy"] is None
    assert page.locator("[data-testid=color-legend]").first.is_visible()
    # the column of counts beside the row names says what it counts, in its header and in each count's tooltip
    head = page.get_by_test_id("matrix-head")
    rows_by = head.get_by_label("Rows")
    assert rows_by.input_value() == "label" and head.locator(".cnt").inner_text() == "instances"
    assert rows_by.locator("option").all_inner_texts() == ["true class", "predicted class", "odd", "note"]
    assert "instances" in head.locator(".cnt").get_attribute("title")
    count = page.locator("[data-row='class:3'] .cnt")
    assert count.inner_text() == f"{counts[3]:,}" and count.get_attribute("title") == f"{counts[3]:,} instances"
    name_box, head_box = count.bounding_box(), head.locator(".cnt").bounding_box()
    assert abs((name_box["x"] + name_box["width"]) - (head_box["x"] + head_box["width"])) < 2  # right-aligned

    # a row header orders the neurons by that row, highest first; a second click restores model order
    page.locator("[data-row='class:3']").click()
    wait_for(page, "() => window.__deepscope.analysis.matrix().sortedBy === 'class:3'")
    m = held(page, "matrix")
    np.testing.assert_allclose(means[3][m["order"]], np.sort(means[3])[::-1][:20], rtol=1e-5, atol=1e-6)
    assert "asort=class%3A3" in page.url or "asort=class:3" in page.url
    page.locator("[data-row='class:3']").click()
    wait_for(page, "() => window.__deepscope.analysis.matrix().sortedBy === null")
    assert held(page, "matrix")["order"] == list(range(20))

    # a cell selects its neuron; the neuron's top instances are listed, highest first, with their digits
    neuron = int(np.argmax((reader.matrix(LAYER) > 0).sum(0)))  # the most active one: no ties among its top
    point_until(page, NEURON_AT, [neuron, 128, 20], SELECTED_NEURON)
    tip = page.locator(".tip").first
    tip.wait_for()
    assert f"neuron {neuron}: " in tip.inner_text() and " ± " in tip.inner_text()  # a class row: mean ± std
    mean, std = re.search(r"neuron \d+: (\S+) ± (\S+)", tip.inner_text()).groups()  # to one decimal place
    assert len(mean.partition(".")[2]) == len(std.partition(".")[2]) and len(std.replace(".", "").lstrip("0")) == 2
    wait_for(page, "(n) => window.__deepscope.analysis.matrixTop().neuron === n", neuron)
    top = held(page, "matrixTop")
    column = reader.matrix(LAYER)[:, neuron]
    assert top["indices"] == np.argsort(-column, kind="stable")[:TOP_K].tolist()
    np.testing.assert_allclose(top["values"], np.sort(column)[::-1][:TOP_K], rtol=1e-5)
    items = page.locator("[data-testid=neuron-top] button.item")
    assert items.count() == TOP_K
    wait_for(page, "() => document.querySelectorAll('[data-testid=neuron-top] img').length >= 24", timeout=15_000)
    second = top["indices"][1]
    items.nth(1).click()
    wait_for(page, "(i) => window.__deepscope.analysis.matrix && new URL(location.href).searchParams.get('inst') == i",
             second)  # fmt: skip


def test_matrix_rows_per_value_of_a_metadata_column(page, analysed, server_url, reader):
    """Rows → a metadata column: a row per value (most frequent first), each the mean of its instances; the choice
    is in the URL, a row orders the neurons, and the class rows come back with the classes."""
    open_analysis(page, server_url, analysed.run)
    matrix_ready(page)
    page.get_by_test_id("matrix-head").get_by_label("Rows").select_option("odd")
    m = matrix_ready(page, rows=2)
    odd = reader.instances().column("odd").to_numpy(zero_copy_only=False)
    counts = {"true": int(odd.sum()), "false": int((~odd).sum())}
    order = sorted(counts, key=lambda k: (-counts[k], k))
    assert m["groupBy"] == "column:odd" and m["rows"] == order and m["counts"] == [counts[k] for k in order]
    x = reader.matrix(LAYER).astype(np.float64)
    np.testing.assert_allclose(m["values"], x[odd == (order[0] == "true")].mean(0), rtol=1e-5, atol=1e-6)
    assert "arows=column%3Aodd" in page.url or "arows=column:odd" in page.url
    key = m["keys"][1]
    page.locator(f"[data-row='{key}']").click()
    wait_for(page, "(k) => window.__deepscope.analysis.matrix().sortedBy === k", key)
    assert page.locator(f"[data-row='{key}']").get_attribute("title").startswith(f"odd = {order[1]} · ")
    page.reload()  # the URL keeps the rows
    page.wait_for_function("() => window.__deepscope?.analysis?.matrix !== undefined", timeout=15_000)
    m = matrix_ready(page, rows=2)
    assert m["groupBy"] == "column:odd" and m["sortedBy"] == key
    page.get_by_test_id("matrix-head").get_by_label("Rows").select_option("label")
    m = matrix_ready(page)
    assert m["rows"] == CLASS_NAMES and m["sortedBy"] is None and "arows" not in page.url


def test_matrix_subset_and_pinned_rows(page, analysed, server_url, reader):
    open_analysis(page, server_url, analysed.run, 'subs=[{"name":"odd","where":{"odd":true}}]&pin=5,42&sub=odd')
    m = matrix_ready(page, rows=13)
    assert m["rows"][10:] == ["odd", "#5", "#42"] and m["keys"][10:] == ["subset:odd", "instance:5", "instance:42"]
    assert m["selectedRows"] == ["odd"]
    x = reader.matrix(LAYER).astype(np.float64)
    odd = np.arange(len(x)) % 2 == 1
    assert m["counts"][10:] == [int(odd.sum()), 1, 1]
    page.locator("[data-row='subset:odd']").click()
    wait_for(page, "() => window.__deepscope.analysis.matrix().sortedBy === 'subset:odd'")
    order = held(page, "matrix")["order"]
    np.testing.assert_allclose(x[odd].mean(0)[order], np.sort(x[odd].mean(0))[::-1][:20], rtol=1e-5, atol=1e-6)
    page.locator("[data-row='instance:42']").click()
    wait_for(page, "() => window.__deepscope.analysis.matrix().sortedBy === 'instance:42'")
    order = held(page, "matrix")["order"]
    np.testing.assert_allclose(x[42][order], np.sort(x[42])[::-1][:20], rtol=1e-6)


def settled(page, locator) -> dict:
    """The element's box once it stays put for 300 ms (views above it may still be growing)."""
    box = None
    while box != (box := locator.bounding_box()):
        page.wait_for_timeout(300)
    return box


def non_white(png: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    img = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
    return int((img.sum(-1) < 700).sum())


def draw_lasso(page, path: list[tuple[float, float]]) -> None:
    """Drags the mouse along `path` in lasso mode, slowly: the lasso samples the path at most every 10 ms."""
    page.get_by_role("button", name="Lasso").click()
    page.mouse.move(*path[0])
    page.mouse.down()
    at = path[0]
    for corner in path[1:]:
        for t in np.linspace(0, 1, 13)[1:]:
            page.mouse.move(at[0] + (corner[0] - at[0]) * t, at[1] + (corner[1] - at[1]) * t)
            page.wait_for_timeout(15)
        at = corner
    page.mouse.up()


def test_projection_draws_pca_colours_and_lasso(page, analysed, server_url, reader):
    open_analysis(page, server_url, analysed.run)
    p = projection_ready(page)
    assert p["points"] == 1000 and p["colorBy"] == "label" and not p["unsupported"]
    coords = held(page, "projectionCoords")
    want = ndc(reader.projection(LAYER, "pca")[:, :2].astype(np.float64))
    np.testing.assert_allclose(np.c_[coords["x"], coords["y"]], want, rtol=1e-4, atol=1e-5)
    canvas = page.locator("[data-testid=projection]")
    assert non_white(canvas.screenshot()) > 2000  # WebGL drew the points
    ratio = reader.projection_info(LAYER)["pca"]["explained_variance_ratio"]  # the shares PCA computed, as said
    said = page.get_by_test_id("pca-explained").inner_text()
    assert said == f"PC1 {ratio[0] * 100:.1f} % · PC2 {ratio[1] * 100:.1f} % of the variance"

    for colour in ("prediction", "correct", "label"):
        page.get_by_label("Colour by").select_option(colour)
        wait_for(page, "(c) => window.__deepscope.analysis.projection().colorBy === c", colour)
    # by neuron: select one in the matrix, then colour by its activation
    matrix_ready(page)
    point_until(page, NEURON_AT, [5, 128, 10], SELECTED_NEURON)
    wait_for(page, "() => window.__deepscope.analysis.projection().focusCount > 0")  # its top instances, in focus
    page.get_by_label("Colour by").select_option("neuron")
    wait_for(page, "() => window.__deepscope.analysis.projection().colorBy === 'neuron'")
    assert page.locator(".proj [data-testid=color-legend]").is_visible()
    # coloured by that neuron, no point fades: the colours are what is shown
    wait_for(page, "() => window.__deepscope.analysis.projection().focusCount === 0")
    page.get_by_label("Colour by").select_option("label")

    # a lasso drawn with the mouse becomes a subset of exactly the points inside (once the layout has settled:
    # the neuron's top instances above push the projection down; and once the worker has indexed the points)
    wait_for(page, "() => window.__deepscope.analysis.matrixTop().neuron === 5")
    wait_for(page, "() => window.__deepscope.analysis.projection().indexed")
    cb = settled(page, canvas)
    left, right = cb["x"] + cb["width"] * 0.3, cb["x"] + cb["width"] * 0.7
    top, bottom = cb["y"] + cb["height"] * 0.3, cb["y"] + cb["height"] * 0.7
    # where the points are now: the new subset adds a matrix row, which moves the projection afterwards
    screen = np.array(page.evaluate("() => window.__deepscope.analysis.projectionScreen([...Array(1000).keys()])"))
    draw_lasso(page, [(left, top), (right, top), (right, bottom), (left, bottom), (left, top + 2)])
    wait_for(page, "() => window.__deepscope.analysis.projection().lassoCount > 0")
    p = held(page, "projection")
    margin = 3  # the lasso's path is sampled: points this close to its edge may fall either way
    inside = (screen[:, 0] > left + margin) & (screen[:, 0] < right - margin)
    inside &= (screen[:, 1] > top + margin) & (screen[:, 1] < bottom - margin)
    outside = (screen[:, 0] < left - margin) | (screen[:, 0] > right + margin)
    outside |= (screen[:, 1] < top - margin) | (screen[:, 1] > bottom + margin)
    picked = np.zeros(1000, bool)
    picked[p["lasso"]] = True
    assert inside.sum() > 10
    assert picked[inside].all(), (screen[inside & ~picked] - [left, top]).round().tolist()
    assert not picked[outside].any(), np.flatnonzero(outside & picked)
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.some((s) => s.name === 'lasso')")
    state = held(page, "state")
    # a filter: its polygon, in the projection's coordinates, decided by the server — the same instances
    assert {"name": "lasso", "count": p["lassoCount"], "filter": True} in state["subsets"]
    wait_for(page, "(n) => window.__deepscope.analysis.projection().focusCount === n", p["lassoCount"])
    # the subset is a row of the matrix too
    wait_for(page, "() => window.__deepscope.analysis.matrix().keys.includes('subset:lasso')")
    assert "lasso" in urllib.parse.unquote(page.url)  # kept in the link: a reload selects it again
    # its polygon simplified (a few vertices of the many drawn, coordinates rounded), the same points inside it
    subs = json.loads(urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["subs"][0])
    polygon = np.array(next(s["where"]["lasso"]["polygon"] for s in subs if s["name"] == "lasso"))
    vertices = held(page, "projection")["lassoVertices"]
    assert vertices["kept"] == len(polygon) <= vertices["drawn"] / 3, vertices
    assert len(json.dumps(polygon.tolist(), separators=(",", ":"))) < 40 * len(polygon)  # rounded, not 7 digits
    xy = reader.projection(LAYER, "pca")[:, :2]
    assert np.flatnonzero(inside_polygon(xy, polygon)).tolist() == p["lasso"]
    page.reload()
    wait_for(page, "() => window.__deepscope.analysis?.state?.().subsets?.some((s) => s.name === 'lasso')")
    assert {"name": "lasso", "count": p["lassoCount"], "filter": True} in held(page, "state")["subsets"]
    projection_ready(page)

    # clicking a point selects its instance
    settled(page, canvas)
    screen = np.array(page.evaluate("() => window.__deepscope.analysis.projectionScreen([...Array(1000).keys()])"))
    assert screen[:, 1].max() < page.viewport_size["height"]  # the projection fits the window
    i = int(np.flatnonzero(inside)[0])
    # a click that lands while the points are being redrawn is ignored: click again
    point_until(page, "(i) => window.__deepscope.analysis.projectionScreen([i])[0]", i,
                "() => window.__deepscope.analysis.projection().selected !== null")  # fmt: skip
    screen = np.array(page.evaluate("() => window.__deepscope.analysis.projectionScreen([...Array(1000).keys()])"))
    j = held(page, "projection")["selected"]
    assert np.hypot(*(screen[j] - screen[i])) < 6  # the point under the pointer (or one drawn over it)


def test_a_lasso_closed_on_a_point_makes_a_subset_and_selects_nothing(page, analysed, server_url):
    """A loop that ends where it began, on a point of the dense cloud: its release is no click on that point."""
    open_analysis(page, server_url, analysed.run)
    projection_ready(page)
    wait_for(page, "() => window.__deepscope.analysis.projection().indexed")
    cb = settled(page, page.locator("[data-testid=projection]"))
    screen = np.array(page.evaluate("() => window.__deepscope.analysis.projectionScreen([...Array(1000).keys()])"))
    start = tuple(screen[np.argmin(np.hypot(*(screen - np.median(screen, 0)).T))])  # a point amid the cloud
    w, h = cb["width"] * 0.15, cb["height"] * 0.15
    draw_lasso(page, [start, (start[0] + w, start[1]), (start[0] + w, start[1] + h), (start[0], start[1] + h), start])
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.some((s) => s.name === 'lasso')")
    page.wait_for_timeout(300)  # a click that selected the point would have done so by now
    assert held(page, "projection")["selected"] is None
    assert "inst=" not in page.url


def test_a_link_to_a_projection_not_computed_says_so_and_shows_pca(page, analysed, server_url):
    """A link asks for t-SNE on a layer without one: PCA is shown, a note says so and offers to compute t-SNE, and
    the link names what is shown."""
    page.goto(f"{server_url}?tab=analysis&runs={analysed.run}&run={analysed.run}&alayer=features.4&proj=tsne")
    wait_for(page, "() => window.__deepscope?.analysis?.projection?.()?.drawn", timeout=20_000)
    note = page.get_by_test_id("projection-missing")
    note.wait_for()
    assert note.inner_text().startswith("No t-SNE of this layer yet: showing PCA.")
    assert note.get_by_role("button", name="Compute t-SNE").is_visible()
    p = held(page, "projection")
    assert p["method"] == "pca" and p["wanted"] == "pca"
    wait_for(page, "() => !location.search.includes('proj=')")
    page.locator("[data-method=pca]").wait_for()
    assert page.locator(".methods button.on").get_attribute("data-method") == "pca"
    note.get_by_role("button", name="Dismiss").click()
    assert note.count() == 0


def test_umap_computes_in_the_background_and_shows_when_ready(page, analysed, server_url, reader):
    open_analysis(page, server_url, analysed.run)
    projection_ready(page)
    page.locator("[data-method=umap]").click()
    assert "proj=umap" in page.url
    p = projection_ready(page, "umap", timeout=180_000)
    assert p["points"] == 1000
    coords = held(page, "projectionCoords")
    want = ndc(read(analysed.root / analysed.run).projection(LAYER, "umap")[:, :2].astype(np.float64))
    np.testing.assert_allclose(np.c_[coords["x"], coords["y"]], want, rtol=1e-4, atol=1e-5)


def test_large_projection_drawn_on_the_cpu_first_then_indexed_for_the_lasso(page, built_app, tmp_path):
    """120,000 points: drawn on the CPU before WebGL (the two pictures alike), the index built in the worker with
    32-bit ids (over 65,536 points), and a lasso through the plot's own search picks exactly the points inside."""
    import torch
    from torch import nn

    import deepscope

    rows = 120_000
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (rows,), generator=g)
    x = (torch.randn(10, 8, generator=g) * 3)[labels] + torch.randn(rows, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10))
    with deepscope.init(project="browser", name="large-projection", dir=tmp_path) as run:
        data = torch.utils.data.TensorDataset(x, labels)
        deepscope.analyze(model, data, layers=["1"], labels=labels, run=run, batch_size=65536, progress=False)
    server = BackgroundServer(tmp_path, port=0).start()
    try:
        page.goto(f"{server.url}?tab=analysis&runs={run.id}&run={run.id}&alayer=1")
        for state in ("drawn", "colored", "indexed"):
            wait_for(page, f"() => window.__deepscope.analysis.projection?.()?.{state}", timeout=60_000)
        p = held(page, "projection")
        assert p["points"] == rows and p["colorBy"] == "label"
        t = p["timing"]
        assert 0 < t["shownAt"] <= t["drawnAt"] and t["coloredAt"] > 0 and t["indexedAt"] >= t["drawnAt"]
        same = held(page, "projectionPreview")
        assert same["preview"] > 10_000 and abs(same["drawn"] - same["preview"]) < 0.05 * same["preview"], same
        assert same["agree"] > 0.9, same  # pixels at the edge of a square may fall either way

        coords = held(page, "projectionCoords")
        cx, cy = np.asarray(coords["x"], np.float32), np.asarray(coords["y"], np.float32)
        x0, y0, x1, y1 = -0.3, -0.2, 0.25, 0.4
        page.evaluate("(p) => window.__deepscope.analysis.projectionLasso(p)", [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        wait_for(page, "() => window.__deepscope.analysis.projection().lassoCount > 0")
        want = np.flatnonzero((cx > x0) & (cx < x1) & (cy > y0) & (cy < y1))
        assert len(want) > 1000
        assert held(page, "projection")["lasso"] == want.tolist()
    finally:
        server.stop()


def test_top_instances_of_the_default_layer(page, analysed, server_url, reader):
    """Without a layer in the URL the views show the default one (the last before the output): a neuron clicked
    there lists its top instances too (they once waited for a layer named in the URL, forever)."""
    page.goto(f"{server_url}?tab=analysis&runs={analysed.run}&run={analysed.run}")
    wait_for(
        page,
        "() => { const m = window.__deepscope?.analysis?.matrix?.(); "
        "return m && m.layer && m.width > 0 && !m.loading; }",
        timeout=15_000,
    )
    layer = held(page, "matrix")["layer"]
    assert "alayer" not in page.url
    x = reader.matrix(layer)
    width = x.shape[1]
    live = int(np.flatnonzero((x > x.min(0)).sum(0) >= 24)[2])  # a neuron with a strip of cards (a dead one: none)
    point_until(page, NEURON_AT, [live, min(width, 128), 20], SELECTED_NEURON)
    neuron = held(page, "matrix")["selectedNeuron"]
    wait_for(page, "(n) => window.__deepscope.analysis.matrixTop()?.neuron === n", neuron, timeout=15_000)
    column = reader.matrix(layer)[:, neuron]
    assert held(page, "matrixTop")["values"][0] == pytest.approx(column.max(), rel=1e-5)
    # a strip wider than its panel fades at its right edge, and a button counts the cards not wholly in view and
    # pages to them (the first of them becomes the first in view), until scrolled to its end
    page.set_viewport_size({"width": 1000, "height": 800})
    strip = page.locator("[data-testid=neuron-top] .items")
    wait_for(page, "() => document.querySelector('[data-testid=neuron-top] .items')?.dataset.more === 'true'")
    cut = """(el) => [...el.children].map((c, k) => [c, k])
        .filter(([c]) => c.offsetLeft + c.offsetWidth > el.scrollLeft + el.clientWidth + 1).map(([, k]) => k)"""
    wait_for(page, "() => document.querySelectorAll('[data-testid=neuron-top] img').length >= 24", timeout=15_000)
    beyond = strip.evaluate(cut)
    assert beyond and beyond == list(range(beyond[0], TOP_K))
    nxt = page.get_by_test_id("top-next")
    wait_for(
        page, "(n) => document.querySelector('[data-testid=top-next]')?.textContent.trim() === `+${n} ›`", len(beyond)
    )
    assert page.get_by_test_id("top-prev").count() == 0
    nxt.click()
    wait_for(page, "(k) => { const el = document.querySelector('[data-testid=neuron-top] .items');"
                   " return Math.abs(el.children[k].offsetLeft - el.scrollLeft) < 1; }", beyond[0])  # fmt: skip
    page.get_by_test_id("top-prev").wait_for()
    strip.evaluate("(el) => { el.scrollLeft = el.scrollWidth; el.dispatchEvent(new Event('scroll')); }")
    wait_for(page, "() => document.querySelector('[data-testid=neuron-top] .items').dataset.more === 'false'")
    assert nxt.count() == 0
