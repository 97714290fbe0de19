"""Sequences batch first or second: a model built with ``batch_first=False`` (torch's default for attention, transformer
layers and RNNs) stores the same rows as the same weights built with ``batch_first=True`` — pooled over positions,
never over the batch —, whether or not a batch's length equals its number of instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import new_dir
from torch import nn

import deepscope

LAYERS = ["emb", "attn", "enc", "enc.linear1", "enc.norm2", "dec", "dec.dropout3", "rnn", "head"]


class Sequences(nn.Module):
    """(B, T, 4) inputs → attention, a transformer layer and a GRU in either layout → 3 classes. ``emb`` sees the
    batch-first input in both: only the modules that say ``batch_first=False`` (and those inside them) are (T, B)."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layout_first = batch_first
        self.emb = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
        self.dec = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
        self.rnn = nn.GRU(8, 6, batch_first=batch_first)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb(x)
        h = h if self.layout_first else h.transpose(0, 1)
        h = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        h = self.enc(h, src_key_padding_mask=pad)
        h = self.dec(h, h, tgt_key_padding_mask=pad, memory_key_padding_mask=pad)
        out, _ = self.rnn(h)
        out = out if self.layout_first else out.transpose(0, 1)
        return self.head(out[:, -1])


def both_layouts() -> tuple[Sequences, Sequences]:
    second = Sequences(batch_first=False).eval()
    first = Sequences(batch_first=True).eval()
    first.load_state_dict(second.state_dict())
    return second, first


def analyze(model, data, run, layers=LAYERS, **kw):
    return deepscope.analyze(model, data, layers=layers, run=new_dir(run), progress=False, full_maps=False,
                             projection=False, **kw)  # fmt: skip


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize(("n", "length", "batch_size"), [(13, 5, 8), (6, 6, 6)], ids=["T<B, then T=B", "T=B"])
def test_batch_second_sequences_store_the_rows_of_the_same_model_batch_first(tmp_path, n, length, batch_size,
                                                                             pooling):  # fmt: skip
    second, first = both_layouts()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(n, length, 4, generator=g), torch.randint(0, 3, (n,), generator=g))
    kw = {"batch_size": batch_size, "sequence_pooling": pooling}
    got = analyze(second, data, tmp_path / "second", **kw)
    want = analyze(first, data, tmp_path / "first", **kw)
    for layer in LAYERS:
        assert got.matrix(layer).shape[0] == n
        np.testing.assert_allclose(got.matrix(layer), want.matrix(layer), rtol=1e-4, atol=1e-5, err_msg=layer)
    with torch.no_grad():  # and the oracle itself: the encoder's output over each instance's positions
        h = first.enc(first.attn(*[first.emb(data[0])] * 3, need_weights=False)[0])
        np.testing.assert_allclose(got.matrix("enc"), (h.mean(1) if pooling == "mean" else h[:, -1]).numpy(),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_a_padding_mask_pools_the_real_tokens_of_batch_second_sequences(tmp_path, pooling):
    second, first = both_layouts()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 5, 4, generator=g)  # as many positions as instances: a mask read the wrong way round fits
    pad = torch.zeros(5, 5, dtype=torch.bool)
    for i, real in enumerate([5, 3, 2, 4, 1]):
        pad[i, real:] = True
    data = [{"x": x, "pad": pad}]
    kw = {"mask": ("pad", "padding"), "sequence_pooling": pooling}
    got = analyze(second, data, tmp_path / "second", **kw)
    want = analyze(first, data, tmp_path / "first", **kw)
    for layer in LAYERS:
        np.testing.assert_allclose(got.matrix(layer), want.matrix(layer), rtol=1e-4, atol=1e-5, err_msg=layer)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.act = nn.Linear(4, 8), nn.ReLU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(h))


