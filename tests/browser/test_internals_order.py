"""The layer × step overview lists layers as the data flows through them: a Transformer block runs its children in
another order than it declares them, and its rows follow the run, each block's rows kept together."""

from __future__ import annotations

import json

import pytest
import torch
from browser_helpers import wait_for
from torch import nn

import deepscope

pytestmark = pytest.mark.browser

RUN_ORDER = ["self_attn", "dropout1", "norm1", "linear1", "dropout", "linear2", "dropout2", "norm2"]


class Encoder(nn.Module):
    """Two Transformer blocks and a head, declared head first: the head runs last."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


def overview(page) -> dict:
    wait_for(page, "() => window.__deepscope?.internals?.overview?.displayRows?.length > 0", timeout=20_000)
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__deepscope.internals.overview))")


def test_rows_follow_the_order_the_layers_ran_in(page, serve, tmp_path):
    torch.manual_seed(0)
    model = Encoder()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with deepscope.init(dir=tmp_path, name="encoder") as run:
        run.watch(model, opt, histograms_every=0, print_findings=False)
        for _ in range(4):
            loss = model(torch.randn(4, 5, 16)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()})
    page.goto(f"{serve(tmp_path).url}?tab=internals&runs={run.id}&kind=act&stat=mean")
    o = overview(page)
    layers = [r for r in o["displayRows"] if r in o["names"]]
    want = [f"blocks.{b}.{p}" for b in range(2) for p in RUN_ORDER] + ["head"]
    assert layers == want, layers
    # parameters sit where the layer owning them ran: the head's last, a block's norm1 before its linear1
    page.goto(f"{serve(tmp_path).url}?tab=internals&runs={run.id}&kind=param_grad&stat=norm")
    wait_for(page, "() => window.__deepscope?.internals?.overview?.kind === 'param_grad'", timeout=20_000)
    params = [r for r in overview(page)["displayRows"] if "." in r and r.split(".")[-1] in ("weight", "bias")]
    assert params[-2:] == ["head.weight", "head.bias"], params
    block0 = [p for p in params if p.startswith("blocks.0.")]
    assert block0.index("blocks.0.norm1.weight") < block0.index("blocks.0.linear1.weight"), json.dumps(block0)
