"""Linking in the Instances tab, in headless Chromium over a real analysed run: a class, a subset, a neuron or an
instance selected in one view is highlighted in every other view, and what each view highlights is checked
against the stored analysis (instance table, activations) with NumPy."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from analysis_data import CLASS_NAMES, Analysed, write_analysed
from browser_helpers import NEURON_AT, eventually, point_until, wait_for

from deepscope.analyses import read
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

LAYER = "features.10"  # the hidden ReLU layer: 128 neurons
GRID_AT = "(i) => window.__deepscope.analysis.grid().locate(i)"
CELL_AT = "([i, j]) => window.__deepscope.analysis.confusion().locate(i, j)"
SELECTED = "(i) => window.__deepscope.analysis.grid().selected === i"
TOP_K = 24  # the neuron's top instances the matrix asks for


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Analysed:
    return write_analysed(tmp_path_factory.mktemp("analysed-linking"))


@pytest.fixture(scope="module")
def server_url(analysed, built_app) -> Iterator[str]:
    s = BackgroundServer(analysed.root, port=0).start()
    yield s.url
    s.stop()


@pytest.fixture(scope="module")
def table(analysed) -> dict[str, np.ndarray]:
    t = read(analysed.root / analysed.run).instances()
    return {name: t.column(name).to_numpy(zero_copy_only=False) for name in ("label", "prediction", "correct")}


def held(page, name: str):
    return page.evaluate(f"() => JSON.parse(JSON.stringify(window.__deepscope.analysis.{name}?.() ?? null))")


def open_ready(page, analysed: Analysed, base: str) -> None:
    """The tab with every view drawn: the grid, the matrix (10 class rows), the confusion matrix, the projection."""
    page.goto(f"{base}?tab=analysis&runs={analysed.run}&run={analysed.run}&alayer={LAYER}")
    views_ready(page)


def views_ready(page) -> None:
    wait_for(
        page,
        "() => { const a = window.__deepscope?.analysis; if (!a?.matrix || !a.projection || !a.confusion) return false;"
        " const m = a.matrix(), p = a.projection(), g = a.grid?.();"
        " return m.rows.length === 10 && !m.loading && p.drawn && a.confusion() && g && g.classes.length === 10; }",
        timeout=30_000,
    )


def highlighted_everywhere(page, count: int, label: str) -> None:
    """The grid and the projection emphasise exactly `count` instances; the header names the selection."""
    wait_for(
        page,
        "([n, label]) => { const a = window.__deepscope.analysis;"
        " return a.grid().highlighted === n && a.projection().focusCount === n && a.state().focus === label; }",
        [count, label],
        timeout=15_000,
    )
    assert page.get_by_test_id("focus-label").inner_text() == f"Highlighted: {label}"


def test_a_class_picked_in_the_grid_is_highlighted_in_every_view(page, analysed, server_url, table):
    open_ready(page, analysed, server_url)
    c = 7
    page.locator(f".grid-view button.cls[data-class='{c}']").click()
    highlighted_everywhere(page, int((table["label"] == c).sum()), f"class {CLASS_NAMES[c]}")
    wait_for(page, "() => window.__deepscope.analysis.matrix().selectedRows.length === 1")
    assert held(page, "matrix")["selectedRows"] == [CLASS_NAMES[c]]
    assert held(page, "confusion")["selectedClass"] == c

    # the other way round: a class picked in the confusion matrix (a row label) is the grid's selection
    label_at = """(i) => { const box = document.querySelector('.confusion canvas').getBoundingClientRect();
        return [box.left + 10, window.__deepscope.analysis.confusion().locate(i, 0).y]; }"""  # in the label column
    point_until(page, label_at, 2, "(i) => window.__deepscope.analysis.confusion().selectedClass === i")
    highlighted_everywhere(page, int((table["label"] == 2).sum()), f"class {CLASS_NAMES[2]}")
    wait_for(page, "() => window.__deepscope.analysis.matrix().selectedRows.join() === 'two'")


def test_a_confusion_cell_becomes_a_subset_highlighted_in_every_view(page, analysed, server_url, table):
    open_ready(page, analysed, server_url)
    label, pred = table["label"], table["prediction"]
    m = np.array([[int(((label == i) & (pred == j)).sum()) for j in range(10)] for i in range(10)])
    off = m - np.diag(np.diag(m))
    i, j = (int(v) for v in np.unravel_index(off.argmax(), off.shape))
    point_until(page, CELL_AT, [i, j], "() => window.__deepscope.analysis.state().subsets.length > 0")
    name = f"labelled {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}"
    highlighted_everywhere(page, int(m[i, j]), f"subset “{name}”")
    # the subset is a row of the neuron matrix, selected there; the confusion matrix outlines its cell
    wait_for(page, "(name) => window.__deepscope.analysis.matrix().selectedRows.includes(name)", name, timeout=15_000)
    matrix = held(page, "matrix")
    assert matrix["counts"][matrix["rows"].index(name)] == m[i, j]
    assert held(page, "confusion")["subsetCell"] == {"i": i, "j": j}
    assert held(page, "subsets")["chips"] == [{"name": name, "count": int(m[i, j]), "selected": True}]


def canvas_pixels(page, locator) -> tuple[np.ndarray, dict]:
    """The element's pixels (RGB, CSS pixels at a device pixel ratio of 1) and its box on the page."""
    from io import BytesIO

    from PIL import Image

    box = locator.bounding_box()
    return np.asarray(Image.open(BytesIO(locator.screenshot())).convert("RGB")).astype(int), box


