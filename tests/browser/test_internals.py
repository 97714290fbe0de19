"""Training internals in headless Chromium: runs written by the real ``run.watch`` (a saturating sigmoid MLP,
a ReLU net, a two-rank run with one slowed rank), checked through the data the views hold."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from browser_helpers import drag_until, eventually, point_at, point_until, showing, wait_for
from torch import nn

import deepscope
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
STEPS = 50
DDP_STEPS = 24
RELU_STEPS = 30


def sigmoid_mlp(depth: int = 4, hidden: int = 128) -> nn.Module:
    """Sigmoid layers with W ~ U[−1/√n, 1/√n]: the top one saturates near 0 within a few dozen steps."""
    layers: list[nn.Module] = []
    n = 64
    for _ in range(depth):
        lin = nn.Linear(n, hidden)
        nn.init.uniform_(lin.weight, -1 / math.sqrt(n), 1 / math.sqrt(n))
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Sigmoid()]
        n = hidden
    return nn.Sequential(nn.Sequential(*layers), nn.Linear(hidden, 10))


def relu_net() -> nn.Module:
    return nn.Sequential(nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 96), nn.ReLU()), nn.Linear(96, 10))


def fit(root: Path, name: str, model: nn.Module, batch, steps: int, lr: float = 0.1) -> str:
    """A watched run (no histograms) of ``steps`` SGD steps on ``batch()`` inputs, the outputs' mean square as the
    loss; returns its id."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with deepscope.init(dir=root, name=name) as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for _ in range(steps):
            loss = model(batch()).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run.id


def train(root: Path, name: str, model: nn.Module, steps: int, *, lr=0.1, rank=0, world_size=1, run_id=None, delay=0.0):
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(rank))
    y = x[:, :10].argmax(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    with deepscope.init(project="internals", name=name, dir=root, id=run_id, rank=rank, world_size=world_size) as run:
        run.watch(model, opt, histograms_every=10, print_findings=False)
        for step in range(steps):
            if delay:
                time.sleep(delay)  # a slow data loader on this rank
            i = torch.randint(0, 512, (32,))
            loss = nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss}, step=step)
    return run.id


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    root = tmp_path_factory.mktemp("internals")
    torch.manual_seed(0)
    sig = train(root, "sigmoid-mlp", sigmoid_mlp(), STEPS, lr=0.3)
    torch.manual_seed(1)
    relu = train(root, "relu-net", relu_net(), RELU_STEPS)
    for rank in (0, 1):
        torch.manual_seed(2)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        train(root, "ddp", model, DDP_STEPS, rank=rank, world_size=2, run_id="ddp-two-ranks", delay=0.02 * rank)
    server = BackgroundServer(root, port=0).start()
    yield {"url": server.url, "sig": sig, "relu": relu, "ddp": "ddp-two-ranks", "root": str(root)}
    server.stop()


@pytest.fixture(scope="module")
def server_url(watched, built_app) -> str:
    return watched["url"]


def api(base: str, path: str):
    with urllib.request.urlopen(f"{base}api/{path}" if base.endswith("/") else f"{base}/api/{path}") as r:
        return r.read(), r.headers


def open_internals(page, base: str, query: str) -> None:
    page.goto(f"{base}?tab=internals&{query}")
    page.wait_for_function("() => window.__deepscope !== undefined")


def held(page, name: str):
    return page.evaluate(f"() => JSON.parse(JSON.stringify(window.__deepscope.internals.{name} ?? null))")


def overview_ready(page, kind: str, stat: str, cols: int | None = None) -> dict:
    wait_for(
        page,
        """([kind, stat, cols]) => { const o = window.__deepscope.internals?.overview;
            return o && o.kind === kind && o.stat === stat && (cols === null || o.cols === cols); }""",
        [kind, stat, cols],
    )
    return held(page, "overview")


def shot(page, name: str, tmp_path: Path) -> None:
    target = DOCS if os.environ.get("DEEPSCOPE_SCREENSHOTS") == "docs" else tmp_path
    page.wait_for_timeout(300)
    page.screenshot(path=str(target / name))


def matrix_from_server(base: str, run: str, **params):
    import pyarrow as pa

    body, _ = api(base, f"runs/{run}/layerstats/matrix?" + "&".join(f"{k}={v}" for k, v in params.items()))
    return pa.ipc.open_stream(body).read_next_batch()


def test_overview_draws_the_server_matrix_and_switches_kind_and_stat(page, watched, server_url, tmp_path):
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig},{watched['relu']}&run={sig}&stat=sat_frac")
    o = overview_ready(page, "act", "sat_frac")
    assert o["rows"] == 9 and o["cols"] == STEPS and o["exact"]  # 9 modules × every step (fewer steps than pixels)
    b = matrix_from_server(server_url, sig, kind="act", stat="sat_frac", buckets=o["plotW"])
    assert b.column("name").to_pylist() == o["names"]
    server_top = b.column("values")[7].as_py()[STEPS - 1]  # the top sigmoid at the last step
    view_top = page.evaluate(f"() => window.__deepscope.internals.overview.value('0.7', {STEPS - 1})")
    assert view_top == pytest.approx(server_top) and server_top > 0.5  # saturated
    assert page.locator("[data-testid=color-legend]").is_visible()
    ticks = o["ticks"]  # round steps, evenly spaced, each under its own column's centre
    gaps = {b["step"] - a["step"] for a, b in zip(ticks, ticks[1:])}
    assert len(ticks) >= 5 and len(gaps) == 1 and gaps.pop() in (1, 2, 5, 10, 20, 50)
    cw = o["plotW"] / o["cols"]
    for t in ticks:
        assert t["x"] == pytest.approx(o["labelW"] + (o["steps"].index(t["step"]) + 0.5) * cw)
    shot(page, "internals-overview.png", tmp_path)
    assert page.get_by_test_id("color-legend").get_attribute("data-above") is None  # a share: 0…1, nothing beyond

    page.locator("[data-kind=param_grad]").click()
    o = overview_ready(page, "param_grad", "norm")
    assert o["rows"] == 10 and o["names"][0] == "0.0.weight"  # parameter rows
    page.get_by_label("Statistic", exact=True).select_option("std")
    overview_ready(page, "param_grad", "std")
    fetches = held(page, "matrixFetches")
    want = [("act", "sat_frac"), ("param_grad", "norm"), ("param_grad", "std")]
    # a width change (a scrollbar, a wider select) legitimately refetches the same matrix at the new bucket count
    changes = [(f["kind"], f["stat"]) for f in fetches]
    changes = [c for i, c in enumerate(changes) if i == 0 or c != changes[i - 1]]
    assert changes[-3:] == want
    page.locator("[data-kind=update_ratio]").click()
    overview_ready(page, "weight", "update_ratio")
    assert "stat=update_ratio" in page.url and "kind=weight" in page.url


def test_a_kind_opens_on_its_own_statistic_unless_one_was_chosen(page, watched, server_url):
    """Activations open on their mean; parameter gradients then open on their L2 norm, not on that mean. A statistic
    picked in the menu stays as the kind changes, where the new kind records it."""
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}")
    overview_ready(page, "act", "mean")

    def choose(kind: str, stat: str) -> None:
        page.locator(f"[data-kind={kind}]").click()
        overview_ready(page, "weight" if kind == "update_ratio" else kind, stat)

    choose("param_grad", "norm")
    assert page.evaluate("() => window.__deepscope.view().colorLog") is True  # the norm's own scale
    choose("act", "mean")
    page.get_by_label("Statistic", exact=True).select_option("std")
    overview_ready(page, "act", "std")
    choose("weight", "std")
    choose("update_ratio", "update_ratio")
    choose("param_grad", "norm")
    page.get_by_label("Statistic", exact=True).select_option("mean")  # the mean, picked: kept
    overview_ready(page, "param_grad", "mean")
    choose("weight", "mean")


