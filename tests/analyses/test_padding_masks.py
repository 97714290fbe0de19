"""Padding masks under any name and in either convention: the same sentence padded to any length pools the same."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tests.conftest import new_dir
from torch import nn

import deepscope
from deepscope.analyses import read
from deepscope.analyses.batches import padding_mask

SENTENCES = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14]]


class Encoder(nn.Module):
    """Token ids and a key-padding mask (True = padding, PyTorch's convention) → a transformer layer → 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(input_ids), src_key_padding_mask=padding_mask)[:, 0])


def padded(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sentences right-padded with id 0 to ``length``, and their padding mask (True = padding)."""
    ids = torch.zeros(len(SENTENCES), length, dtype=torch.long)
    pad = torch.ones(len(SENTENCES), length, dtype=torch.bool)
    for i, s in enumerate(SENTENCES):
        ids[i, : len(s)] = torch.tensor(s)
        pad[i, : len(s)] = False
    return ids, pad


def alone(model: Encoder, pooling: str) -> np.ndarray:
    """The oracle: each sentence on its own, without padding, its encoder output pooled over its tokens."""
    rows = []
    with torch.no_grad():
        for s in SENTENCES:
            ids = torch.tensor([s])
            h = model.enc(model.emb(ids), src_key_padding_mask=torch.zeros_like(ids, dtype=torch.bool))
            rows.append((h[0].mean(0) if pooling == "mean" else h[0, -1]).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_a_key_padding_mask_named_as_such_pools_over_real_tokens_whatever_the_padding(tmp_path, pooling):
    model = Encoder().eval()
    got = []
    for length in (5, 16):
        ids, pad = padded(length)
        r = deepscope.analyze(model, [{"input_ids": ids, "padding_mask": pad}], layers=["enc"],
                              mask=("padding_mask", "padding"), sequence_pooling=pooling,
                              run=new_dir(tmp_path / f"{pooling}{length}"), progress=False)  # fmt: skip
        got.append(r.activations("enc")[:])
    np.testing.assert_allclose(got[0], got[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[0], alone(model, pooling), rtol=1e-4, atol=1e-5)


def test_a_mask_of_real_tokens_under_another_name_pools_the_same(tmp_path):
    """``mask="keep"``: 1 for a real token, as attention_mask; the model turns it into its key-padding mask."""

    class Keeps(Encoder):
        def forward(self, input_ids, keep):
            return super().forward(input_ids, keep == 0)

    model = Keeps().eval()
    ids, pad = padded(16)
    keep = (~pad).long()
    r = deepscope.analyze(model, [{"input_ids": ids, "keep": keep}], layers=["enc"], mask="keep", run=tmp_path,
                          progress=False)  # fmt: skip
    np.testing.assert_allclose(r.activations("enc")[:], alone(model, "mean"), rtol=1e-4, atol=1e-5)


def test_an_unused_padding_mask_is_warned_about_before_any_work_and_mask_false_silences_it(tmp_path):
    model = Encoder().eval()
    ids, pad = padded(16)
    batches = [{"input_ids": ids, "padding_mask": pad}]
    with pytest.warns(RuntimeWarning, match=r"'padding_mask', which looks like a padding mask but is not used.*"
                                            r"mask=\('padding_mask', 'padding'\)"):  # fmt: skip
        r = deepscope.analyze(model, batches, layers=["enc"], run=new_dir(tmp_path / "a"), progress=False)
    padded_mean = r.activations("enc")[:]
    assert np.abs(padded_mean - alone(model, "mean")).max() > 0.1  # what the warning is about: padding pooled in
    deepscope.analyze(model, batches, layers=["enc"], mask=False, run=new_dir(tmp_path / "b"), progress=False)


def test_a_mask_that_is_not_in_the_batches_or_malformed_is_refused_before_any_work(tmp_path):
    model = Encoder().eval()
    ids, pad = padded(8)
    with pytest.raises(ValueError, match=r"mask='pad' names no entry of the batches \(entries: input_ids, "):
        deepscope.analyze(model, [{"input_ids": ids, "padding_mask": pad}], mask="pad", run=tmp_path, progress=False)
    with pytest.raises(ValueError, match="names an entry of dict batches, but the batches are tensors or tuples"):
        deepscope.analyze(nn.Linear(8, 3), [(ids.float(), torch.zeros(3))], mask="pad", run=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\(key, 'tokens' \| 'padding'\)"):
        deepscope.analyze(model, [{"input_ids": ids}], mask=("pad", "True"), run=tmp_path, progress=False)
    assert padding_mask(None).key == "attention_mask" and padding_mask(False) is None


def test_the_command_takes_a_mask(tmp_path):
    module = tmp_path / "encoders.py"
    module.write_text(
        "import torch\n"
        "from tests.analyses.test_padding_masks import Encoder, padded\n"
        "ids, pad = padded(16)\n"
        "batches = [{'input_ids': ids, 'padding_mask': pad}]\n"
    )
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "deepscope.cli", "analyze", "encoders:Encoder", "--data",
                           "encoders:batches", "--layers", "enc", "--mask", "padding_mask:padding", "--dir", str(runs),
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "looks like a padding mask" not in done.stderr
    (run,) = deepscope.open(runs).runs()
    model = Encoder().eval()
    got = read(runs / run.id).activations("enc")[:]
    np.testing.assert_allclose(got, alone(model, "mean"), rtol=1e-4, atol=1e-5)
    assert f"run {run.id}; to see it in the dashboard (Instances tab): deepscope serve {runs}" in done.stdout


def test_an_attention_mask_that_is_no_padding_mask_is_left_to_the_model_unless_named():
    """A decoder's (batch, 1, tokens, tokens) causal mask under the default's name is the model's input, not a padding
    mask: the batch is read as before; named with mask=, its shape is an error."""
    from deepscope.analyses.batches import to_batch

    causal = torch.ones(2, 1, 5, 5)
    batch = to_batch({"input_ids": torch.zeros(2, 5, dtype=torch.long), "attention_mask": causal}, padding_mask(None))
    assert batch.mask is None and batch.kwargs["attention_mask"] is causal
    with pytest.raises(ValueError, match=r"must be a \(batch, tokens\) tensor, got \(2, 1, 5, 5\)"):
        to_batch({"input_ids": torch.zeros(2, 5), "attention_mask": causal}, padding_mask("attention_mask"))
