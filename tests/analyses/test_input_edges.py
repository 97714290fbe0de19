"""Inputs at the edges of what ``deepscope.analyze`` reads: samplers, batches made by the dataset, wrapped models,
float labels, half-precision sequences — each against a plain forward pass of the same instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

import deepscope
from deepscope.analyses.layer_outputs import pool


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def data(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def analyze(model, d, run, **kw):
    run.mkdir(parents=True, exist_ok=True)
    return deepscope.analyze(model, d, run=run, progress=False, full_maps=False, projection=False, **kw)


def test_a_half_precision_masked_mean_does_not_overflow():
    x = torch.full((2, 600, 4), 200.0, dtype=torch.float16)  # its sum over 600 tokens is past float16's 65504
    mask = torch.ones(2, 600, dtype=torch.bool)
    mask[1, 300:] = False
    pooled = pool(x, mask, False)
    assert pooled.dtype == torch.float16
    expected = (x.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(pooled.float(), expected)
