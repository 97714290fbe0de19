"""Inputs as they are shown: image previews stored during extraction (and resumed), text and table kinds."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.analyses.models import FailingAt, TinyCNN, image_data
from tests.conftest import new_dir

import deepscope
from deepscope.analyses import read
from deepscope.analyses.activations import Activations, ActivationsConfig
from deepscope.analyses.inputs import preview, preview_size


def oracle_preview(img: np.ndarray) -> np.ndarray:
    """Per-instance min–max to 0…255, channels last: the documented rule, in NumPy."""
    lo, hi = img.min(), img.max()
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.round(scaled * 255).astype(np.uint8).transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)


def test_grey_images_are_stored_as_uint8_previews(tmp_path):
    data = image_data(50)
    r = deepscope.analyze(TinyCNN(), data, layers=["fc1"], run=tmp_path, batch_size=16, progress=False)
    assert r.has_images and r.input_kind == "image"
    x = data.tensors[0].numpy()
    for i in (0, 17, 49):
        img = r.image(i)
        assert img.shape == (8, 8, 1) and img.dtype == np.uint8
        np.testing.assert_allclose(img.astype(int), oracle_preview(x[i]).astype(int), atol=1)
        assert img.min() == 0 and img.max() == 255
    np.testing.assert_array_equal(r.images([3, 1]), np.stack([r.image(3), r.image(1)]))
    with pytest.raises(IndexError):
        r.image(50)


def test_large_colour_images_are_downscaled_to_64_pixels(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(6, 3, 96, 128)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    r = deepscope.analyze(model, x, layers=["0"], run=tmp_path, progress=False)
    assert preview_size(96, 128) == (48, 64)
    expected = torch.nn.functional.interpolate(x, size=(48, 64), mode="area").numpy()
    for i in range(6):
        assert r.image(i).shape == (48, 64, 3)
        np.testing.assert_allclose(r.image(i).astype(int), oracle_preview(expected[i]).astype(int), atol=1)


def test_constant_image_is_black_and_bhw_inputs_count_as_grey():
    p = preview(torch.full((2, 1, 5, 5), 3.0), (5, 5), 1)
    assert p.shape == (2, 5, 5, 1) and int(p.max()) == 0
    bhw = torch.rand(3, 10, 12)
    from deepscope.analyses.batches import to_batch
    from deepscope.analyses.inputs import image_input

    assert image_input(to_batch(bhw)).shape == (3, 1, 10, 12)
    assert image_input(to_batch(torch.rand(3, 16))) is None  # a table row
    assert image_input(to_batch(torch.randint(0, 9, (3, 7, 7)))) is None  # integer ids are not pixels


def test_previews_survive_a_resume(tmp_path):
    torch.manual_seed(1)
    model, data = TinyCNN(), image_data(200)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=32, progress=False)
    Activations(cfg).run(tmp_path / "whole", model, data)
    failing = FailingAt(data, fail_at=100)
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path / "cut", model, failing)
    progress = json.loads((tmp_path / "cut/artifacts/activations/progress.json").read_text())
    assert "inputs/images.zarr" in progress["arrays"] and progress["rows_done"] == 96
    failing.armed = False
    Activations(cfg).run(tmp_path / "cut", model, failing)
    whole, cut = read(tmp_path / "whole"), read(tmp_path / "cut")
    np.testing.assert_array_equal(whole.images(np.arange(200)), cut.images(np.arange(200)))


def test_previews_can_be_turned_off(tmp_path):
    cfg = ActivationsConfig(layers=("fc1",), previews=False, progress=False)
    Activations(cfg).run(tmp_path / "a", TinyCNN(), image_data(20))
    r = read(tmp_path / "a")
    assert not r.has_images and r.image(0) is None and r.input_kind == "table"
    (tmp_path / "b").mkdir()
    r = deepscope.analyze(TinyCNN(), image_data(20), layers=["fc1"], run=tmp_path / "b", previews=False,
                          progress=False)  # fmt: skip
    assert not r.has_images


def test_table_rows_are_a_table_and_text_columns_are_found(tmp_path):
    x = torch.randn(30, 6)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    tags = pa.table({"city": ["Oslo", "Lima", "Pune"] * 10, "age": list(range(30))})
    r = deepscope.analyze(model, x, layers=["1"], metadata=tags, run=new_dir(tmp_path / "a"), progress=False)
    assert not r.has_images and r.input_kind == "table" and r.text_column is None
    notes = pa.table({"tag": ["a"] * 30, "note": ["a few words here"] * 30})
    r = deepscope.analyze(model, x, layers=["1"], metadata=notes, run=new_dir(tmp_path / "b"), progress=False)
    # no text-like name, and a model over numbers: its free-text note is metadata, not its input (text_column= says
    # otherwise; a model over token ids takes the first column with spaces: test_text.py)
    assert r.input_kind == "table" and r.text_column is None
    named = pa.table({"label_text": ["x"] * 30, "note": ["a b"] * 30})
    r = deepscope.analyze(model, x, layers=["1"], metadata=named, run=new_dir(tmp_path / "c"), progress=False)
    assert r.text_column == "label_text"
    # the user's choice wins: no text column at all, or the one named
    r = deepscope.analyze(model, x, layers=["1"], metadata=notes, text_column=False, run=new_dir(tmp_path / "d"),
                          progress=False)  # fmt: skip
    assert r.input_kind == "table" and r.text_column is None
    r = deepscope.analyze(model, x, layers=["1"], metadata=named, text_column="note", run=new_dir(tmp_path / "e"),
                          progress=False)  # fmt: skip
    assert r.text_column == "note"
    with pytest.raises(ValueError, match=r"'age' holds int64, not text"):
        deepscope.analyze(model, x, metadata=tags, text_column="age", run=new_dir(tmp_path / "f"), progress=False)
    with pytest.raises(ValueError, match=r"'words' is no metadata column \(city, age\)"):
        deepscope.analyze(model, x, metadata=tags, text_column="words", run=new_dir(tmp_path / "g"), progress=False)


class _Instances(torch.utils.data.IterableDataset):
    """Yields single ``(image, label)`` instances, as a DataLoader expects of an iterable dataset."""

    def __init__(self, data: torch.utils.data.TensorDataset) -> None:
        self.data = data

    def __iter__(self):
        return iter(self.data)


def test_an_iterable_dataset_of_instances_is_batched(tmp_path):
    data = image_data(70)
    model = TinyCNN().eval()
    deepscope.analyze(model, _Instances(data), layers=["fc1"], run=tmp_path, batch_size=32, progress=False)
    x = data.tensors[0]
    with torch.no_grad():
        want = model.fc1(torch.relu(model.conv2(torch.relu(model.conv1(x)))).mean((2, 3)))  # fc1's output
    r = read(tmp_path)
    np.testing.assert_allclose(r.activations("fc1")[:], want.numpy(), rtol=1e-5, atol=1e-6)
    assert r.instances().column("label").to_pylist() == data.tensors[1].tolist()


class _OnePass(torch.utils.data.IterableDataset):
    """Yields its instances once: a second iteration yields nothing (a stream)."""

    def __init__(self, data: torch.utils.data.TensorDataset) -> None:
        self.it = iter(data)

    def __iter__(self):
        return self.it


def test_a_single_pass_iterable_dataset_loses_no_instance(tmp_path):
    data = image_data(40)
    with pytest.warns(RuntimeWarning, match="no feature maps were stored"):  # they need a second pass
        deepscope.analyze(TinyCNN(), _OnePass(data), layers=["conv2", "fc1"], run=tmp_path, batch_size=16,
                          progress=False)  # fmt: skip
    assert read(tmp_path).instances().column("label").to_pylist() == data.tensors[1].tolist()


def test_a_shuffling_distributed_sampler_is_refused(tmp_path):
    data = image_data(8)
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, shuffle=True)
    with pytest.raises(ValueError, match="shuffles"):
        deepscope.analyze(TinyCNN(), torch.utils.data.DataLoader(data, sampler=sampler), run=tmp_path, progress=False)


def test_dict_items_whose_keys_are_not_forwards_parameters_say_so(tmp_path):
    """Dict items are forward()'s keyword arguments: a key it does not take is named, with what to do."""
    base = image_data(20)
    items = [{"image": x, "label": y} for x, y in base]  # TinyCNN.forward(x)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'image'.*entries \(here: image\)"):
        deepscope.analyze(TinyCNN(), items, run=tmp_path, progress=False)


