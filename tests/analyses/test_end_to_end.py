"""End to end: questions with an attention mask and text metadata; the MNIST demo CNN on 1,000 digits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.analyses.models import WORDS, TextDataset, TokenModel, questions

import deepscope
from deepscope.analyses.layer_outputs import pool


def test_questions_with_padding_masks_and_text_metadata(tmp_path):
    torch.manual_seed(0)
    texts = questions(200)
    labels = [WORDS.index(t.split()[0]) % 3 for t in texts]
    data = TextDataset(texts, labels)
    model = TokenModel(data.vocab)
    table = pa.table({"question": texts, "words": [len(t.split()) for t in texts]})
    r = deepscope.analyze(model, data, layers=["mix", "embed"], metadata=table, class_names=["a", "b", "c"],
                          run=tmp_path, batch_size=32, progress=False)  # fmt: skip
    # oracle: the masked mean over real tokens, computed by hand
    batch = torch.utils.data.default_collate([data[i] for i in range(200)])
    with torch.no_grad():
        h = model.mix(model.embed(batch["input_ids"]))  # (N, T, D)
    m = batch["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(r.activations("mix")[:], ((h * m).sum(1) / m.sum(1)).numpy(), rtol=1e-5, atol=1e-6)
    t = r.instances()
    assert t.column("question").to_pylist() == texts and t.column("label").to_pylist() == labels
    how = r.mask({"text_contains": "How"})
    np.testing.assert_array_equal(how, np.array(["how" in q.lower() for q in texts]))  # any case
    agg = r.aggregate("mix", where={"text_contains": "How"})
    np.testing.assert_allclose(agg.mean[0], r.activations("mix")[:][how].mean(0), rtol=1e-5, atol=1e-6)
    long = r.mask({"contains": {"question": "so often"}, "words": [6, 7, 8, 9]})
    assert long.sum() == sum("so often" in q.lower() and len(q.split()) in (6, 7, 8, 9) for q in texts) > 0
    assert r.aggregate("embed", by="label").mean.shape == (3, 16)


def test_last_token_pooling(tmp_path):
    texts = questions(40)
    data = TextDataset(texts, [0] * 40)
    model = TokenModel(data.vocab)
    r = deepscope.analyze(model, data, layers=["embed"], sequence_pooling="last", run=tmp_path, progress=False)
    batch = torch.utils.data.default_collate([data[i] for i in range(40)])
    with torch.no_grad():
        e = model.embed(batch["input_ids"])
    np.testing.assert_allclose(r.activations("embed")[:], pool(e, batch["attention_mask"], False, "last").numpy())
    assert r.outputs["embed"]["maps"] is False and len(r.outputs["embed"]["shape"]) == 2  # (T, D): a sequence
    np.testing.assert_allclose(r.activations("embed")[3], e[3, len(texts[3]) - 1].numpy())


@pytest.mark.slow
def test_mnist_demo_cnn_on_1000_digits(tmp_path):
    from deepscope.demo.data import load_mnist
    from deepscope.demo.models import SmallCNN

    torch.manual_seed(0)
    digits = load_mnist()
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for i in range(0, 2048, 128):  # a little training, so that predictions mean something
        loss = torch.nn.functional.cross_entropy(model(digits.train_x[i : i + 128]), digits.train_y[i : i + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    data = torch.utils.data.TensorDataset(digits.val_x, digits.val_y)
    run = deepscope.init(dir=tmp_path, name="mnist-analysis")
    r = deepscope.analyze(model, data, layers=["features.4", "features.9", "classifier"], run=run,
                          class_names=[str(d) for d in range(10)], progress=False)  # fmt: skip
    run.finish()
    assert model.training  # restored after the analysis ran it in eval mode
    model.eval()
    assert r.run_dir == run.dir and len(r) == 1000
    assert r.widths == {"features.4": 32, "features.9": 128, "classifier": 10}
    assert r.outputs == {
        "features.4": {"shape": [32, 14, 14], "maps": True, "type": "Conv2d"},  # before pooling, from the model
        "features.9": {"shape": [128], "maps": False, "type": "Linear"},
        "classifier": {"shape": [10], "maps": False, "type": "Linear"},
    }
    with torch.no_grad():
        conv = model.features[:5](digits.val_x)  # (N, 32, 14, 14)
        logits = model(digits.val_x)
    np.testing.assert_allclose(r.activations("features.4")[:], conv.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    t = r.instances()
    accuracy = t.column("correct").to_numpy(zero_copy_only=False).mean()
    assert accuracy == pytest.approx((logits.argmax(1) == digits.val_y).float().mean().item())
    assert accuracy > 0.5
    conf = np.array(r.confusion()["matrix"])
    assert conf.sum() == 1000 and np.trace(conf) == round(accuracy * 1000)
    assert r.projection("features.9").shape == (1000, 2)
    confused = r.aggregate("features.9", where={"label": 8, "predicted": 3})
    assert confused.count[0] == conf[8, 3]
    assert r.aggregate("features.9", by="label").groups == [str(d) for d in range(10)]
