"""An instance's full feature maps in headless Chromium: the heatmap tiles' pixels, order, scale, hover and click
checked against the maps stored by ``deepscope.analyze`` (a small CNN on 1,000 MNIST digits); and the Python call
the view shows when none are stored, run as shown, then found with "Check again"."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from analysis_data import write_analysed
from browser_helpers import point_until, wait_for

import deepscope
from deepscope.analyses import read
from deepscope.server.launch import BackgroundServer

pytestmark = pytest.mark.browser

CONV = "features.4"  # the second convolution: 32 channels of 14 × 14
DOCS = Path(__file__).resolve().parents[2] / "docs"
VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"]
MAP_AT = "([c, row, col]) => window.__deepscope.analysis.maps().locate(c, row, col)"
HOVERED = """([c, row, col]) => { const h = window.__deepscope.analysis.maps().hover;
    return h?.channel === c && h.row === row && h.col === col; }"""
DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, built_app):
    data = write_analysed(tmp_path_factory.mktemp("maps"))
    server = BackgroundServer(data.root, port=0).start()
    yield {"url": server.url, "data": data, "reader": read(data.root / data.run)}
    server.stop()


def held(page, name: str, *args):
    call = f"window.__deepscope.analysis.{name}({', '.join(json.dumps(a) for a in args)})"
    return page.evaluate(f"() => JSON.parse(JSON.stringify({call} ?? null))")


def open_instance(page, url: str, run: str, index: int, layer: str = CONV, **extra) -> None:
    query = {"tab": "analysis", "runs": run, "alayer": layer, "inst": index, **extra}
    page.goto(f"{url}?{urllib.parse.urlencode(query)}")
    wait_for(page, "(i) => window.__deepscope?.analysis?.maps?.()?.index === i", index, timeout=20_000)


def viridis(t: float, hexes: list[str] = VIRIDIS) -> np.ndarray:
    """A colour ramp as docs/http-api.md describes the view's: linear between the stops (viridis by default)."""
    stops = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in hexes], float)
    x = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(len(stops) - 2, int(np.floor(x)))
    return stops[i] + (stops[i + 1] - stops[i]) * (x - i)


def pixel(page, x: float, y: float) -> np.ndarray:
    """The canvas's RGB at page point (x, y)."""
    js = """([x, y]) => {
        const c = document.querySelector('[data-testid=feature-maps]');
        const r = c.getBoundingClientRect();
        const d = devicePixelRatio;
        const px = c.getContext('2d').getImageData(Math.floor((x - r.left) * d), Math.floor((y - r.top) * d), 1, 1);
        return Array.from(px.data).slice(0, 3);
    }"""
    return np.array(page.evaluate(js, [x, y]), float)


def test_tiles_show_the_stored_maps(page, analysed):
    data, reader = analysed["data"], analysed["reader"]
    info = reader.feature_map_layers()[CONV]
    assert info.shape == (32, 14, 14) and len(info.indices) == 30  # three of each digit by default
    index = info.indices[4]
    maps = reader.feature_maps(CONV, index)
    open_instance(page, analysed["url"], data.run, index)
    wait_for(page, "() => window.__deepscope.analysis.maps().shape !== null")
    m = held(page, "maps")
    assert m["stored"] and m["hint"] is None and m["shape"] == [32, 14, 14]
    means = maps.mean((1, 2))
    np.testing.assert_allclose(m["means"], means, rtol=1e-5, atol=1e-6)
    assert m["shown"] == sorted(range(32), key=lambda c: (-means[c], c))  # highest mean first
    # the matrix's pooled activation of each channel is the tile's mean
    np.testing.assert_allclose(means, reader.rows(CONV, [index])[0], rtol=1e-4, atol=1e-5)
    # a convolution's output is signed: a diverging scale, symmetric around 0
    hi = float(np.abs(maps).max())
    lo = -hi
    assert maps.min() < 0 and m["scale"]["kind"] == "diverging"
    assert m["scale"]["lo"] == pytest.approx(lo) and m["scale"]["hi"] == pytest.approx(hi)

    # pixels: the colour of the value at (channel, row, col), on the one scale of all tiles
    g = np.random.default_rng(0)
    brightest = np.unravel_index(int(maps.argmax()), maps.shape)
    spots = [tuple(int(v) for v in brightest)] + [(int(g.integers(32)), int(g.integers(14)), int(g.integers(14)))
                                                  for _ in range(12)]  # fmt: skip
    for c, row, col in spots:
        at = held(page, "maps().locate", c, row, col)
        want = viridis((maps[c, row, col] - lo) / (hi - lo), DIVERGING)
        got = pixel(page, at["x"], at["y"])
        assert np.abs(got - want).max() <= 3, (c, row, col, got, want)

    # hovering a tile names the channel and the value under the pointer
    c, row, col = spots[0]
    point_until(page, MAP_AT, [c, row, col], HOVERED, click=False)
    tip = page.get_by_test_id("feature-map-tip")
    tip.wait_for()
    assert held(page, "maps")["hover"] == {"channel": c, "row": row, "col": col,
                                           "value": pytest.approx(float(maps[c, row, col]), rel=1e-6)}  # fmt: skip
    assert f"channel {c}" in tip.inner_text() and f"({row}, {col}) = {maps[c, row, col]:.3f}" in tip.inner_text()

    # a click selects the channel as the neuron of every view; its tile is outlined
    point_until(page, MAP_AT, [c, row, col], "([c]) => window.__deepscope.analysis.maps().selected === c")
    assert f"neuron={c}" in page.url
    # channel order
    page.get_by_label("Feature map order").select_option("channel")
    wait_for(page, "() => window.__deepscope.analysis.maps().shown[1] === 1")
    assert held(page, "maps")["shown"] == list(range(32))
    at = held(page, "maps().locate", 5, 7, 7)
    want = viridis((maps[5, 7, 7] - lo) / (hi - lo), DIVERGING)
    np.testing.assert_allclose(pixel(page, at["x"], at["y"]), want, atol=3)

    # one range per channel: each tile on its own scale
    page.get_by_label("Feature map colour range").select_option("channel")
    wait_for(page, "() => window.__deepscope.analysis.maps().range === 'channel'")
    for ch in (5, int(np.argmin(np.abs(maps).max((1, 2))))):  # the weakest channel too
        own = maps[ch]
        kind = "diverging" if own.min() < 0 else "sequential"
        clo, chi = (-np.abs(own).max(), np.abs(own).max()) if kind == "diverging" else (own.min(), own.max())
        assert held(page, "maps().scaleOf", ch) == {"kind": kind, "lo": pytest.approx(clo), "hi": pytest.approx(chi)}
        for y, x in ((0, 0), (7, 7), np.unravel_index(int(own.argmax()), own.shape)):
            at = held(page, "maps().locate", ch, int(y), int(x))
            want = viridis((own[y, x] - clo) / (chi - clo), DIVERGING if kind == "diverging" else VIRIDIS)
            np.testing.assert_allclose(pixel(page, at["x"], at["y"]), want, atol=3)
    page.get_by_label("Feature map colour range").select_option("shared")

    out = DOCS if os.environ.get("DEEPSCOPE_SCREENSHOTS") == "docs" else Path(data.root)
    page.get_by_label("Feature map order").select_option("mean")
    wait_for(page, "(s) => window.__deepscope.analysis.maps().shown.join() === s.join()", m["shown"])
    page.get_by_test_id("feature-maps").scroll_into_view_if_needed()
    point_until(page, MAP_AT, [c, row, col], HOVERED, click=False)
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / "analysis-feature-maps.png"))


