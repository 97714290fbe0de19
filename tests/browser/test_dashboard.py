"""The dashboard in headless Chromium against the real server: runs, charts, live data, zoom, links."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from browser_helpers import (
    LONG_STEPS,
    SHORT_STEPS,
    XSS,
    Console,
    charts,
    drag_until,
    eventually,
    point_at,
    showing,
    wait_for,
)
from playwright.sync_api import expect

import deepscope

pytestmark = pytest.mark.browser


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.__deepscope !== undefined")


def chart_ready(page, key: str, run: str, last_step: int | None = None) -> None:
    wait_for(
        page,
        """([key, run, last]) => {
            const c = window.__deepscope.charts[key]?.[run];
            return c && c.points > 0 && (last === null || c.lastStep === last);
        }""",
        [key, run, last_step],
    )


def test_dashboard_opens_without_errors_and_lists_runs(page, server, store):
    open_page(page, f"{server}?tab=runs")
    rows = page.locator("tbody tr[data-run]")
    rows.first.wait_for()
    assert rows.count() == 3
    ids = {rows.nth(i).get_attribute("data-run") for i in range(3)}
    assert ids == {store["long"], store["short"], store["hostile"]}
    crashed = page.locator(f'tr[data-run="{store["hostile"]}"] .status')
    assert crashed.inner_text().strip() == "crashed"
    assert page.title() == "deepscope"


@pytest.mark.parametrize("tab", ["charts", "internals", "graph", "analysis", "run"])
def test_a_link_to_a_run_the_store_does_not_hold_says_so_and_asks_nothing_for_it(page, server, store, tab):
    """A stale link (the run removed, or recorded elsewhere): a notice names it, no view asks the server for it (each
    such request was a 404 in the console), and the runs it does hold are shown."""
    console = Console(page)
    open_page(page, f"{server}?tab={tab}&runs={store['long']},gone-123&run=gone-123")
    notice = page.locator(".banner.notice")
    notice.wait_for()
    assert "gone-123" in notice.inner_text()
    page.wait_for_timeout(500)
    if tab == "charts":
        chart_ready(page, "train/loss", store["long"])
    if tab == "analysis":  # none of the runs has an analysis, as the run list says: nothing is asked
        reason = page.get_by_test_id("analysis-reasons").locator(f"li[data-run='{store['long']}'] .reason")
        reason.wait_for()
        assert reason.inner_text() == "no analysis recorded"
    assert console.errors == []
    notice.get_by_role("button", name="Dismiss").click()
    assert notice.count() == 0


def test_selecting_runs_draws_charts_with_the_points_logged(page, server, store):
    open_page(page, f"{server}?tab=runs&runs=")
    page.locator(f'tr[data-run="{store["long"]}"] input[type=checkbox]').check()
    page.locator(f'tr[data-run="{store["short"]}"] input[type=checkbox]').check()
    page.get_by_role("button", name="Compare in charts").click()
    chart_ready(page, "train/loss", store["long"], LONG_STEPS - 1)
    chart_ready(page, "train/loss", store["short"], SHORT_STEPS - 1)
    chart_ready(page, "val/loss", store["short"])
    held = charts(page)
    assert set(held["train/loss"]) == {store["long"], store["short"]}  # only the selected runs
    long, short = held["train/loss"][store["long"]], held["train/loss"][store["short"]]
    assert not long["exact"] and 500 <= long["points"] <= 1000  # 5,000 steps in at most 1,000 buckets
    assert short["exact"] and short["points"] == SHORT_STEPS  # every point
    assert short["lastY"] == pytest.approx(2.0 / (1 + (SHORT_STEPS - 1) / 300) + 0.3)
    assert held["val/loss"][store["short"]]["points"] == SHORT_STEPS // 100
    assert page.locator("figure.chart canvas").count() >= 3
    # Each run has one colour everywhere: the run list, the table swatch and the chart tooltip.
    assert page.locator(".group[data-group=train]").is_visible()


def test_url_reproduces_the_view(context, page, server, store):
    open_page(page, f"{server}?runs={store['long']},{store['short']}")
    chart_ready(page, "train/loss", store["long"])
    page.get_by_label("Search metrics").fill("loss")
    page.get_by_label("Log scale").check()
    page.locator('[data-x="step"]').click()
    drag_zoom(page, "train/loss", 0.2, 0.5)
    wait_for(page, "(run) => window.__deepscope.charts['train/loss']?.[run]?.zoomed", store["long"])
    view = page.evaluate("() => window.__deepscope.view()")
    url = page.url
    assert "zoom=" in url and "q=loss" in url and "log=1" in url

    other = context.new_page()
    console = Console(other)
    open_page(other, url)
    chart_ready(other, "train/loss", store["long"])
    wait_for(other, "(run) => window.__deepscope.charts['train/loss']?.[run]?.zoomed", store["long"])
    assert other.evaluate("() => window.__deepscope.view()") == view
    a, b = charts(page), charts(other)
    assert set(a) == set(b) == {"train/loss", "val/loss"}  # the search applies
    for key in a:
        assert set(a[key]) == set(b[key]) == {store["long"], store["short"]}
    assert other.evaluate("() => window.__deepscope.xRange['train/loss']") == view["zoom"]
    assert b["train/loss"][store["long"]]["points"] == a["train/loss"][store["long"]]["points"]
    assert other.get_by_label("Log scale").is_checked()
    assert other.get_by_label("Search metrics").input_value() == "loss"
    assert console.errors == []
    other.close()


DRAG_PATH = """([sel, f0, f1]) => { const e = document.querySelector(sel); if (!e) return null;
    const r = e.getBoundingClientRect(), y = r.top + r.height / 2; if (!r.width) return null;
    return [f0, (f0 + f1) / 2, f1].map((f) => [r.left + r.width * f, y]); }"""


def drag_zoom(page, key: str, frac0: float, frac1: float, figure: str = "data-key") -> None:
    """A drag across the chart from ``frac0`` to ``frac1`` of its width, until the view holds a zoom."""
    over = f'figure[{figure}="{key}"] .u-over'
    drag_until(page, DRAG_PATH, [over, frac0, frac1], "() => !!window.__deepscope.view().zoom")


def hover_chart(page, key: str, fx: float, text: str = "", dx: float = 0):
    """The pointer over chart ``key`` at ``fx`` of its width (plus ``dx`` pixels), once its tooltip shows ``text``."""
    point_at(page, f"figure[data-key='{key}'] .u-over", fx, 0.5, showing(f"figure[data-key='{key}'] .tip", text),
             dx=dx, click=False)  # fmt: skip
    return page.locator(f"figure[data-key='{key}'] .tip")


def test_zoom_refetches_finer_data_and_double_click_resets(page, server, store):
    run = store["long"]
    open_page(page, f"{server}?runs={run}&smooth=0")
    chart_ready(page, "train/loss", run, LONG_STEPS - 1)
    before = charts(page)["train/loss"][run]
    assert not before["exact"]
    drag_zoom(page, "train/loss", 0.3, 0.4)
    wait_for(page, "(run) => window.__deepscope.charts['train/loss']?.[run]?.zoomed", run)
    after = charts(page)["train/loss"][run]
    z0, z1 = page.evaluate("() => window.__deepscope.xRange['train/loss']")
    assert 0 < z0 < z1 < LONG_STEPS
    # The visible range was asked for again: every step in it, each its own bucket.
    fetches = page.evaluate(
        "(run) => window.__deepscope.fetches.filter(f => f.run === run && f.key === 'train/loss' && f.start !== null)",
        run,
    )
    assert fetches and fetches[-1]["start"] <= z0 + 1 and fetches[-1]["end"] >= z1 - 1
    assert after["exact"] and after["points"] == fetches[-1]["rows"]
    assert after["points"] == pytest.approx(z1 - z0, abs=3)
    assert z0 - 1 <= after["firstX"] and after["lastX"] <= z1 + 1
    # The data per step inside the window is finer than the overview's.
    assert after["points"] / (z1 - z0) > before["points"] / LONG_STEPS
    assert "zoom=" in page.url

    page.locator('figure[data-key="train/loss"] .u-over').dblclick()
    wait_for(page, "(run) => !window.__deepscope.charts['train/loss'][run].zoomed", run)
    reset = charts(page)["train/loss"][run]
    assert reset["points"] == before["points"] and reset["lastStep"] == LONG_STEPS - 1
    assert "zoom=" not in page.url


def test_a_chart_enlarges_over_the_others_shares_their_zoom_and_closes(page, server, store):
    run = store["long"]
    console = Console(page)
    open_page(page, f"{server}?runs={run}&smooth=0")
    chart_ready(page, "train/loss", run, LONG_STEPS - 1)
    small = page.locator('figure[data-key="train/loss"] .u-over').bounding_box()
    page.get_by_role("button", name="Enlarge train/loss").click()
    big = page.locator('figure[data-big-chart="train/loss"] .u-over')
    big.wait_for()
    box = big.bounding_box()
    assert box["height"] > 2 * small["height"] and box["width"] > small["width"]
    assert "chart=train%2Floss" in page.url
    # a drag on the enlarged chart zooms every chart, as one on any chart does
    drag_zoom(page, "train/loss", 0.3, 0.5, figure="data-big-chart")
    wait_for(page, "(run) => window.__deepscope.charts['train/loss']?.[run]?.zoomed", run)
    z0, z1 = page.evaluate("() => window.__deepscope.xRange['train/loss']")
    assert 0 < z0 < z1 < LONG_STEPS
    # the link opens it enlarged, zoomed
    page.reload()
    page.locator('figure[data-big-chart="train/loss"] .u-over').wait_for()
    assert "zoom=" in page.url
    page.keyboard.press("Escape")
    expect(page.locator("[data-big-chart]")).to_have_count(0)
    assert "chart=" not in page.url
    # a click beside the chart closes it too
    page.get_by_role("button", name="Enlarge train/loss").click()
    page.locator("[data-big-chart]").wait_for()
    page.mouse.click(5, 300)
    expect(page.locator("[data-big-chart]")).to_have_count(0)
    # a link to a metric these runs did not log shows the charts alone
    open_page(page, f"{server}?runs={run}&chart=no/such")
    chart_ready(page, "train/loss", run)
    assert page.locator("[data-big-chart]").count() == 0
    assert console.errors == []


def test_the_controls_stay_usable_over_an_enlarged_chart(page, server, store):
    """The enlarged chart lies below the controls: Log y and Smoothing change it as it is shown (it covered them)."""
    run = store["long"]
    open_page(page, f"{server}?runs={run}&smooth=0&chart=train%2Floss")
    big = page.locator('figure[data-big-chart="train/loss"]')
    big.wait_for()
    box = big.bounding_box()
    for label in ("Log scale", "Smoothing", "Search metrics"):
        ctl = page.get_by_label(label).bounding_box()
        assert ctl["y"] + ctl["height"] <= box["y"]  # above the chart, not under it
    page.get_by_label("Log scale").check(timeout=3000)
    wait_for(page, "() => window.__deepscope.view().log === true")
    page.get_by_label("Smoothing").fill("0.5", timeout=3000)
    wait_for(page, "() => window.__deepscope.view().smoothing === 0.5")
    assert "chart=train%2Floss" in page.url and big.is_visible()  # still enlarged
    assert box["y"] + box["height"] <= page.viewport_size["height"]


def test_x_axis_modes(page, server, store):
    run = store["short"]
    open_page(page, f"{server}?runs={run}")
    chart_ready(page, "train/loss", run)
    assert charts(page)["train/loss"][run]["lastX"] == SHORT_STEPS - 1
    page.locator('[data-x="wall"]').click()
    wait_for(page, "(run) => window.__deepscope.charts['train/loss'][run].lastX > 1e9", run)
    page.locator('[data-x="relative"]').click()
    wait_for(page, "(run) => window.__deepscope.charts['train/loss'][run].lastX < 1e6", run)
    rel = charts(page)["train/loss"][run]
    assert 0 <= rel["firstX"] <= rel["lastX"]
    assert "x=relative" in page.url


def test_runs_table_sorts_and_filters(page, server, store):
    open_page(page, f"{server}?tab=runs")
    rows = page.locator("tbody tr[data-run]")
    rows.first.wait_for()

    def shown() -> list[str]:
        return [rows.nth(i).get_attribute("data-run") for i in range(rows.count())]

    page.get_by_label("Filter runs").fill("sgd")
    assert shown() == [store["short"]]
    # "select all" with a filter selects what it shows — the runs it hides were compared too, unseen
    page.get_by_label("Select all shown runs").uncheck()  # all three were selected: the shown one is dropped
    page.get_by_label("Select all shown runs").check()
    wait_for(page, "(id) => new URLSearchParams(location.search).get('runs') === id", store["short"])
    page.get_by_label("Filter runs").fill("")
    page.get_by_label("Config key").select_option("optimizer")
    page.get_by_label("Config value").select_option("adam")
    assert shown() == [store["long"]]
    page.get_by_label("Config key").select_option("")
    # an integer config value whole, with separators (it read 3.798e+6)
    assert page.locator(f"tr[data-run='{store['long']}'] td.cfgval", has_text="3,798,010").count() == 1
    page.locator("th button.sort", has_text="Step").click()  # descending first
    assert shown()[0] == store["long"]
    page.locator("th button.sort", has_text="Name").click()
    names = [rows.nth(i).locator(".link").inner_text() for i in range(rows.count())]
    assert names == sorted(names, key=str.lower)
    assert "filter=" not in page.url and "sort=name" in page.url
    note = page.locator("th.cfgcol button.sort", has_text="note")
    for _ in range(2):  # runs without the key come last, in either direction
        note.click()
        assert shown()[0] == store["hostile"]


def test_run_detail_shows_config_metadata_and_events(page, server, store):
    open_page(page, f"{server}?tab=runs")
    page.locator(f'tr[data-run="{store["long"]}"] .link').click()
    page.locator("h1").wait_for()
    assert page.locator("h1").inner_text() == "baseline"
    config = page.locator(".kv").first
    assert "lr" in config.inner_text() and "0.001" in config.inner_text()
    meta = page.locator("dl").inner_text()
    for label in ("Host", "Git commit", "Python", "World size", "Started"):
        assert label in meta
    assert store["long"] in meta
    events = page.locator("table.ev tbody tr")
    assert events.count() == 1
    assert "baseline reached step 4999" in events.first.inner_text()
    assert events.first.locator(".sev").inner_text().lower() == "info"
    # each scalar's last value, minimum and maximum (train/loss = 2 / (1 + s/300) over steps 0…4999)
    loss = 2.0 / (1 + np.arange(LONG_STEPS) / 300)
    cells = page.locator("tr[data-key='train/loss'] td.num").all_inner_texts()
    assert cells[:3] == [f"{loss[-1]:.5g}", f"{loss.min():.5g}", f"{loss.max():.5g}"]
    assert page.locator("tr[data-key='val/loss'] td.num").all_inner_texts()[3] == str(LONG_STEPS // 100)
    keys = page.locator(".metrics table.kv tbody tr").evaluate_all("(rows) => rows.map((r) => r.dataset.key)")
    assert keys == sorted(keys, key=lambda k: (k.startswith("sys/"), k))  # the user's scalars, then sys/
    page.get_by_role("button", name="Show metrics").click()
    chart_ready(page, "train/loss", store["long"])


def test_metric_groups_put_the_users_first_and_sys_last(page, server, store):
    hostile = store["hostile"]
    open_page(page, f"{server}?runs={hostile}")
    chart_ready(page, "sys/step_time", hostile)
    groups = page.locator(".group").evaluate_all("(els) => els.map((e) => e.dataset.group)")
    assert groups == ["train", "val", "", "sys"]  # named groups, then keys without one, then deepscope's timings
    assert page.locator("figure[data-key='sys/step_time'] .unit").inner_text() == "seconds"
    assert page.locator("figure[data-key='train/loss'] .unit").count() == 0


def test_user_strings_render_as_text(page, server, store):
    hostile = store["hostile"]
    open_page(page, f"{server}?runs={hostile}")
    chart_ready(page, f"val/{XSS}", hostile)
    assert page.locator(f'figure[data-key="val/{XSS}"] .title').inner_text() == f"val/{XSS}"
    listed = page.locator(f'.picker li[data-run="{hostile}"] .name')  # the run list: as text (cut to fit), whole in
    assert listed.get_attribute("title") == XSS and listed.locator("img").count() == 0  # its title, no element made
    assert listed.inner_text().startswith(XSS[:8]) and listed.inner_text().endswith(XSS[-8:])

    page.locator("nav button", has_text="Runs").click()
    row = page.locator(f'tr[data-run="{hostile}"]')
    assert row.locator(".link").inner_text() == XSS
    assert row.locator(".tag").inner_text() == XSS
    assert XSS in row.inner_text()  # the config column `note`

    row.locator(".link").click()
    page.locator("h1").wait_for()
    assert page.locator("h1").inner_text() == XSS
    assert XSS in page.locator(".exit").inner_text()
    assert XSS in page.locator(".kv").first.inner_text()
    event = page.locator("table.ev tbody tr").first
    assert event.locator(".text").inner_text() == XSS
    assert event.locator(".sev").inner_text().lower() == "error"

    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img").count() == 0  # nothing became markup


def test_live_value_appears_within_a_second(page, serve, tmp_path):
    run = deepscope.init(project="live", name="live", dir=tmp_path, config={"lr": 0.1})  # flushes every 0.5 s
    for s in range(100):
        run.log({"train/loss": 1.0 / (s + 1)}, step=s)
    run.flush()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs={run.id}")
    chart_ready(page, "train/loss", run.id, 99)
    assert page.locator(f'[data-run="{run.id}"] .live').count() == 1  # the running run's live dot
    latencies = []
    for i in range(5):
        step, value = 100 + i, 1000.0 + i
        start = time.perf_counter()
        run.log({"train/loss": value}, step=step)
        wait_for(
            page,
            "([run, step, value]) => { const c = window.__deepscope.charts['train/loss'][run];"
            " return c.lastStep === step && c.lastY === value; }",
            [run.id, step, value],
            timeout=5000,
        )
        latencies.append(time.perf_counter() - start)
        time.sleep(0.1)
    assert max(latencies) < 1.0, latencies
    # Only the tail was fetched: one request per new point, each starting after the last step held.
    tails = page.evaluate("(run) => window.__deepscope.fetches.filter(f => f.run === run && f.start !== null)", run.id)
    assert [t["start"] for t in tails] == [100 + i for i in range(5)]
    assert all(t["rows"] == 1 for t in tails)
    assert charts(page)["train/loss"][run.id]["points"] == 105
    run.finish()


def test_runs_that_appear_show_up_by_themselves(page, serve, tmp_path):
    first = deepscope.init(project="live", name="first", dir=tmp_path)
    first.log({"loss": 1.0}, step=0)
    first.finish()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?tab=runs")
    page.locator("tbody tr[data-run]").first.wait_for()
    assert page.locator("tbody tr[data-run]").count() == 1
    second = deepscope.init(project="live", name="second", dir=tmp_path)
    second.log({"loss": 1.0}, step=0)
    row = page.locator(f'tr[data-run="{second.id}"]')
    row.wait_for(timeout=5000)
    assert row.locator(".status").inner_text().strip() == "running"
    assert row.locator(".dot.live").count() == 1
    second.finish()
    page.wait_for_function(
        "(id) => document.querySelector(`tr[data-run='${id}'] .status`)?.textContent.trim() === 'finished'",
        arg=second.id,
        timeout=5000,
    )


def get_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_token_protected_server(browser, serve, store):
    token = "t0ken-for-the-test"
    server = serve(store["root"], token=token)
    base = server.url.split("?")[0]
    assert get_status(f"{base}api/runs") == 401
    assert get_status(base) == 401
    assert get_status(f"{base}api/runs", {"Authorization": f"Bearer {token}"}) == 200
    assert get_status(f"{base}api/runs?token={token}") == 200

    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        console = Console(page)
        open_page(page, f"{base}?token={token}&runs={store['long']}")
        chart_ready(page, "train/loss", store["long"], LONG_STEPS - 1)
        assert "token" not in page.url  # dropped from the address bar; the cookie carries it
        page.reload()
        chart_ready(page, "train/loss", store["long"], LONG_STEPS - 1)
        assert console.errors == []
        assert json.loads(page.evaluate("() => JSON.stringify(window.__deepscope.live)"))["events"] >= 0
    finally:
        ctx.close()

    ctx = browser.new_context()  # no token, no cookie
    try:
        page = ctx.new_page()
        response = page.goto(base)
        assert response is not None and response.status == 401
    finally:
        ctx.close()


def test_constant_metrics_draw_and_log_scale_toggles(page, serve, tmp_path):
    """A metric that never changes (a fixed learning rate) is a flat line with a y range around it — its smoothed
    copy differs from it by rounding only, which once made a 1e-19-wide axis and a page error; "Log scale" switches
    the y scale both ways."""
    run = deepscope.init(dir=tmp_path, name="constant")
    for s in range(300):
        spike = 1e35 if s == 100 else 1.0 + 0.1 * (s % 7)  # a mixed-precision overflow's loss at one step
        run.log({"lr": 1e-3, "const": 1.0, "loss": 1.0 / (s + 1), "spiky": spike}, step=s)
    run.finish()
    server = serve(tmp_path)
    console = Console(page)
    open_page(page, f"{server.url}?runs={run.id}&smooth=0.9")
    for key in ("lr", "const", "loss", "spiky"):
        chart_ready(page, key, run.id, 299)
    wait_for(page, "() => ['lr', 'const', 'loss'].every((k) => window.__deepscope.yScale[k])")
    scale = page.evaluate("() => window.__deepscope.yScale")
    assert scale["lr"]["min"] < 1e-3 < scale["lr"]["max"] and scale["lr"]["max"] - scale["lr"]["min"] > 1e-5
    assert scale["const"]["min"] < 1.0 < scale["const"]["max"] and scale["loss"]["distr"] == 1
    assert scale["loss"]["max"] > 0.9  # an ordinary curve keeps its early values in range
    wait_for(page, "() => window.__deepscope.yScale['spiky']")
    spiky = page.evaluate("() => window.__deepscope.yScale['spiky']")
    assert 0.9 < spiky["min"] < 1.0 and 1.6 < spiky["max"] < 2.0  # the one outlier leaves the plot, not the rest
    # zoomed onto it, the outlier is what is in view: the axis reaches it (only the points in view count)
    open_page(page, f"{server.url}?runs={run.id}&smooth=0&zoom=97,103")
    wait_for(page, "() => (window.__deepscope.yScale['spiky']?.max ?? 0) > 1e34")
    open_page(page, f"{server.url}?runs={run.id}&smooth=0&zoom=150,250")  # a window without it: fits its values
    wait_for(page, "() => { const y = window.__deepscope.yScale['spiky']; return y && y.max < 2 && y.min > 0.9; }")
    page.get_by_label("Log scale").check()
    wait_for(page, "() => window.__deepscope.yScale['loss'].distr === 3")
    open_page(page, f"{server.url}?runs={run.id}&smooth=0&log=1")  # 1 … 1/300: two and a half decades
    wait_for(page, "() => window.__deepscope.yScale['loss']?.distr === 3 && window.__deepscope.yLabels['loss']")
    labels = page.evaluate("() => window.__deepscope.yLabels['loss']")
    shown = [label for label in labels if label]
    assert shown and {float(label) for label in shown} <= {1e-3, 1e-2, 1e-1, 1.0, 10.0}  # powers of ten
    assert len({"e" in label for label in shown}) == 1  # in one notation (not 1e+7 beside 100000)
    assert len(shown) < len(labels)  # the splits between them keep their grid lines, unlabelled
    page.get_by_label("Log scale").uncheck()
    wait_for(page, "() => window.__deepscope.yScale['loss'].distr === 1")
    assert console.errors == []


def test_a_log_axis_labels_the_whole_range_of_a_diverging_metric(page, serve, tmp_path):
    """A loss growing to 8e29: the log axis's labels reach its top (they stopped at 1e22, uPlot's own splits drifting in
    floating point), as exact powers of ten at an even stride that keeps them apart."""
    run = deepscope.init(dir=tmp_path, name="diverging")
    for s in range(300):
        run.log({"loss": 10 ** (s / 10)}, step=s)
    run.finish()
    open_page(page, f"{serve(tmp_path).url}?runs={run.id}&smooth=0&log=1")
    chart_ready(page, "loss", run.id, 299)
    wait_for(page, "() => window.__deepscope.yScale['loss']?.distr === 3 && window.__deepscope.yLabels['loss']")

    def labelled() -> None:  # as the axis is drawn once the chart has its size
        shown = [float(label) for label in page.evaluate("() => window.__deepscope.yLabels['loss']") if label]
        exps = [round(np.log10(v)) for v in shown]
        assert all(v == 10.0**e for v, e in zip(shown, exps))  # powers of ten
        steps = {b - a for a, b in zip(exps, exps[1:])}
        assert len(steps) == 1 and steps.pop() > 1  # evenly spaced, a few decades apart
        assert min(exps) <= 1 and max(exps) >= 25  # from the bottom of the data to its top
        box = page.locator('figure[data-key="loss"] .u-over').bounding_box()
        assert box["height"] / (len(shown) - 1) >= 20  # apart: 11 px labels never touch

    eventually(labelled)


def _coloured_pixels(page, key: str) -> int:
    """Pixels of the chart's plot canvas that are neither background nor grey (axes, grid): what the series drew."""
    return page.evaluate(
        """(key) => {
            const c = document.querySelector(`figure[data-key="${key}"] canvas`);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
                if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
            }
            return n;
        }""",
        key,
    )