def around(img: np.ndarray, box: dict, at, r: int) -> np.ndarray:
    """The pixels within `r` of page position `at`, as (n, 3)."""
    x, y = int(round(at[0] - box["x"])), int(round(at[1] - box["y"]))
    return img[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].reshape(-1, 3)


def click_smallest_error_cell(page, table) -> np.ndarray:
    """Click the smallest non-empty off-diagonal cell of the confusion matrix; its instances."""
    label, pred = table["label"], table["prediction"]
    m = np.array([[int(((label == i) & (pred == j)).sum()) for j in range(10)] for i in range(10)])
    off = np.where(m > 0, m, 10**9) + np.eye(10, dtype=int) * 10**9
    i, j = (int(v) for v in np.unravel_index(off.argmin(), off.shape))
    point_until(page, CELL_AT, [i, j], "() => window.__deepscope.analysis.state().subsets.length > 0")
    return np.flatnonzero((label == i) & (pred == j))


def test_a_small_subset_and_the_selected_instance_stand_out_in_the_projection(page, analysed, server_url, table):
    """A confusion cell of a few instances: their points are drawn several times larger than the faded others, in
    full colour; the selected instance's point is a dark dot in a ring, whatever its class's colour."""
    open_ready(page, analysed, server_url)
    members = click_smallest_error_cell(page, table)
    wait_for(page, "(n) => window.__deepscope.analysis.projection().sizes?.largeCount === n", len(members))
    sizes = held(page, "projection")["sizes"]
    assert sizes["large"] >= 2 * sizes["point"] and sizes["large"] >= 9, sizes
    canvas = page.locator("[data-testid=projection]")

    def large_points_drawn() -> None:  # in the frame that follows the sizes
        screen = page.evaluate("(ix) => window.__deepscope.analysis.projectionScreen(ix)", members.tolist())
        img, box = canvas_pixels(page, canvas)
        for pos in screen:
            px = around(img, box, pos, 7)
            vivid = (px.max(1) - px.min(1)) > 60  # in full colour: the faded points are pale
            assert vivid.sum() >= 40, vivid.sum()  # a 9-pixel disc, not a 3-pixel dot

    eventually(large_points_drawn)

    # the selected instance: a dark dot in a white ring in a dark ring, larger than any point
    target = int(members[0])
    point_until(page, GRID_AT, target, SELECTED)
    wait_for(page, "(i) => window.__deepscope.analysis.projection().selected === i", target)
    assert held(page, "projection")["sizes"]["selected"] >= 15

    def selected_drawn() -> None:  # in the frame that follows the selection
        img, box = canvas_pixels(page, canvas)
        pos = page.evaluate("(i) => window.__deepscope.analysis.projectionScreen([i])", [target])[0]
        px = around(img, box, pos, 9)
        dark = px.sum(1) < 150  # #111827, in no class's colour
        assert dark.sum() >= 60, dark.sum()

    eventually(selected_drawn)


