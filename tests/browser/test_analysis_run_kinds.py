"""The Instances tab over runs that lack something or have much of it: no labels, no class names, no class scores
(a regressor), a hundred and twenty long class names, a table's inputs — each view says what the run has, names
classes readably and offers only what applies; and the selected look follows what is highlighted."""

from __future__ import annotations

import json
from io import BytesIO
from urllib.parse import quote

import numpy as np
import pytest
import torch
from browser_helpers import point_until, settled, showing, wait_for
from PIL import Image

import deepscope
from deepscope.analyses import read
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

LONG_CLASSES = 120
TAKEN = np.arange("2024-03-01T00", 300 * 6, 6, dtype="datetime64[h]").astype("datetime64[us]")  # 6 h apart, 75 days


def mlp(inputs: int, hidden: int, outputs: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, outputs))


def write_runs(root) -> dict[str, str]:
    runs = {}
    x = torch.randn(300, 16)
    with deepscope.init(project="kinds", name="unlabelled", dir=root) as run:  # predictions, no labels
        deepscope.analyze(mlp(16, 32, 4, 0), x, layers=["1"], run=run, progress=False)
        runs["unlabelled"] = run.id
    with deepscope.init(project="kinds", name="one-sided", dir=root) as run:  # no labels, predicts 2 of 4 classes
        model = mlp(16, 32, 4, 4)
        with torch.no_grad():
            model[2].bias.copy_(torch.tensor([0.0, 50.0, 50.0, 0.0]))
        deepscope.analyze(model, x, layers=["1"], run=run, progress=False)
        runs["one-sided"] = run.id
    with deepscope.init(project="kinds", name="unnamed", dir=root) as run:  # labels, no class names
        model = mlp(16, 64, 4, 1)
        run.watch(model)  # its layer table names the modules' types
        model(x[:8]).sum().backward()
        run.log({"loss": 1.0}, step=0)
        labels = [i % 4 if i % 10 else 0 for i in range(300)]  # class 0 far larger than the others
        deepscope.analyze(model, x, layers=["0", "2"], labels=labels, run=run, progress=False)
        runs["unnamed"] = run.id
    with deepscope.init(project="kinds", name="regressor", dir=root) as run:  # neither labels nor class scores
        meta = {"size": np.linspace(0, 1, 300).round(3), "kind": ["small" if i % 3 else "large" for i in range(300)],
                "taken": TAKEN}  # fmt: skip
        deepscope.analyze(mlp(16, 32, 1, 2), x, layers=["1"], scores="none", metadata=meta, run=run, progress=False)
        runs["regressor"] = run.id
    with deepscope.init(project="kinds", name="long-names", dir=root) as run:
        names = [f"category number {c} with a long suffix" for c in range(LONG_CLASSES)]
        n = 4 * LONG_CLASSES
        deepscope.analyze(mlp(16, 64, LONG_CLASSES, 3), torch.randn(n, 16), layers=["1"],
                          labels=[i % LONG_CLASSES for i in range(n)], class_names=names, run=run,
                          progress=False)  # fmt: skip
        runs["long"] = run.id
    with deepscope.init(project="kinds", name="one-class", dir=root) as run:  # untrained: predicts class 1 of 5 only
        model = mlp(16, 32, 5, 4)
        with torch.no_grad():
            model[2].bias.copy_(torch.tensor([0.0, 100.0, 0.0, 0.0, 0.0]))
        deepscope.analyze(model, x, layers=["1"], run=run, progress=False)
        runs["one-class"] = run.id
    with deepscope.init(project="kinds", name="bare", dir=root) as run:  # a model without children: itself
        torch.manual_seed(5)
        deepscope.analyze(torch.nn.Linear(16, 4), (x, torch.arange(300) % 4), run=run, progress=False)
        runs["bare"] = run.id
    with deepscope.init(project="kinds", name="dead-layer", dir=root) as run:  # a ReLU that never fires
        model = mlp(16, 32, 4, 6)
        with torch.no_grad():
            model[0].bias.fill_(-1e3)
        deepscope.analyze(model, (x, torch.arange(300) % 4), layers=["1"], run=run, progress=False)
        runs["dead-layer"] = run.id
    return runs