def test_the_colour_legend_says_what_lies_beyond_its_percentiles(page, watched, server_url):
    """The overview's colours span the 1st–99th percentile of what is shown; the legend marks its ends ≤ / ≥ and
    names the extremes the end colours stand for."""
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}&kind=grad&stat=max&clog=0")
    o = overview_ready(page, "grad", "max")
    b = matrix_from_server(server_url, sig, kind="grad", stat="max", buckets=o["plotW"])
    values = np.array([v for row in b.column("values").to_pylist() for v in row if v is not None], float)
    values = np.sort(values[np.isfinite(values)])
    q99 = values[round(0.99 * (len(values) - 1))]
    assert values[-1] > q99  # the gradients' largest value is an outlier of its own
    legend = page.get_by_test_id("color-legend")
    assert float(legend.get_attribute("data-above")) == pytest.approx(values[-1], rel=1e-6)
    assert legend.locator(".ticks span").last.inner_text().startswith("≥")
    assert "values up to" in legend.get_attribute("title")


def test_a_divergence_takes_the_end_colours_and_the_steps_before_it_show(page, serve, tmp_path):
    """Means up to 1e18 over the last quarter of the steps (weights multiplied by 80 a step): the diverging scale ends
    where the steps before them show in colour, not at ±1e18 (which left every one of them white); the divergence
    takes the end colours, and the legend says which values lie beyond."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with deepscope.init(dir=tmp_path, name="diverging") as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for step in range(40):
            loss = model(torch.randn(16, 8)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 30:
                opt.param_groups[0]["lr"] = 0.0
                with torch.no_grad():
                    model[0].weight.mul_(80.0)
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&run={run.id}&stat=mean")
    o = overview_ready(page, "act", "mean", 40)
    legend = page.get_by_test_id("color-legend")
    assert float(legend.get_attribute("data-above")) > 1e15  # the premise: diverged, finite
    end = float(legend.locator(".ticks span").last.inner_text().lstrip("≥"))
    assert 0 < end < 100  # the scale's end: the steps before the divergence
    cw = o["plotW"] / o["cols"]

    def pixels(row: int) -> list[list[int]]:
        return page.evaluate(
            """([x0, cw, y, n]) => { const c = document.querySelector('[data-testid=layer-matrix]');
                const d = window.devicePixelRatio || 1, ctx = c.getContext('2d');
                const at = (i) => ctx.getImageData(Math.round((x0 + (i + 0.5) * cw) * d), Math.round(y * d), 1, 1);
                return Array.from({length: n}, (_, i) => Array.from(at(i).data));
            }""",
            [o["labelW"], cw, (row + 0.5) * o["rowH"], o["cols"]],
        )

    def white(px: list[int]) -> bool:
        return max(abs(c - 247) for c in px[:3]) < 25

    for row in (0, 2):  # the Linear layers: signed means
        px = pixels(row)
        assert sum(not white(p) for p in px[:30]) >= 15  # before the divergence: coloured, not white
        assert all(not white(p) for p in px[33:])  # the divergence: end colours
    assert "percentile" in legend.get_attribute("title")


def test_zoom_refetches_the_range_and_a_cell_opens_the_layer(page, watched, server_url):
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}")
    o = overview_ready(page, "act", "mean")
    # across row 3 from a quarter to a half of the steps
    path = """(o) => { const r = document.querySelector('[data-testid=layer-matrix]').getBoundingClientRect();
        const y = r.top + 3.5 * o.rowH, x0 = r.left + o.labelW + o.plotW * 0.25;
        return [[x0, y], [x0 + o.plotW * 0.25, y]]; }"""
    zoomed = f"() => window.__deepscope.internals.overview?.steps.at(-1) < {STEPS * 0.75}"
    drag_until(page, path, {k: o[k] for k in ("rowH", "labelW", "plotW")}, zoomed, steps=5)
    z = held(page, "overview")
    last = held(page, "matrixFetches")[-1]
    assert last["start"] is not None and last["end"] is not None and last["end"] - last["start"] < STEPS / 2
    assert z["steps"][0] >= last["start"] and z["steps"][-1] == last["end"]
    assert "steps=" in page.url

    # Click the row of layer 0.7 in the middle of the zoomed range: the layer detail of that layer and step.
    row = z["displayRows"].index("0.7")
    col = len(z["steps"]) // 2
    cell = """([row, col, n]) => { const o = window.__deepscope.internals.overview;
        const r = document.querySelector('[data-testid=layer-matrix]').getBoundingClientRect();
        return [r.left + o.labelW + (col + 0.5) * o.plotW / n, r.top + (row + 0.5) * o.rowH]; }"""
    point_until(page, cell, [row, col, len(z["steps"])], "() => window.__deepscope.internals.layer?.layer === '0.7'")
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["panel"] == "layer" and view["selectedLayer"] == "0.7" and view["selectedStep"] == z["steps"][col]
    series = held(page, "layer")["series"]
    assert series["mean"]["points"] == STEPS and series["sat_frac"]["lastStep"] == STEPS - 1
    assert "dead_frac" not in series  # NaN for a sigmoid: no chart
    # an activation's min and max are of the values read: a sample of a large tensor, and said so
    caption = page.locator("figure[data-stat=max] figcaption")
    assert caption.inner_text().split() == ["max", "of", "the", "sample"]
    assert "sample of 4,096" in caption.locator(".sampled").get_attribute("title")


def test_a_double_click_on_the_overview_zooms_out_and_opens_no_layer(page, watched, server_url):
    """The first click of a double-click is no click on a cell: the overview zooms out and stays."""
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}&steps=10,30")
    o = overview_ready(page, "act", "mean", 21)
    box = page.get_by_test_id("layer-matrix").bounding_box()
    page.mouse.dblclick(box["x"] + o["labelW"] + o["plotW"] / 2, box["y"] + 2.5 * o["rowH"])
    overview_ready(page, "act", "mean", STEPS)
    page.wait_for_timeout(600)  # longer than a click waits for a second one
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["panel"] == "overview" and view["stepZoom"] is None and view["selectedStep"] is None


def test_layer_detail_distribution_holds_the_recorded_bins(page, watched, server_url, tmp_path):
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}&panel=layer&layer=0.7&step=30")
    wait_for(page, "() => window.__deepscope.internals.distribution?.key === 'watch/act/0.7'")
    d = held(page, "distribution")
    body, _ = api(server_url, f"runs/{sig}/histograms?key=watch/act/0.7")
    hists = json.loads(body)["histograms"]
    # every 10th step, and 1, 2, 5 before the first
    assert [h["step"] for h in hists] == [0, 1, 2, 5] + list(range(10, STEPS, 10))
    assert d["steps"] == len(hists) and d["bins"] == len(hists[0]["counts"]) == 258
    assert d["edges"] == 259 and 0 < d["shownBins"] <= 258
    # the hover box stays inside the panel at the right end too (it was cut off there)
    # (the tip of this position: on the pointer's right at the left end, on its left at the right end)
    this_tip = """([, fx]) => { const t = document.querySelector('[data-testid=distribution-tip]');
        return !!t && (fx < 0.5 ? t.style.left : t.style.right) !== ''; }"""
    for fx in (0.1, 0.99):
        point_at(page, "[data-testid=distribution]", fx, 0.5, this_tip, click=False)
        panel = page.locator("section.dist").bounding_box()
        tip = page.get_by_test_id("distribution-tip").bounding_box()
        assert panel["x"] <= tip["x"] and tip["x"] + tip["width"] <= panel["x"] + panel["width"]
    page.mouse.move(0, 0)
    wait_for(page, "() => Object.keys(window.__deepscope.internals.layer?.series ?? {}).length >= 5")
    shot(page, "internals-layer.png", tmp_path)


def test_gradient_flow_overlays_runs_and_scrubs(page, watched, server_url, tmp_path):
    sig, relu = watched["sig"], watched["relu"]
    open_internals(page, server_url, f"runs={sig},{relu}&panel=flow")
    wait_for(page, "(n) => Object.keys(window.__deepscope.internals.flow?.runs ?? {}).length === n", 2)
    flow = held(page, "flow")
    assert flow["step"] == STEPS - 1
    assert flow["runs"][sig]["points"] == 5 and flow["runs"][relu]["points"] == 3  # one per weight parameter
    assert flow["runs"][sig]["names"] == ["0.0.weight", "0.2.weight", "0.4.weight", "0.6.weight", "1.weight"]
    assert flow["axis"] == "relative depth"  # two models: no run's values under another's parameter names
    # hovering the input end names each run's first weight, with its value
    point_at(page, "figure[data-stat=norm] .u-over", 0.05, 0.5, showing("[data-testid=flow-tip]"), click=False)
    tip = page.get_by_test_id("flow-tip")
    rows = tip.locator(".tip-row").all_inner_texts()
    assert len(rows) == 2 and "0.0.weight" in rows[0] and "0.0.weight" in rows[1]
    page.mouse.move(0, 0)
    shot(page, "internals-gradient-flow.png", tmp_path)
    slider = page.get_by_label("Step")
    slider.fill("20")
    wait_for(page, "() => window.__deepscope.internals.flow?.step === 20")
    assert held(page, "flow")["runs"][sig]["step"] == 20
    assert "step=20" in page.url


def test_the_global_gradient_norm_over_training_picks_the_flows_step(page, watched, server_url):
    """Below the flow, each run's √(Σ ‖∇p‖²) at every step — the server's, which the per-parameter norms give — and
    a click on it moves the flow to the step under the cursor."""
    sig, relu = watched["sig"], watched["relu"]
    open_internals(page, server_url, f"runs={sig},{relu}&panel=flow")
    wait_for(page, "() => Object.keys(window.__deepscope.internals.totalNorm ?? {}).length === 2")
    total = held(page, "totalNorm")
    assert total[sig]["points"] == STEPS and total[relu]["points"] == RELU_STEPS and total[sig]["exact"]
    norms = deepscope.open(Path(watched["root"])).run(sig).layer_profile("param_grad", "norm", STEPS - 1)[2]
    assert total[sig]["last"] == pytest.approx(float(np.sqrt(np.sum(norms.astype(np.float64) ** 2))), rel=1e-6)
    over = "[data-testid=total-norm] .u-over"
    point_at(page, over, 0.25, 0.5, showing("[data-testid=total-norm-tip]"), click=False)
    tip = page.get_by_test_id("total-norm-tip")
    assert tip.locator(".tip-row").count() == 2 and tip.inner_text().startswith("step ")
    point_at(page, over, 0.25, 0.5, "() => (window.__deepscope.internals.flow?.step ?? 49) < 25")
    step = held(page, "flow")["step"]
    assert 5 <= step < 25 and f"step={step}" in page.url


def test_findings_of_one_kind_are_one_card_listing_them(page, serve, tmp_path):
    """Six saturated layers are one card naming how many and when, its findings listed when opened, each with its
    evidence."""
    torch.manual_seed(0)
    run = fit(tmp_path, "saturating", sigmoid_mlp(depth=6, hidden=16), lambda: torch.randn(4, 64), 3)
    saturated = [("0.1", 2), ("0.3", 1), ("0.5", 2), ("0.7", 0), ("0.9", 1), ("0.11", 2)]
    with deepscope.init(dir=tmp_path, id=run, resume=True) as r:  # findings written as the diagnoser writes them
        for layer, step in saturated:
            text = f"layer {layer} (Sigmoid): 90% of outputs saturated at the sigmoid's limits (mean activation 0.020)"
            r.event("diagnosis/saturation", text, step=step, severity="warning", key=layer)
        r.event(
            "diagnosis/dead_units", "layer 0.1: 80% of its units never fired", step=2, severity="warning", key="0.1"
        )
        ratio = "median update/weight ratio is 3.0e-01 (healthy is about 1e-3): learning rate too high?"
        r.event("diagnosis/update_ratio_high", ratio, step=2, severity="warning")
    open_internals(page, serve(tmp_path).url, f"runs={run}&run={run}&panel=diagnoses")
    wait_for(page, "() => (window.__deepscope.internals.diagnoses ?? []).length === 3")
    cards = {d["kind"]: d for d in held(page, "diagnoses")}
    sat = cards["diagnosis/saturation"]
    assert [(i["key"], i["step"]) for i in sat["items"]] == sorted(saturated, key=lambda ls: (ls[1], float(ls[0][2:])))
    card = page.locator("li[data-rule=saturation]")
    assert card.get_attribute("data-count") == "6"
    assert " ".join(card.locator("button.title").inner_text().split()).lower() == "saturation 6 layers steps 0–2"
    items = card.locator("li.item")
    assert not items.first.is_visible()  # listed when opened
    card.locator("summary").click()
    assert items.count() == 6 and items.nth(4).is_visible()
    item = card.locator('li.item[data-key="0.5"]')
    item.get_by_role("button", name="evidence →").click()
    overview_ready(page, "act", "sat_frac")
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["panel"] == "overview" and view["selectedLayer"] == "0.5" and view["selectedStep"] == 2


def test_a_finding_names_its_layer_as_a_layer_not_a_count(page, serve, tmp_path):
    """nn.Sequential names its layers "0", "2", "3": a card about layer 3 says "layer 3" in its chip, where a bare "3"
    beside another card's "3 layers" read as a count; the count is plain text, not a name's chip."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    run = fit(tmp_path, "numbered", model, lambda: torch.randn(4, 64), 3)
    with deepscope.init(dir=tmp_path, id=run, resume=True) as r:
        for layer in ("0", "2", "3"):
            r.event("diagnosis/saturation", f"layer {layer}: 90% saturated", step=2, severity="warning", key=layer)
        r.event("diagnosis/dead_units", "layer 3: 80% of its units never fired", step=2, severity="warning", key="3")
    open_internals(page, serve(tmp_path).url, f"runs={run}&run={run}&panel=diagnoses")
    wait_for(page, "() => (window.__deepscope.internals.diagnoses ?? []).length === 2")
    single = page.locator("li[data-rule=dead_units] button.title span").first  # the chip after the finding's kind
    grouped = page.locator("li[data-rule=saturation] button.title span").first
    assert single.inner_text() == "layer 3" and grouped.inner_text() == "3 layers"

    def boxed(chip) -> bool:
        return chip.evaluate("(e) => getComputedStyle(e).backgroundColor !== 'rgba(0, 0, 0, 0)'")

    assert boxed(single) and not boxed(grouped)  # a name in a chip, a count as text
    summary = page.locator("li[data-rule=saturation] summary").inner_text()
    assert summary == "3 findings: layer 0, layer 2, layer 3"
    page.screenshot(path=str(tmp_path / "diagnoses-layer-names.png"))  # looked at, not a docs picture