def test_a_type_error_inside_forward_is_not_blamed_on_the_data(tmp_path):
    class Picky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x, mask=None):
            return self.fc(x) + torch.ones(2, dtype=torch.int64).foo()  # a bug of the model's own

    items = [{"x": torch.randn(4), "mask": torch.ones(4), "label": 1} for _ in range(8)]
    with pytest.raises(AttributeError):  # raised as it is, not as a data problem
        deepscope.analyze(Picky(), items, run=tmp_path, progress=False)

    class Typed(Picky):
        def forward(self, x, mask=None):
            return torch.nn.functional.linear(x, None)  # a TypeError inside: the arguments fit

    with pytest.raises(TypeError) as e:
        deepscope.analyze(Typed(), items, run=new_dir(tmp_path / "t"), progress=False)
    assert "keyword arguments" not in str(e.value)


def test_tuple_batches_of_several_inputs_say_how_tuples_are_read_before_any_work(tmp_path):
    """(input_ids, attention_mask, labels) tuples for a forward(ids, mask): the tuple is (input, label, …), so the
    error says so and how to pass several inputs, before anything is stored."""

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(20, 4, mode="sum")
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, ids, mask):
            return self.fc(self.emb(ids, per_sample_weights=mask.float()))

    ids, mask, labels = torch.randint(0, 20, (8, 5)), torch.ones(8, 5, dtype=torch.long), torch.randint(0, 2, (8,))
    said = r"missing 1 required positional argument: 'mask' — the batches are tuples of 3 items; a tuple is read as "
    with pytest.raises(TypeError, match=said + r"\(input, label, …\).*yield dicts") as e:
        deepscope.analyze(TwoInputs(), [(ids, mask, labels)], run=tmp_path, progress=False)
    assert "'attention_mask'" in str(e.value) and "wrapper" in str(e.value)
    assert not (tmp_path / "artifacts" / "activations" / "instances.parquet").exists()
    r = deepscope.analyze(TwoInputs(), [{"ids": ids, "mask": mask, "labels": labels}], run=new_dir(tmp_path / "d"),
                          mask="mask", progress=False)  # fmt: skip
    assert len(r) == 8  # as a dict, as the message says


