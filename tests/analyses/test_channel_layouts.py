"""1-d feature maps (B, C, L) are pooled to their channel means wherever they come out: a convolution, and the
activations, norms, padding, resampling and blocks after it — not read as sequences of C positions."""

from __future__ import annotations

import numpy as np
import torch
from tests.conftest import new_dir
from torch import nn

import deepscope

LAYERS = ["conv", "act", "norm", "block", "block.1", "drop", "pad", "up", "unfold"]


class Signal(nn.Module):
    """(B, 3, 12) signals → a 1-d convolution and the modules that keep its (B, C, L) layout → 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.norm = nn.GroupNorm(2, 8)
        self.block = nn.Sequential(nn.Conv1d(8, 6, 3), nn.GELU())
        self.drop = nn.Dropout(0.1)
        self.pad = nn.ReflectionPad1d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.unfold = nn.Unfold((1, 3))  # (B, 6, 1, 28) -> (B, 18, 26): blocks of channels × kernel, by position
        self.head = nn.Linear(18, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.norm(self.act(self.conv(x))))
        h = self.up(self.pad(self.drop(h)))
        return self.head(self.unfold(h[:, :, None]).mean(2))


def outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """Each layer's whole output, from a plain forward pass."""
    seen = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.clone()))
               for n in names]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return {n: t.numpy() for n, t in seen.items()}


def test_the_outputs_of_1d_convolutions_and_what_follows_them_are_pooled_to_channel_means(tmp_path):
    model = Signal().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 12, generator=g), torch.randint(0, 3, (40,), generator=g)
    r = deepscope.analyze(model, (x, y), layers=LAYERS, batch_size=16, run=new_dir(tmp_path), progress=False,
                          projection=False, full_maps=False)  # fmt: skip
    for name, whole in outputs(model, x, LAYERS).items():
        assert whole.ndim == 3
        np.testing.assert_allclose(r.matrix(name), whole.mean(2), rtol=1e-5, atol=1e-6, err_msg=name)


class Codes(nn.Module):
    """A layer of integer codes (a quantizer's indices, per position) and one of boolean flags."""

    def __init__(self) -> None:
        super().__init__()
        self.codes = nn.Identity()
        self.flags = nn.Identity()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.codes((x * 3).round().long())  # (B, T, 4) integers
        self.flags(x > 0)
        return self.head(codes.float().mean(1))


def test_integer_and_boolean_outputs_are_pooled_to_their_means(tmp_path):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 6, 4, generator=g), torch.randint(0, 2, (30,), generator=g)
    r = deepscope.analyze(Codes().eval(), (x, y), layers=["codes", "flags"], run=new_dir(tmp_path), progress=False,
                          projection=False, full_maps=False)  # fmt: skip
    np.testing.assert_allclose(r.matrix("codes"), (x * 3).round().numpy().mean(1), rtol=1e-6)
    np.testing.assert_allclose(r.matrix("flags"), (x > 0).numpy().mean(1), rtol=1e-6)