def test_a_metric_of_one_or_a_few_points_is_drawn(page, serve, tmp_path):
    """A final test metric (one point) draws no line: its point is shown. Two evaluations are not smoothed into a
    line that ends away from the last value."""
    run = deepscope.init(dir=tmp_path, name="sparse")
    noise = np.random.default_rng(0).normal(0, 0.01, 100)  # a loss is noisy: smoothed
    for s in range(100):
        run.log({"loss": 1.0 / (s + 1) + noise[s]}, step=s)
        if s % 50 == 0:
            run.log({"eval/loss": 2.0 - s / 100}, step=s)
    run.log({"test/acc": 0.9}, step=99)
    run.finish()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs={run.id}&smooth=0.6")
    for key, last in (("loss", 99), ("eval/loss", 50), ("test/acc", 99)):
        chart_ready(page, key, run.id, last)

    def point_drawn() -> None:
        assert _coloured_pixels(page, "test/acc") > 10  # the one point, drawn

    eventually(point_drawn)
    tip = hover_chart(page, "test/acc", 1, "0.9", dx=-3)  # near the point, at step 99
    assert "0.9" in tip.inner_text()  # a single point is listed when the cursor is near it
    tip = hover_chart(page, "loss", 0.5)
    assert tip.locator(".tip-cols").inner_text().split() == ["smoothed", "raw"]  # a smoothed line: both, named
    assert _coloured_pixels(page, "eval/loss") > 10
    assert _coloured_pixels(page, "loss") > 10