def test_a_neuron_picked_in_the_matrix_highlights_its_top_instances(page, analysed, server_url):
    open_ready(page, analysed, server_url)
    x = read(analysed.root / analysed.run).matrix(LAYER)
    neuron = int(np.argmax((x > 0).sum(0)))  # the most often active neuron: no ties among its top instances
    point_until(
        page, NEURON_AT, [neuron, 128, 20], "([n]) => window.__deepscope.analysis.matrix().selectedNeuron === n"
    )
    highlighted_everywhere(page, TOP_K, f"top instances of neuron {neuron}")
    want = np.argsort(-x[:, neuron], kind="stable")[:TOP_K]
    assert held(page, "state")["top"] == want.tolist()
    # the projection can be coloured by that neuron's activation
    page.get_by_label("Colour by").select_option("neuron")
    wait_for(page, "() => window.__deepscope.analysis.projection().colorBy === 'neuron'")
    assert f"neuron={neuron}" in page.url


def test_an_instance_picked_anywhere_is_selected_in_every_view(page, analysed, server_url, table):
    open_ready(page, analysed, server_url)
    x = read(analysed.root / analysed.run).matrix(LAYER)

    def selected_everywhere(i: int) -> None:
        wait_for(
            page,
            "(i) => { const a = window.__deepscope.analysis; const m = a.matrix(), d = a.detail?.();"
            " return a.grid().selected === i && a.projection().selected === i && d && d.index === i"
            " && !m.loading && m.selectedRows.includes('#' + i); }",
            i,
            timeout=15_000,
        )
        assert held(page, "confusion")["instanceCell"] == {
            "i": int(table["label"][i]),
            "j": int(table["prediction"][i]),
        }
        m = held(page, "matrix")
        assert m["keys"][-1] == f"instance:{i}" and f"inst={i}" in page.url

    # from the projection: a click on a point
    canvas = page.locator("[data-testid=projection]")
    screen = np.array(page.evaluate("() => window.__deepscope.analysis.projectionScreen([...Array(1000).keys()])"))
    box = canvas.bounding_box()
    inside = (screen[:, 0] > box["x"] + 20) & (screen[:, 0] < box["x"] + box["width"] - 20)
    inside &= (screen[:, 1] > box["y"] + 20) & (screen[:, 1] < box["y"] + box["height"] - 20)
    target = int(np.flatnonzero(inside)[0])
    # a click that lands while the points are being redrawn is ignored: click again
    point_until(page, "(i) => window.__deepscope.analysis.projectionScreen([i])[0]", target,
                "() => window.__deepscope.analysis.projection().selected !== null")  # fmt: skip
    screen = np.array(page.evaluate("() => window.__deepscope.analysis.projectionScreen([...Array(1000).keys()])"))
    i = held(page, "projection")["selected"]
    assert np.hypot(*(screen[i] - screen[target])) < 6  # the point under the pointer (or one drawn over it)
    selected_everywhere(i)
    # the selected instance's row in the matrix holds its activations
    np.testing.assert_allclose(held(page, "matrix")["instances"][f"instance:{i}"], x[i], rtol=1e-6)

    # from the grid: a misclassified square
    wrong = int(np.flatnonzero(~table["correct"].astype(bool))[5])
    point_until(page, GRID_AT, wrong, SELECTED)
    selected_everywhere(wrong)

    # from the detail: a neighbour; pinning keeps its matrix row after the selection moves on
    wait_for(page, "() => (window.__deepscope.analysis.detail()?.neighbors ?? []).length > 0", timeout=15_000)
    nb = held(page, "detail")["neighbors"][0]
    page.locator(f"[data-testid=neighbors] button[data-index='{nb}']").click()
    selected_everywhere(nb)
    assert f"#{wrong}" not in held(page, "matrix")["rows"]  # the previous selection's row is gone
    page.get_by_role("button", name="Pin as matrix row").click()
    point_until(page, GRID_AT, wrong, SELECTED)
    selected_everywhere(wrong)
    assert held(page, "matrix")["rows"][-2:] == [f"#{nb}", f"#{wrong}"]