@pytest.fixture(scope="module")
def site(tmp_path_factory, built_app):
    root = tmp_path_factory.mktemp("kinds")
    runs = write_runs(root)
    server = BackgroundServer(root, port=0).start()
    yield {"url": server.url, "root": root, **runs}
    server.stop()


def open_run(page, site, run: str, query: str = "") -> None:
    page.goto(f"{site['url']}?tab=analysis&runs={site[run]}{query}")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)


def held(page, name: str, *args):
    call = f"window.__deepscope.analysis.{name}({', '.join(json.dumps(a) for a in args)})"
    return page.evaluate(f"() => JSON.parse(JSON.stringify({call} ?? null))")


def matrix_rows(page) -> dict:
    wait_for(page, "() => { const m = window.__deepscope.analysis.matrix?.(); return m && !m.loading && m.width > 0 "
                   "&& m.rows.length > 0; }", timeout=15_000)  # fmt: skip
    return held(page, "matrix")


def test_without_labels_the_matrix_has_a_row_per_predicted_class(page, site):
    open_run(page, site, "unlabelled")
    m = matrix_rows(page)
    predicted = {c["name"]: c["wrong"] for c in held(page, "grid")["classes"]}
    assert m["groupBy"] == "prediction"
    assert dict(zip(m["rows"], m["counts"])) == predicted
    assert "predicted class" in page.get_by_test_id("matrix-head").inner_text()
    assert page.get_by_text("No rows").count() == 0


def test_without_labels_the_grid_and_the_matrix_list_the_same_predicted_classes(page, site):
    """A model that predicts only class 1 of its 5: one row in the grid and in the matrix, class 1's, and the matrix
    says that 4 classes are never predicted (the grid listed 0 and 1, the matrix 0 to 4)."""
    open_run(page, site, "one-class")
    m = matrix_rows(page)
    grid = held(page, "grid")["classes"]
    assert [c["class"] for c in grid] == [1] and grid[0]["wrong"] == 300
    assert [k for k in m["keys"] if k.startswith("class:")] == ["class:1"] and m["counts"] == [300]
    assert m["unpredicted"] == [0, 2, 3, 4]
    assert page.get_by_test_id("matrix-unpredicted").inner_text() == "4 classes never predicted: no rows"
    assert "only those" in page.locator(".grid-view .bar").inner_text()


def test_without_class_names_classes_are_numbered_everywhere(page, site):
    open_run(page, site, "unnamed")
    chips = page.locator(".classes .cls")
    chips.first.wait_for()
    assert chips.all_inner_texts() == ["0", "1", "2", "3"]
    page.get_by_role("button", name="+ Subset").click()
    for select in ("Label is", "Predicted is"):
        options = page.get_by_label(select).locator("option").all_inner_texts()
        assert options == ["any", "0", "1", "2", "3"]
    page.get_by_label("Label is").select_option("2")
    page.get_by_role("button", name="Add subset").click()
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.some((s) => s.name === 'labelled 2')")


def test_the_layer_picker_names_each_layers_module_type(page, site):
    open_run(page, site, "unnamed")
    options = page.get_by_label("Layer", exact=True).locator("option").all_inner_texts()
    assert options == ["0 · Linear (64)", "2 · Linear (4)"]


def test_colour_by_offers_only_what_the_run_has_and_metadata_columns(page, site):
    open_run(page, site, "regressor")
    colour = page.get_by_label("Colour by")
    values = colour.locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert values == ["none", "neuron", "column:size", "column:kind", "column:taken"]
    assert colour.input_value() == "none"
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)
    colour.select_option("column:kind")
    wait_for(page, "() => window.__deepscope.analysis.projection().legend.includes('small')")
    assert held(page, "projection")["legend"] == ["small", "large"]
    assert "color=column%3Akind" in page.url or "color=column:kind" in page.url
    colour.select_option("column:size")
    wait_for(page, "() => window.__deepscope.analysis.projection().colorBy === 'column:size'")
    page.get_by_test_id("projection-legend").get_by_test_id("color-legend").wait_for()
    # a labelled run offers no "one colour" and colours by label at first
    open_run(page, site, "unnamed")
    values = page.get_by_label("Colour by").locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert values[:3] == ["label", "prediction", "correct"] and "none" not in values


