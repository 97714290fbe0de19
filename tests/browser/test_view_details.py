"""Details of the views a first look at the dashboard trips over: what a cell or a column claims where nothing was
measured, empty states, labels that must read whole, what a click on a run's name does, a chart's zoom reset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from browser_helpers import wait_for
from torch import nn

import deepscope
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

RELU_STEPS = 200  # two histogram intervals; dead-unit shares from step 99 (the end of the first 100-step window)


def relu_run(root: Path) -> str:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with deepscope.init(project="details", name="relu", dir=root) as run:
        run.watch(model, opt, print_findings=False)  # histograms every 100 steps, a 100-step dead-unit window
        for step in range(RELU_STEPS):
            loss = model(torch.randn(32, 16)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss}, step=step)
    return run.id


@pytest.fixture(scope="module")
def watched(tmp_path_factory, built_app):
    root = tmp_path_factory.mktemp("details-watched")
    relu = relu_run(root)
    server = BackgroundServer(root, port=0).start()
    yield {"url": server.url, "relu": relu, "root": root}
    server.stop()


def held(page, name: str):
    return page.evaluate(f"() => JSON.parse(JSON.stringify(window.__deepscope.internals.{name} ?? null))")


def test_dead_unit_shares_before_the_first_window_ended_are_no_value(page, watched, tmp_path):
    """The dead-unit share is measured at the end of each quarter of a 100-step window, once a whole window has
    passed (step 99): the steps before hold no value, and are drawn as such — not as the first value (0 % dead)."""
    run = watched["relu"]
    page.goto(f"{watched['url']}?tab=internals&runs={run}&run={run}&kind=act&stat=dead_frac")
    wait_for(page, "() => window.__deepscope.internals?.overview?.stat === 'dead_frac'")
    shown = page.evaluate(
        """() => { const o = window.__deepscope.internals.overview;
            return o.steps.map((s, c) => [s, o.value('1', c)]); }"""
    )
    before = [v for s, v in shown if s < 99]
    since = [v for s, v in shown if s >= 99]
    assert before and all(math.isnan(v) for v in before)  # "no value"
    assert since and not any(math.isnan(v) for v in since)  # each value spread over its quarter window
    page.screenshot(path=str(tmp_path / "dead-frac.png"))


def test_the_last_histogram_spans_to_the_runs_end(page, watched, tmp_path):
    """Histograms at steps 0, 1, 2, 5, 10, 20, 50 and 100 of a 200-step run: the last column reaches the run's end
    (one recording interval after it), not 50 steps after it (the spacing of the two before) — a blank to step 199
    read as "recording stopped at 150"."""
    run = watched["relu"]
    page.goto(f"{watched['url']}?tab=internals&runs={run}&run={run}&panel=layer&kind=act&layer=1")
    wait_for(page, "() => window.__deepscope.internals?.distribution?.columns?.length === 8")
    d = held(page, "distribution")
    steps = [c["step"] for c in d["columns"]]
    assert steps == [0, 1, 2, 5, 10, 20, 50, 100]
    for a, b in zip(d["columns"], d["columns"][1:]):
        assert a["x1"] == pytest.approx(b["x0"])  # each column to the next one's step
    assert d["columns"][-1]["x1"] == pytest.approx(d["plotW"])  # the last to the run's end
    assert d["columns"][-1]["x0"] == pytest.approx(d["plotW"] / 2)
    assert "the last at step" not in page.locator("section.dist h3").inner_text()
    page.screenshot(path=str(tmp_path / "distribution.png"))


def sequential_cnn() -> nn.Module:
    """Layers named by index, as an ``nn.Sequential``'s are: "0" (feature maps), "3" (the logits)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, built_app):
    """An untrained ``nn.Sequential`` analysed on 200 random 8 × 8 images (most predictions wrong: the neighbours
    read "label → prediction"), and a run without analysis."""
    root = tmp_path_factory.mktemp("details-analysed")
    torch.manual_seed(0)
    x, y = torch.randn(200, 1, 8, 8), torch.randint(0, 10, (200,))
    with deepscope.init(project="details", name="sequential", dir=root) as run:
        run.log({"train/loss": 1.0}, step=0)
        deepscope.analyze(sequential_cnn().eval(), torch.utils.data.TensorDataset(x, y), layers=["0", "3"], labels=y,
                          run=run, progress=False)  # fmt: skip
    with deepscope.init(project="details", name="not-analysed", dir=root) as plain:
        plain.log({"train/loss": 1.0}, step=0)
    server = BackgroundServer(root, port=0).start()
    yield {"url": server.url, "run": run.id, "plain": plain.id}
    server.stop()


def test_no_analysed_run_shows_how_to_make_one_and_no_empty_run_menu(page, analysed, tmp_path):
    page.goto(f"{analysed['url']}?tab=analysis&runs={analysed['plain']}")
    page.get_by_text("None of the selected runs has an analysis.").wait_for()
    assert "deepscope.analyze(model," in page.locator(".analysis .empty").inner_text()
    assert page.get_by_role("combobox", name="Analysed run").count() == 0  # an empty menu said nothing
    page.screenshot(path=str(tmp_path / "instances-empty.png"))


