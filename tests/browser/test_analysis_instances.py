"""The Instances tab's instance views in headless Chromium, over a real analysed run (a small CNN on 1,000 MNIST
digits): instance grids, instance detail with neighbours, subsets, the confusion matrix — each checked against
the analysis read back with ``deepscope.analyses.read``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote, unquote

import numpy as np
import pytest
import torch
from analysis_data import CLASS_NAMES, write_analysed
from browser_helpers import XSS, point_until, wait_for

import deepscope
from deepscope.analyses import read
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

LAYER = "features.10"  # the default layer: the last one before the output
GRID_AT = "(i) => window.__deepscope.analysis.grid().locate(i)"


def write_unlabelled(root) -> str:
    """An MLP over random vectors analysed without labels, its inputs described by a text column."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    texts = [f"review {i}: " + ("a great film" if i % 2 else "a dull plot") for i in range(300)]
    data = torch.utils.data.TensorDataset(torch.randn(300, 16))
    with deepscope.init(project="browser", name="unlabelled-text", dir=root) as run:
        deepscope.analyze(model, data, layers=["1", "2"], class_names=list("abcd"), metadata={"text": texts}, run=run,
                          progress=False)  # fmt: skip
    return run.id


def write_partly_labelled(root) -> str:
    """The same kind of MLP, every third instance without a label (-1)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    labels = [-1 if i % 3 == 0 else i % 4 for i in range(300)]
    with deepscope.init(project="browser", name="partly-labelled", dir=root) as run:
        deepscope.analyze(model, torch.randn(300, 16), layers=["1"], labels=labels, class_names=list("abcd"), run=run,
                          progress=False)  # fmt: skip
    return run.id


def write_hidden_only(root) -> str:
    """An MLP analysed on its two hidden layers, not on its output."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24), torch.nn.Linear(24, 4)
    )
    with deepscope.init(project="browser", name="hidden-only", dir=root) as run:
        deepscope.analyze(model, torch.randn(200, 16), layers=["1", "2"], labels=[i % 4 for i in range(200)],
                          class_names=list("abcd"), run=run, progress=False)  # fmt: skip
    return run.id