def test_a_time_column_colours_along_time_and_filters_by_days(page, site):
    """A timestamp column: coloured along a time scale whose legend reads days; the subset form asks for days
    (between two, both whole, or on one), bounded by the column's first and last day, which it shows."""
    open_run(page, site, "regressor")
    colour = page.get_by_label("Colour by")
    assert "taken (time)" in colour.locator("option").all_inner_texts()
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)
    colour.select_option("column:taken")
    legend = page.get_by_test_id("projection-legend").get_by_test_id("color-legend")
    legend.wait_for()
    ticks = [t.lstrip("≤≥") for t in legend.locator(".ticks span").all_inner_texts() if t]
    assert ticks and all(len(t) == 10 and t.startswith("2024-") for t in ticks), ticks
    assert "in time" in legend.inner_text()

    page.get_by_role("button", name="+ Subset").click()
    page.get_by_label("Column", exact=True).select_option("taken")
    assert page.get_by_label("Column condition").input_value() == "range"
    start = page.get_by_label("Column from")
    assert start.get_attribute("type") == "date"
    assert (start.get_attribute("min"), start.get_attribute("max")) == ("2024-03-01", "2024-05-14")
    assert page.get_by_test_id("column-span").inner_text() == "2024-03-01 00:00 – 2024-05-14 18:00"
    start.fill("2024-03-10")
    page.get_by_label("Column to").fill("2024-03-12")
    page.get_by_role("button", name="Add subset").click()
    days = TAKEN.astype("datetime64[D]")
    want = int(((days >= np.datetime64("2024-03-10")) & (days <= np.datetime64("2024-03-12"))).sum())
    assert want == 12  # three whole days, four instances a day
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.length === 1")
    assert held(page, "state")["subsets"][0] == {"name": "taken 2024-03-10 – 2024-03-12", "count": want, "filter": True}

    page.get_by_role("button", name="+ Subset").click()
    page.get_by_label("Column", exact=True).select_option("taken")
    page.get_by_label("Column condition").select_option("on")
    page.get_by_label("Column value").fill("2024-04-01")
    page.get_by_role("button", name="Add subset").click()
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.length === 2")
    assert held(page, "state")["subsets"][1] == {"name": "taken on 2024-04-01", "count": 4, "filter": True}


def test_an_empty_lasso_says_so_and_lasso_mode_stays_on(page, site):
    open_run(page, site, "unnamed")
    wait_for(page, "() => window.__deepscope.analysis.projection?.().indexed", timeout=20_000)
    page.get_by_role("button", name="Lasso").click()
    page.evaluate("() => window.__deepscope.analysis.projectionLasso([[40, 40], [41, 40], [41, 41], [40, 41]])")
    note = page.get_by_test_id("lasso-note")
    note.wait_for()
    assert "enclosed no points" in note.inner_text()
    p = held(page, "projection")
    assert p["lassoCount"] == 0 and p["lassoMode"]
    assert page.get_by_role("button", name="Lasso").get_attribute("aria-pressed") == "true"
    assert held(page, "state")["subsets"] == []


def test_the_selected_look_follows_the_highlight(page, site):
    subs = quote(json.dumps([{"name": "first", "where": {"label": 1}}]))
    open_run(page, site, "unnamed", f"&subs={subs}")
    chip = page.locator("[data-subset='first']")
    chip.locator(".pick").click()
    wait_for(page, "() => window.__deepscope.analysis.subsets().chips[0].selected")
    wait_for(page, "() => window.__deepscope.analysis.matrix().selectedRows.includes('first')")
    assert "selected" in chip.get_attribute("class")
    canvas = page.get_by_test_id("neuron-matrix")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.3, "y": 6})
    page.get_by_test_id("focus-label").filter(has_text="top instances of neuron").wait_for()
    wait_for(page, "() => !window.__deepscope.analysis.subsets().chips[0].selected")
    assert "selected" not in chip.get_attribute("class")
    assert "first" not in held(page, "matrix")["selectedRows"]
    # the subset again: it looks chosen again
    chip.locator(".pick").click()
    page.get_by_test_id("focus-label").filter(has_text="subset").wait_for()
    wait_for(page, "() => window.__deepscope.analysis.subsets().chips[0].selected")