def test_comparing_many_runs_colours_hover_and_interrupted(page, serve, tmp_path):
    """Selected runs never share a colour (the palette repeats past 12 runs); the hover lists no value of a run past
    its last step; a run stopped with Ctrl-C reads "interrupted" in the runs table, not "finished"."""
    import time as _time

    ids = []
    for k in range(14):
        run = deepscope.init(dir=tmp_path, name=f"r{k}")
        for s in range(100 if k == 0 else 20):
            run.log({"loss": 1.0 / (s + 1) + k}, step=s)
        run.finish("finished", "interrupted (SIGINT)" if k == 1 else None)
        ids.append(run.id)
        _time.sleep(0.01)  # distinct start times: the colour order
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs={ids[0]},{ids[12]}&smooth=0")
    chart_ready(page, "loss", ids[0], 99)
    chart_ready(page, "loss", ids[12], 19)
    swatch = "(id) => getComputedStyle(document.querySelector(`li[data-run='${id}'] .swatch`)).backgroundColor"
    assert page.evaluate(swatch, ids[0]) != page.evaluate(swatch, ids[12])  # run 12 would repeat run 0's colour
    tip = hover_chart(page, "loss", 0.9, "r0")  # step ≈ 90: r12 ended at 19
    assert "r0" in tip.inner_text() and "r12" not in tip.inner_text()
    open_page(page, f"{server.url}?tab=runs")
    page.locator(f"tr[data-run='{ids[1]}']").get_by_text("interrupted").wait_for()