def flow_axes_apart(axes: dict) -> None:
    """The gradient flow's tick labels never overprint: level ones apart by half of both widths and more, turned ones
    by a line across their direction; a tick per label; the y axis's labels a line apart."""
    xs = axes["x"]
    assert axes["ticks"] == len(xs) and all(x["v"] == int(x["v"]) for x in xs)  # at weights, each labelled
    sin = math.sin(math.radians(axes["tilt"]))
    for a, b in zip(xs, xs[1:]):
        dx = b["pos"] - a["pos"]
        assert dx * sin >= 12 if axes["tilt"] else dx >= (a["w"] + b["w"]) / 2 + 4
    ys = sorted(y["pos"] for y in axes["y"])
    assert len(ys) >= 2 and all(b - a >= 12 for a, b in zip(ys, ys[1:]))


def test_gradient_flow_axes_tick_each_weight_once_and_never_overprint(page, watched, server_url, serve, tmp_path):
    """Three weights: three ticks, level labels (there were 25 ticks between them); forty: every k-th weight labelled,
    as many as keep their labels apart."""
    relu = watched["relu"]
    open_internals(page, server_url, f"runs={relu}&panel=flow")
    wait_for(
        page,
        "() => ['norm', 'update_ratio'].every((s) => window.__deepscope.internals.flowAxes?.[s]?.x?.length "
        "=== 3 && window.__deepscope.internals.flowAxes[s].y?.length >= 2)",
    )  # fmt: skip (axes drawn apart)
    axes = held(page, "flowAxes")
    for stat in ("norm", "update_ratio"):
        assert [x["label"] for x in axes[stat]["x"]] == ["0.0", "0.2", "1"] and axes[stat]["tilt"] == 0
        flow_axes_apart(axes[stat])

    torch.manual_seed(0)
    deep = nn.Sequential(*[m for _ in range(40) for m in (nn.Linear(8, 8), nn.Tanh())], nn.Linear(8, 2))
    run = fit(tmp_path, "deep", deep, lambda: torch.randn(4, 8), 3, lr=0.01)
    open_internals(page, serve(tmp_path).url, f"runs={run}&panel=flow")
    wait_for(page, "() => window.__deepscope.internals.flowAxes?.norm?.x?.length >= 5 "
                   "&& window.__deepscope.internals.flowAxes.norm.y?.length >= 2")  # fmt: skip
    axes = held(page, "flowAxes")["norm"]
    assert 5 <= len(axes["x"]) < 41  # some of the 41 weights, evenly
    flow_axes_apart(axes)