class TransposesItself(nn.Module):
    """A model that turns its (B, T, D) input into (T, B, D) itself: no module of torch's says so."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block, self.head = Block(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x.transpose(0, 1)).mean(0))


def test_sequences_a_model_transposes_itself_are_refused_until_it_declares_them(tmp_path):
    model = TransposesItself().eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 5, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    with pytest.raises(ValueError, match=r"layer 'block\.lin' outputs \(5, 16, 8\) for a batch of 16: its "
                                         r"instances are along dim 1.*batch_first = False"):  # fmt: skip
        analyze(model, (x, y), tmp_path / "undeclared", layers=["block.lin"])
    model.block.batch_first = False  # every sequence inside it is (T, B, D)
    r = analyze(model, (x, y), tmp_path / "declared", layers=["block", "block.lin", "head"], batch_size=5)
    with torch.no_grad():
        np.testing.assert_allclose(r.matrix("block.lin"), model.block.lin(x).mean(1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.matrix("block"), model.block(x).mean(1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.matrix("head"), model(x).numpy(), rtol=1e-5, atol=1e-6)


class ConvThenRecurrent(nn.Module):
    """A 1-d convolution over (B, C, L), then an LSTM over its positions, batch second (the default)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.rnn = nn.LSTM(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.conv(x).permute(2, 0, 1))  # (B, 8, L) -> (L, B, 8)
        return self.head(out[-1])


def test_feature_maps_are_stored_beside_a_batch_second_lstm(tmp_path):
    model = ConvThenRecurrent().eval()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(20, 4, 7, generator=g), torch.randint(0, 3, (20,), generator=g)
    r = deepscope.analyze(model, (x, y), run=new_dir(tmp_path), progress=False, projection=False)  # no warning
    with torch.no_grad():
        conv = model.conv(x)
        rnn = model.rnn(conv.permute(2, 0, 1))[0].mean(0)
    np.testing.assert_allclose(r.matrix("rnn"), rnn.numpy(), rtol=1e-5, atol=1e-6)
    indices = r.feature_map_layers()["conv"].indices
    assert indices
    for i in indices:
        np.testing.assert_allclose(r.feature_maps("conv", i), conv[i].numpy(), rtol=1e-5, atol=1e-6)


class SaysSecondGivesFirst(TransposesItself):
    """Declares ``batch_first=False`` but gives its sequences batch first: the declaration is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_first = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(1))


def test_a_wrong_declaration_met_first_by_a_batch_as_long_as_wide_is_an_error_once_a_batch_tells(tmp_path):
    model = SaysSecondGivesFirst().eval()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 5, 4, generator=g), torch.randint(0, 3, (8,), generator=g)  # batches of 5, then 3
    with pytest.raises(ValueError, match=r"layer 'block' outputs \(3, 5, 8\) for a batch of 3: its instances are "
                                         r"along dim 0, but an earlier batch.*batch_first=False"):  # fmt: skip
        analyze(model, (x, y), tmp_path, layers=["block"], batch_size=5)
    r = analyze(model, (x, y), tmp_path / "told first", layers=["block"], batch_size=3)  # 3 ≠ 5: the shape decides
    with torch.no_grad():
        np.testing.assert_allclose(r.matrix("block"), model.block(x).mean(1).numpy(), rtol=1e-5, atol=1e-6)


class Packs(nn.Module):
    """A GRU over packed sequences of several lengths, in either layout, unsorted (``enforce_sorted=False``)."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.GRU(4, 6, batch_first=batch_first)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x if self.rnn.batch_first else x.transpose(0, 1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=self.rnn.batch_first, enforce_sorted=False)
        return self.head(self.rnn(packed)[1][-1])


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_an_rnn_over_packed_sequences_pools_each_instances_own_steps(tmp_path, batch_first, pooling):
    model = Packs(batch_first).eval()
    lengths = [4, 1, 3, 2]  # as many steps as instances at most: either layout fits the padded output
    x = torch.randn(4, 4, 4, generator=torch.Generator().manual_seed(6))
    data = [{"x": x, "lengths": torch.tensor(lengths)}]
    r = deepscope.analyze(model, data, layers=["rnn"], sequence_pooling=pooling, run=new_dir(tmp_path),
                          progress=False, full_maps=False, projection=False)  # fmt: skip
    with torch.no_grad():  # each sequence alone, unpadded
        alone = [
            model.rnn(x[i, :n][:, None] if not batch_first else x[i : i + 1, :n])[0] for i, n in enumerate(lengths)
        ]
        want = np.stack(
            [(h.flatten(0, 1).mean(0) if pooling == "mean" else h.flatten(0, 1)[-1]).numpy() for h in alone]
        )
    np.testing.assert_allclose(r.matrix("rnn"), want, rtol=1e-5, atol=1e-6)