def test_numeric_layers_read_as_layers_and_neighbours_read_whole(page, analysed, tmp_path):
    """An ``nn.Sequential``'s layer "3" is "layer 3" in the panels' titles ("Neurons of 3" read as a count), and each
    nearest neighbour's "label → prediction" is shown whole at 1440 px, not cut to "0 →…"."""
    run = analysed["run"]
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}&alayer=3&inst=0")
    wait_for(page, "() => window.__deepscope.analysis?.detail?.()?.neighbors?.length > 0", timeout=20_000)
    titles = page.locator(".analysis h4, .analysis .what").all_inner_texts()
    assert any(t.startswith("Neurons of layer 3") for t in titles), titles
    assert any(t.startswith("Nearest neighbours layer 3") for t in titles), titles
    classes = page.get_by_test_id("neighbor-classes")
    wait_for(page, "() => document.querySelectorAll('[data-testid=neighbor-classes]').length > 0")
    assert any("→" in t for t in classes.all_inner_texts())  # untrained: predictions differ from labels
    cut = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid=neighbors] .nb')].filter((b) =>
            [...b.querySelectorAll('*')].some((e) => e.scrollWidth > e.clientWidth + 1
                || e.getBoundingClientRect().right > b.getBoundingClientRect().right + 0.5)).length"""
    )
    page.locator("[data-testid=neighbors]").screenshot(path=str(tmp_path / "neighbours.png"))
    page.screenshot(path=str(tmp_path / "instances.png"))
    assert cut == 0
    page.goto(f"{analysed['url']}?tab=analysis&runs={run}&alayer=0&inst=0")
    page.get_by_text("Feature maps layer 0").wait_for()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, built_app):
    """Two runs whose configs hold parameter counts of six and seven digits, each with a loss over 100 steps."""
    root = tmp_path_factory.mktemp("details-runs")
    ids = []
    for name, params in (("small", 207018), ("large", 3798010)):
        with deepscope.init(
            project="details", name=name, dir=root, config={"parameters": params, "batch": 1024}
        ) as run:
            for step in range(100):
                run.log({"train/loss": 1.0 / (step + 1)}, step=step)
        ids.append(run.id)
    server = BackgroundServer(root, port=0).start()
    yield {"url": server.url, "small": ids[0], "large": ids[1]}
    server.stop()


def test_the_runs_table_writes_its_numbers_alike(page, two_runs, tmp_path):
    """207018 beside 3,798,010 read as two formats: every integer of five digits or more is grouped, shorter ones
    (a batch of 1024) are written as they are."""
    page.goto(f"{two_runs['url']}?tab=runs")
    cells = {}
    for run in ("small", "large"):
        row = page.locator(f"tr[data-run='{two_runs[run]}']")
        row.wait_for()
        cells[run] = row.locator("td.cfgval").all_inner_texts()
    assert "207,018" in cells["small"] and "3,798,010" in cells["large"]
    assert "1024" in cells["small"]
    page.screenshot(path=str(tmp_path / "runs-table.png"))


def test_one_reset_for_the_charts_zoom_and_no_layout_jump(page, two_runs, tmp_path):
    """The charts zoom together: the toolbar's "Reset zoom" resets them all, and no chart has a button of its own.
    It takes the hint's place while zoomed: beside it, it pushed the hint onto a second line."""
    run = two_runs["small"]
    page.goto(f"{two_runs['url']}?tab=charts&runs={run}")
    wait_for(page, "(run) => window.__deepscope.charts['train/loss']?.[run]?.points > 0", run)
    hint = page.locator(".controls .hint")
    before = hint.bounding_box()
    zoom_to = """() => { const u = new URL(location.href); u.searchParams.set('zoom', '10,50');
        history.pushState({}, '', u); dispatchEvent(new PopStateEvent('popstate')); }"""
    page.evaluate(zoom_to)
    wait_for(page, "() => window.__deepscope.xRange['train/loss']?.[0] === 10")
    assert hint.bounding_box()["y"] == before["y"]  # on the same line
    assert page.locator("figure.chart button", has_text="reset").count() == 0
    page.screenshot(path=str(tmp_path / "charts-zoomed.png"))
    page.get_by_role("button", name="Reset zoom").click()
    wait_for(page, "() => window.__deepscope.xRange['train/loss'] === null")
    assert page.locator(".controls button.reset").count() == 0
    assert hint.bounding_box()["y"] == before["y"]


def test_a_run_name_in_the_run_list_opens_the_run_and_keeps_it_ticked(page, two_runs, tmp_path):
    """A click on a run's name opens its detail, as in the runs table — it toggled the tick box, dropping the run
    from the comparison unnoticed. The tick box alone ticks."""
    small, large = two_runs["small"], two_runs["large"]
    page.goto(f"{two_runs['url']}?tab=charts&runs={small},{large}")
    item = page.locator(f".picker li[data-run='{small}']")
    item.locator(".name").wait_for()
    assert item.locator("button.open").evaluate("(b) => getComputedStyle(b).cursor") == "pointer"
    page.screenshot(path=str(tmp_path / "run-list.png"))
    item.get_by_role("checkbox").click()
    wait_for(page, "(run) => !window.__deepscope.view().runs.includes(run)", small)
    item.get_by_role("checkbox").click()
    wait_for(page, "(run) => window.__deepscope.view().runs.includes(run)", small)
    item.locator(".name").click()
    wait_for(
        page, "(run) => window.__deepscope.view().tab === 'run' && window.__deepscope.view().detail === run", small
    )
    assert sorted(page.evaluate("() => window.__deepscope.view().runs")) == sorted([small, large])  # still compared
    page.screenshot(path=str(tmp_path / "run-opened.png"))