def test_without_maps_the_view_shows_the_call_that_stores_them(page, analysed):
    data, reader = analysed["data"], analysed["reader"]
    info = reader.feature_map_layers()[CONV]
    missing = next(i for i in range(len(reader)) if i not in info.indices)
    open_instance(page, analysed["url"], data.run, missing)
    hint = page.get_by_test_id("feature-maps-hint")
    hint.wait_for()
    m = held(page, "maps")
    assert not m["stored"] and m["shape"] is None and m["others"] == list(info.indices[:8])
    run_dir = str(data.root / data.run)
    assert m["hint"] == f'deepscope.feature_maps(model, data, run="{run_dir}", layer="{CONV}", indices=[{missing}])'
    assert m["hint"] in hint.inner_text()
    # an instance that has maps, offered as a link
    hint.get_by_role("button", name=f"#{info.indices[0]}").click()
    wait_for(page, "(i) => window.__deepscope.analysis.maps().shape !== null && "
                   "window.__deepscope.analysis.maps().index === i", info.indices[0])  # fmt: skip
    # a linear layer has no maps to store: it says what it outputs instead of offering the call
    page.get_by_label("Layer").select_option("features.10")
    wait_for(page, "() => window.__deepscope.analysis.maps().layer === 'features.10'")
    width = reader.widths["features.10"]
    assert reader.outputs["features.10"] == {"shape": [width], "maps": False, "type": "ReLU"}
    none = page.get_by_test_id("feature-maps-none")
    none.wait_for()
    assert f"outputs {width} per instance" in none.inner_text()
    m = held(page, "maps")
    assert m["hasMaps"] is False and m["hint"] is None and page.get_by_test_id("feature-maps-hint").count() == 0


def test_the_shown_call_stores_maps_that_check_again_finds(page, analysed, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 6 * 6, 2))  # fmt: skip
    x = torch.randn(50, 1, 6, 6)
    data = torch.utils.data.TensorDataset(x, torch.arange(50) % 2)
    with deepscope.init(project="browser", name="no-maps", dir=analysed["data"].root) as run:
        deepscope.analyze(model, data, layers=["0", "1", "3"], run=run, full_maps=False, progress=False)
    open_instance(page, analysed["url"], run.id, 17, layer="1")  # the ReLU after the convolution
    page.get_by_test_id("feature-maps-hint").wait_for()
    call = held(page, "maps")["hint"]
    exec(call, {"deepscope": deepscope, "model": model, "data": data})  # noqa: S102 - the line a user would run
    page.get_by_role("button", name="Check again").click()
    wait_for(page, "() => window.__deepscope.analysis.maps().shape !== null")
    m = held(page, "maps")
    with torch.no_grad():
        want = model[:2](x[17:18])[0].numpy()
    np.testing.assert_allclose(m["means"], want.mean((1, 2)), rtol=1e-5, atol=1e-6)
    # no negative values: a sequential scale from the minimum (0 here) to the maximum
    lo, hi = float(want.min()), float(want.max())
    assert m["scale"] == {"kind": "sequential", "lo": pytest.approx(lo), "hi": pytest.approx(hi)}
    brightest = tuple(int(v) for v in np.unravel_index(int(want.argmax()), want.shape))
    for c, row, col in [(0, 0, 0), (1, 2, 3), (2, 5, 5), (2, 3, 1), brightest]:
        at = held(page, "maps().locate", int(c), int(row), int(col))
        got = pixel(page, at["x"], at["y"])
        np.testing.assert_allclose(got, viridis((want[c, row, col] - lo) / (hi - lo)), atol=3)
