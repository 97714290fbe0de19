"""The graph view in Chromium: top level, expand/collapse, search, overlays, edge tooltips, linked selection."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
import torch
from browser_helpers import XSS, point_until, showing, wait_for
from tests.graph.models import ReusedReLU
from torch import nn

import deepscope
from deepscope.graphs import Edge, Graph, ModuleInfo, Node, write_graph

DOCS = Path(__file__).resolve().parents[2] / "docs"


def hostile_graph() -> Graph:
    odd = XSS.replace(".", "_")
    s = (1, 4)
    f = ("float32",)
    modules = (
        ModuleInfo("", "Model", 8, None, (odd,)),
        ModuleInfo(odd, f"pkg.{odd}", 8, "", ()),
    )
    nodes = (
        Node("x", "x", "input", "", "", "", output_shapes=(s,), output_dtypes=f),
        Node("op", XSS, "call_function", f"aten.{XSS}", odd, "", (s,), f, (s,), f, 8),
        Node("out", "output", "output", "output", "", "", (s,), f),
    )
    edges = (Edge("x", "op", s, "float32"), Edge("op", "out", s, "float32"))
    return Graph(method="fx", nodes=nodes, edges=edges, modules=modules), odd


LONG_NAME = "encoder_attention_projection"


def long_titled_graph() -> Graph:
    """A module whose name and class are both long: its title cannot hold them both."""
    s, f = (1, 4), ("float32",)
    kind = "pkg.blocks.MultiHeadSelfAttentionWithRotaryEmbeddings"
    modules = (ModuleInfo("", "Model", 20, None, (LONG_NAME,)), ModuleInfo(LONG_NAME, kind, 20, "", ()))
    nodes = (
        Node("x", "x", "input", "", "", "", output_shapes=(s,), output_dtypes=f),
        Node("lin", "linear", "call_function", "aten.linear.default", LONG_NAME, kind, (s,), f, (s,), f, 20),
        Node("out", "output", "output", "output", "", "", (s,), f),
    )
    edges = (Edge("x", "lin", s, "float32"), Edge("lin", "out", s, "float32"))
    return Graph(method="fx", nodes=nodes, edges=edges, modules=modules)


def cnn_run(root: Path, steps: int = 40) -> str:
    import torch
    import torch.nn.functional as F

    from deepscope.demo.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    run = deepscope.init(project="graph", name="cnn", dir=root)
    deepscope.graph(model, (x,), run=run)
    run.watch(model, optimizer=opt)
    for step in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"train/loss": loss.detach()}, step=step)
    # analysed too: a box selected in the graph is the Instances tab's layer
    deepscope.analyze(model, x, labels=y, layers=["features.2", "features.6"], run=run, progress=False,
                      projection=False, full_maps=False)  # fmt: skip
    run.finish()
    return run.id


@pytest.fixture(scope="module")
def graph_store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("graph-runs")
    cnn = cnn_run(root)
    with deepscope.init(project="graph", name="residual", dir=root) as residual:
        model = nn.Sequential(nn.Conv2d(2, 2, 1), ReusedReLU(), nn.Flatten())
        deepscope.graph(model, torch.randn(1, 2, 6, 6), run=residual)
    g, odd = hostile_graph()
    with deepscope.init(project="graph", name="hostile", dir=root) as run:
        write_graph(run.dir, g)
    with deepscope.init(project="graph", name="long-module-and-run-names", dir=root) as long_titles:
        write_graph(long_titles.dir, long_titled_graph())
    with deepscope.init(project="graph", name="bare", dir=root) as bare:
        pass
    return {
        "root": root,
        "cnn": cnn,
        "hostile": run.id,
        "odd": odd,
        "bare": bare.id,
        "residual": residual.id,
        "long": long_titles.id,
    }


@pytest.fixture(scope="module")
def graph_server(graph_store, built_app):
    from deepscope.server.launch import BackgroundServer

    s = BackgroundServer(graph_store["root"], port=0).start()
    yield s.url
    s.stop()


def no_404s(page) -> list[str]:
    """The URLs the page got a 404 for: none, since the run list tells the views what a run holds."""
    seen: list[str] = []
    page.on("response", lambda r: seen.append(r.url) if r.status == 404 else None)
    return seen


def state(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__deepscope.graph()))")


def open_graph(page, url: str, run: str, extra: str = "") -> dict:
    page.goto(f"{url}?tab=graph&run={quote(run)}{extra}")
    wait_for(page, "() => window.__deepscope.graph && window.__deepscope.graph().status === 'ready'")
    wait_for(page, "() => window.__deepscope.graph().firstPaint !== null")
    return state(page)


def click_at(page, x: float, y: float) -> None:
    box = page.get_by_test_id("graph-canvas").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def node(st: dict, **match) -> dict:
    return next(n for n in st["nodes"] if all(n[k] == v for k, v in match.items()))


def test_top_level_paints_then_expands_and_collapses(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"])
    assert [n["id"] for n in st["nodes"]] == ["n:args_0", "m:features", "m:classifier", "n:output"]
    assert all(n["w"] > 0 and n["h"] > 0 for n in st["nodes"])
    ys = [node(st, id=i)["y"] for i in ("n:args_0", "m:features", "m:classifier", "n:output")]
    assert ys == sorted(ys)  # a layered layout, top to bottom
    features = node(st, id="m:features")
    click_at(page, features["sx"], features["sy"])
    wait_for(page, "() => window.__deepscope.graph().expanded.includes('features')")
    st = state(page)
    assert len(st["nodes"]) > 4 and any(n["module_path"].startswith("features.") for n in st["nodes"])
    assert st["selected"] == "m:features" and "gx=features" in page.url
    assert st["lastExpand"] is not None
    # the container's "−" collapses it again
    c = next(c for c in st["containers"] if c["path"] == "features")
    click_at(page, c["sx"], c["sy"])
    wait_for(page, "() => window.__deepscope.graph().expanded.length === 0")
    assert len(state(page)["nodes"]) == 4


def test_an_opened_module_stays_in_view(page, graph_server, graph_store):
    """Zoomed in on a box, a click opens it: the view zooms out (never in) and pans so the whole module shows."""
    open_graph(page, graph_server, graph_store["cnn"])
    for _ in range(3):
        page.get_by_role("button", name="+", exact=True).click()
    st = state(page)
    features = node(st, id="m:features")
    click_at(page, features["sx"], features["sy"])
    wait_for(page, "() => window.__deepscope.graph().containers.some((c) => c.path === 'features')")
    after = state(page)
    assert after["zoom"] < st["zoom"]
    box = next(c for c in after["containers"] if c["path"] == "features")["box"]
    canvas = page.get_by_test_id("graph-canvas").bounding_box()
    assert 0 <= box["left"] < box["right"] <= canvas["width"], box
    assert 0 <= box["top"] < box["bottom"] <= canvas["height"], box
    # closing it again from there keeps the zoom: only what no longer fits moves
    c = next(c for c in after["containers"] if c["path"] == "features")
    click_at(page, c["sx"], c["sy"])
    wait_for(page, "() => window.__deepscope.graph().expanded.length === 0")
    assert state(page)["zoom"] == after["zoom"]


def test_open_module_titles_keep_their_names_and_edges_pass_under_them(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"], "&gx=features&gx=features.0")
    titles = {c["path"]: c["title"] for c in st["containers"]}
    assert titles == {"features": "features Sequential", "features.0": "0 Conv2d"}  # wide enough for both
    # the edge from the input into `features` leaves a gap across its title bar: the title is not struck through
    x, first = node(st, id="n:args_0"), node(st, id="n:conv2d")
    assert abs(x["sx"] - first["sx"]) < 1  # a straight edge down the middle
    box = next(c for c in st["containers"] if c["path"] == "features")["box"]
    for y in (box["top"] + 3 * st["zoom"], box["top"] + 23 * st["zoom"]):  # above and below the title's glyphs
        bar = pixel(page, x["sx"] - 40, y)
        for dx in (-1, 0, 1):
            assert pixel(page, x["sx"] + dx, y) == bar, (dx, y)
    # a title too long for its bar keeps the module's name whole and cuts its class
    st = open_graph(page, graph_server, graph_store["long"], f"&gx={LONG_NAME}")
    shown = next(c for c in st["containers"] if c["path"] == LONG_NAME)["title"]
    assert shown == LONG_NAME or (shown.startswith(f"{LONG_NAME} Multi") and shown.endswith("…")), shown


def test_details_wrap_between_words(page, graph_server, graph_store):
    """A class path wraps after a dot, and no dtype or number is cut in two."""
    open_graph(page, graph_server, graph_store["cnn"], "&gx=features&gnode=m:features")
    details = page.get_by_test_id("graph-details")
    wait_for(page, "() => document.querySelector('[data-testid=graph-details]').innerText.includes('float32')")
    assert "torch.nn.modules.container.Sequential" in details.inner_text().replace("\n", "")
    lines = """([word]) => {
        const el = document.querySelector("[data-testid=graph-details]");
        const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        for (let t = walk.nextNode(); t; t = walk.nextNode()) {
            const i = t.data.indexOf(word);
            if (i < 0) continue;
            const r = document.createRange();
            r.setStart(t, i);
            r.setEnd(t, i + word.length);
            return new Set([...r.getClientRects()].map((q) => Math.round(q.top))).size;
        }
        return null;
    }"""
    type_box = details.locator("dd").first.bounding_box()
    assert type_box["height"] > 20  # the class path takes two lines here: the test is about where it wraps
    for word in ("Sequential", "container.", "float32", "205,728"):
        assert page.evaluate(lines, [word]) == 1, word
    # an operation's tensors: the dtypes whole
    page.goto(f"{graph_server}?tab=graph&run={graph_store['cnn']}&gx=features&gx=features.0&gnode=n:conv2d")
    wait_for(page, "() => document.querySelector('[data-testid=graph-details]')?.innerText.includes('out 0')")
    assert page.evaluate(lines, ["float32"]) == 1


def test_url_reopens_expanded_modules(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"], "&gx=features&gx=features.0")
    assert set(st["expanded"]) == {"features", "features.0"}
    assert any(n["module_path"] == "features.0" and n["kind"] == "node" for n in st["nodes"])


def test_zoomed_out_the_modules_wide_enough_keep_legible_names(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"], "&gx=features")
    assert st["zoom"] >= 0.35 and st["overviewNames"] == []  # every box has its own text
    for _ in range(12):
        if state(page)["zoom"] < 0.3:
            break
        page.get_by_role("button", name="−").click()
    st = state(page)
    assert st["zoom"] < 0.3
    names = st["overviewNames"]
    assert names[0].startswith("feat")  # the container first, then the boxes
    children = {n["label"] for n in st["nodes"] if n["kind"] == "module" and n["module_path"].startswith("features.")}
    assert set(names[1:]) <= children | {"classifier"}
    assert len(set(names) & children) >= 3  # the conv, norm and pool boxes among them


def test_search_reveals_a_node(page, graph_server, graph_store):
    open_graph(page, graph_server, graph_store["cnn"])
    page.get_by_test_id("graph-search").fill("relu")
    wait_for(page, "() => window.__deepscope.graph().matches.length > 0")
    target = state(page)["matches"][0]
    page.get_by_test_id("graph-matches").locator("button").first.click()
    wait_for(page, "(id) => window.__deepscope.graph().nodes.some((n) => n.id === id)", target)
    st = state(page)
    assert st["selected"] == target
    assert "features" in st["expanded"]
    shown = node(st, id=target)
    canvas = page.get_by_test_id("graph-canvas").bounding_box()
    assert 0 <= shown["sx"] <= canvas["width"] and 0 <= shown["sy"] <= canvas["height"]  # scrolled into view

    # a node already laid out (its module open) but off-screen: the search centres it too
    page.mouse.move(canvas["x"] + 5, canvas["y"] + 5)
    for _ in range(12):
        page.mouse.wheel(0, -400)  # zoom in on the top-left corner: the nodes leave the view
    page.wait_for_timeout(200)
    page.get_by_test_id("graph-search").fill("relu")
    wait_for(page, "() => window.__deepscope.graph().matches.length > 0")
    st = state(page)
    laid_out = {n["id"] for n in st["nodes"]}
    index, other = next((i, m) for i, m in enumerate(st["matches"]) if m in laid_out and m != target)
    before = node(st, id=other)
    assert not (0 <= before["sx"] <= canvas["width"] and 0 <= before["sy"] <= canvas["height"])
    page.get_by_test_id("graph-matches").locator("button").nth(index).click()
    wait_for(page, "(id) => window.__deepscope.graph().selected === id", other)
    after = node(state(page), id=other)
    assert 0 <= after["sx"] <= canvas["width"] and 0 <= after["sy"] <= canvas["height"]


def test_overlays_recolour_and_show_a_legend(page, graph_server, graph_store):
    open_graph(page, graph_server, graph_store["cnn"], "&gx=features")
    page.get_by_test_id("graph-overlay").select_option("params")
    wait_for(page, "() => window.__deepscope.graph().overlay?.mode === 'params'")
    st = state(page)
    coloured = {n["id"]: n["fill"] for n in st["nodes"] if n["fill"]}
    assert coloured and all(node(st, id=i)["value"] > 0 for i in coloured)
    assert page.get_by_test_id("graph-legend").is_visible()
    page.get_by_test_id("graph-overlay").select_option("stat")
    wait_for(page, "() => window.__deepscope.graph().overlay?.mode === 'stat'")
    wait_for(page, "() => window.__deepscope.graph().nodes.some((n) => n.fill)")
    first = state(page)
    assert first["overlay"]["step"] == 39
    slider = page.get_by_test_id("graph-step")
    slider.evaluate("(el) => { el.value = '0'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    wait_for(page, "() => window.__deepscope.graph().overlay?.step === 0")
    second = state(page)
    before = {n["id"]: n["value"] for n in first["nodes"] if n["value"] is not None}
    after = {n["id"]: n["value"] for n in second["nodes"] if n["value"] is not None}
    assert before.keys() == after.keys() and before != after  # the values (and colours) follow the step
    assert "ov=stat" in page.url and "step=0" in page.url


def pixel(page, x: float, y: float) -> tuple[int, int, int]:
    """The canvas's colour at (x, y), in CSS pixels from its top-left corner."""
    js = """([x, y]) => {
        const c = document.querySelector("[data-testid=graph-canvas]");
        const d = window.devicePixelRatio || 1;
        return [...c.getContext("2d").getImageData(Math.round(x * d), Math.round(y * d), 1, 1).data].slice(0, 3);
    }"""
    return tuple(page.evaluate(js, [x, y]))