def test_a_diagnosis_opens_its_evidence(page, watched, server_url, tmp_path):
    sig, relu = watched["sig"], watched["relu"]
    page.goto(f"{server_url}?runs={sig},{relu}")  # the first screen: charts with the run picker
    badge = page.locator(f'li[data-run="{sig}"] .findings')
    badge.wait_for()
    badge.click()
    saturation_listed = "(window.__deepscope.internals.diagnoses ?? []).some((d) => d.kind === 'diagnosis/saturation')"
    wait_for(page, f"() => {saturation_listed}")
    assert {d["run"] for d in held(page, "diagnoses")} == {sig}  # the badge's run only, and it says so
    assert page.locator(".diagnoses .only").is_visible()
    shot(page, "internals-diagnoses.png", tmp_path)
    finding = page.locator(f'li[data-rule=saturation][data-run="{sig}"]')
    expected = next(d for d in held(page, "diagnoses") if d["kind"] == "diagnosis/saturation")
    finding.locator("button.title").click()
    o = overview_ready(page, "act", "sat_frac")
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["panel"] == "overview" and view["detail"] == sig
    assert view["selectedLayer"] == expected["key"] == "0.7" and view["selectedStep"] == expected["step"]
    assert o["displayRows"].index("0.7") >= 0
    page.go_back()  # from the evidence back to the findings
    wait_for(page, "() => window.__deepscope.view().panel === 'diagnoses'")
    page.locator(f'li[data-rule=saturation][data-run="{sig}"]').wait_for()


def test_a_loss_spike_opens_the_chart_zoomed_onto_it(page, serve, tmp_path):
    torch.manual_seed(0)
    model = relu_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with deepscope.init(dir=tmp_path, name="spiky") as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for step in range(300):
            loss = model(torch.randn(8, 64)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            # the spike at 250, then a divergence (1e16) that must not flatten it on the evidence's chart
            value = 400.0 if step == 250 else 1e16 if 252 <= step < 255 else 1.0 + 0.01 * (step % 5)
            run.log({"train/loss": value}, step=step)
    with deepscope.init(dir=tmp_path, name="calm") as calm:  # another selected run, of another scale
        tiny = nn.Linear(4, 1)
        calm.watch(tiny, histograms_every=0, print_findings=False)
        for step in range(300):
            tiny(torch.randn(2, 4)).sum().backward()
            calm.log({"train/loss": 0.5 + 0.01 * (step % 3)}, step=step)
    open_internals(page, serve(tmp_path).url, f"runs={run.id},{calm.id}&run={run.id}&panel=diagnoses")
    finding = page.locator("li[data-rule=loss_spike]")
    finding.wait_for()
    finding.get_by_role("button", name="Show evidence →").click()
    wait_for(page, "() => window.__deepscope.view().tab === 'charts'")
    view = page.evaluate("() => window.__deepscope.view()")
    # the spike in the middle: the steps that led to it and those after it (it sat clipped at the right edge)
    assert view["zoom"] == [210, 290] and view["q"] == "train/loss" and view["x"] == "step"
    assert view["runs"] == [run.id]  # the finding's run alone: another run's scale cannot flatten its spike
    wait_for(page, "() => (window.__deepscope.yScale['train/loss']?.max ?? 0) > 400")  # the spike, on the chart
    assert page.evaluate("() => window.__deepscope.yScale['train/loss'].max") < 1e4  # the divergence after it in view,
    shot(page, "loss-spike-evidence.png", tmp_path)  # off the top edge: it does not flatten the spike
    marker = page.evaluate("() => window.__deepscope.markers['train/loss']")
    assert marker["x"] == 250 and marker["label"] == "loss spike"  # its step marked on the chart
    page.go_back()  # the findings again, of both runs
    wait_for(page, "() => window.__deepscope.view().tab === 'internals'")
    assert page.evaluate("() => window.__deepscope.view().runs") == [run.id, calm.id]
    finding.get_by_role("button", name="Show evidence →").click()  # and from the chart, without the browser's Back
    note = page.get_by_test_id("spike-evidence")
    assert "The loss spike of spiky at step 250" in note.inner_text()
    note.get_by_role("button", name="Show the 2 runs selected before").click()
    wait_for(page, f"() => window.__deepscope.view().runs.join() === '{run.id},{calm.id}'")
    assert page.get_by_test_id("spike-evidence").count() == 0
    wait_for(page, "() => window.__deepscope.markers['train/loss'] === null")  # the runs back: no marker


def test_each_rank_of_a_distributed_run_can_be_shown(page, watched, server_url):
    """Every rank records its own statistics (its own batches): the overview, the layer detail and gradient flow
    show the chosen rank's, and the link keeps it."""
    ddp = watched["ddp"]
    open_internals(page, server_url, f"runs={ddp}&run={ddp}")
    overview_ready(page, "act", "mean")
    rank0 = held(page, "overview")
    page.get_by_label("Rank").select_option("1")
    wait_for(page, "() => (window.__deepscope.internals.matrixFetches ?? []).at(-1)?.rank === 1")
    assert "rank=1" in page.url
    base, _ = api(server_url, f"runs/{ddp}/layerstats/matrix?kind=act&stat=mean&rank=1&buckets=2000")
    assert base  # the server has rank 1's rows
    page.get_by_role("button", name="Layer detail").click()
    wait_for(page, "() => window.__deepscope.internals.layer?.layer != null")
    page.get_by_role("button", name="Gradient flow").click()
    page.get_by_label("Rank").wait_for()  # the picker stays, for the runs shown
    page.reload()
    page.wait_for_function("() => window.__deepscope !== undefined")
    assert page.evaluate("() => window.__deepscope.view().rank") == 1
    assert rank0["displayRows"]


def test_ranks_view_flags_the_slow_rank(page, watched, server_url, tmp_path):
    open_internals(page, server_url, f"runs={watched['ddp']}&run={watched['ddp']}&panel=ranks")
    wait_for(page, "() => window.__deepscope.internals.ranks?.ranks.length === 2")
    ranks = held(page, "ranks")["ranks"]
    assert [r["straggler"] for r in ranks] == [False, True]
    assert all(r["points"] == DDP_STEPS for r in ranks)
    assert page.locator('[data-rank="1"] .flag').inner_text().strip().lower() == "straggler"
    assert page.locator('[data-rank="0"] .flag').count() == 0
    # ranks have colours of their own: rank 0 is not drawn in another run's colour
    swatches = [
        page.locator(f'[data-rank="{r}"] .sw').evaluate("(e) => getComputedStyle(e).backgroundColor") for r in (0, 1)
    ]
    assert swatches == ["rgb(68, 1, 84)", "rgb(189, 223, 38)"]
    assert page.get_by_test_id("no-divergence").count() == 0  # two ranks: the divergence chart
    # what "busy" is, said once above the bars and on each rank's figure
    note = " ".join(page.get_by_test_id("busy-note").inner_text().split())
    assert note.startswith("busy = data + forward: the time before a rank reaches the gradient all-reduce")
    assert "1.25× the fastest rank's" in note
    assert page.locator('[data-rank="1"] .busy').get_attribute("title").startswith("busy = data + forward")
    shot(page, "internals-ranks.png", tmp_path)
    one = watched["relu"]
    open_internals(page, server_url, f"runs={one}&run={one}&panel=ranks")
    assert page.get_by_test_id("no-divergence").inner_text() == "One rank: nothing to diverge from."


def test_a_watched_run_loading_is_not_called_unwatched(page, watched, server_url, tmp_path):
    """While the layer table is on its way the panel says it is loading — not, for a second, that none of the selected
    runs was watched."""
    held_back: list = []
    page.route("**/api/runs/*/layers?*", lambda route: held_back.append(route))
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}")
    page.locator(f'li[data-run="{sig}"]').wait_for()  # the run list is in; the table is not
    while not held_back:
        page.wait_for_timeout(20)
    empty = page.locator(".panel .empty")
    assert empty.inner_text() == "Loading…"
    page.screenshot(path=str(tmp_path / "internals-loading.png"))  # looked at, not a docs picture
    for route in held_back:
        route.continue_()
    overview_ready(page, "act", "mean")
    assert empty.count() == 0


