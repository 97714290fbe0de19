"""A training whose loss turns NaN, in headless Chromium: the findings say the loss did it — a finding of the loss's
own, its evidence the loss's chart — and locate the NaN gradients where they began, at the output end; no finding
blames a learning rate or a gradient that grew."""

from __future__ import annotations

import pytest
import torch
from browser_helpers import wait_for
from torch import nn

import deepscope

pytestmark = pytest.mark.browser


def findings(page) -> list[dict]:
    wait_for(page, "() => (window.__deepscope?.internals?.diagnoses ?? []).length >= 2", timeout=20_000)
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__deepscope.internals.diagnoses))")


def test_a_nan_loss_is_named_as_the_cause_and_its_chart_is_the_evidence(page, serve, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with deepscope.init(dir=tmp_path, name="nan-loss") as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for step in range(40):
            loss = model(torch.randn(16, 8)).square().mean()
            if step >= 30:
                loss = loss * float("nan")  # a log of 0 in the user's loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss.item()}, step=step)
    with deepscope.init(dir=tmp_path, name="calm") as calm:  # another selected run: the evidence shows ours alone
        calm.log({"train/loss": 1.0}, step=0)
    page.goto(f"{serve(tmp_path).url}?tab=internals&runs={run.id},{calm.id}&run={run.id}&panel=diagnoses")
    found = {d["kind"]: d for d in findings(page) if d["run"] == run.id}
    assert found["diagnosis/loss_nonfinite"]["key"] == "train/loss" and found["diagnosis/loss_nonfinite"]["step"] == 30
    assert found["diagnosis/nonfinite"]["key"] == "4" and found["diagnosis/nonfinite"]["step"] == 30  # the output end
    assert "diagnosis/exploding_gradients" not in found
    card = page.locator(f'li[data-rule=nonfinite][data-run="{run.id}"]')
    assert "the loss" in card.inner_text() and "learning rate" not in card.inner_text()
    assert card.locator("button.title b").inner_text() == "NaN/Inf"  # the rule in words, not "Nonfinite"
    loss_card = page.locator(f'li[data-rule=loss_nonfinite][data-run="{run.id}"]')
    assert loss_card.get_by_role("button", name="Layer detail →").count() == 0  # a metric, not a layer
    loss_card.get_by_role("button", name="Show evidence →").click()
    wait_for(page, "() => window.__deepscope.view().tab === 'charts'")
    view = page.evaluate("() => window.__deepscope.view()")
    assert view["q"] == "train/loss" and view["runs"] == [run.id] and view["zoom"][0] <= 30 <= view["zoom"][1]
    notice = page.get_by_test_id("spike-evidence")
    notice.wait_for()
    assert notice.inner_text().startswith("The NaN/Inf loss of nan-loss at step 30")
