"""Every view rendered over a realistic store, as a screenshot.

With ``DEEPSCOPE_SCREENSHOTS=docs`` the images are written to ``docs/`` (the ones the documentation shows);
otherwise into the test's temporary directory.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest
from browser_helpers import Console, point_at, showing, wait_for

import deepscope

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"

SWEEP = [
    ("resnet18-adam", {"lr": 1e-3, "batch_size": 128, "optimizer": "adam", "model": {"depth": 18, "width": 64}}),
    ("resnet18-adamw-wd", {"lr": 1e-3, "batch_size": 128, "optimizer": "adamw", "model": {"depth": 18, "width": 64}}),
    ("resnet34-adam", {"lr": 5e-4, "batch_size": 256, "optimizer": "adam", "model": {"depth": 34, "width": 64}}),
    ("resnet18-sgd-lr0.1", {"lr": 0.1, "batch_size": 128, "optimizer": "sgd", "model": {"depth": 18, "width": 64}}),
    ("wide-resnet-adam", {"lr": 1e-3, "batch_size": 64, "optimizer": "adam", "model": {"depth": 18, "width": 128}}),
]


def write_sweep(root: Path) -> dict[str, str]:
    ids = {}
    for i, (name, config) in enumerate(SWEEP):
        rnd = random.Random(i)
        steps = 4000 - 400 * i
        running = i == 0
        run = deepscope.init(
            project="cifar10", name=name, config=config, dir=root, tags=["cifar10", f"sweep-{1 + i // 3}"]
        )
        tau = 500 + 180 * i
        for s in range(steps):
            base = 2.3 * math.exp(-s / tau) + 0.25 + 0.05 * i
            loss = base + 0.12 * rnd.gauss(0, 1) * (0.3 + math.exp(-s / 2000))
            if i == 3 and 2100 < s < 2160:
                loss += 1.5  # the spike an alert points at
            values = {
                "train/loss": loss,
                "train/acc": min(1.0, 1 - base / 2.6 + 0.02 * rnd.gauss(0, 1)),
                "train/lr": config["lr"] * 0.5 * (1 + math.cos(math.pi * s / 4000)),
                "grad/global_norm": 4 * math.exp(-s / 900) + 0.6 + 0.25 * abs(rnd.gauss(0, 1)),
            }
            if s % 100 == 0:
                values.update({"val/loss": base * 1.08 + 0.03 * rnd.random(), "val/acc": 1 - base / 2.45})
            run.log(values, step=s)
        run.event("checkpoint", f"saved checkpoint at step {steps // 2}", step=steps // 2)
        if i == 3:
            run.event(
                "alert",
                "train/loss jumped 6.1σ above its running mean",
                step=2101,
                severity="warning",
                key="train/loss",
            )
            run.event(
                "alert",
                "gradient norm exploded (1.2e4) — stopping",
                step=steps - 1,
                severity="error",
                key="grad/global_norm",
            )
            run.finish(status="crashed", exit_reason="loss became NaN at step 2799")
        elif not running:
            run.finish()
        ids[name] = run.id
    return ids


def test_screenshots(context, serve, tmp_path):
    out = DOCS if os.environ.get("DEEPSCOPE_SCREENSHOTS") == "docs" else tmp_path
    root = tmp_path / "runs"
    root.mkdir()
    ids = write_sweep(root)
    server = serve(root)
    page = context.new_page()
    console = Console(page)

    page.goto(f"{server.url}?tab=runs&runs={ids['resnet18-adam']},{ids['resnet34-adam']},{ids['resnet18-sgd-lr0.1']}")
    page.locator("tbody tr[data-run]").nth(len(SWEEP) - 1).wait_for()
    page.screenshot(path=str(out / "dashboard-runs.png"))

    page.get_by_role("button", name="Compare in charts").click()
    wait_for(
        page,
        "() => Object.keys(window.__deepscope.charts).length >= 6 && "
        "Object.values(window.__deepscope.charts).every(c => Object.values(c).every(r => r.points > 0))",
    )
    over = 'figure[data-key="train/loss"]'
    point_at(page, f"{over} .u-over", 0.58, 0.5, showing(f"{over} .tip"), click=False)
    page.wait_for_timeout(150)
    page.screenshot(path=str(out / "dashboard-charts.png"))

    page.goto(f"{server.url}?tab=run&run={ids['resnet18-sgd-lr0.1']}")
    page.locator("table.ev tbody tr").nth(2).wait_for()
    page.screenshot(path=str(out / "run-detail.png"))

    for name in ("dashboard-runs.png", "dashboard-charts.png", "run-detail.png"):
        assert (out / name).stat().st_size > 10_000
    assert console.errors == []


def test_screenshot_analysis_instances(context, serve, tmp_path):
    import json
    import urllib.parse

    from analysis_data import write_analysed

    from deepscope.analyses import read

    out = DOCS if os.environ.get("DEEPSCOPE_SCREENSHOTS") == "docs" else tmp_path
    data = write_analysed(tmp_path / "runs")
    table = read(data.root / data.run).instances().to_pydict()
    wrong = next(i for i, ok in enumerate(table["correct"]) if not ok and table["label"][i] == 8)
    server = serve(data.root)
    page = context.new_page()
    console = Console(page)
    subset = [{"name": "text has How", "where": {"text_contains": "How"}}]
    query = {"tab": "analysis", "runs": data.run, "inst": wrong, "subs": json.dumps(subset), "sub": "text has How"}
    page.goto(f"{server.url}?{urllib.parse.urlencode(query)}")
    wait_for(page, "() => window.__deepscope?.analysis?.detail?.()?.neighborPreviews === 12", timeout=20_000)
    wait_for(page, "() => window.__deepscope.analysis.grid().highlighted > 0")
    page.wait_for_timeout(800)
    page.screenshot(path=str(out / "analysis-instances.png"))
    assert (out / "analysis-instances.png").stat().st_size > 10_000
    assert console.errors == []


def test_screenshot_analysis_neurons(context, serve, tmp_path):
    import json
    import urllib.parse

    import numpy as np
    from analysis_data import write_analysed

    from deepscope.analyses import read

    out = DOCS if os.environ.get("DEEPSCOPE_SCREENSHOTS") == "docs" else tmp_path
    data = write_analysed(tmp_path / "runs")
    layer = "features.10"
    neuron = int(np.argmax(read(data.root / data.run).matrix(layer).mean(0)))
    server = serve(data.root)
    page = context.new_page()
    console = Console(page)
    subset = [{"name": "misclassified", "where": {"correct": False}}]
    query = {"tab": "analysis", "runs": data.run, "alayer": layer, "asort": "class:3", "neuron": neuron,
             "subs": json.dumps(subset), "sub": "misclassified"}  # fmt: skip
    page.goto(f"{server.url}?{urllib.parse.urlencode(query)}")
    wait_for(page, "() => window.__deepscope?.analysis?.matrix?.().sortedBy === 'class:3'", timeout=20_000)
    wait_for(page, "() => document.querySelectorAll('[data-testid=neuron-top] img').length >= 12", timeout=20_000)
    wait_for(page, "() => window.__deepscope.analysis.projection?.().drawn && "
                   "window.__deepscope.analysis.projection().focusCount > 0", timeout=20_000)  # fmt: skip
    page.wait_for_timeout(800)
    page.screenshot(path=str(out / "analysis-neurons.png"))
    assert (out / "analysis-neurons.png").stat().st_size > 10_000
    assert console.errors == []