def write_no_scores(root) -> str:
    """Labelled instances through a model whose outputs are no class scores (scores='none'): no predictions."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 6))
    with deepscope.init(project="browser", name="no-scores", dir=root) as run:
        deepscope.analyze(model, torch.randn(150, 16), layers=["1"], labels=[i % 3 for i in range(150)],
                          class_names=list("xyz"), scores="none", run=run, progress=False)  # fmt: skip
    return run.id


class StopsPartWay(torch.utils.data.Dataset):
    """300 vectors, of which the 131st is never read: the analysis stops there, as a Ctrl-C would stop it."""

    def __len__(self) -> int:
        return 300

    def __getitem__(self, i: int):
        if i >= 130:
            raise KeyboardInterrupt
        return torch.randn(16), i % 4


def write_interrupted(root) -> str:
    """An analysis stopped part-way (by KeyboardInterrupt): rows on disk, no finished analysis."""
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    with deepscope.init(project="browser", name="interrupted", dir=root) as run, pytest.raises(KeyboardInterrupt):
        deepscope.analyze(model, StopsPartWay(), layers=["1"], batch_size=32, run=run, progress=False)
    return run.id


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, built_app):
    data = write_analysed(tmp_path_factory.mktemp("analysed"))
    unlabelled = write_unlabelled(data.root)
    partly = write_partly_labelled(data.root)
    hidden_only = write_hidden_only(data.root)
    no_scores = write_no_scores(data.root)
    interrupted = write_interrupted(data.root)
    server = BackgroundServer(data.root, port=0).start()
    table = read(data.root / data.run).instances().to_pydict()
    yield {
        "url": server.url,
        "data": data,
        "table": table,
        "scores": read(data.root / data.run).scores(np.arange(len(table["index"]))),
        "unlabelled": unlabelled,
        "partly": partly,
        "hidden_only": hidden_only,
        "no_scores": no_scores,
        "interrupted": interrupted,
    }
    server.stop()


def api(base: str, path: str):
    with urllib.request.urlopen(f"{base.rstrip('/')}/api/{path}") as r:
        return json.loads(r.read())


def open_tab(page, analysed, query: str = "") -> None:
    run = analysed["data"].run
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}{query}")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)


def held(page, name: str, *args):
    call = f"window.__deepscope.analysis.{name}({', '.join(json.dumps(a) for a in args)})"
    return page.evaluate(f"() => JSON.parse(JSON.stringify({call} ?? null))")


def click_instance(page, index: int) -> None:
    point_until(page, GRID_AT, index, "(i) => window.__deepscope.view().aInstance === i")


def detail_of(page, index: int) -> dict:
    wait_for(page, "(i) => window.__deepscope.analysis.detail?.()?.index === i", index)
    return held(page, "detail")


def test_grids_hold_each_class_correct_and_misclassified(page, analysed):
    open_tab(page, analysed)
    t = analysed["table"]
    label, correct = np.array(t["label"]), np.array(t["correct"])
    grid = held(page, "grid")
    assert grid["hasLabels"] and grid["selected"] is None and grid["highlighted"] == 0
    assert [c["name"] for c in grid["classes"]] == CLASS_NAMES
    for c in grid["classes"]:
        rows = label == c["class"]
        assert (c["correct"], c["wrong"]) == (int((rows & correct).sum()), int((rows & ~correct).sum()))
    assert all(c["correct"] > 0 for c in grid["classes"]) and sum(c["wrong"] for c in grid["classes"]) > 20
    # the blocks' headings are whole inside the panel (a narrow misclassified block cut its heading to "misclassifi")
    heads = page.locator(".grid-view .heads span")
    panel = page.locator(".grid-view").bounding_box()
    last = heads.nth(1).evaluate(
        "(e) => { const r = document.createRange(); r.selectNodeContents(e); return r.getBoundingClientRect().right; }"
    )
    assert last <= panel["x"] + panel["width"] + 0.5 and heads.nth(1).inner_text() in ("misclassified", "wrong")
    # drawing order: most confident first; the misclassified by predicted class, then most confident first
    score, pred = np.asarray(t["score"], dtype=np.float32), np.array(t["prediction"])
    for r, c in enumerate(grid["classes"]):
        members = page.evaluate("(r) => window.__deepscope.analysis.grid().members(r)", r)
        right = np.flatnonzero((label == c["class"]) & correct)
        wrong = np.flatnonzero((label == c["class"]) & ~correct)
        assert members["correct"] == right[np.lexsort((right, -score[right]))].tolist()
        assert members["wrong"] == wrong[np.lexsort((wrong, -score[wrong], pred[wrong]))].tolist()

    # a class name selects the class: its instances are highlighted in the grid and in the tab's focus
    before = page.get_by_test_id("instance-grid").bounding_box()
    page.locator("[data-testid=instance-grid] ~ button[data-class='3']").click()
    wait_for(page, "(n) => window.__deepscope.analysis.grid().highlighted === n", int((label == 3).sum()))
    assert held(page, "state")["focus"] == "class three"
    assert "cls=3" in page.url
    assert page.get_by_test_id("grid-highlighted").is_visible()
    assert page.get_by_test_id("instance-grid").bounding_box() == before  # the count appears, no square moves


def test_a_square_shows_its_instance_scores_image_and_neighbours(page, analysed):
    open_tab(page, analysed)
    t = analysed["table"]
    wrong = [i for i, ok in enumerate(t["correct"]) if not ok]
    index = wrong[3]
    tip_shows = "(i) => document.querySelector('.grid-view .tip')?.innerText.split(/\\s/)[0] === '#' + i"
    point_until(page, GRID_AT, index, tip_shows, click=False)
    tip = page.locator(".grid-view .tip")
    label, pred, score = t["label"][index], t["prediction"][index], t["score"][index]
    assert (
        tip.inner_text().split()
        == f"#{index} label {CLASS_NAMES[label]} predicted {CLASS_NAMES[pred]} ✗ score {score:.3f}".split()
    )
    click_instance(page, index)
    d = detail_of(page, index)
    assert (d["label"], d["prediction"], d["correct"]) == (t["label"][index], t["prediction"][index], False)
    scores = analysed["scores"][index]
    assert d["scores"] == 10
    assert [s["index"] for s in d["shownScores"]] == np.argsort(-scores, kind="stable").tolist()
    assert [s["score"] for s in d["shownScores"]] == pytest.approx(np.sort(scores)[::-1].tolist(), rel=1e-5)
    assert page.get_by_test_id("detail-label").inner_text().strip() == CLASS_NAMES[t["label"][index]]
    assert page.get_by_test_id("detail-prediction").inner_text().strip() == CLASS_NAMES[t["prediction"][index]]
    assert held(page, "grid")["selected"] == index
    assert f"inst={index}" in page.url

    # the image preview: 28 × 28 grey pixels drawn, not a blank canvas
    img = page.get_by_test_id("instance-image")
    assert img.get_attribute("data-drawn") == "28x28x1"
    red = "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, k) => k % 4 === 0)"
    lit = img.evaluate(f"c => ({red})(c).filter((v) => v > 128).length")
    assert 30 < lit < 28 * 28 / 2  # a digit's strokes

    # neighbours: the server's, and the exact cosine neighbours of the layer's activations
    wait_for(page, "() => window.__deepscope.analysis.detail()?.neighborPreviews === 12")
    d = held(page, "detail")
    assert d["layer"] == LAYER
    server = api(analysed["url"], f"runs/{analysed['data'].run}/analysis/neighbors?layer={LAYER}&index={index}&k=12")
    assert d["neighbors"] == server["indices"]
    x = read(analysed["data"].root / analysed["data"].run).matrix(LAYER).astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist = 1 - unit @ unit[index]
    dist[index] = np.inf
    assert sorted(d["neighbors"]) == sorted(np.argsort(dist, kind="stable")[:12].tolist())
    assert d["distances"] == pytest.approx(np.sort(dist)[:12].tolist(), abs=1e-4)
    assert page.locator("[data-testid=neighbors] canvas[data-drawn]").count() == 12

    # a neighbour is selected by a click; pinning adds it to the URL
    nb = d["neighbors"][0]
    page.locator(f"[data-testid=neighbors] button[data-index='{nb}']").click()
    assert detail_of(page, nb)["label"] == t["label"][nb]
    page.get_by_role("button", name="Pin as matrix row").click()
    wait_for(page, "(i) => window.__deepscope.view().aPinned.includes(i)", nb)
    assert held(page, "detail")["pinned"]
    page.go_back()  # from the neighbour back to the instance it was found from (as the URL was then)
    detail_of(page, index)
    page.go_forward()  # and on to the neighbour, pinned
    detail_of(page, nb)
    assert nb in page.evaluate("() => window.__deepscope.view().aPinned")


def test_subsets_from_the_form_and_from_a_confusion_cell(page, analysed):
    open_tab(page, analysed)
    t = analysed["table"]
    notes = analysed["data"].notes
    page.get_by_role("button", name="+ Subset").click()
    page.get_by_label("Text contains").fill("How")
    page.get_by_role("button", name="Add subset").click()
    want = sum("how" in n.lower() for n in notes)  # any case
    wait_for(page, "(n) => window.__deepscope.analysis.state().subsets.some(s => s.count === n)", want)
    s = held(page, "state")
    assert s["subsets"] == [{"name": "text has How", "count": want, "filter": True}]
    assert s["focus"] == "subset “text has How”" and s["focusCount"] == want
    wait_for(page, "(n) => window.__deepscope.analysis.grid().highlighted === n", want)

    # a bad value is refused inline, before it reaches the server
    page.get_by_role("button", name="+ Subset").click()
    page.get_by_label("Column", exact=True).select_option("odd")
    page.get_by_label("Column value").fill("maybe")
    page.get_by_role("button", name="Add subset").click()
    assert "true or false" in page.get_by_test_id("subset-error").inner_text()
    page.get_by_label("Column value").fill("true")
    page.get_by_label("Label is").select_option("7")
    page.get_by_role("button", name="Add subset").click()
    odd7 = sum(1 for i, y in enumerate(t["label"]) if y == 7 and t["odd"][i])
    wait_for(page, "(n) => window.__deepscope.analysis.state().subsets.length === 2", 2)
    assert held(page, "state")["subsets"][1]["count"] == odd7

    # a numeric column by range (an equality on floats would rarely match anything); no match is refused
    ink = np.array(t["ink"])
    lo, hi = np.quantile(ink, [0.25, 0.5]).round(3)
    page.get_by_role("button", name="+ Subset").click()
    page.get_by_label("Column", exact=True).select_option("ink")
    page.get_by_label("Column condition").select_option("range")
    page.get_by_label("Column from").fill(str(hi + 1))
    page.get_by_role("button", name="Add subset").click()
    page.get_by_test_id("subset-error").wait_for()
    assert "No instance matches" in page.get_by_test_id("subset-error").inner_text()
    # with a second condition, the error says which one matches nothing by itself
    page.get_by_label("Label is").select_option("7")
    page.get_by_role("button", name="Add subset").click()
    wait_for(
        page, "() => document.querySelector('[data-testid=subset-error]')?.innerText.includes('none matches “ink')"
    )
    # Cancel empties the form: its conditions do not join the next subset unseen
    page.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="+ Subset").click()
    assert (
        page.get_by_label("Label is").input_value() == ""
        and page.get_by_label("Column", exact=True).input_value() == ""
    )
    page.get_by_label("Column", exact=True).select_option("ink")
    page.get_by_label("Column condition").select_option("range")
    page.get_by_label("Column from").fill(str(lo))
    page.get_by_label("Column to").fill(str(hi))
    page.get_by_role("button", name="Add subset").click()
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.length === 3")
    s = held(page, "state")["subsets"][2]
    assert s["name"] == f"ink {lo}–{hi}" and s["count"] == int(((ink >= lo) & (ink <= hi)).sum())
    page.get_by_role("button", name=f"Remove subset ink {lo}–{hi}").click()

    # the largest confusion: a cell click makes its subset
    conf = held(page, "confusion")
    m = np.array(conf["matrix"])
    label, pred = np.array(t["label"]), np.array(t["prediction"])
    assert m.tolist() == [[int(((label == i) & (pred == j)).sum()) for j in range(10)] for i in range(10)]
    off = m - np.diag(np.diag(m))
    i, j = np.unravel_index(off.argmax(), off.shape)
    point_until(page, "([i, j]) => window.__deepscope.analysis.confusion().locate(i, j)", [int(i), int(j)],
                "() => window.__deepscope.analysis.state().subsets.length === 3")  # fmt: skip
    s = held(page, "state")["subsets"][2]
    assert s == {
        "name": f"labelled {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}",
        "count": int(m[i, j]),
        "filter": True,
    }
    assert held(page, "grid")["highlighted"] == int(m[i, j])

    # removing a subset drops its chip and its filter from the URL
    page.get_by_role("button", name=f"Remove subset labelled {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}").click()
    wait_for(page, "() => window.__deepscope.analysis.state().subsets.length === 2")
    assert "predicted" not in json.dumps(page.evaluate("() => window.__deepscope.view().aSubsets"))


def test_metadata_is_shown_as_text_never_as_markup(page, analysed):
    notes = analysed["data"].notes
    index = notes.index(XSS)
    open_tab(page, analysed, f"&inst={index}")
    d = detail_of(page, index)
    assert d["fields"]["note"] == XSS
    cell = page.get_by_test_id("detail-fields").locator("tr", has_text="note").locator("td")
    assert cell.inner_text() == XSS
    assert page.get_by_test_id("detail-fields").locator("img").count() == 0
    assert page.evaluate("() => window.__pwned") is None


def test_the_url_reproduces_the_selection(page, analysed):
    open_tab(page, analysed)
    t = analysed["table"]
    index = next(i for i, ok in enumerate(t["correct"]) if not ok and t["label"][i] == 8)
    click_instance(page, index)
    detail_of(page, index)
    page.locator("[data-testid=instance-grid] ~ button[data-class='8']").click()
    wait_for(page, "() => window.__deepscope.view().aClass === 8")
    page.reload()
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    assert detail_of(page, index)["prediction"] == t["prediction"][index]
    grid = held(page, "grid")
    assert grid["selected"] == index and grid["highlighted"] == sum(1 for y in t["label"] if y == 8)


def test_a_run_without_analysis_says_why_in_the_servers_words(page, analysed):
    """A run never analysed and one whose analysis stopped part-way: the empty state says the first has none (the
    run list tells it: nothing is asked) and gives the second's reason as the server words it (its progress, asked
    once — a 200: no failed request in the console), as text."""
    asked: list[str] = []
    page.on("response", lambda r: asked.append(r.url) if r.status == 404 else None)
    plain, interrupted = analysed["data"].plain, analysed["interrupted"]
    page.goto(f"{analysed['url']}?tab=analysis&runs={plain},{interrupted}")
    page.get_by_text("None of the selected runs has an analysis.").wait_for()
    reasons = page.get_by_test_id("analysis-reasons")
    with pytest.raises(urllib.error.HTTPError) as answer:
        api(analysed["url"], f"runs/{interrupted}/analysis")
    assert answer.value.code == 404
    detail = json.loads(answer.value.read())["detail"]
    assert "interrupted after" in detail and "resume" in detail
    for run, said in ((plain, "no analysis recorded"), (interrupted, detail)):
        item = reasons.locator(f"li[data-run='{run}'] .reason")
        wait_for(page, "([run, d]) => document.querySelector(`li[data-run='${run}'] .reason`)?.textContent === d",
                 [run, said])  # fmt: skip
        assert item.inner_text() == said
        assert reasons.locator(f"li[data-run='{run}'] b").inner_text() in ("not-analysed", "interrupted")
    assert page.evaluate("() => typeof window.__deepscope.analysis?.grid") == "undefined"
    assert asked == [] and not page.console.take("/analysis")  # nothing failed
    assert page.evaluate("() => window.__pwned") is None


def test_the_runs_table_says_what_a_run_holds_and_opens_it(page, analysed):
    run, plain = analysed["data"].run, analysed["data"].plain
    page.goto(f"{analysed['url']}?tab=runs&runs={plain}")
    chip = page.locator(f'tr[data-run="{run}"] [data-recorded]')
    chip.first.wait_for()
    assert chip.evaluate_all("(els) => els.map((e) => e.dataset.recorded)") == ["analysis"]
    assert page.locator(f'tr[data-run="{plain}"] [data-recorded]').count() == 0  # logged values only
    chip.click()
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["tab"] == "analysis" and view["detail"] == run and run in view["runs"]


def test_without_labels_rows_are_predicted_classes_and_inputs_are_texts(page, analysed):
    run = analysed["unlabelled"]
    table = read(analysed["data"].root / run).instances().to_pydict()
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}&inst=5")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    grid = held(page, "grid")
    pred = np.array(table["prediction"])
    assert not grid["hasLabels"]
    assert {c["name"]: (c["correct"], c["wrong"]) for c in grid["classes"]} == {
        name: (None, int((pred == c).sum())) for c, name in enumerate("abcd")
    }
    page.get_by_text("correctness unknown").wait_for()
    page.get_by_test_id("confusion-unavailable").wait_for()
    # coloured by what there is: the predictions (labels and correctness are not offered)
    colour = page.get_by_label("Colour by")
    assert colour.input_value() == "prediction"
    assert colour.locator("option[value=label]").count() == 0 and colour.locator("option[value=correct]").count() == 0
    d = detail_of(page, 5)
    assert d["text"] == table["text"][5] and not d["image"] and d["label"] is None and d["correct"] is None
    assert page.get_by_test_id("instance-text").inner_text() == table["text"][5]
    wait_for(page, "() => window.__deepscope.analysis.detail()?.neighborPreviews === 12")
    first = held(page, "detail")["neighbors"][0]
    assert table["text"][first] in page.get_by_test_id("neighbors").inner_text()

    # a neuron's top instances show the start of their texts too
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}&alayer=1&neuron=3")
    wait_for(page, "() => window.__deepscope?.analysis?.matrixTop?.().indices.length > 0", timeout=20_000)
    top = held(page, "matrixTop")["indices"]
    page.get_by_test_id("top-text").nth(len(top) - 1).wait_for()
    shown = page.get_by_test_id("top-text").all_inner_texts()
    assert shown == [table["text"][i] for i in top]  # short texts: whole


def test_labels_without_predictions_are_rows_of_their_class_with_correctness_unknown(page, analysed):
    """Outputs that are no class scores: the rows are the labels, with no correct / misclassified blocks (every
    instance was drawn as misclassified), coloured by label; the confusion panel says why it has nothing."""
    run = analysed["no_scores"]
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    grid = held(page, "grid")
    assert {c["name"]: (c["correct"], c["wrong"]) for c in grid["classes"]} == {"x": (None, 50), "y": (None, 50),
                                                                               "z": (None, 50)}  # fmt: skip
    page.get_by_text("no predictions (the outputs are no class scores)").wait_for()
    assert page.locator(".grid-view .heads").count() == 0
    assert "not taken as scores" in page.get_by_test_id("confusion-unavailable").inner_text()
    colour = page.get_by_label("Colour by")
    assert colour.input_value() == "label" and colour.locator("option[value=prediction]").count() == 0


def test_unlabelled_instances_are_neither_correct_nor_misclassified(page, analysed):
    run = analysed["partly"]
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    grid = held(page, "grid")
    none = [c for c in grid["classes"] if c["class"] == -1]
    assert len(none) == 1 and none[0]["correct"] + none[0]["wrong"] == 100
    row = page.locator(".rowlabel[data-class='-1'], [data-class='-1']").first
    assert "unlabelled" in row.inner_text() and "100" in row.inner_text()
    assert row.locator(".bad").count() == 0  # not counted as misclassified


def test_a_new_analysis_of_the_open_run_is_offered_for_reload(page, serve, tmp_path):
    """The run is analysed again while its views are open: they say so, and load the new analysis on request."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x, y = torch.randn(200, 16), torch.randint(0, 4, (200,))
    with deepscope.init(project="browser", name="again", dir=tmp_path) as run:
        deepscope.analyze(model, x, layers=["1"], labels=y, run=run, progress=False)
    server = serve(tmp_path)
    page.goto(f"{server.url}?tab=analysis&runs={run.id}")
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    assert page.get_by_test_id("analysis-stale").count() == 0
    with torch.no_grad():
        model[2].weight.mul_(-1)  # other weights: another analysis
    deepscope.analyze(model, x[:150], layers=["1", "2"], labels=y[:150], run=tmp_path / run.id, progress=False)
    stale = page.get_by_test_id("analysis-stale")
    stale.wait_for(timeout=15_000)
    assert "(150 instances, 2 layers)" in stale.inner_text()
    # until loaded, the views keep the analysis they loaded, whole and still: its layers, its counts
    assert page.get_by_role("combobox", name="Layer").locator("option").all_inner_texts() == ["1 · ReLU (32)"]
    assert "200 instances" in page.locator(".analysis").inner_text()
    assert page.locator(".grid").get_attribute("inert") is not None
    page.get_by_role("button", name="Load the new analysis").click()
    wait_for(page, "() => window.__deepscope?.analysis?.grid?.().classes.length > 0", timeout=20_000)
    page.get_by_role("combobox", name="Layer").wait_for()
    assert page.get_by_test_id("analysis-stale").count() == 0
    assert "2 · Linear (4)" in page.get_by_role("combobox", name="Layer").inner_text()  # the new analysis' second layer
    assert "150 instances" in page.locator(".analysis").inner_text()