def test_a_run_without_metrics_says_so_and_points_to_the_other_tabs(page, serve, tmp_path):
    """A run made by ``deepscope analyze`` logs no metric: Charts says so (it used to say "Loading…" forever)."""
    import torch

    with deepscope.init(dir=tmp_path, name="no-metrics") as run:  # as `deepscope analyze` makes one
        deepscope.analyze(torch.nn.Linear(4, 3), torch.randn(20, 4), run=run, progress=False)
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs={run.id}")
    empty = page.get_by_test_id("no-metrics")
    empty.wait_for()
    assert "This run logged no metrics" in empty.inner_text()
    empty.get_by_role("button", name="Instances").click()
    page.wait_for_function("() => location.search.includes('tab=analysis')")
    page.get_by_label("Layer", exact=True).wait_for()  # the analysis it holds


def test_an_empty_directory_says_how_runs_get_there(page, serve, tmp_path):
    server = serve(tmp_path)
    open_page(page, server.url)
    empty = page.get_by_test_id("no-runs")
    empty.wait_for()
    assert "deepscope.init()" in empty.inner_text()
    run = deepscope.init(dir=tmp_path, name="arrives")  # the hint goes once a run appears
    run.log({"loss": 1.0}, step=0)
    run.finish()
    empty.wait_for(state="detached", timeout=10_000)
    chart_ready(page, "loss", run.id, 0)  # and the run is selected, as it would have been at load
    assert f"runs={run.id}" in page.url


