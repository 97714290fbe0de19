"""A small text dataset: an embedding-bag classifier over short sentences, with string metadata to filter by."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.conftest import new_dir
from torch import nn

import deepscope

SENTENCES = [
    "How do plants grow", "How far is the moon", "How old is this tree", "What is a comet",
    "What time is sunset", "Why is the sky blue", "Why do cats purr", "Where do rivers start",
    "Where is the nearest star", "When does spring begin", "How are clouds made", "What makes thunder",
]  # fmt: skip


class BagClassifier(nn.Module):
    """Mean of word embeddings (``nn.EmbeddingBag``) → a hidden layer → 3 classes."""

    def __init__(self, vocab: int, dim: int = 12) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.hidden = nn.Sequential(nn.Linear(dim, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.bag(words)))  # (B, T) ids -> (B, dim) -> (B, 8) -> (B, 3)


def test_text_inputs_are_text_and_filter_like_numpy(tmp_path):
    torch.manual_seed(0)
    texts = [SENTENCES[i % len(SENTENCES)] + ("?" if i % 3 else " today?") for i in range(96)]
    vocab = sorted({w for t in texts for w in t.split()})
    width = max(len(t.split()) for t in texts)
    ids = torch.tensor([[vocab.index(w) + 1 for w in t.split()] + [0] * (width - len(t.split())) for t in texts])
    labels = torch.tensor([("How" in t) + 2 * ("Why" in t) for t in texts])
    model = BagClassifier(len(vocab) + 1)
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(60):  # a little training: "How" and "Why" questions are told apart
        loss = nn.functional.cross_entropy(model(ids), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = pa.table({"sentence": texts, "source": ["quiz" if i % 2 else "chat" for i in range(96)]})
    r = deepscope.analyze(model, torch.utils.data.TensorDataset(ids, labels), layers=["bag", "hidden"],
                          metadata=meta, class_names=["other", "how", "why"], run=tmp_path, progress=False)  # fmt: skip
    assert r.input_kind == "text" and r.text_column == "sentence" and not r.has_images
    x = r.activations("hidden")[:].astype(np.float64)
    how = np.array(["how" in t.lower() for t in texts])  # any case
    np.testing.assert_array_equal(r.mask({"text_contains": "How"}), how)
    agg = r.aggregate("hidden", where={"text_contains": "How"})
    assert agg.count[0] == how.sum() == 32
    np.testing.assert_allclose(agg.mean[0], x[how].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(agg.std[0], x[how].std(0), rtol=1e-4, atol=1e-5)
    quiz_today = np.array([i % 2 == 1 and "today" in t.lower() for i, t in enumerate(texts)])
    agg = r.aggregate("bag", where={"source": "quiz", "contains": {"sentence": "today"}})
    assert agg.count[0] == quiz_today.sum() > 0
    np.testing.assert_allclose(agg.mean[0], r.activations("bag")[:][quiz_today].mean(0), rtol=1e-5, atol=1e-6)
    accuracy = r.instances().column("correct").to_numpy(zero_copy_only=False).mean()
    assert accuracy > 0.9
    assert r.aggregate("hidden", by="label").groups == ["other", "how", "why"]


def test_a_column_of_sentences_is_the_input_only_for_a_model_that_reads_token_ids(tmp_path):
    """A comment column (most values with a space, named like nothing textual) is the input of a model over token ids,
    but only metadata beside a model over numbers (a table): its instances are shown as their rows."""
    comments = [f"note {i} about it" for i in range(24)]
    words = torch.randint(0, 40, (24, 5))
    tokens = deepscope.analyze(BagClassifier(40), words, layers=["hidden"], metadata={"comment": comments},
                               run=new_dir(tmp_path / "tokens"), progress=False)  # fmt: skip
    assert tokens.input_kind == "text" and tokens.text_column == "comment"
    tabular = deepscope.analyze(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)), torch.randn(24, 6),
                                layers=["1"], metadata={"comment": comments}, run=new_dir(tmp_path / "table"),
                                progress=False)  # fmt: skip
    assert tabular.input_kind == "table" and tabular.text_column is None
    named = deepscope.analyze(nn.Sequential(nn.Linear(6, 3)), torch.randn(24, 6), metadata={"text": comments},
                              run=new_dir(tmp_path / "named"), progress=False)  # fmt: skip
    assert named.text_column == "text"  # a column named as text stays the input, whatever the model read


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's own, from its fast path
def test_a_transformer_encoder_whose_fast_path_drops_padding_is_pooled_over_its_real_tokens(tmp_path):
    """In eval mode nn.TransformerEncoder (nested tensors) hands its layers' hooks nested tensors without the padding
    tokens: padded back to the mask, their mean over real tokens equals the dense path's."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2, enable_nested_tensor=True)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.head = enc, nn.Linear(32, 3)

        def forward(self, x, attention_mask):
            return self.head(self.enc(x, src_key_padding_mask=attention_mask == 0)[:, 0])

    model = Model().eval()
    mask = torch.ones(8, 6, dtype=torch.long)
    mask[:4, 3:] = 0  # four instances of three real tokens
    mask[4:, 5:] = 0
    x = torch.randn(8, 6, 32)
    r = deepscope.analyze(model, [{"x": x, "attention_mask": mask}], layers=["enc.layers.0"], run=tmp_path,
                          progress=False)  # fmt: skip
    seen = {}
    h = model.enc.layers[0].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    model.enc.enable_nested_tensor = False  # the dense path, the oracle
    model.enc.use_nested_tensor = False
    with torch.no_grad():
        model(x, mask)
    h.remove()
    assert not seen["out"].is_nested
    m = mask.unsqueeze(-1).float()
    expected = (seen["out"] * m).sum(1) / m.sum(1)
    np.testing.assert_allclose(r.activations("enc.layers.0"), expected.numpy(), rtol=1e-4, atol=1e-5)