def test_a_lasso_on_a_layer_a_new_analysis_dropped_leaves_the_link(page, serve, tmp_path):
    """A lasso subset on layer "0"; the run is analysed again on layer "2" only, and the new analysis loaded: the
    subset is removed with its reason, once, and leaves the URL — a reload asks nothing of it and says nothing."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x, y = torch.randn(200, 16), torch.randint(0, 4, (200,))
    with deepscope.init(project="browser", name="reanalysed", dir=tmp_path) as run:
        deepscope.analyze(model, x, layers=["0", "2"], labels=y, run=run, progress=False)
    lasso = {"layer": "0", "method": "pca", "polygon": [[-100, -100], [100, -100], [100, 100], [-100, 100]]}
    kept = {"name": "class 1", "where": {"label": 1}}
    subs = json.dumps([{"name": "lasso", "where": {"lasso": lasso}}, kept])
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if r.status == 400 else None)
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run.id}&sub=lasso&focus=subset&subs={quote(subs)}")
    wait_for(page, "() => window.__deepscope?.analysis?.state?.().subsets.length === 2", timeout=20_000)
    assert held(page, "state")["focusCount"] == 200  # the lasso holds every instance

    deepscope.analyze(model, x, layers=["2"], labels=y, run=tmp_path / run.id, progress=False)
    page.get_by_test_id("analysis-stale").wait_for(timeout=15_000)
    # until loaded, the views keep the analysis they loaded, frozen: nothing is asked of the new one
    page.wait_for_timeout(1000)
    refused.clear()
    page.console.take("/analysis/")
    page.get_by_role("button", name="Load the new analysis").click()
    banner = page.locator(".banner", has_text="was removed")
    banner.wait_for(timeout=20_000)
    assert "Subset “lasso” was removed" in banner.inner_text() and "'0'" in banner.inner_text()
    wait_for(page, "() => window.__deepscope.view().aSubsets.length === 1")
    assert page.evaluate("() => window.__deepscope.view().aSubsets") == [kept]
    assert "lasso" not in unquote(page.url) and held(page, "state")["subsets"][0]["name"] == "class 1"
    assert [u.rsplit("/", 1)[1] for u in refused] == ["subset"]  # asked once, not once per view
    assert len(page.console.take("/subset")) == 1

    page.reload()
    wait_for(page, "() => window.__deepscope?.analysis?.state?.().subsets.length === 1", timeout=20_000)
    page.wait_for_timeout(500)
    assert len(refused) == 1 and page.locator(".banner").count() == 0


def test_long_names_and_values_keep_their_counts_and_fold(page, serve, tmp_path):
    """A long subset name is cut, never its count; a long metadata value folds behind "show all"."""
    from urllib.parse import quote

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    inputs = torch.randn(60, 16)
    long_name = "source=" + "very long source name " * 8
    meta = {"source": ["a" if i % 2 else "b" for i in range(60)], "details": ["word " * 700] + ["short"] * 59}
    with deepscope.init(project="browser", name="long", dir=tmp_path) as run:
        deepscope.analyze(model, inputs, layers=["1"], metadata=meta, run=run, progress=False)
    server = serve(tmp_path)
    subs = quote(json.dumps([{"name": long_name, "where": {"source": "a"}}]))
    page.goto(f"{server.url}?tab=analysis&runs={run.id}&inst=0&subs={subs}")
    chip = page.locator(f"[data-subset='{long_name}']")
    chip.wait_for()
    count, box = chip.locator(".n").bounding_box(), chip.bounding_box()
    assert chip.locator(".n").inner_text() == "30" and count["x"] + count["width"] <= box["x"] + box["width"]
    fields = page.get_by_test_id("detail-fields")
    more = fields.get_by_role("button", name="show all 3,500 characters")
    more.wait_for()
    assert fields.bounding_box()["height"] < 150
    more.click()
    assert fields.bounding_box()["height"] > 150
    # a table's row of inputs: its 16 numbers, as given
    features = page.get_by_test_id("instance-features")
    assert features.locator(".feat").count() == 16
    assert held(page, "detail")["features"] == pytest.approx(inputs[0].tolist(), rel=1e-6)


def test_the_default_layer_is_the_last_one_that_is_not_the_output(page, analysed):
    """Layers 1, 2 of an MLP whose output (4 classes) was not analysed: the last, 2, not the one before it."""
    page.goto(f"{analysed['url']}?tab=analysis&runs={analysed['hidden_only']}")
    wait_for(page, "() => window.__deepscope?.analysis?.state?.().n === 200", timeout=20_000)
    page.get_by_label("Layer", exact=True).wait_for()
    assert page.get_by_label("Layer", exact=True).input_value() == "2"


def test_a_sequence_layer_says_it_was_pooled_over_positions(page, serve, tmp_path):
    """A (B, T, D) output: no spatial maps, and T (the first batch's padded length) is not shown as its shape."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 3))
    with deepscope.init(project="browser", name="tokens", dir=tmp_path) as run:
        deepscope.analyze(model, torch.randint(0, 20, (30, 6)), layers=["0"], run=run, progress=False)
    server = serve(tmp_path)
    page.goto(f"{server.url}?tab=analysis&runs={run.id}&inst=2")
    none = page.get_by_test_id("feature-maps-none")
    none.wait_for()
    assert "outputs 8 values for each position of a sequence" in " ".join(none.inner_text().split())
    assert "6 × 8" not in none.inner_text()


def test_two_columns_below_1240_pixels_keep_every_panel_whole(page, analysed):
    """At 1,100 px the views take two columns and the page scrolls: the projection stays inside its panel and the
    instance grid keeps room for its rows."""
    page.set_viewport_size({"width": 1100, "height": 900})
    open_tab(page, analysed)
    projection = page.get_by_test_id("projection")
    projection.wait_for()
    canvas = projection.bounding_box()
    panel = projection.evaluate("(c) => c.closest('.panel').getBoundingClientRect().toJSON()")
    assert canvas["y"] + canvas["height"] <= panel["bottom"] + 1 and canvas["height"] >= 250
    grid = page.get_by_test_id("instance-grid").evaluate("(c) => c.closest('.body').clientHeight")
    assert grid >= 300


def test_a_hundred_classes_are_told_apart_and_their_confusion_matrix_is_drawn(page, serve, tmp_path):
    """Names sharing "class_" and "_name" keep their distinct middle where they are cut; a hundred classes draw a
    scrolling confusion matrix of 5-pixel cells (of 1 pixel, it drew nothing)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 100))
    names = [f"class_{c:03d}_name" for c in range(100)]
    labels = np.arange(400) % 100
    with deepscope.init(project="browser", name="hundred", dir=tmp_path) as run:
        deepscope.analyze(model, torch.randn(400, 16), labels=labels, class_names=names, layers=["1"], run=run,
                          progress=False)  # fmt: skip
    page.set_viewport_size({"width": 1500, "height": 950})
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run.id}")
    page.get_by_test_id("confusion-matrix").wait_for()
    rows = page.locator(".nm").all_inner_texts()
    assert rows[:3] == ["…000…", "…001…", "…002…"]
    drawn = page.evaluate(
        """() => {
          const c = document.querySelector('[data-testid=confusion-matrix]');
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let coloured = 0;
          for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && (px[i] < 240 || px[i + 1] < 240)) coloured++;
          return { coloured, width: c.clientWidth, panel: c.parentElement.clientWidth };
        }"""
    )
    assert drawn["coloured"] > 400  # the 400 instances' cells, at least a pixel each
    assert drawn["width"] > drawn["panel"]  # wider than its panel: it scrolls


def test_row_shares_under_half_a_percent_read_below_one_not_zero(page, serve, tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    predicted = torch.tensor([0] * 200 + [1])  # one of 201 instances of class 0 taken for class 1: 0.5 %
    x = torch.nn.functional.one_hot(predicted, 2).float() * 10
    with deepscope.init(project="browser", name="rare", dir=tmp_path) as run:
        deepscope.analyze(model, x, labels=np.zeros(201, np.int64), class_names=["a", "b"], run=run, progress=False)
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run.id}")
    page.get_by_test_id("confusion-matrix").wait_for()
    page.get_by_label("row %").check()
    wait_for(page, "() => window.__deepscope.analysis.confusion()?.normalized === true")
    assert held(page, "confusion")["texts"][0] == [">99", "<1"]  # 99.5 %: not all of the row, never "100"


def test_an_accuracy_short_of_all_never_reads_100_percent(page, serve, tmp_path):
    """2,999 of 3,000 right: the header says 99.97 %, not 100.0 %; a row's share of 300 of 301 is ">99", not 100."""
    model = torch.nn.Linear(10, 10)
    with torch.no_grad():
        model.weight.copy_(torch.eye(10))
        model.bias.zero_()
    predicted = np.arange(3000) % 10
    labels = predicted.copy()
    labels[0] = 1  # one instance of class 1 taken for class 0
    x = torch.nn.functional.one_hot(torch.from_numpy(predicted), 10).float() * 10
    with deepscope.init(project="browser", name="almost", dir=tmp_path) as run:
        deepscope.analyze(model, x, labels=labels, run=run, progress=False)
    page.goto(f"{serve(tmp_path).url}?tab=analysis&runs={run.id}")
    accuracy = page.get_by_test_id("accuracy")
    accuracy.wait_for()
    assert accuracy.inner_text() == "accuracy 99.97 %"
    page.get_by_test_id("confusion-matrix").wait_for()
    page.get_by_label("row %").check()
    wait_for(page, "() => window.__deepscope.analysis.confusion()?.normalized === true")
    assert held(page, "confusion")["texts"][1][:2] == ["<1", ">99"]  # 300 of 301: not "100"


