"""Which of a model's outputs are its class scores: ``output=`` (a key, an index, a function), else the one as wide as
the classes, else ``logits``, else the first — named in a warning at the user's line, recorded in the provenance."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from tests.conftest import new_dir
from torch import nn

import deepscope

Pair = collections.namedtuple("Pair", ["features", "logits"])


class TwoHeads(nn.Module):
    """A body of 32 features and a head of ``classes`` logits, returned together as ``kind`` says."""

    def __init__(self, kind: str = "dict", classes: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.body, self.head = nn.Linear(8, 32), nn.Linear(32, classes)

    def forward(self, x: torch.Tensor):
        h = torch.relu(self.body(x))
        logits = self.head(h)
        if self.kind == "dict":
            return {"hidden": h, "out": logits}
        if self.kind == "namedtuple":
            return Pair(h, logits)
        return (h, logits)


def data(n: int = 96, classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def analyze(model, d, run, **kw):
    return deepscope.analyze(model, d, run=new_dir(run), progress=False, full_maps=False, projection=False, **kw)


def softmax(logits: torch.Tensor) -> np.ndarray:
    z = logits.double().numpy()
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def assert_scored_by_logits(r, model, x, y) -> None:
    """The stored scores, predictions and accuracy are those of the model's logits (its head), by NumPy."""
    with torch.no_grad():
        want = softmax(model.head(torch.relu(model.body(x))))
    stored = r.instances()
    np.testing.assert_allclose(r.scores(np.arange(len(r))), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stored.column("prediction").to_numpy(), want.argmax(1))
    assert r.accuracy == pytest.approx(float((want.argmax(1) == y.numpy()).mean()))


@pytest.mark.parametrize(
    ("kind", "taken", "other"),
    [("dict", "output['out']", "output='hidden'"), ("tuple", "output[1]", "output=0"),
     ("namedtuple", "output.logits", "output='features'")],
)  # fmt: skip
def test_of_several_outputs_the_one_as_wide_as_the_classes_is_taken_and_named(tmp_path, kind, taken, other):
    model, (x, y) = TwoHeads(kind), data()
    with pytest.warns(RuntimeWarning, match=r"returned 2 outputs") as caught:
        r = analyze(model, (x, y), tmp_path / "run")
    (w,) = [w for w in caught if "returned 2 outputs" in str(w.message)]
    text = str(w.message)
    assert f"took {taken}, the only one 2 wide" in text and f"pass {other}" in text
    assert w.filename == __file__  # the user's call, not deepscope's own file
    assert r.widths == {"body": 32, "head": 2}
    assert_scored_by_logits(r, model, x, y)
    assert r.provenance["scores_output"] == taken and r.provenance["config"]["output"] is None


@pytest.mark.parametrize(
    ("kind", "output", "label", "stored"),
    [
        ("dict", "out", "output['out']", "out"),
        ("tuple", 1, "output[1]", 1),
        ("tuple", -1, "output[1]", -1),
        ("namedtuple", "logits", "output.logits", "logits"),
    ],
)
def test_output_chooses_the_class_scores_without_a_warning(tmp_path, kind, output, label, stored):
    model, (x, y) = TwoHeads(kind), data()
    r = analyze(model, (x, y), tmp_path / "run", output=output)  # any warning fails the test
    assert_scored_by_logits(r, model, x, y)
    record = r.provenance
    assert record["config"]["output"] == stored and record["scores_output"] == label


def pick_out(out):
    return out["out"]


def test_output_as_a_function_of_the_whole_output(tmp_path):
    model, (x, y) = TwoHeads("dict"), data()
    r = analyze(model, (x, y), tmp_path / "run", output=pick_out)
    assert_scored_by_logits(r, model, x, y)
    record = r.provenance
    assert record["config"]["output"] == f"{__name__}.pick_out"
    assert record["scores_output"] == f"{__name__}.pick_out(output)"
    r = analyze(model, (x, y), tmp_path / "lambda", output=lambda out: out["out"])
    assert_scored_by_logits(r, model, x, y)