def test_a_reload_or_a_shared_link_highlights_the_newest_selection(page, context, analysed, server_url, table):
    """A class, then a neuron: the neuron's top instances are highlighted, and still are after a reload and in a
    second page opened on the same link; then the class again — the reload highlights the class."""
    open_ready(page, analysed, server_url)
    c = 2
    page.locator(f".grid-view button.cls[data-class='{c}']").click()
    highlighted_everywhere(page, int((table["label"] == c).sum()), f"class {CLASS_NAMES[c]}")
    x = read(analysed.root / analysed.run).matrix(LAYER)
    # a neuron above its lowest value on TOP_K instances at least (a dead one has no top instances)
    live = int(np.flatnonzero((x > x.min(0)).sum(0) >= TOP_K)[5])
    point_until(page, NEURON_AT, [live, 128, 20], "([n]) => window.__deepscope.analysis.matrix().selectedNeuron === n")
    neuron = held(page, "matrix")["selectedNeuron"]
    assert neuron == live
    neuron_label = f"top instances of neuron {neuron}"
    highlighted_everywhere(page, TOP_K, neuron_label)
    assert f"cls={c}" in page.url and f"neuron={neuron}" in page.url

    page.reload()
    views_ready(page)
    highlighted_everywhere(page, TOP_K, neuron_label)
    assert page.evaluate("() => window.__deepscope.view().aClass") == c  # the class is still selected, not highlighted

    shared = context.new_page()
    shared.goto(page.url)
    views_ready(shared)
    highlighted_everywhere(shared, TOP_K, neuron_label)
    shared.close()

    # the class chosen again is the newest: a reload highlights it
    page.locator(f".grid-view button.cls[data-class='{c}']").click()
    highlighted_everywhere(page, int((table["label"] == c).sum()), f"class {CLASS_NAMES[c]}")
    page.reload()
    views_ready(page)
    highlighted_everywhere(page, int((table["label"] == c).sum()), f"class {CLASS_NAMES[c]}")


def test_a_small_highlight_is_ringed_in_the_instance_grid(page, analysed, server_url, table):
    """A confusion cell of a few instances: in the grid each of their squares (a few pixels) gets a ring larger than
    itself, in the highlight's colour — up to 24 of them."""
    open_ready(page, analysed, server_url)
    members = click_smallest_error_cell(page, table)
    wait_for(page, "(n) => window.__deepscope.analysis.grid().highlighted === n", len(members))
    grid = held(page, "grid")
    assert sorted(grid["ringed"]) == members.tolist() and grid["cell"] <= 6
    canvas = page.get_by_test_id("instance-grid")

    def ringed(k: int) -> None:  # in the frame that follows the highlight
        pos = page.evaluate("(i) => window.__deepscope.analysis.grid().locate(i)", k)
        img, box = canvas_pixels(page, canvas)
        px = around(img, box, (pos["x"], pos["y"]), 9)
        amber = (np.abs(px - np.array([245, 159, 0])).max(1) < 40).sum()  # FOCUS_COLOR
        assert amber >= 20, amber  # a ring some 12 pixels across, not a 3-pixel square

    for k in members.tolist():
        eventually(lambda: ringed(k))  # noqa: B023 - called at once
    # a class of 100 digits: its squares coloured among faded ones are found without rings (rings of so many would
    # run together and hide them)
    assert (table["label"] == 1).sum() == 100
    page.locator(".grid-view button.cls[data-class='1']").click()
    wait_for(page, "() => window.__deepscope.analysis.grid().highlighted === 100")
    assert held(page, "grid")["ringed"] == []
    page.locator(".grid-view button.cls[data-class='1']").click()  # deselected: the cell's subset again
    wait_for(page, "(n) => window.__deepscope.analysis.grid().ringed.length === n", len(members))