def inside_left(st: dict, n: dict) -> tuple[float, float]:
    """A point of the box's own fill: beside its left edge, at half height (its text is centred)."""
    return n["sx"] - n["w"] * st["zoom"] / 2 + 6, n["sy"]


def test_items_without_a_statistic_look_apart_from_a_value_of_zero(page, graph_server, graph_store):
    """A diverging scale draws 0 near-white; a box without a value (a ReLU has no weights) is grey and dashed."""
    open_graph(page, graph_server, graph_store["cnn"], "&gx=features&ov=stat&kind=weight&stat=mean")
    wait_for(page, "() => window.__deepscope.graph().nodes.some((n) => n.fill)")
    st = state(page)
    relu, conv = node(st, id="m:features.2"), node(st, id="m:features.4")
    assert relu["value"] is None and relu["noValue"] and relu["fill"] is None
    assert abs(conv["value"]) < 0.05 and not conv["noValue"]  # a mean weight of about 0: near-white
    assert not node(st, id="n:args_0")["noValue"]  # the input is never coloured: it keeps its look
    empty, zero = pixel(page, *inside_left(st, relu)), pixel(page, *inside_left(st, conv))
    assert zero == tuple(int(c) for c in conv["fill"][4:-1].split(","))
    assert sum(abs(a - b) for a, b in zip(empty, zero, strict=True)) > 30, (empty, zero)
    assert max(empty) - min(empty) < 12 and max(empty) < 240  # a grey, darker than the scale's white
    assert "no value" in page.get_by_test_id("graph-legend-none").inner_text()
    page.get_by_test_id("graph-overlay").select_option("params")
    wait_for(page, "() => window.__deepscope.graph().overlay?.mode === 'params'")
    assert node(state(page), id="m:features.2")["noValue"]
    assert "no parameters" in page.get_by_test_id("graph-legend-none").inner_text()