class _Keywords(torch.nn.Module):
    """forward(input_ids, attention_mask): a text model's signature over numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 5)
        self.out = torch.nn.Linear(5, 3)

    def forward(self, input_ids, attention_mask):
        return self.out(torch.relu(self.fc(input_ids * attention_mask)))


class _OneInput(_Keywords):
    def forward(self, x):
        return super().forward(x, torch.ones_like(x))


def test_a_whole_dataset_given_as_columns_is_read_in_slices(tmp_path):
    """``(X, y)``, ``(X_np, y_np)``, ``{"input_ids": …, "attention_mask": …, "label": …}`` and
    ``(tokenizer output, y)`` are whole datasets, not lists of two or three batches: every row is recorded with its
    label, in the order given (before, a tuple (X, y) was read as two batches, and y crashed the model)."""
    torch.manual_seed(3)
    x, mask, y = torch.randn(70, 6), (torch.rand(70, 6) > 0.2).float(), torch.randint(0, 3, (70,))
    model = _Keywords()
    with torch.no_grad():
        want = model(x, torch.ones_like(x)), model(x, mask)
    wrapped = _OneInput()
    wrapped.load_state_dict(model.state_dict())
    given = {"tuple": (wrapped, (x, y), want[0]), "numpy": (wrapped, (x.numpy(), y.numpy()), want[0]),
             "dict": (model, {"input_ids": x, "attention_mask": mask, "label": y}, want[1]),
             "dict and labels": (model, ({"input_ids": x, "attention_mask": mask}, y.numpy()), want[1])}  # fmt: skip
    for name, (m, data, out) in given.items():
        r = deepscope.analyze(m, data, layers=["out"], run=new_dir(tmp_path / name), batch_size=32, mask=False,
                              progress=False)  # fmt: skip
        assert len(r) == 70, name
        np.testing.assert_allclose(r.activations("out")[:], out.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        assert r.instances().column("label").to_pylist() == y.tolist(), name


def test_a_dict_of_columns_of_other_lengths_or_types_is_refused_with_what_it_holds(tmp_path):
    x, y = torch.randn(10, 6), torch.arange(10) % 3
    with pytest.raises(TypeError, match=r"whole dataset's columns.*holds input_ids: \(10, 6\), label: \(4,\)"):
        deepscope.analyze(_Keywords(), {"input_ids": x, "label": y[:4]}, run=tmp_path, progress=False)
    with pytest.raises(TypeError, match=r"holds input_ids: list"):
        deepscope.analyze(_Keywords(), {"input_ids": [[1, 2]] * 10}, run=new_dir(tmp_path / "l"), progress=False)


def test_class_names_as_id2label_are_read_by_index_and_one_string_is_refused(tmp_path):
    x, y = torch.randn(30, 6), torch.arange(30) % 3
    for i, names in enumerate([{2: "pos", 0: "neg", 1: "neu"}, {"0": "neg", "1": "neu", "2": "pos"}]):
        r = deepscope.analyze(_OneInput(), (x, y), class_names=names, run=new_dir(tmp_path / str(i)), progress=False)
        assert r.class_names == ["neg", "neu", "pos"]
    with pytest.raises(TypeError, match="class_names is one string"):
        deepscope.analyze(_OneInput(), (x, y), class_names="abc", run=new_dir(tmp_path / "s"), progress=False)
    with pytest.raises(ValueError, match="every class index from 0 to 1"):
        deepscope.analyze(_OneInput(), (x, y), class_names={0: "a", 2: "c"}, run=new_dir(tmp_path / "g"),
                          progress=False)  # fmt: skip


def test_labels_given_replace_the_batches_own_unchecked(tmp_path):
    """Relabelling three classes into two for a two-output model: the batches' labels (up to 2) are not checked
    against the model's outputs — the given ones are stored and scored."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.arange(40) % 3
    model = torch.nn.Sequential(torch.nn.Linear(6, 2))
    binary = (y > 0).long()
    r = deepscope.analyze(model, torch.utils.data.TensorDataset(x, y), labels=binary, run=tmp_path, progress=False)
    table = r.instances()
    assert table.column("label").to_pylist() == binary.tolist()
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert table.column("correct").to_pylist() == (pred == binary).tolist()