def test_the_ranks_of_a_run_never_watched_say_what_they_need(page, serve, tmp_path):
    """A run that only logged metrics: the Ranks panel says it was not watched, in a sentence — no raw error, and no
    request for step times it does not have (a 404 in the console)."""
    with deepscope.init(dir=tmp_path, name="metrics-only") as run:
        for step in range(20):
            run.log({"train/loss": 1 / (step + 1)}, step=step)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/scalars" in r.url else None)
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&run={run.id}&panel=ranks")
    note = page.get_by_test_id("ranks-empty")
    assert note.inner_text().startswith("This run was not watched: the Ranks panel shows each rank's step times")
    assert page.locator(".ranks .error").count() == 0 and asked == []
    assert page.get_by_role("combobox", name="Run").input_value() == run.id  # the run picked, though not watched
    page.screenshot(path=str(tmp_path / "ranks-unwatched.png"))  # looked at, not a docs picture


def test_a_live_step_appears_in_the_overview(page, serve, tmp_path):
    root = tmp_path / "live"
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(project="live", name="live-watch", dir=root)
    run.watch(model, opt, print_findings=False)

    def step(s: int) -> None:
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"train/loss": loss}, step=s)

    for s in range(5):
        step(s)
    run.flush()
    server = serve(root)
    try:
        open_internals(page, server.url, f"runs={run.id}&run={run.id}")
        wait_for(page, "() => window.__deepscope.internals.overview?.steps.at(-1) === 4", timeout=15_000)
        t0 = time.monotonic()
        step(5)
        wait_for(page, "() => window.__deepscope.internals.overview?.steps.at(-1) === 5", timeout=5_000)
        assert time.monotonic() - t0 < 3.0  # flush interval 0.5 s + poll 0.2 s + refetch at most every 1 s
    finally:
        run.finish()


def test_layer_detail_says_where_statistics_stop_being_finite(page, serve, tmp_path):
    """A NaN input at step 20 makes the weights NaN with that step's update: from step 21 every statistic is NaN (step
    20's leave the NaN values out and count them), and the charts say from which step on instead of just ending."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=tmp_path, name="nan")
    run.watch(model, opt, print_findings=False)
    for step in range(30):
        x = torch.randn(4, 8)
        if step == 20:
            x[0, 0] = float("nan")
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
    run.finish()
    server = serve(tmp_path)
    open_internals(page, server.url, f"runs={run.id}&run={run.id}&panel=layer&layer=0&kind=act")
    note = page.locator("figure[data-stat=mean] [data-testid=not-finite]")
    note.wait_for(timeout=15_000)
    assert note.inner_text() == "not finite from step 21"
    assert page.locator("figure[data-stat=std] [data-testid=not-finite]").inner_text() == "not finite from step 21"


def test_gradient_flow_says_which_gradients_are_zero(page, serve, tmp_path):
    """Every unit of the first layer dead (a large negative bias): the weights below get a gradient of exactly 0,
    which a log axis cannot draw — the view says so; the diagnosis names it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    run = train(tmp_path, "dead", model, 20)
    open_internals(page, serve(tmp_path).url, f"runs={run}&panel=flow")
    wait_for(page, "() => Object.keys(window.__deepscope.internals.flow?.runs ?? {}).length === 1")
    note = page.get_by_test_id("flow-zero")
    note.wait_for()
    assert "2 weights with a gradient norm of exactly 0" in note.inner_text()  # 2.weight: its input is all 0


def test_gradient_flow_says_which_values_are_not_finite(page, serve, tmp_path):
    """A diverged run (a learning rate of 1e4): at its last step the gradient norms are NaN. The flow says so
    instead of showing empty axes."""
    torch.manual_seed(0)
    run = train(tmp_path, "diverged", relu_net(), 12, lr=1e4)
    r = deepscope.open(tmp_path).run(run)
    last = r.layer_matrix("param_grad", "norm").values[:, -1]
    weights = [n.endswith("weight") for n in r.layer_matrix("param_grad", "norm").names]
    assert not np.isfinite(last[weights]).any()  # the premise: diverged
    open_internals(page, serve(tmp_path).url, f"runs={run}&panel=flow")
    note = page.get_by_test_id("flow-gaps")
    note.wait_for()
    n = sum(weights)
    assert f"{n} weights without a finite gradient norm (no gradient at this step, or NaN/Inf)" in " ".join(
        note.inner_text().split()
    )
    end = page.get_by_test_id("total-norm-end")  # and where the global norm stopped being finite
    end.wait_for()
    first_bad = int(np.flatnonzero(~np.isfinite(r.total_norm("param_grad").last))[0])
    assert f"not finite from step {first_bad}" in end.inner_text()


def test_errors_lead_the_findings_and_a_shorter_run_is_named_in_the_flow(page, serve, tmp_path):
    long = train(tmp_path, "long", relu_net(), 20)
    short = train(tmp_path, "short", relu_net(), 10)
    with deepscope.init(dir=tmp_path, id=short, resume=True) as run:  # findings written as a run would write them
        run.event("diagnosis/nonfinite", "NaN/Inf in activations, first at layer 0 (step 3)", step=3, severity="error")
        run.event("diagnosis/dead_units", "layer 1 (ReLU): 80% of its units never fired", step=9, severity="warning")
    base = serve(tmp_path).url
    open_internals(page, base, f"runs={long},{short}&panel=diagnoses")
    wait_for(page, "() => (window.__deepscope.internals.diagnoses ?? []).length >= 2")
    kinds = [d["kind"] for d in held(page, "diagnoses")]
    assert kinds.index("diagnosis/nonfinite") < kinds.index("diagnosis/dead_units")  # the error first, though older
    open_internals(page, base, f"runs={long},{short}&panel=flow")
    note = page.get_by_test_id("flow-behind")
    note.wait_for()
    assert "short: drawn at step 9, the last it recorded up to step 19" in note.inner_text()


def test_a_link_to_norms_opens_their_log_colour_scale(page, watched, server_url):
    """A link without `clog` gives the statistic's own default (norms: log), as choosing it in the view does; a
    scale turned linear is kept in the link."""
    sig = watched["sig"]
    open_internals(page, server_url, f"runs={sig}&run={sig}&kind=param_grad&stat=norm")
    overview_ready(page, "param_grad", "norm")
    assert page.evaluate("() => window.__deepscope.view().colorLog") is True
    page.get_by_label("Log colour scale").uncheck()
    wait_for(page, "() => location.search.includes('clog=0')")
    page.reload()
    overview_ready(page, "param_grad", "norm")
    assert page.evaluate("() => window.__deepscope.view().colorLog") is False