def toolbar_boxes(page) -> dict[str, dict]:
    """The screen box of each toolbar control, by its name (or its first option's text)."""
    js = """() => [...document.querySelectorAll("[data-testid=graph-toolbar] :is(select, input, button)")].map((el) => {
        const r = el.getBoundingClientRect();
        const name = el.getAttribute("aria-label") || el.dataset.testid || el.textContent.trim() || el.placeholder;
        return [name || el.tagName, {left: r.left, right: r.right, top: r.top, bottom: r.bottom}];
    })"""
    return dict(page.evaluate(js))


@pytest.mark.parametrize("width", [1500, 1100])
def test_the_toolbar_fits_with_a_layer_statistic(browser, graph_server, graph_store, width):
    """All of it on one row at 1500 px; at 1100 px the colour controls take a second row, the zoom buttons stay
    at the top right; nothing overlaps or leaves the window at either width. (The run list holds a long name: the
    run menu is as wide as its longest.)"""
    ctx = browser.new_context(viewport={"width": width, "height": 800})
    page = ctx.new_page()
    extra = "&gx=features&ov=stat&kind=param_grad&stat=nonfinite_frac"  # the widest kind and statistic
    open_graph(page, graph_server, graph_store["cnn"], extra)
    page.get_by_test_id("graph-step").wait_for()
    boxes = toolbar_boxes(page)
    ctx.close()
    assert {"graph-fit", "Collapse all", "kind", "statistic", "module aggregate", "graph-step"} <= boxes.keys()
    mids = sorted((b["top"] + b["bottom"]) / 2 for b in boxes.values())
    rows = 1 + sum(b - a > 10 for a, b in zip(mids, mids[1:], strict=False))
    assert rows == (1 if width == 1500 else 2), boxes
    if width == 1100:
        assert boxes["graph-fit"]["top"] < boxes["kind"]["top"]  # the buttons on the first row, the statistic below
    for name, b in boxes.items():
        assert b["left"] >= 0 and b["right"] <= width, name
    for a, p in boxes.items():
        for b, q in boxes.items():
            overlap = (
                p["left"] < q["right"] and q["left"] < p["right"] and p["top"] < q["bottom"] and q["top"] < p["bottom"]
            )
            assert a == b or not overlap, (a, b)