def test_a_dataframe_is_a_table_of_numbers_with_its_label_column(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(50, 6)), columns=list("abcdef"))  # float64
    df["label"] = np.arange(50) % 3
    model = _OneInput()
    r = deepscope.analyze(model, df, layers=["out"], run=tmp_path, progress=False)
    with torch.no_grad():
        want = model(torch.tensor(df[list("abcdef")].to_numpy(), dtype=torch.float32))
    np.testing.assert_allclose(r.activations("out")[:], want.numpy(), rtol=1e-5, atol=1e-6)
    assert r.instances().column("label").to_pylist() == df["label"].tolist()
    np.testing.assert_allclose(r.features(np.arange(50)), df[list("abcdef")].to_numpy(), rtol=1e-6)
    df["city"] = ["x"] * 50
    with pytest.raises(TypeError, match=r"city is no numbers — pass such columns as metadata"):
        deepscope.analyze(model, df, run=new_dir(tmp_path / "text"), progress=False)
    r = deepscope.analyze(
        model, (df[list("abcdef")].to_numpy(), df["label"].to_numpy()), run=new_dir(tmp_path / "np"), progress=False
    )  # fmt: skip (float64 NumPy inputs are read as float32)
    assert len(r) == 50


def test_a_sequence_models_3d_inputs_are_no_images(tmp_path):
    class Recurrent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(6, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    r = deepscope.analyze(Recurrent(), (torch.randn(20, 12, 6), torch.arange(20) % 2), run=tmp_path, progress=False)
    assert r.input_kind != "image" and not r.has_images


def test_a_layer_named_twice_is_recorded_once_and_the_config_names_it(tmp_path):
    from deepscope.analyses.layer_choice import validate_layers

    r = deepscope.analyze(_OneInput(), torch.randn(4, 6), layers=["fc", "out", "fc"], run=tmp_path, progress=False)
    assert r.layers == ["fc", "out"]
    with pytest.raises(ValueError, match=r"'fc' named twice in layers"):
        validate_layers(_OneInput(), ["fc", "out", "fc"])


def test_a_dict_batchs_texts_are_recorded_and_not_passed_to_a_forward_without_them(tmp_path):
    """Batches as a Hugging Face dataset collates them — ``{"input_ids", "attention_mask", "label", "text"}`` —
    for a ``forward(input_ids, attention_mask)``: the texts are the instance table's ``text`` column (the inputs are
    shown as text), not an unexpected keyword argument; a forward that takes ``**kwargs`` still gets them."""
    torch.manual_seed(0)
    x, mask, y = torch.randn(40, 6), torch.ones(40, 6), torch.arange(40) % 3
    texts = [f"review number {i}" for i in range(40)]
    batches = [{"input_ids": x[i : i + 16], "attention_mask": mask[i : i + 16], "label": y[i : i + 16],
                "text": texts[i : i + 16]} for i in range(0, 40, 16)]  # fmt: skip
    r = deepscope.analyze(_Keywords(), batches, mask=False, run=tmp_path, progress=False)
    assert r.instances().column("text").to_pylist() == texts and r.input_kind == "text"
    seen: list[str] = []

    class Open(_Keywords):
        def forward(self, input_ids, attention_mask, **kwargs):
            seen.extend(kwargs["text"])
            return super().forward(input_ids, attention_mask)

    r = deepscope.analyze(Open(), batches, mask=False, run=new_dir(tmp_path / "open"), progress=False)
    assert seen[:40] == texts and r.instances().column("text").to_pylist() == texts  # (then a feature-map probe)
    r = deepscope.analyze(_Keywords(), batches, mask=False, metadata={"text": ["given"] * 40},
                          run=new_dir(tmp_path / "meta"), progress=False)  # fmt: skip
    assert r.instances().column("text").to_pylist() == ["given"] * 40  # the metadata's own


def test_layers_may_be_globs_or_a_function_as_watch_takes_them(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 4),
                                torch.nn.ReLU()), torch.nn.Linear(4, 3))  # fmt: skip
    x = torch.randn(20, 6)
    r = deepscope.analyze(model, x, layers="2.*", run=new_dir(tmp_path / "glob"), progress=False)
    assert r.layers == ["2.0", "2.1"]
    r = deepscope.analyze(model, x, layers=["3", "[01]"], run=new_dir(tmp_path / "list"), progress=False)
    assert r.layers == ["3", "0", "1"]  # as listed; a glob's matches in model order
    relu = lambda path, m: isinstance(m, torch.nn.ReLU)  # noqa: E731
    assert deepscope.analyze(model, x, layers=relu, run=new_dir(tmp_path / "f"), progress=False).layers == ["1", "2.1"]
    with pytest.raises(ValueError, match=r"no layer matches 'enc\*'; layers: 0, 1, 2, 2.0"):
        deepscope.analyze(model, x, layers="enc*", run=new_dir(tmp_path / "none"), progress=False)