def test_a_step_logged_twice_shows_its_last_value_in_the_tooltip_as_the_line_does(page, serve, tmp_path):
    run = deepscope.init(dir=tmp_path, name="relogged")
    for s in range(21):
        run.log({"loss": 1.0}, step=s)
    with pytest.warns(RuntimeWarning, match="step went backwards"):
        run.log({"loss": 7.25}, step=10)  # a restart that logs step 10 again
    run.finish()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs={run.id}&smooth=0")
    chart_ready(page, "loss", run.id, 20)
    tip = hover_chart(page, "loss", 0.5, "step 10")  # step 10 of 0…20
    assert "step 10" in tip.inner_text() and "7.25" in tip.inner_text()


def _column_has_line(page, key: str, frac: float) -> bool:
    """Whether the chart's canvas has coloured pixels in the plot's column at ``frac`` of its width (below the row of
    NaN marks along its top)."""
    return page.evaluate(
        """([key, frac]) => {
            const fig = document.querySelector(`figure[data-key="${key}"]`);
            const c = fig.querySelector('canvas'), over = fig.querySelector('.u-over');
            const cr = c.getBoundingClientRect(), o = over.getBoundingClientRect();
            const k = c.width / cr.width;
            const x = Math.round((o.left + o.width * frac - cr.left) * k);
            const y0 = Math.round((o.top + 14 - cr.top) * k), y1 = Math.round((o.bottom - cr.top) * k);
            const d = c.getContext('2d').getImageData(x, y0, 1, y1 - y0).data;
            for (let i = 0; i < d.length; i += 4) {
                const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
                if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) return true;
            }
            return false;
        }""",
        [key, frac],
    )