def test_grid_counts_sit_beside_their_names_in_big_and_small_rows(page, site):
    open_run(page, site, "unnamed")
    rows = page.locator(".grid-view .cls")
    rows.first.wait_for()
    heights = []
    for r in range(rows.count()):
        name = rows.nth(r).locator(".name").bounding_box()
        counts = rows.nth(r).locator(".counts").bounding_box()
        assert counts["x"] >= name["x"] + name["width"] - 1, "the count is right of the name"
        assert abs((counts["y"] + counts["height"] / 2) - (name["y"] + name["height"] / 2)) <= 3
        heights.append(rows.nth(r).bounding_box()["height"])
    assert max(heights) - min(heights) <= 1


def test_long_class_names_stay_readable_and_the_legend_keeps_to_its_room(page, site):
    open_run(page, site, "long", "&inst=50")
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)
    legend = page.get_by_test_id("projection-legend").bounding_box()
    plot = page.get_by_test_id("projection").bounding_box()
    panel = page.get_by_test_id("projection").evaluate("(c) => c.closest('.panel').getBoundingClientRect().toJSON()")
    assert legend["height"] <= 52 and plot["height"] >= 200
    assert plot["y"] + plot["height"] <= panel["bottom"] + 1
    key = page.locator("[data-testid=projection-legend] .key").nth(5)
    assert key.get_attribute("title") == "category number 5 with a long suffix" and "5" in key.inner_text()
    # the grid's names keep the number that tells them apart
    grid = held(page, "grid")["classes"]
    shown = [c["shown"] for c in grid]
    assert len(set(shown)) == LONG_CLASSES and all(str(c["class"]) in c["shown"] for c in grid)
    # the matrix rows too, cut in the middle where too long
    m = matrix_rows(page)
    classes = [(k, s) for k, s in zip(m["keys"], m["shownRows"]) if k.startswith("class:")]
    assert len({s for _, s in classes}) == len(classes) == LONG_CLASSES
    assert all(k.removeprefix("class:") in s for k, s in classes)
    # and the score bars
    page.get_by_test_id("detail-scores").wait_for()
    names = page.locator("[data-testid=detail-scores] .cname").all_inner_texts()
    indices = page.locator("[data-testid=detail-scores] .bar-row").evaluate_all(
        "(rs) => rs.map((r) => r.dataset.class)"
    )
    assert all(i in n for i, n in zip(indices, names)) and len(set(names)) == len(names)


def test_clipped_matrices_show_that_they_scroll(page, site):
    page.set_viewport_size({"width": 1280, "height": 800})
    open_run(page, site, "long", "&neuron=3")
    matrix_rows(page)
    scroller = page.get_by_test_id("matrix-scroller")
    page.get_by_test_id("neuron-top").wait_for(timeout=20_000)
    over = scroller.evaluate("(s) => ({x: s.scrollWidth > s.clientWidth + 2, y: s.scrollHeight > s.clientHeight + 2})")
    assert over["y"], "120 class rows overflow the matrix panel at 1280×800"
    hint = page.get_by_test_id("matrix-more-below")
    hint.wait_for()
    assert hint.is_visible() and "scroll" in hint.inner_text()
    # beside the content, not over it: below the scroller's box
    inner = scroller.bounding_box()
    assert hint.bounding_box()["y"] >= inner["y"] + inner["height"] - 0.5
    scroller.evaluate("(s) => { s.scrollTop = s.scrollHeight; s.scrollLeft = s.scrollWidth; }")
    hint.wait_for(state="detached")
    confusion = page.get_by_test_id("confusion-scroller")
    c_over = confusion.evaluate(
        "(s) => ({x: s.scrollWidth > s.clientWidth + 2, y: s.scrollHeight > s.clientHeight + 2})"
    )
    inner = confusion.bounding_box()
    if c_over["x"]:
        page.get_by_test_id("confusion-more-right").wait_for()
        assert page.get_by_test_id("confusion-more-right").bounding_box()["x"] >= inner["x"] + inner["width"] - 0.5
    if c_over["y"]:
        page.get_by_test_id("confusion-more-below").wait_for()
        assert page.get_by_test_id("confusion-more-below").bounding_box()["y"] >= inner["y"] + inner["height"] - 0.5
    assert c_over["x"] or c_over["y"], "120 classes overflow the confusion panel"