def test_run_may_be_the_id_of_a_run_in_the_default_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_DIR", str(tmp_path))
    with deepscope.init(project="p", name="by-id") as run:
        run.log({"loss": 1.0}, step=0)
    monkeypatch.chdir(tmp_path.parent)
    r = deepscope.analyze(_OneInput(), torch.randn(8, 6), run=run.id, progress=False)
    assert r.run_dir == tmp_path / run.id
    with pytest.raises(FileNotFoundError, match="nor a run of that id"):
        deepscope.analyze(_OneInput(), torch.randn(8, 6), run="no-such-run", progress=False)


def test_a_tuple_of_batches_is_still_batches_and_y_may_be_a_list_or_a_series(tmp_path):
    """``torch.split(x, 64)`` is a tuple of batches (every row analysed), not ``(X, y)``; ``(X, y)`` takes labels as
    a list or a pandas Series (nullable, missing ones unlabelled); text labels and other lengths are refused."""
    pd = pytest.importorskip("pandas")
    x = torch.randn(256, 6)
    assert (
        len(deepscope.analyze(_OneInput(), torch.split(x, 64), run=new_dir(tmp_path / "split"), progress=False)) == 256
    )
    assert len(deepscope.analyze(_OneInput(), (x[:128], x[128:]), run=new_dir(tmp_path / "two"), progress=False)) == 256
    y = [i % 3 for i in range(256)]
    for name, labels in (("list", y), ("series", pd.Series(y)), ("nullable", pd.array([None, *y[1:]], "Int64"))):
        r = deepscope.analyze(_OneInput(), (x, labels), run=new_dir(tmp_path / name), batch_size=32, progress=False)
        assert r.instances().column("label").to_pylist() == ([None] if name == "nullable" else [0]) + y[1:], name
    with pytest.raises(TypeError, match="holds text labels.*np.unique"):
        deepscope.analyze(_OneInput(), (x, ["cat"] * 256), run=new_dir(tmp_path / "text"), progress=False)
    with pytest.raises(ValueError, match="lengths differ: 256, 255"):
        deepscope.analyze(_OneInput(), (x, y[:-1]), run=new_dir(tmp_path / "short"), progress=False)