def test_dead_unit_shares_fill_their_window_in_the_overview(page, serve, tmp_path):
    """The dead-unit share is recorded at the end of each quarter of the (sliding) window, about the whole window: the
    overview spreads each value over the columns since the one before (it was one column in ten, a faint line on an
    empty row) — but not back before the first window's end, where nothing was measured."""
    root = tmp_path / "dead"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with deepscope.init(project="dead", name="windows", dir=root) as run:
        run.watch(model, opt, dead_window=10, print_findings=False)
        for _ in range(40):
            loss = model(torch.randn(8, 16)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    server = serve(root)
    open_internals(page, server.url, f"runs={run.id}&run={run.id}&stat=dead_frac")
    o = overview_ready(page, "act", "dead_frac")
    values = np.array(
        page.evaluate(
            "() => Array.from({length: window.__deepscope.internals.overview.cols}, (_, c) => "
            "window.__deepscope.internals.overview.value('1', c))"
        ),  # fmt: skip
        dtype=float,
    )
    recorded = deepscope.open(root).run(run.id).layer_matrix("act", "dead_frac")
    row = recorded.values[recorded.names.index("1")]
    at = np.flatnonzero(np.isfinite(row))
    assert at.tolist() == list(range(9, 40, 2))  # a value per quarter window (2 steps) once a window has passed
    # shown: no value before the first window ends (step 9); after it, each value back to the one before
    assert o["cols"] == 40 and np.isnan(values[:9]).all() and np.isfinite(values[9:]).all()
    np.testing.assert_array_equal(values[9:], [row[at[at >= c][0]] for c in range(9, 40)])


def test_exact_zeros_on_a_log_colour_scale_have_their_own_colour(page, serve, tmp_path):
    """A weight gradient that is exactly 0 (a layer cut off from the loss) is no shade of the ramp's low end."""

    class CutOff(nn.Module):
        def __init__(self):
            super().__init__()
            self.dead, self.live = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.live(x) + 0.0 * self.dead(x).sum()

    run = fit(tmp_path, "cut", CutOff(), lambda: torch.randn(8, 4), 12)
    open_internals(page, serve(tmp_path).url, f"runs={run}&run={run}&kind=param_grad&stat=norm")
    overview_ready(page, "param_grad", "norm")
    page.get_by_test_id("zero-swatch").wait_for()
    grey = page.evaluate(
        """() => { const c = document.querySelector('[data-testid=layer-matrix]');
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
          for (let i = 0; i < px.length; i += 4) if (px[i] === 141 && px[i + 1] === 147 && px[i + 2] === 156) n++;
          return n; }"""
    )
    assert grey > 0
    page.get_by_label("Log colour scale").uncheck()
    wait_for(page, "() => !document.querySelector('[data-testid=zero-swatch]')")


def test_layers_nest_by_module_and_any_level_collapses(page, serve, tmp_path):
    """A transformer-like model: rows nest block › attention › projection; a whole block collapses into one row."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(8)
            self.attn = nn.ModuleDict({"q": nn.Linear(8, 8), "k": nn.Linear(8, 8)})
            self.ln_2 = nn.LayerNorm(8)
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

        def forward(self, x):
            h = self.ln_1(x)
            x = x + self.attn["q"](h) * self.attn["k"](h)
            return x + self.mlp(self.ln_2(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            for b in self.h:
                x = b(x)
            return self.head(x)

    run = fit(tmp_path, "nested", Net(), lambda: torch.randn(4, 8), 5, lr=0.01)
    open_internals(page, serve(tmp_path).url, f"runs={run}&run={run}")
    o = overview_ready(page, "act", "mean")
    block = ["h.0", "h.0.ln_1", "h.0.attn", "h.0.attn.q", "h.0.attn.k", "h.0.ln_2", "h.0.mlp", "h.0.mlp.0", "h.0.mlp.1"]
    assert o["displayRows"] == ["h", *block, *[r.replace("h.0", "h.1") for r in block], "head"]
    row = o["displayRows"].index("h.1")  # its header: a click collapses the whole block into one row
    page.get_by_test_id("layer-matrix").click(position={"x": 30, "y": row * o["rowH"] + o["rowH"] / 2})
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length === 12")
    assert held(page, "overview")["displayRows"] == ["h", *block, "h.1", "head"]
    what = page.get_by_test_id("overview-what")
    assert "13 layers\xa0in 12 rows" in what.inner_text()  # the header counts the rows shown too
    page.get_by_role("button", name="Collapse all").click()
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length < 12")
    assert page.get_by_role("button", name="Collapse all").is_disabled()
    page.get_by_role("button", name="Expand all").click()
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length === 20")
    assert page.get_by_role("button", name="Expand all").is_disabled() and " in " not in what.inner_text()


def test_a_per_row_scale_shows_a_small_layer_beside_a_huge_one(page, serve, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    with torch.no_grad():
        model[1].weight.mul_(1e4)  # its outputs dwarf the first layer's
    with deepscope.init(dir=tmp_path, name="scales") as run:
        run.watch(model, histograms_every=0, print_findings=False)
        for _ in range(30):
            model(torch.randn(16, 4) + 0.5).sum().backward()
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&run={run.id}&stat=mean")  # linear, around 0
    o = overview_ready(page, "act", "mean")

    def colours_of_first_row() -> int:
        return page.evaluate(
            """([labelW, plotW, rowH]) => { const c = document.querySelector('[data-testid=layer-matrix]');
              const k = c.width / c.clientWidth, y = Math.floor(rowH / 2 * k);
              const ctx = c.getContext('2d');
              const px = ctx.getImageData(Math.ceil(labelW * k), y, Math.floor((plotW - 160) * k), 1).data;
              const seen = new Set();
              for (let i = 0; i < px.length; i += 4) seen.add(px[i] + ',' + px[i + 1] + ',' + px[i + 2]);
              return seen.size; }""",
            [o["labelW"], o["plotW"], o["rowH"]],
        )  # left of where a per-row range is written

    def dark_pixels_at_the_end_of_the_first_row() -> int:
        return page.evaluate(
            """([labelW, plotW, rowH]) => { const c = document.querySelector('[data-testid=layer-matrix]');
              const k = c.width / c.clientWidth, y = Math.floor(rowH / 2 * k);
              const ctx = c.getContext('2d');
              const px = ctx.getImageData(Math.floor((labelW + plotW - 90) * k), y, Math.floor(80 * k), 1).data;
              let n = 0;
              for (let i = 0; i < px.length; i += 4) n += px[i] + px[i + 1] + px[i + 2] < 300 ? 1 : 0;
              return n; }""",
            [o["labelW"], o["plotW"], o["rowH"]],
        )

    assert o["displayRows"][0] == "0"
    one_scale = colours_of_first_row()  # one colour: its means are nothing beside the second layer's
    page.get_by_label("Scale per row").check()
    wait_for(page, "() => location.search.includes('rowscale=1')")
    page.get_by_test_id("row-scale-note").wait_for()

    def own_scale_drawn() -> None:  # in the frame drawn after the change
        assert colours_of_first_row() > 3 * max(1, one_scale)  # its own changes over the steps show
        assert dark_pixels_at_the_end_of_the_first_row() > 3  # and its range is written at its end

    eventually(own_scale_drawn)
    page.get_by_label("Scale per row").uncheck()
    wait_for(page, "() => !location.search.includes('rowscale=1')")

    def one_scale_drawn() -> None:
        assert dark_pixels_at_the_end_of_the_first_row() == 0  # one scale: the legend says it, no row does

    eventually(one_scale_drawn)


def test_gradient_flow_leaves_norm_gains_and_embeddings_off_the_depth_axis(page, serve, tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc1, self.ln, self.fc2 = (
                nn.Embedding(10, 8),
                nn.Linear(8, 8),
                nn.LayerNorm(8),
                nn.Linear(8, 2),
            )

        def forward(self, ids):
            return self.fc2(self.ln(self.fc1(self.emb(ids)).relu())).mean(1)

    run = fit(tmp_path, "tiny-lm", Tiny(), lambda: torch.randint(10, (4, 6)), 5)
    open_internals(page, serve(tmp_path).url, f"runs={run}&panel=flow")
    wait_for(page, "() => Object.keys(window.__deepscope.internals.flow?.runs ?? {}).length === 1")
    assert held(page, "flow")["runs"][run]["names"] == ["fc1.weight", "fc2.weight"]
    page.get_by_label("Norms and embeddings").check()
    wait_for(page, "(id) => window.__deepscope.internals.flow.runs[id].names.length === 4", run)
    assert held(page, "flow")["runs"][run]["names"] == ["emb.weight", "fc1.weight", "ln.weight", "fc2.weight"]


class RecurrentLM(nn.Module):
    """An embedding, an LSTM, a multi-head attention and a head: weights named `weight_ih_l0`, `in_proj_weight`…"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        x, _ = self.lstm(self.emb(ids))
        a, _ = self.attn(x, x, x)
        return self.head(self.ln(x + a)).mean(1)


def test_gradient_flow_keeps_recurrent_and_attention_weights_beside_norms_and_embeddings(page, serve, tmp_path):
    """An LSTM's `weight_ih_l0` and an attention's `in_proj_weight` are weights (the server's rule): ticking "norms &
    embeddings" adds the embedding and the norm's gain to them, it does not take them away."""
    torch.manual_seed(0)
    run = fit(tmp_path, "lstm", RecurrentLM(), lambda: torch.randint(10, (4, 6)), 5)
    open_internals(page, serve(tmp_path).url, f"runs={run}&panel=flow")
    wait_for(page, "() => Object.keys(window.__deepscope.internals.flow?.runs ?? {}).length === 1")
    depth = ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "attn.in_proj_weight", "attn.out_proj.weight", "head.weight"]
    assert held(page, "flow")["runs"][run]["names"] == depth
    page.get_by_label("Norms and embeddings").check()
    wait_for(page, "(id) => window.__deepscope.internals.flow.runs[id].names.length !== 5", run)
    assert held(page, "flow")["runs"][run]["names"] == ["emb.weight", *depth[:4], "ln.weight", "head.weight"]