def test_nan_and_inf_values_break_the_line_and_are_marked(page, serve, tmp_path):
    """A loss that is NaN at step 20 and Inf at 30 leaves a gap there (the line was drawn across them as if nothing
    happened), a mark above the plot, and says NaN / +Inf in the tooltip; another run logged every other step is
    drawn across the steps it did not log."""
    run = deepscope.init(dir=tmp_path, name="diverging")
    for s in range(41):
        run.log({"loss": {20: float("nan"), 30: float("inf")}.get(s, 1.0)}, step=s)
    run.finish()
    other = deepscope.init(dir=tmp_path, name="sparser")
    for s in range(0, 41, 2):
        other.log({"loss": 1.0}, step=s)
    other.finish()
    server = serve(tmp_path)
    console = Console(page)
    open_page(page, f"{server.url}?runs={run.id}&smooth=0")
    chart_ready(page, "loss", run.id, 40)

    def broken_at_20_and_30() -> None:  # in the frame drawn after the data came
        assert _column_has_line(page, "loss", 10 / 40) and _column_has_line(page, "loss", 25 / 40)
        assert not _column_has_line(page, "loss", 20 / 40) and not _column_has_line(page, "loss", 30 / 40)

    eventually(broken_at_20_and_30)
    assert page.evaluate(f"() => window.__deepscope.charts['loss']['{run.id}'].nonfinite") == 2
    for frac, said in ((20 / 40, "NaN"), (30 / 40, "+Inf")):
        hover_chart(page, "loss", frac, said)
    open_page(page, f"{server.url}?runs={other.id}&smooth=0")
    chart_ready(page, "loss", other.id, 40)

    def joined() -> None:
        assert _column_has_line(page, "loss", 21 / 40)  # between its points: joined

    eventually(joined)
    assert console.errors == []