def test_a_table_rows_inputs_are_a_table_of_feature_and_value(page, site):
    open_run(page, site, "unnamed", "&inst=0")
    features = page.get_by_test_id("instance-features")
    features.wait_for()
    rows = features.locator("tr.feat")
    assert rows.count() == 16
    assert features.locator("thead").inner_text().split() == ["feature", "value"]
    assert rows.nth(3).locator("th").inner_text() == "3"
    styles = rows.nth(3).evaluate(
        "(r) => [...r.children].map((c) => { const s = getComputedStyle(c); return [s.color, s.fontWeight]; })"
    )
    assert styles[0] != styles[1], "index and value look different"
    value = float(rows.nth(3).locator("td").inner_text())
    assert value == pytest.approx(held(page, "detail")["features"][3], abs=1e-2)
    # one count of decimals down the column (five significant digits for the largest value): the points line up
    texts = rows.locator("td").all_inner_texts()
    top = max(abs(v) for v in held(page, "detail")["features"])
    decimals = 4 - int(np.floor(np.log10(top)))
    assert all(len(t.partition(".")[2]) == decimals for t in texts), texts


PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2"]  # the first class colours (classColor)


def test_neighbours_of_a_table_row_show_their_label_and_prediction(page, site):
    """Table inputs have no preview: each neighbour still names its label and, where it differs, its prediction,
    each beside its class's colour."""
    open_run(page, site, "unnamed", "&inst=5")
    wait_for(
        page, "() => (window.__deepscope.analysis.detail?.()?.neighborClasses ?? []).length === 12", timeout=15_000
    )
    d = held(page, "detail")
    assert d["features"] and not d["image"] and d["text"] is None  # a table's row
    t = read(site["root"] / site["unnamed"]).instances().to_pydict()
    assert any(t["label"][i] != t["prediction"][i] for i in d["neighbors"])  # some misclassified: both shown
    for i, shown in zip(d["neighbors"], d["neighborClasses"]):
        label, pred = t["label"][i], t["prediction"][i]
        assert shown == ([label] if label == pred else [label, pred])
        classes = page.locator(f"[data-testid=neighbors] button[data-index='{i}'] [data-testid=neighbor-classes]")
        assert "".join(classes.inner_text().split()) == "→".join(map(str, shown))
        colours = classes.locator("i").evaluate_all("(is) => is.map((i) => getComputedStyle(i).backgroundColor)")
        assert colours == [rgb(PALETTE[c]) for c in shown]


def rgb(hex_colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)))


def test_the_grid_blocks_take_the_width_their_instances_need(page, serve, tmp_path):
    """26 correct and 567 misclassified in each class: the correct block is as narrow as its heading allows, the
    misclassified one takes the rest (it was held to two thirds, a third left mostly empty beside it)."""
    labels = np.repeat(np.arange(4), 593)
    rng = np.random.default_rng(0)
    predicted = labels.copy()
    for c in range(4):
        wrong = np.flatnonzero(labels == c)[26:]
        predicted[wrong] = (c + rng.integers(1, 4, len(wrong))) % 4
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
        model.bias.zero_()
    x = torch.nn.functional.one_hot(torch.from_numpy(predicted), 4).float() * 5
    with deepscope.init(project="kinds", name="mostly-wrong", dir=tmp_path) as run:
        deepscope.analyze(model, x, labels=labels, run=run, progress=False)
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run.id}")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length === 4", timeout=20_000)
    grid = held(page, "grid")
    assert [(c["correct"], c["wrong"]) for c in grid["classes"]] == [(26, 567)] * 4
    blocks = grid["blocks"]
    assert blocks["correct"] <= 60 and blocks["wrong"] >= 3 * blocks["correct"], blocks
    heads = page.locator(".grid-view .heads span").all_inner_texts()
    assert heads == ["correct", "misclassified"]