def test_the_first_output_is_taken_as_before_when_the_widths_do_not_tell(tmp_path):
    model = TwoHeads("dict", classes=32)  # both outputs 32 wide: ambiguous
    x, y = data(classes=32)
    with pytest.warns(RuntimeWarning, match=r"took output\['hidden'\], the first, as the class scores.*output='out'"):
        r = analyze(model, (x, y), tmp_path / "run")
    with torch.no_grad():
        want = softmax(torch.relu(model.body(x)))
    np.testing.assert_allclose(r.scores(np.arange(len(r))), want, rtol=1e-5, atol=1e-6)


class WithLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"last_hidden_state": h, "logits": self.head(h)}


def test_a_logits_entry_is_taken_when_no_class_count_is_known(tmp_path):
    model, (x, _) = WithLogits(), data()
    with pytest.warns(RuntimeWarning, match=r"took output\['logits'\], its 'logits' entry"):
        r = analyze(model, x, tmp_path / "run")  # no labels, no class names: widths tell nothing
    with torch.no_grad():
        want = softmax(model(x)["logits"])
    np.testing.assert_allclose(r.scores(np.arange(len(r))), want, rtol=1e-5, atol=1e-6)


def test_an_embedding_taken_as_scores_is_named_with_how_to_choose(tmp_path):
    model = TwoHeads("dict", classes=5)  # labels name 2 classes: neither 32 nor 5 is as wide
    x, y = data()
    with pytest.warns(RuntimeWarning) as caught:
        analyze(model, (x, y), tmp_path / "run")
    wide = [str(w.message) for w in caught if "were taken as scores of classes" in str(w.message)]
    assert len(wide) == 1 and "output['hidden'], 32 wide," in wide[0] and "output=" in wide[0]
    assert all(w.filename == __file__ for w in caught)


@pytest.mark.parametrize(
    ("kind", "output", "message"),
    [
        ("dict", "logit", r"output='logit' names none of the model's outputs.*a dict of 'hidden', 'out'"),
        ("tuple", 2, r"output=2 names none of the model's outputs.*a tuple of 2 items"),
        ("dict", 0, r"output=0 names none.*a dict of 'hidden', 'out'"),
    ],
)
def test_an_output_the_model_does_not_return_is_an_error_naming_what_it_does(tmp_path, kind, output, message):
    with pytest.raises(ValueError, match=message):
        analyze(TwoHeads(kind), data(), tmp_path / "run", output=output)


def test_a_malformed_output_is_refused_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="output is a key of the model's dict output"):
        analyze(TwoHeads(), data(), tmp_path / "run", output=1.5)
    with pytest.raises(ValueError, match="scores='none' says it has none"):
        analyze(TwoHeads(), data(), tmp_path / "run", output="out", scores="none")
    assert not (tmp_path / "run" / "artifacts").exists()


def test_a_single_output_is_taken_without_a_warning(tmp_path):
    model, (x, y) = TwoHeads("dict"), data()
    single = nn.Sequential(model.body, nn.ReLU(), model.head)
    r = analyze(single, (x, y), tmp_path / "run")
    assert r.provenance["scores_output"] == "output"
    assert_scored_by_logits(r, model, x, y)


class FeaturesAndLogit(nn.Module):
    """A binary classifier trained with BCE: its features (B, 16) and one logit (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = nn.Linear(8, 16), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return h, self.head(h)


def test_a_binary_classifiers_single_logit_is_taken_among_several_outputs(tmp_path):
    model, (x, y) = FeaturesAndLogit(), data()
    with pytest.warns(RuntimeWarning, match=r"took output\[1\], the only single logit per instance"):
        r = analyze(model, (x, y), tmp_path / "run")
    with torch.no_grad():
        p = torch.sigmoid(model(x)[1]).double().numpy()[:, 0]
    np.testing.assert_allclose(r.scores(np.arange(len(r))), np.stack([1 - p, p], 1), rtol=1e-5, atol=1e-6)