def test_runs_of_several_projects_a_sweeps_keys_first_and_the_newest_project_selected(page, serve, tmp_path):
    """A store shared by a sweep and another kind of run: the project column appears, the sweep's varied key is
    the first config column (not the other runs' many settings), and the first view selects the newest project's
    runs only."""
    other = {f"training.setting_{i:02d}": i for i in range(20)}
    with deepscope.init(project="hf", name="bert", dir=tmp_path, config=other) as run:
        run.log({"loss": 1.0}, step=0)
    sweep = []
    for opt in ("adam", "sgd", "adam"):
        with deepscope.init(project="sweep", name=f"mlp-{opt}", dir=tmp_path, config={"opt": opt, "lr": 0.1}) as run:
            run.log({"loss": 1.0}, step=0)
        sweep.append(run.id)
    server = serve(tmp_path)
    open_page(page, f"{server.url}?tab=runs")
    page.locator("tbody tr[data-run]").nth(3).wait_for()
    heads = page.locator("thead th").evaluate_all("(els) => els.map((e) => e.innerText.trim())")
    assert "Project" in heads
    assert page.locator("th.cfgcol").first.inner_text().strip() == "opt"
    assert sorted(page.evaluate("() => window.__deepscope.view().runs")) == sorted(sweep)
    page.get_by_label("Filter runs").fill("hf")  # one project shown: its settings become the columns
    wait_for(page, "() => document.querySelector('th.cfgcol')?.innerText.trim() === 'training.setting_00'")


def test_a_metric_column_sorts_a_sweep_by_its_last_value(page, serve, tmp_path):
    """Runs compared by a metric: the column holds each run's last value (its min and max on hover), and sorts."""
    finals = {"lr-0.1": 0.62, "lr-0.01": 0.91, "lr-0.001": 0.78}
    ids = {}
    for name, final in finals.items():
        with deepscope.init(project="sweep", name=name, dir=tmp_path, config={"lr": float(name[3:])}) as run:
            for s in range(50):
                loss = float("nan") if name == "lr-0.1" and s == 10 else 1.0 / (s + 1)
                run.log({"val/acc": final * (s + 1) / 50, "train/loss": loss}, step=s)
        ids[name] = run.id
    server = serve(tmp_path)
    open_page(page, f"{server.url}?tab=runs&runs=")  # none selected: the shown runs' metrics are offered
    page.locator("tbody tr[data-run]").nth(2).wait_for()
    page.get_by_label("Metric column").focus()
    wait_for(page, "() => [...document.querySelectorAll('select[aria-label=\"Metric column\"] option')]"
                   ".some((o) => o.value === 'val/acc')")  # fmt: skip
    page.get_by_label("Metric column").select_option("val/acc")
    wait_for(page, "() => document.querySelectorAll('td.metric[data-metric]:not([data-metric=\"\"])').length === 3")
    for name, final in finals.items():
        cell = page.locator(f'tr[data-run="{ids[name]}"] td.metric')
        assert float(cell.get_attribute("data-metric")) == pytest.approx(final)
        assert cell.get_attribute("title").startswith(f"min {final / 50:.5g}".rstrip("0"))
    page.locator("th.metric button.sort").click()  # highest first
    order = page.locator("tbody tr[data-run]").evaluate_all("(rows) => rows.map((r) => r.dataset.run)")
    assert order == [ids["lr-0.01"], ids["lr-0.001"], ids["lr-0.1"]]
    assert "metric=val%2Facc" in page.url or "metric=val/acc" in page.url
    # the run detail says a metric held a NaN, beside its count
    page.locator(f'tr[data-run="{ids["lr-0.1"]}"] .link').click()
    page.locator("tr[data-key='train/loss'] .nonfinite").wait_for()
    assert page.locator("tr[data-key='train/loss'] .nonfinite").get_attribute("data-nonfinite") == "1"
    assert page.locator("tr[data-key='val/acc'] .nonfinite").count() == 0


def test_runs_of_one_name_are_told_apart_by_their_start(page, serve, tmp_path):
    """Two runs named alike: the run list and the chart tooltip add each one's start time (the tooltip, keyed by
    name, failed on the second one)."""
    ids = []
    for k in range(2):
        run = deepscope.init(dir=tmp_path, name="hf-bf16")
        for s in range(20):
            run.log({"loss": 1.0 + k + s / 100}, step=s)
        run.finish()
        ids.append(run.id)
        time.sleep(1.1)  # started in different seconds
    server = serve(tmp_path)
    console = Console(page)
    open_page(page, f"{server.url}?runs={','.join(ids)}&smooth=0")
    for rid in ids:
        chart_ready(page, "loss", rid, 19)
    names = page.locator(".picker li .name").all_inner_texts()
    assert len(set(names)) == 2 and all(n.startswith("hf-bf16 · ") for n in names)
    tip = hover_chart(page, "loss", 0.5)
    assert sorted(tip.locator(".tip-name").all_inner_texts()) == sorted(names)
    assert console.errors == []