def test_the_confusion_tooltip_is_whole_in_the_window(page, serve, tmp_path):
    """At 1366 × 768 a 4 × 4 matrix sits at its panel's left: the tooltip of its last column ran past the panel's
    right edge and was cut ("labelled tech · predicted spor"). It shows whole, inside the window, beside the pointer."""
    torch.manual_seed(0)
    x = torch.randn(400, 16)
    names = ["world", "sports", "business", "technology"]
    labels = [i % 4 for i in range(400)]
    with deepscope.init(project="kinds", name="four", dir=tmp_path) as run:
        deepscope.analyze(mlp(16, 32, 4, 5), x, layers=["1"], labels=labels, class_names=names, run=run, progress=False)
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run.id}")
    page.get_by_test_id("confusion-matrix").wait_for()
    for i, j in ((3, 3), (0, 3), (3, 0)):
        said = f"labelled {names[i]} · predicted {names[j]}"
        x, y = point_until(page, "([i, j]) => window.__deepscope.analysis.confusion().locate(i, j)", [i, j],
                           showing(".confusion .tip", said), click=False)  # fmt: skip
        at = {"x": x, "y": y}
        tip = page.locator(".confusion .tip")
        text = tip.inner_text()
        assert said in text
        box = tip.bounding_box()
        right, bottom = box["x"] + box["width"], box["y"] + box["height"]
        assert box["x"] >= 0 and box["y"] >= 0 and right <= 1366 and bottom <= 768
        assert not (box["x"] <= at["x"] <= right and box["y"] <= at["y"] <= bottom)  # not under the pointer
        # drawn whole: its dark background inside each of its edges, where the panel cut it off before
        shot = page.screenshot(clip=box)
        img = np.asarray(Image.open(BytesIO(shot)).convert("RGB")).astype(int)
        h, w = img.shape[:2]
        for y, x0 in ((h // 2, 4), (h // 2, w - 5), (4, w // 2), (h - 5, w // 2)):
            assert img[y, x0].sum() < 200, (i, j, y, x0, img[y, x0])


def write_news(root) -> str:
    """Four classes of 3,000 texts through a 32-neuron hidden layer: a matrix of 4 rows × 32, a 4 × 4 confusion."""
    torch.manual_seed(6)
    y = torch.arange(3000) % 4
    x = torch.randn(3000, 16) + 2 * torch.nn.functional.one_hot(y, 16).float()
    model = mlp(16, 32, 4, 6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    names = ["world", "sports", "food", "tech"]
    texts = [f"article {i} about {names[int(c)]}" for i, c in enumerate(y)]
    with deepscope.init(project="kinds", name="news", dir=root) as run:
        deepscope.analyze(model, x, layers=["1", "2"], labels=y, class_names=names, metadata={"text": texts}, run=run,
                          progress=False)  # fmt: skip
    return run.id


def uncovered(page, testid: str, points: list[tuple[float, float]]) -> list[bool]:
    """Whether the element under each page point is the element `testid` itself (nothing drawn over it)."""
    return page.evaluate(
        "([id, pts]) => pts.map(([x, y]) => document.elementFromPoint(x, y)?.dataset?.testid === id)", [testid, points]
    )


def open_news(page, serve, tmp_path, width: int, height: int) -> None:
    """The news run at width × height, its neuron 3 selected, once the projection, top instances and rows are in."""
    run = write_news(tmp_path)
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run}&alayer=1&neuron=3")
    wait_for(page, "() => window.__deepscope?.analysis?.projection?.().drawn", timeout=20_000)
    page.get_by_test_id("neuron-top").wait_for()
    matrix_rows(page)


VIEWS = ("[data-testid=matrix-scroller]", "[data-testid=neuron-top]", "[data-testid=confusion-matrix]",
         "[data-testid=projection]")  # fmt: skip


def test_at_1366_by_768_every_view_is_whole(page, serve, tmp_path):
    """A 32-neuron matrix fits its panel's width with its whole legend ("no value"); the 4 × 4 confusion matrix shows
    its 16 cells, none under a hint; the projection ends inside its panel, inside the window."""
    open_news(page, serve, tmp_path, 1366, 768)
    settled(page, *VIEWS, still_ms=500)  # the hints measure after the views settle

    scroller = page.get_by_test_id("matrix-scroller")
    sizes = scroller.evaluate("(s) => [s.scrollWidth, s.clientWidth]")
    assert sizes[0] <= sizes[1] + 1, f"the matrix scrolls sideways: {sizes}"
    box = scroller.bounding_box()
    legend = page.locator(".nm .legend").get_by_text("no value").bounding_box()
    assert legend["x"] + legend["width"] <= box["x"] + box["width"]
    canvas = page.get_by_test_id("neuron-matrix").bounding_box()
    cells = [(canvas["x"] + canvas["width"] * (k + 0.5) / 32, canvas["y"] + canvas["height"] * (r + 0.5) / 4)
             for k in range(32) for r in range(4)]  # fmt: skip
    assert all(uncovered(page, "neuron-matrix", cells))

    at = [held(page, "confusion().locate", i, j) for i in range(4) for j in range(4)]
    assert all(uncovered(page, "confusion-matrix", [(p["x"], p["y"]) for p in at])), "a confusion cell is hidden"

    plot = page.get_by_test_id("projection").bounding_box()
    panel = page.get_by_test_id("projection").evaluate("(c) => c.closest('.panel').getBoundingClientRect().toJSON()")
    assert plot["y"] + plot["height"] <= panel["bottom"] + 1 and panel["bottom"] <= 768
    assert plot["height"] >= 200


def test_at_1600_by_1000_the_neuron_panel_is_as_tall_as_what_it_shows(page, serve, tmp_path):
    """4 rows and a neuron's top instances: the panel ends below them (it kept 46 % of the column, half of it empty)
    and the projection has the rest."""
    open_news(page, serve, tmp_path, 1600, 1000)
    settled(page, *VIEWS)
    panel = page.get_by_test_id("matrix-scroller").evaluate(
        "(s) => s.closest('.panel').getBoundingClientRect().toJSON()"
    )
    top = page.get_by_test_id("neuron-top").bounding_box()
    assert panel["bottom"] - (top["y"] + top["height"]) <= 24, "empty room below the top instances"
    plot = page.get_by_test_id("projection").bounding_box()
    assert plot["height"] >= 420


def test_the_projection_legend_lists_the_classes_it_has_points_of(page, site):
    """No labels: coloured by prediction, the legend names the classes predicted, not every class of the output."""
    open_run(page, site, "one-sided")
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)
    import urllib.request

    import pyarrow as pa

    url = f"{site['url'].rstrip('/')}/api/runs/{site['one-sided']}/analysis/instances?columns=prediction"
    with urllib.request.urlopen(url) as answer:
        predicted = sorted(set(pa.ipc.open_stream(answer.read()).read_all()["prediction"].to_pylist()))
    assert len(predicted) == 2  # the model predicts 2 of its 4 classes
    assert held(page, "projection")["legend"] == [str(c) for c in predicted]


def test_a_model_without_children_is_one_layer_with_neurons_and_a_projection(page, site):
    """A bare ``nn.Linear`` is analysed as a whole: the layer is "(model)", not an empty name that no query takes —
    its neurons, the matrix and the projection are drawn."""
    open_run(page, site, "bare")
    options = page.get_by_label("Layer", exact=True).locator("option").all_inner_texts()
    assert options == ["(model) · Linear (4)"]
    m = matrix_rows(page)
    assert m["neurons"] == 4 and sum(m["counts"]) == 300
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)


def test_a_run_without_classes_has_a_row_per_value_of_its_text_column(page, site):
    """A regressor (no labels, no class scores) with a text column: the matrix's rows are its values — it had none
    but subsets and pinned instances before."""
    open_run(page, site, "regressor")
    m = matrix_rows(page)
    assert m["groupBy"] == "column:kind" and m["rows"] == ["small", "large"] and m["counts"] == [200, 100]
    assert page.get_by_test_id("matrix-head").inner_text().split() == ["kind", "instances"]
    assert page.get_by_text("No rows").count() == 0


def test_a_layout_that_cannot_show_the_layer_says_why(page, site):
    """A layer whose every unit is 0 on every instance: its PCA puts all points at the origin, and the panel says so
    (not an empty-looking plot)."""
    open_run(page, site, "dead-layer")
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)
    note = page.get_by_test_id("projection-note")
    assert (
        note.inner_text() == "PCA: every instance has the same activations in this layer: all points lie at the origin."
    )
    open_run(page, site, "bare")
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn", timeout=20_000)
    assert page.get_by_test_id("projection-note").count() == 0