def test_a_dataframes_labels_may_have_gaps_and_a_fractional_target_is_no_label(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(np.random.default_rng(1).normal(size=(6, 6)), columns=list("abcdef"))
    df["label"] = pd.array([0, 1, None, 2, 1, 0], dtype="Int64")
    r = deepscope.analyze(_OneInput(), df, run=new_dir(tmp_path / "gaps"), progress=False)
    assert r.instances().column("label").to_pylist() == [0, 1, None, 2, 1, 0]
    df["label"] = [0.5, 1.25, 2.0, 1.0, 0.0, 2.0]  # a regressor's target: neither labels nor an input
    r = deepscope.analyze(_OneInput(), df, run=new_dir(tmp_path / "target"), progress=False)
    assert "label" not in r.instances().column_names and r.features(0).shape == (6,)


def test_text_labels_in_batches_need_labels_given_which_replace_them(tmp_path):
    x = torch.randn(20, 6)
    loader = torch.utils.data.DataLoader([(x[i], "pos" if i % 2 else "neg") for i in range(20)], batch_size=8)
    with pytest.raises(ValueError, match=r"labels are text \('neg', 'pos'…\): pass labels="):
        deepscope.analyze(_OneInput(), loader, run=new_dir(tmp_path / "text"), progress=False)
    given = [i % 2 for i in range(20)]
    r = deepscope.analyze(_OneInput(), loader, labels=given, class_names=["neg", "pos", "other"],
                          run=new_dir(tmp_path / "g"), progress=False)  # fmt: skip
    assert r.instances().column("label").to_pylist() == given


def test_labels_all_unlabelled_leave_the_outputs_scores(tmp_path):
    """``labels=[-1] * n`` says no instance has a label: the batches' labels (up to 2, for a 2-output model) do not
    make the outputs "no class scores"."""
    x, y = torch.randn(40, 6), torch.arange(40) % 3
    model = torch.nn.Sequential(torch.nn.Linear(6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = deepscope.analyze(model, torch.utils.data.TensorDataset(x, y), labels=[-1] * 40, run=tmp_path,
                              progress=False)  # fmt: skip
    assert "prediction" in r.instances().column_names and "label" not in r.instances().column_names


def test_a_layers_function_that_raises_for_a_module_does_not_choose_it_and_a_layer_listed_twice_counts_once(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 4)))
    x = torch.randn(10, 6)
    wide = lambda path, m: m.out_features >= 8  # noqa: E731 (ReLU and containers have none)
    assert deepscope.analyze(model, x, layers=wide, run=new_dir(tmp_path / "f"), progress=False).layers == ["0"]
    r = deepscope.analyze(model, x, layers=["2.*", "2.0"], run=new_dir(tmp_path / "twice"), progress=False)
    assert r.layers == ["2.0"]


def test_texts_reach_a_wrapped_model_as_its_own_forward_takes_them_and_gaps_are_missing(tmp_path):
    x, mask = torch.randn(24, 6), torch.ones(24, 6)
    texts = [None, *(f"t{i}" for i in range(1, 24))]
    batches = [{"input_ids": x[i : i + 8], "attention_mask": mask[i : i + 8], "text": texts[i : i + 8]}
               for i in range(0, 24, 8)]  # fmt: skip
    del batches[2]["text"]  # the last batch has none
    r = deepscope.analyze(torch.nn.DataParallel(_Keywords()), batches, mask=False, run=tmp_path, progress=False)
    assert r.instances().column("text").to_pylist() == texts[:16] + [None] * 8


def test_rows_of_numbers_said_to_be_images_are_previewed_as_images(tmp_path):
    """MNIST as rows of 784 numbers through an MLP: with image_shape, the previews are the digits."""
    torch.manual_seed(0)
    x = torch.rand(40, 784)
    model = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    r = deepscope.analyze(model, x, layers=["1"], run=new_dir(tmp_path / "flat"), image_shape=(28, 28), progress=False)
    assert r.has_images and r.input_kind == "image"
    for i in (0, 39):
        np.testing.assert_allclose(r.image(i).astype(int), oracle_preview(x[i].reshape(1, 28, 28).numpy()).astype(int),
                                   atol=1)  # fmt: skip
    colour = torch.rand(10, 3 * 8 * 8)
    r = deepscope.analyze(torch.nn.Linear(192, 2), colour, run=new_dir(tmp_path / "colour"), image_shape=[3, 8, 8],
                          progress=False)  # fmt: skip
    assert r.image(4).shape == (8, 8, 3)
    np.testing.assert_allclose(r.image(4).astype(int), oracle_preview(colour[4].reshape(3, 8, 8).numpy()).astype(int),
                               atol=1)  # fmt: skip
    plain = deepscope.analyze(model, x, layers=["1"], run=new_dir(tmp_path / "plain"), progress=False)
    assert not plain.has_images  # left out: a table's row (too wide to store)


@pytest.mark.parametrize(("shape", "match"), [((27, 28), "holds 756 numbers, but each input holds 784"),
                                               ((2, 28, 28), "1 or 3 channels"), ("28x28", "1 or 3 channels"),
                                               ((28.5, 28), "1 or 3 channels")])  # fmt: skip
def test_an_image_shape_that_does_not_fit_is_refused(tmp_path, shape, match):
    model = torch.nn.Sequential(torch.nn.Linear(784, 3))
    with pytest.raises(ValueError, match=match):
        deepscope.analyze(model, torch.rand(8, 784), run=tmp_path, image_shape=shape, progress=False)