def test_the_selected_instance_ring_leaves_its_cell_count_readable(page, serve, tmp_path):
    """A cell of 300 (three digits as wide as the cell): the ring that marks the selected instance's cell is drawn
    around the count, never over its digits — the pixels at and beside the digits are those of the cell unringed."""
    model = torch.nn.Linear(10, 10)
    with torch.no_grad():
        model.weight.copy_(torch.eye(10))
        model.bias.zero_()
    labels = np.arange(3000) % 10
    x = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).float() * 10  # every instance predicted right
    with deepscope.init(project="browser", name="ringed", dir=tmp_path) as run:
        deepscope.analyze(model, x, labels=labels, run=run, progress=False)
    base = f"{serve(tmp_path).url}?tab=analysis&runs={run.id}"

    def cell(query: str) -> np.ndarray:
        """The pixels of the cell (0, 0): labelled and predicted 0 (a device pixel ratio of 1)."""
        page.goto(base + query)
        wait_for(page, "(q) => { const c = window.__deepscope?.analysis?.confusion?.();"
                       " return c && (q === '' || c.instanceCell !== null); }", query, timeout=15_000)  # fmt: skip
        size = held(page, "confusion")["cell"]
        at = page.evaluate("() => window.__deepscope.analysis.confusion().locate(0, 0)")
        box = page.get_by_test_id("confusion-matrix").bounding_box()
        x, y = round(at["x"] - box["x"] - size / 2), round(at["y"] - box["y"] - size / 2)
        rgba = page.get_by_test_id("confusion-matrix").evaluate(
            "(c, [x, y, s]) => Array.from(c.getContext('2d').getImageData(x, y, s, s).data)", [x, y, size]
        )
        return np.array(rgba).reshape(size, size, 4)[..., :3]

    plain, ringed = cell(""), cell("&inst=0")
    assert held(page, "confusion")["texts"][0][0] == "300"
    assert (np.abs(ringed - plain).max(-1) > 60).sum() > 20  # the ring is drawn
    digits = plain.sum(-1) > 500  # the white count on the dark green cell
    assert digits.sum() > 20
    near = digits.copy()  # the digits and the pixels beside them
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
        near |= np.roll(np.roll(digits, dy, 0), dx, 1)
    assert np.abs(ringed - plain)[near].max() < 60