def test_parameters_are_rows_of_the_module_their_path_names(page, serve, tmp_path):
    """An attention's own `in_proj_weight` sits in its group beside its `out_proj`'s parameters, and an LSTM's
    `weight_ih_l0`… in the LSTM's group: every parameter under its module, whatever its name."""
    torch.manual_seed(0)
    run = fit(tmp_path, "lstm", RecurrentLM(), lambda: torch.randint(10, (4, 6)), 3)
    open_internals(page, serve(tmp_path).url, f"runs={run}&run={run}&kind=param_grad&stat=norm")
    o = overview_ready(page, "param_grad", "norm")
    lstm = ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"]
    attn = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj", "attn.out_proj.weight", "attn.out_proj.bias"]
    assert o["displayRows"] == [
        "emb.weight", "lstm", *lstm, "attn", *attn, "ln", "ln.weight", "ln.bias", "head", "head.weight", "head.bias"
    ]  # fmt: skip
    page.get_by_role("button", name="Collapse all").click()
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length === 5")
    assert held(page, "overview")["displayRows"] == ["emb.weight", "lstm", "attn", "ln", "head"]


def test_a_layer_is_compared_across_the_selected_runs_of_a_sweep(page, serve, tmp_path):
    """Two learning rates of one model: the layer's statistics of both runs, each in its colour (which run made this
    layer die, and when); a run of another model, without the layer or with another module at its path, stays out."""
    ids = []
    for lr, steps in ((0.01, 10), (0.5, 15)):
        torch.manual_seed(0)  # no histogram asked for (fit): no 404
        ids.append(fit(tmp_path, f"lr {lr}", relu_net(), lambda: torch.randn(8, 64), steps, lr=lr))
    with deepscope.init(dir=tmp_path, name="other") as other:
        tiny = nn.Sequential(nn.Linear(3, 2))
        other.watch(tiny, histograms_every=0, print_findings=False)
        tiny(torch.randn(2, 3)).sum().backward()
    # another model whose layer "0.1" is a Tanh, not a ReLU: the same path, not the same layer
    tanh = fit(
        tmp_path, "tanh", nn.Sequential(nn.Sequential(nn.Linear(64, 8), nn.Tanh())), lambda: torch.randn(8, 64), 3
    )
    runs = f"{ids[0]},{ids[1]},{other.id},{tanh}"
    open_internals(page, serve(tmp_path).url, f"runs={runs}&run={ids[0]}&panel=layer&layer=0.1")
    wait_for(page, "() => (window.__deepscope.internals.layer?.runs ?? []).length === 2")
    assert held(page, "layer")["runs"] == ids
    assert page.get_by_test_id("layer-runs").inner_text().split("\n") == ["lr 0.01", "lr 0.5"]
    assert page.get_by_test_id("layer-unlike").inner_text() == "not overlaid: tanh's 0.1 is a Tanh"
    # a click on a chart selects the step under it on the shared axis, past this run's own last step too
    point_at(page, "figure[data-stat='mean'] .u-over", 1, 0.5, "() => window.__deepscope.view().selectedStep === 14",
             dx=-2)  # fmt: skip


def test_layer_detail_log_y_keeps_the_runs_beside_a_diverged_one_apart(page, serve, tmp_path):
    """Three runs of one model, one whose layer-0 outputs grow tenfold a step to 1e35: on linear axes the other two lie
    flat at 0; "log y" puts magnitudes on a log axis and signed statistics on a symmetric log one (linear near 0), and
    their lines lie at their own level, moving."""
    ids = []
    for name, grow, seed in (("calm", 1.0, 0), ("steady", 1.0, 1), ("diverged", 10.0, 0)):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with deepscope.init(dir=tmp_path, name=name) as run:
            run.watch(model, opt, histograms_every=0, print_findings=False)
            for _ in range(36):
                model(torch.randn(4, 8)).mean().backward()
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    model[0].weight.mul_(grow)
                    model[0].bias.mul_(grow)
        ids.append(run.id)
    calm = ids[0]
    open_internals(page, serve(tmp_path).url, f"runs={','.join(ids)}&run={calm}&panel=layer&layer=0")
    charts = "window.__deepscope.internals.layerCharts"
    wait_for(
        page, f"() => ['mean', 'std', 'zero_frac'].every((s) => Object.keys({charts}?.[s]?.spans ?? {{}}).length === 3)"
    )
    flat = held(page, "layerCharts")
    assert all(flat[s]["spans"][i] < 1 for s in ("mean", "std") for i in ids[:2])  # flat at 0, under a 1e35
    page.get_by_role("checkbox", name="Log y").check()
    wait_for(page, f"() => {charts}.mean.distr === 4 && {charts}.std.distr === 3")
    logged = held(page, "layerCharts")
    assert logged["zero_frac"]["distr"] == 1  # a share stays 0…1
    # the calm runs' lines move again (35 decades share the chart's 80 px: a decade is 2 px)
    assert all(logged["mean"]["spans"][i] > 2 and logged["std"]["spans"][i] > 0.3 for i in ids[:2])
    assert "llog=1" in page.url
    shot(page, "layer-log-y.png", tmp_path)


def test_a_finding_every_rank_made_is_one_card_naming_the_ranks(page, serve, tmp_path):
    """Data parallelism averages the gradients: each rank finds the same thing at the same step. One card says
    which ranks; a finding of one rank alone says that rank."""
    model = relu_net()
    ranks = [deepscope.init(dir=tmp_path, id="ddp", name="ddp", rank=r, world_size=2) for r in (0, 1)]
    ranks[0].watch(model, histograms_every=0, print_findings=False)
    model(torch.randn(4, 64)).sum().backward()
    for run in ranks:
        run.event("diagnosis/dead_units", "80% of 0.1's units never fired", step=0, severity="warning", key="0.1")
    ranks[1].event("diagnosis/nonfinite", "NaN/Inf in activations of 0.3", step=0, severity="error", key="0.3")
    for run in reversed(ranks):
        run.finish()
    open_internals(page, serve(tmp_path).url, "runs=ddp&run=ddp&panel=diagnoses")
    wait_for(page, "() => (window.__deepscope.internals.diagnoses ?? []).length === 2")
    cards = {d["kind"]: d["ranks"] for d in held(page, "diagnoses")}
    assert sorted(cards["diagnosis/dead_units"]) == [0, 1] and cards["diagnosis/nonfinite"] == [1]
    metas = page.locator(".diagnoses li .meta").all_inner_texts()
    assert any("ranks 0, 1" in m for m in metas) and any("· rank 1" in m for m in metas)


def no_overprint(o: dict) -> None:
    """Row labels at least 12 px apart (the font is 11 px); tick labels apart by half of both widths and more."""
    ys = [label["y"] for label in o["labels"]]
    assert all(b - a >= 12 - 1e-6 for a, b in zip(ys, ys[1:]))
    for a, b in zip(o["ticks"], o["ticks"][1:]):
        assert b["x"] - a["x"] >= (a["w"] + b["w"]) / 2