def test_below_860px_the_colour_controls_take_a_row_of_their_own(browser, graph_server, graph_store):
    ctx = browser.new_context(viewport={"width": 800, "height": 700})
    page = ctx.new_page()
    open_graph(page, graph_server, graph_store["cnn"], "&ov=params")
    rows = page.evaluate("""() => {
        const bar = document.querySelector("[data-testid=graph-toolbar]");
        const box = (el) => el.getBoundingClientRect().toJSON();
        const [run, fit, overlay] = [".run", "[data-testid=graph-fit]", ".overlay"].map((q) => bar.querySelector(q));
        return {bar: box(bar), run: box(run), fit: box(fit), overlay: box(overlay)};
    }""")
    boxes = toolbar_boxes(page)
    ctx.close()
    run, fit, overlay = rows["run"], rows["fit"], rows["overlay"]
    assert abs((run["top"] + run["bottom"]) / 2 - (fit["top"] + fit["bottom"]) / 2) < 10  # run and buttons: one row
    assert overlay["top"] >= max(run["bottom"], fit["bottom"])  # the colour controls below them
    assert overlay["right"] - overlay["left"] > 0.9 * (rows["bar"]["right"] - rows["bar"]["left"] - 32)  # the row whole
    for name, b in boxes.items():
        assert b["left"] >= 0 and b["right"] <= 800, name