def test_a_schedule_that_holds_and_jumps_is_not_smoothed_into_a_ramp(page, serve, tmp_path):
    """A learning rate that holds and jumps, one that follows a cosine and an epoch counter are drawn as they are
    (smoothed, a jump became a ramp and a smooth schedule lagged behind its values); a noisy loss is smoothed."""
    run = deepscope.init(dir=tmp_path, name="schedule")
    noise = np.random.default_rng(0).normal(0, 0.01, 200)
    for s in range(200):
        cosine = 0.05 * (1 + np.cos(np.pi * s / 200)) / 2
        run.log({"lr": 0.05 if s < 100 else 0.005, "cos": cosine, "epoch": s / 50, "loss": 1.0 / (s + 1) + noise[s]},
                step=s)  # fmt: skip
    run.finish()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs={run.id}&smooth=0.9")
    for key in ("lr", "cos", "epoch", "loss"):
        chart_ready(page, key, run.id, 199)
    for key, smoothed in (("lr", False), ("cos", False), ("epoch", False), ("loss", True)):
        tip = hover_chart(page, key, 0.5)
        assert (tip.locator(".tip-cols").count() > 0) == smoothed  # "smoothed raw" columns only where smoothed


def test_a_metric_only_another_rank_logged_is_charted_with_its_rank(page, serve, tmp_path):
    """Rank 0's scalars are the run's; a key rank 0 never logged (a per-rank throughput) was in no chart."""
    ranks = [deepscope.init(dir=tmp_path, id="ddp", name="ddp", rank=r, world_size=2) for r in (0, 1)]
    for s in range(20):
        for r, run in enumerate(ranks):
            run.log({"loss": 1.0 / (s + 1) + r}, step=s)
        ranks[1].log({"io/throughput": 100.0 + s}, step=s)
    for run in reversed(ranks):
        run.finish()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs=ddp&smooth=0")
    chart_ready(page, "loss", "ddp", 19)
    key = "io/throughput\u001f1"
    chart_ready(page, key, "ddp", 19)
    assert charts(page)[key]["ddp"]["lastY"] == 119.0  # rank 1's values
    assert charts(page)["loss"]["ddp"]["lastY"] == pytest.approx(1 / 20)  # rank 0's, not rank 1's
    titles = page.locator("figure.chart .title").all_inner_texts()
    assert "io/throughput · rank 1" in titles and not any(t.startswith("loss · rank") for t in titles)


def test_long_run_names_are_cut_in_the_middle_where_a_sweep_tells_them_apart(page, serve, tmp_path):
    """A sweep's names share their start and differ at the end: cut at the end, both read the same."""
    names = [f"sweep-resnet50-lr0.001-wd0.0001-bs256-warmup500-seed-{k}" for k in (1, 2)]
    for name in names:
        with deepscope.init(dir=tmp_path, name=name) as run:
            run.log({"loss": 1.0}, step=0)
    open_page(page, serve(tmp_path).url)
    cells = page.locator(".picker li .name")
    wait_for(page, "() => document.querySelectorAll('.picker li .name').length === 2")
    shown = cells.all_inner_texts()
    assert all("…" in t for t in shown) and sorted(t[-6:] for t in shown) == ["seed-1", "seed-2"], shown
    assert sorted(cells.nth(i).get_attribute("title") for i in range(2)) == names  # the whole name on hover
    for i in range(2):  # it fits its room
        assert page.evaluate("(el) => el.scrollWidth <= el.clientWidth", cells.nth(i).element_handle())


def test_each_rank_draws_a_line_per_rank_of_a_key_every_rank_logged(page, serve, tmp_path):
    """A distributed run's ranks each log their local loss: rank 0's is the run's line; "Each rank" adds the others'
    (in the Ranks view's colours), and the link keeps it."""
    ranks = [deepscope.init(dir=tmp_path, id="ddp", name="ddp", rank=r, world_size=3) for r in (0, 1, 2)]
    for s in range(20):
        for r, run in enumerate(ranks):
            run.log({"loss": 1.0 / (s + 1) + r}, step=s)
    ranks[0].log({"val/acc": 0.9}, step=19)  # rank 0's alone: one line either way
    for run in reversed(ranks):
        run.finish()
    server = serve(tmp_path)
    open_page(page, f"{server.url}?runs=ddp&smooth=0")
    chart_ready(page, "loss", "ddp", 19)
    assert list(charts(page)["loss"]) == ["ddp"]
    page.get_by_label("Each rank").check()
    wait_for(page, "() => Object.keys(window.__deepscope.charts['loss'] || {}).length === 3")
    wait_for(page, "() => Object.values(window.__deepscope.charts['loss']).every((c) => c.lastStep === 19)")
    lines = charts(page)["loss"]
    assert [lines[k]["lastY"] for k in ("ddp", "ddp\u001f1", "ddp\u001f2")] == pytest.approx([0.05, 1.05, 2.05])
    assert list(charts(page)["val/acc"]) == ["ddp"]
    assert "ranks=each" in page.url
    tip = hover_chart(page, "loss", 0.98, "ddp · rank 2")
    assert all(f"ddp · rank {r}" in tip.inner_text() for r in (0, 1, 2))
    page.reload()
    wait_for(page, "() => Object.keys(window.__deepscope.charts['loss'] || {}).length === 3")
    expect(page.get_by_label("Each rank")).to_be_checked()