def test_many_short_rows_label_the_outer_groups_without_overprinting(page, serve, tmp_path):
    """150 layers (50 blocks of Linear, LayerNorm, GELU): rows a few pixels high get the block headers as labels, not
    a jumble of every header and every k-th layer; a depth control shows one row per block, kept in the link."""
    torch.manual_seed(0)
    blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU()) for _ in range(50))

    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = blocks

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    run = fit(tmp_path, "deep", Deep(), lambda: torch.randn(4, 8), 4, lr=0.01)
    open_internals(page, serve(tmp_path).url, f"runs={run}&run={run}")
    o = overview_ready(page, "act", "mean")
    assert o["rows"] == 150 and len(o["displayRows"]) == 201 and o["rowH"] < 6
    no_overprint(o)
    shown = [o["displayRows"][label["row"]] for label in o["labels"]]
    assert shown[0] == "blocks" and len(shown) >= 40
    assert all(s == "blocks" or s.count(".") == 1 for s in shown)  # the group and block headers, no layer
    shot(page, "overview-150-layers.png", tmp_path)

    page.get_by_role("button", name="Open to depth 1").click()
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length === 51")
    assert "odepth=1" in page.url
    page.reload()
    wait_for(page, "() => window.__deepscope.internals.overview?.displayRows.length === 51")
    o = held(page, "overview")
    assert o["displayRows"] == ["blocks", *[f"blocks.{i}" for i in range(50)]]
    no_overprint(o)
    row = o["displayRows"].index("blocks.3")  # one block opened by a click, on top of the depth
    page.get_by_test_id("layer-matrix").click(position={"x": 30, "y": row * o["rowH"] + o["rowH"] / 2})
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length === 54")
    assert "ofold=blocks.3" in page.url
    page.get_by_role("button", name="Expand all").click()
    wait_for(page, "() => window.__deepscope.internals.overview.displayRows.length === 201")
    assert "odepth" not in page.url and "ofold" not in page.url


def test_a_gap_in_the_recorded_steps_is_marked_and_ticks_do_not_collide(page, serve, tmp_path):
    """Watched for steps 0–29, not for 30–59, again from step 60 with every=2: the columns are the recorded steps, the
    30 missing ones are marked where columns 29 and 60 meet, and the ticks 40 and 50, squeezed there, are left out
    instead of printing over 60."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with deepscope.init(dir=tmp_path, name="gap") as run:
        for step in range(200):
            if step == 0:
                run.watch(model, opt, histograms_every=0, print_findings=False)
            elif step == 30:
                run.unwatch()
            elif step == 60:
                run.watch(model, opt, every=2, histograms_every=0, print_findings=False)
            loss = model(torch.randn(4, 8)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss}, step=step)
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&run={run.id}")
    o = overview_ready(page, "act", "mean")
    assert o["exact"] and o["steps"][29:31] == [29, 60] and o["steps"][31] == 62
    assert o["gaps"] == [{"col": 30, "after": 29, "before": 60}]
    no_overprint(o)
    ticks = [t["step"] for t in o["ticks"]]
    assert 60 in ticks and not any(29 < s < 60 for s in ticks)
    gaps = page.get_by_test_id("overview-gaps").inner_text()
    assert gaps == "┆ steps 30–59 not recorded; every 2 since step 60"
    shot(page, "overview-gap.png", tmp_path)


def test_each_watch_period_is_named_in_the_gap_note(page, serve, tmp_path):
    """Watched every step for 0–39, not for 40–69, every 2 for 70–109, then every step of layer 2 alone from 110: the
    note names each period — not "every 2 since step 70" over steps recorded every step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    quiet = {"histograms_every": 0, "print_findings": False}
    with deepscope.init(dir=tmp_path, name="three-watches") as run:
        for step in range(130):
            if step == 0:
                run.watch(model, optimizer=opt, **quiet)
            elif step == 40:
                run.unwatch()
            elif step == 70:
                run.watch(model, optimizer=opt, every=2, **quiet)
            elif step == 110:
                run.unwatch()
                run.watch(model, optimizer=opt, layers="2", **quiet)
            loss = model(torch.randn(4, 8)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss}, step=step)
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&run={run.id}")
    o = overview_ready(page, "act", "mean")
    assert o["exact"] and o["steps"][39:42] == [39, 70, 72] and o["steps"][-21:-18] == [108, 110, 111]
    assert o["gaps"] == [{"col": 40, "after": 39, "before": 70}]
    note = page.get_by_test_id("overview-gaps").inner_text()
    assert note == "┆ steps 40–69 not recorded; every 2 for steps 70–109, every step since step 110"
    shot(page, "overview-periods.png", tmp_path)


def test_nan_and_inf_cells_have_their_own_colour(page, serve, tmp_path):
    """A NaN input at step 20 makes the weights NaN: from step 21 the update ratios are NaN. Those cells are drawn in
    the NaN/Inf colour the legend explains, not in the grey of steps without a value."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with deepscope.init(dir=tmp_path, name="diverged") as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for step in range(40):
            x = torch.randn(4, 8)
            if step == 20:
                x[0, 0] = float("nan")
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&run={run.id}&kind=weight&stat=update_ratio")
    o = overview_ready(page, "weight", "update_ratio")
    assert page.evaluate("() => window.__deepscope.internals.overview.nonfinite('0.weight', 30)") == 1
    assert page.evaluate("() => window.__deepscope.internals.overview.nonfinite('0.weight', 10)") == 0
    assert page.get_by_test_id("nonfinite-swatch").inner_text().strip() == "NaN/Inf"
    row = o["displayRows"].index("0.weight")
    cw = o["plotW"] / o["cols"]

    def pixel(col: int) -> list[int]:
        x, y = o["labelW"] + (col + 0.5) * cw, (row + 0.7) * o["rowH"]
        return page.evaluate(
            """([x, y]) => { const c = document.querySelector('[data-testid=layer-matrix]');
                const d = window.devicePixelRatio || 1, px = Math.round(x * d), py = Math.round(y * d);
                return Array.from(c.getContext('2d').getImageData(px, py, 1, 1).data); }""",
            [x, y],
        )

    assert pixel(30)[:3] == [232, 31, 200]  # NaN/Inf
    assert pixel(10)[:3] not in ([232, 31, 200], [241, 243, 246])  # a value
    shot(page, "overview-nonfinite.png", tmp_path)


def test_a_link_to_a_kind_without_a_statistic_opens_on_that_kinds_own(page, watched, server_url):
    """`kind=param_grad` alone opens on the L2 norm (not the activations' mean); the URL names no statistic while the
    kind's own is shown, and one chosen otherwise."""
    relu = watched["relu"]
    open_internals(page, server_url, f"runs={relu}&run={relu}&kind=param_grad")
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["kind"] == "param_grad" and view["stat"] == "norm" and view["colorLog"] is True
    assert "stat=" not in page.url
    open_internals(page, server_url, f"runs={relu}&run={relu}&kind=param_grad&stat=mean")
    assert page.evaluate("() => window.__deepscope.view().stat") == "mean" and "stat=mean" in page.url


def test_a_clipped_runs_global_norm_is_drawn_before_clipping_with_its_limit(page, serve, tmp_path):
    """Clipped at 0.05 every step, the gradients the flow shows have a global norm of 0.05 throughout: the chart
    draws the norm clip_grad_norm_ returned instead, and says where the limit lies and how often it clipped."""
    torch.manual_seed(0)
    model = relu_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with deepscope.init(dir=tmp_path, name="clipped") as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for _ in range(12):
            loss = model(torch.randn(32, 64)).square().mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            opt.step()
    before = deepscope.open(tmp_path).run(run.id).series("watch/grad_norm").value
    assert (before > 0.05).all()  # the premise: clipped at every step
    open_internals(page, serve(tmp_path).url, f"runs={run.id}&panel=flow")
    wait_for(page, "(id) => window.__deepscope.internals.totalNorm?.[id]?.points === 12", run.id)
    total = held(page, "totalNorm")[run.id]
    assert total["beforeClip"] and total["clip"] == 0.05 and total["last"] == pytest.approx(before[-1])
    chart = page.get_by_test_id("total-norm")
    assert "before clipping" in chart.locator("figcaption").inner_text()
    note = " ".join(page.get_by_test_id("total-norm-clip").inner_text().split())
    assert "to a norm of 0.05 (dashed), on 12 of 12 steps" in note
    shot(page, "total-norm-clipped.png", tmp_path)