def test_edge_hover_shows_shape_and_dtype(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"])
    e = next(e for e in st["edges"] if e["src"] == "m:features")
    edge_at = """(src) => { const e = window.__deepscope.graph().edges.find((e) => e.src === src);
        const r = document.querySelector('[data-testid=graph-canvas]').getBoundingClientRect();
        return e && [r.left + e.mx, r.top + e.my]; }"""
    point_until(page, edge_at, "m:features", showing("[data-testid=graph-tooltip]"), click=False)
    tip = page.get_by_test_id("graph-tooltip")
    assert f"[{', '.join(map(str, e['shape']))}]" in tip.inner_text() and "float32" in tip.inner_text()


def test_selection_is_shared_both_ways(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"], "&gx=features")
    conv = node(st, id="m:features.0")
    click_at(page, conv["sx"], conv["sy"])
    wait_for(page, "() => JSON.parse(JSON.stringify(window.__deepscope.view())).selectedLayer === 'features.0'")
    details = page.get_by_test_id("graph-details")
    details.get_by_test_id("sparkline").first.wait_for()
    assert "features.0" in details.inner_text()
    # an analysed layer selected in the graph is the Instances tab's layer too (and the Instances tab's, the graph's)
    for _ in range(3):  # where it is now: the first click opened features.0, and the layout may still be moving
        relu = node(state(page), id="m:features.6")
        click_at(page, relu["sx"], relu["sy"])
        if page.evaluate("() => window.__deepscope.graph().selected") == "m:features.6":
            break
        page.wait_for_timeout(300)
    wait_for(page, "() => window.__deepscope.view().aLayer === 'features.6'")
    page.get_by_role("link", name="Instances").or_(page.get_by_role("button", name="Instances")).first.click()
    page.get_by_label("Layer", exact=True).select_option("features.2")
    wait_for(page, "() => window.__deepscope.view().selectedLayer === 'features.2'")
    # another view selects a layer inside a collapsed module: the graph opens its parents and selects it
    page.goto(f"{graph_server}?tab=graph&run={graph_store['cnn']}&layer=features.9.weight")
    wait_for(page, "() => window.__deepscope.graph && window.__deepscope.graph().selected === 'm:features.9'")
    wait_for(page, "() => window.__deepscope.graph().nodes.some((n) => n.id === 'm:features.9')")
    assert "features" in state(page)["expanded"]


def test_hostile_names_are_text(page, graph_server, graph_store):
    odd = graph_store["odd"]
    missing = no_404s(page)  # an unwatched run's layer table is not asked for
    st = open_graph(page, graph_server, graph_store["hostile"], f"&gx={quote(odd)}")
    assert odd in st["expanded"]
    op = node(st, id="n:op")
    assert op["label"] == XSS
    click_at(page, op["sx"], op["sy"])
    details = page.get_by_test_id("graph-details")
    wait_for(page, "() => window.__deepscope.graph().selected === 'n:op'")
    assert XSS in details.inner_text()
    assert odd in page.get_by_test_id("graph-breadcrumb").inner_text()
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0
    assert missing == []


def test_a_shared_relu_is_a_box_per_call_and_operations_read_their_names(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["residual"], "&gx=1")
    relus = [n for n in st["nodes"] if n["module_path"] == "1.relu"]
    assert sorted(n["id"] for n in relus) == ["m:1.relu", "m:1.relu@1"]
    edges = {(e["src"], e["dst"]) for e in st["edges"]}
    assert ("m:1.conv1", "m:1.relu") in edges and ("m:1.relu", "m:1.conv2") in edges
    assert not any(d == "m:1.relu" and s != "m:1.conv1" for s, d in edges)  # no loop back into the first call
    add = next(n for n in st["nodes"] if n["kind"] == "node" and n["shown"].startswith("add"))
    assert add["shown"] == "add"  # aten.add.Tensor, without its overload


def test_a_run_without_graph_says_so(page, graph_server, graph_store):
    missing = no_404s(page)
    page.goto(f"{graph_server}?tab=graph&run={graph_store['bare']}")
    page.get_by_text("This run has no computation graph").wait_for()
    assert missing == []  # neither its graph nor its layer table is asked for: the run list says it has none


def test_the_graph_tab_opens_the_run_selected_in_the_sidebar(page, graph_server, graph_store):
    """Not the newest run of the store (here "bare", without a graph): the one the user is looking at."""
    page.goto(f"{graph_server}?tab=graph&runs={graph_store['cnn']}")
    wait_for(page, "() => window.__deepscope.graph && window.__deepscope.graph().status === 'ready'")
    assert f"run={graph_store['cnn']}" in page.url


def test_screenshot(page, graph_server, graph_store, tmp_path):
    extra = "&gx=features&gx=features.0&ov=stat&kind=act&stat=std&gnode=m:features.4&layer=features.4"
    open_graph(page, graph_server, graph_store["cnn"], extra)
    wait_for(page, "() => window.__deepscope.graph().nodes.some((n) => n.fill)")
    page.get_by_test_id("sparkline").first.wait_for()
    page.wait_for_timeout(300)
    # into docs/ only when asked (DEEPSCOPE_SCREENSHOTS=docs): a test run leaves the checkout as it was
    target = DOCS if os.environ.get("DEEPSCOPE_SCREENSHOTS") == "docs" else tmp_path
    page.screenshot(path=str(target / "graph-view.png"))


def test_back_leaves_the_graph_tab(page, graph_server, graph_store):
    """The graph tab puts its run in the URL in place: Back returns to the page before it, not to the graph again."""
    page.goto(f"{graph_server}?tab=runs")
    page.goto(f"{graph_server}?tab=graph&runs={graph_store['cnn']}")
    wait_for(page, "() => window.__deepscope.graph && window.__deepscope.graph().status === 'ready'")
    assert f"run={graph_store['cnn']}" in page.url
    page.go_back()
    wait_for(page, "() => new URLSearchParams(location.search).get('tab') === 'runs'")


def test_back_after_opening_the_graph_tab_returns_to_the_tab_before(page, graph_server, graph_store):
    """Opening the Graph tab is a history entry of its own, though the view puts its run in focus in the same tick."""
    page.goto(f"{graph_server}?tab=runs&runs={graph_store['cnn']}")
    page.get_by_role("button", name="Charts", exact=True).click()
    wait_for(page, "() => window.__deepscope.view().tab === 'charts'")
    page.get_by_role("button", name="Graph", exact=True).click()
    wait_for(page, "() => window.__deepscope.graph && window.__deepscope.graph().status === 'ready'")
    assert f"run={graph_store['cnn']}" in page.url and "tab=graph" in page.url
    page.go_back()
    wait_for(page, "() => window.__deepscope.view().tab === 'charts'")
    assert "tab=graph" not in page.url and "tab=runs" not in page.url
    page.go_back()
    wait_for(page, "() => window.__deepscope.view().tab === 'runs'")


# ---- where the view stands: a layout that comes late, a breadcrumb, a link, a resize ------------------------------


def canvas_size(page) -> tuple[float, float]:
    box = page.get_by_test_id("graph-canvas").bounding_box()
    return box["width"], box["height"]


def top_left(st: dict, n: dict) -> tuple[float, float]:
    """A box's top-left corner on screen."""
    return n["sx"] - n["w"] * st["zoom"] / 2, n["sy"] - n["h"] * st["zoom"] / 2


def drag(page, dx: float, dy: float) -> None:
    """The canvas dragged by (dx, dy) from its centre."""
    box = page.get_by_test_id("graph-canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()


def resize(page, width: int, height: int) -> None:
    before = canvas_size(page)
    page.set_viewport_size({"width": width, "height": height})
    wait_for(page, "(w) => document.querySelector('[data-testid=graph-canvas]').getBoundingClientRect().width !== w",
             before[0])  # fmt: skip
    page.wait_for_timeout(50)


def refit_elsewhere(page, graph_server, run: str, extra: str) -> dict:
    """The view as fitted on a page of this one's size, opened afresh."""
    other = page.context.new_page()
    other.set_viewport_size(page.viewport_size)
    st = open_graph(other, graph_server, run, extra)
    other.close()
    return st


class HeldGraphs:
    """A page's graph requests held until `release` (a layout that takes its time); those after it pass at once."""

    def __init__(self, page) -> None:
        self.routes: list = []
        self.released = False
        page.route(lambda url: "/graph?" in url, self._hold)

    def _hold(self, route) -> None:
        if self.released:
            route.continue_()
        else:
            self.routes.append(route)

    def release(self) -> None:
        self.released = True
        for route in self.routes:
            route.continue_()


def test_a_run_picked_while_the_view_is_moved_is_fitted(page, graph_server, graph_store):
    """The run's graph is fitted when it comes, though the previous run's was dragged and the window resized."""
    open_graph(page, graph_server, graph_store["cnn"])
    held = HeldGraphs(page)
    page.get_by_test_id("graph-toolbar").locator(".run select").select_option(graph_store["residual"])
    wait_for(page, "() => window.__deepscope.graph().status === 'loading'")
    page.wait_for_timeout(50)
    assert held.routes
    drag(page, 80, 50)
    resize(page, 1300, 860)
    held.release()
    wait_for(page, "(run) => window.__deepscope.graph().run === run && window.__deepscope.graph().status === 'ready'",
             graph_store["residual"])  # fmt: skip
    st, fitted = state(page), refit_elsewhere(page, graph_server, graph_store["residual"], "")
    assert st["zoom"] == fitted["zoom"]
    assert [(n["id"], n["sx"], n["sy"]) for n in st["nodes"]] == [(n["id"], n["sx"], n["sy"]) for n in fitted["nodes"]]


def test_a_module_opened_while_the_view_is_moved_opens_where_its_box_was_moved_to(page, graph_server, graph_store):
    st = open_graph(page, graph_server, graph_store["cnn"], "&gx=features")
    box = node(st, id="m:features.4")
    w, h = canvas_size(page)
    held = HeldGraphs(page)
    click_at(page, box["sx"], box["sy"])
    wait_for(page, "() => window.__deepscope.graph().selected === 'm:features.4'")
    page.wait_for_timeout(50)
    assert held.routes
    drag(page, 60 if box["sx"] < w / 2 else -60, 40 if box["sy"] < h / 2 else -40)  # towards the middle
    resize(page, 1300, 860)
    st = state(page)  # the box, where it is now
    held.release()
    wait_for(page, "() => window.__deepscope.graph().containers.some((c) => c.path === 'features.4')")
    after = state(page)
    opened = next(c for c in after["containers"] if c["path"] == "features.4")["box"]
    assert after["zoom"] == st["zoom"]
    assert (opened["left"], opened["top"]) == pytest.approx(top_left(st, node(st, id="m:features.4")), abs=1)


def opens_in_place(page, module: str) -> None:
    """A click on `module`'s box opens it where the box stood, at the same zoom."""
    st = state(page)
    box = node(st, id=f"m:{module}")
    click_at(page, box["sx"], box["sy"])
    wait_for(page, "(p) => window.__deepscope.graph().containers.some((c) => c.path === p)", module)
    after = state(page)
    opened = next(c for c in after["containers"] if c["path"] == module)["box"]
    assert after["zoom"] == st["zoom"]
    assert (opened["left"], opened["top"]) == pytest.approx(top_left(st, box), abs=1)


def test_a_breadcrumb_click_centres_its_module_and_leaves_nothing_pending(page, graph_server, graph_store):
    open_graph(page, graph_server, graph_store["cnn"], "&gx=features&gnode=m:features.4")
    page.get_by_test_id("graph-breadcrumb").get_by_role("button", name="features", exact=True).click()
    st = state(page)
    assert st["selected"] == "m:features"
    box = next(c for c in st["containers"] if c["path"] == "features")["box"]
    w, h = canvas_size(page)
    assert ((box["left"] + box["right"]) / 2, (box["top"] + box["bottom"]) / 2) == pytest.approx((w / 2, h / 2), abs=1)
    # the next module opened stays where it was: the breadcrumb's module is not centred again
    opens_in_place(page, "features.4")


def test_a_layer_selected_elsewhere_is_centred_at_once_when_its_box_is_shown(page, graph_server, graph_store):
    """Forward to a link to another layer of the same graph, whose box is laid out: the view centres it then, without
    waiting for the graph to be asked for again."""
    open_graph(page, graph_server, graph_store["cnn"], "&gx=features&layer=features.0")
    page.evaluate("""() => {
        const u = new URL(location.href);
        u.searchParams.set("layer", "features.6");
        history.pushState(null, "", u);
    }""")
    held = HeldGraphs(page)  # Back and Forward ask for the graph again: no layout comes until the test is done
    page.go_back()
    page.go_forward()
    wait_for(page, "() => window.__deepscope.graph().selected === 'm:features.6'")
    w, h = canvas_size(page)
    relu = node(state(page), id="m:features.6")
    assert (relu["sx"], relu["sy"]) == pytest.approx((w / 2, h / 2), abs=1)
    held.release()
    page.wait_for_timeout(300)
    opens_in_place(page, "features.4")


def on_screen(st: dict) -> list[float]:
    """Where each box is on the canvas: x, y, x, y…"""
    return [v for n in st["nodes"] for v in (n["sx"], n["sy"])]


def at_centre(page, st: dict) -> tuple[float, float]:
    """The graph point at the centre of the canvas."""
    n, k = st["nodes"][0], st["zoom"]
    tx, ty = n["sx"] - (n["x"] + n["w"] / 2) * k, n["sy"] - (n["y"] + n["h"] / 2) * k
    w, h = canvas_size(page)
    return (w / 2 - tx) / k, (h / 2 - ty) / k


def test_a_resize_refits_until_the_view_is_moved_then_keeps_its_centre(page, graph_server, graph_store):
    run, extra = graph_store["cnn"], "&gx=features"
    open_graph(page, graph_server, run, extra)
    resize(page, 800, 700)
    st, fitted = state(page), refit_elsewhere(page, graph_server, run, extra)
    assert st["zoom"] == pytest.approx(fitted["zoom"])
    assert on_screen(st) == pytest.approx(on_screen(fitted))
    # moved by the user: a resize keeps the point at the middle of the view in the middle
    drag(page, 70, -40)
    page.get_by_role("button", name="+", exact=True).click()
    st = state(page)
    middle = at_centre(page, st)
    resize(page, 1200, 820)
    after = state(page)
    assert after["zoom"] == st["zoom"]
    assert at_centre(page, after) == pytest.approx(middle, abs=0.5)
    # fitted again by the user: a resize refits again
    page.get_by_test_id("graph-fit").click()
    resize(page, 1000, 760)
    st, fitted = state(page), refit_elsewhere(page, graph_server, run, extra)
    assert st["zoom"] == pytest.approx(fitted["zoom"])
    assert on_screen(st) == pytest.approx(on_screen(fitted))
