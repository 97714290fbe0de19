"""Activations against a manual forward pass with hooks, pooling against ``x.mean((2, 3))``, resume, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import zarr
from tests.analyses.models import FailingAt, TinyCNN, image_data
from tests.conftest import new_dir
from torch import nn

import deepscope
from deepscope.analyses import extraction, read
from deepscope.analyses.activations import Activations, ActivationsConfig
from deepscope.analyses.class_scores import softmax_rows, top_class
from deepscope.analyses.layer_outputs import pool


def manual(model, x, names):
    """The oracle: plain hooks, the whole dataset in one forward pass."""
    seen, handles = {}, []
    modules = dict(model.named_modules())
    for n in names:
        handles.append(modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.detach())))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return seen, out


def test_activations_equal_a_manual_forward_pass(tmp_path):
    torch.manual_seed(0)
    model, data = TinyCNN(), image_data(300)
    r = deepscope.analyze(model, data, layers=["conv2", "fc1"], run=tmp_path, batch_size=64, progress=False)
    seen, out = manual(model, data.tensors[0], ["conv2", "fc1"])
    np.testing.assert_allclose(r.activations("conv2")[:], seen["conv2"].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.activations("fc1")[:], seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)
    t = r.instances()
    probs = out.softmax(1).numpy()
    np.testing.assert_array_equal(t.column("prediction").to_numpy(), probs.argmax(1))
    np.testing.assert_allclose(r.scores(np.arange(len(r))), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.scores(7), probs[7], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.scores(-1), probs[-1], rtol=1e-5, atol=1e-6)
    assert (
        r.classes == probs.shape[1] and "scores" not in t.column_names
    )  # all scores in their array, not the table too
    with pytest.raises(IndexError, match="instance 300 out of range"):
        r.scores(300)
    np.testing.assert_array_equal(t.column("label").to_numpy(), data.tensors[1].numpy())
    np.testing.assert_array_equal(
        t.column("correct").to_numpy(zero_copy_only=False), probs.argmax(1) == data.tensors[1].numpy()
    )
    prov = r.provenance
    assert (
        prov["model_class"].endswith("TinyCNN") and prov["length"] == 300 and prov["layers"] == {"conv2": 8, "fc1": 12}
    )
    assert prov["deepscope_version"] == deepscope.__version__
    assert r.activations("fc1").dtype == np.float32


def test_pooling_of_feature_maps_and_sequences():
    x = torch.randn(5, 3, 4, 6)
    torch.testing.assert_close(pool(x, None, False), x.mean((2, 3)))
    seq = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(pool(seq, mask, False), torch.stack([seq[0, :2].mean(0), seq[1].mean(0)]))
    torch.testing.assert_close(pool(seq, mask, False, "last"), torch.stack([seq[0, 1], seq[1, 3]]))
    torch.testing.assert_close(pool(seq, None, True), seq.mean(2))  # (B, C, L) of a Conv1d


def test_dataloader_dicts_and_plain_tensors(tmp_path):
    model, data = TinyCNN(), image_data(100)
    x, y = data.tensors
    loader = torch.utils.data.DataLoader([{"x": x[i], "labels": y[i]} for i in range(100)], batch_size=32)

    class Kw(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    a = deepscope.analyze(Kw(), loader, layers=["inner.fc1"], run=new_dir(tmp_path / "a"), progress=False)
    b = deepscope.analyze(model, x, layers=["fc1"], run=new_dir(tmp_path / "b"), progress=False)
    np.testing.assert_allclose(a.activations("inner.fc1")[:], b.activations("fc1")[:], rtol=1e-5, atol=1e-6)
    assert "label" in a.instances().column_names  # labels from the batches
    assert "label" not in b.instances().column_names and "correct" not in b.instances().column_names


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    torch.manual_seed(1)
    model, data = TinyCNN(), image_data(300)
    cfg = ActivationsConfig(layers=("conv1", "fc1"), batch_size=16, chunk_rows=32, progress=False)
    Activations(cfg).run(tmp_path / "whole", model, data)
    failing = FailingAt(data, fail_at=150)
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path / "cut", model, failing)
    progress = json.loads((tmp_path / "cut/artifacts/activations/progress.json").read_text())
    # every batch before row 150 is kept: four whole chunks and the 16 rows gathered of the fifth
    assert progress["rows_done"] == 144 and not progress["complete"]
    unfinished = read(tmp_path / "cut")  # its arrays already have 300 rows; the rows done are what it reads
    assert len(unfinished) == 144 and unfinished.matrix("fc1").shape[0] == 144
    np.testing.assert_array_equal(unfinished.matrix("fc1"), read(tmp_path / "whole").activations("fc1")[:144])
    failing.armed = False
    calls = []
    original = failing.__class__.__getitem__
    failing.__class__.__getitem__ = lambda self, i: (calls.append(i), original(self, i))[1]
    try:
        Activations(cfg).run(tmp_path / "cut", model, failing)
    finally:
        failing.__class__.__getitem__ = original
    # rows on disk were not computed again (the resume ends the part-written chunk first); the first 64 rows and the
    # 16 rows before the resume point are read once more, to check the data is the one the interrupted analysis read
    assert sorted(set(calls)) == list(range(64)) + list(range(128, 300))
    whole, cut = read(tmp_path / "whole"), read(tmp_path / "cut")
    assert cut.complete and len(cut) == 300
    for layer in ("conv1", "fc1"):
        np.testing.assert_array_equal(whole.activations(layer)[:], cut.activations(layer)[:])
    assert whole.instances().equals(cut.instances())


def test_other_weights_start_over(tmp_path):
    data = image_data(64)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=32, progress=False)
    model = TinyCNN()
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path, model, FailingAt(data, 40))
    other = TinyCNN()
    with pytest.warns(RuntimeWarning, match="the weights changed since the interrupted analysis: starting over "
                                            "instead of resuming after its 32 rows"):  # fmt: skip
        Activations(cfg).run(tmp_path, other, data)
    seen, _ = manual(other, data.tensors[0], ["fc1"])
    np.testing.assert_allclose(read(tmp_path).activations("fc1")[:], seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)


def test_other_data_of_the_same_length_starts_over_and_says_why(tmp_path):
    """Same model, same length, other images: resuming would mix two datasets in one result."""
    torch.manual_seed(2)
    model, first, second = TinyCNN(), image_data(64), image_data(64, seed=5)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=16, progress=False)
    with pytest.raises(KeyboardInterrupt) as caught:
        Activations(cfg).run(tmp_path, model, FailingAt(first, 40))
    assert caught.value.__notes__ == [
        "deepscope.analyze: 32 rows are kept: call it again the same way to resume after them"
    ]
    progress = json.loads((tmp_path / "artifacts/activations/progress.json").read_text())
    assert progress["stopped"] == "interrupted" and progress["data"]
    with pytest.warns(RuntimeWarning, match=r"the data \(its first rows\) changed .* after its 32 rows"):
        Activations(cfg).run(tmp_path, model, second)
    seen, _ = manual(model, second.tensors[0], ["fc1"])
    np.testing.assert_allclose(read(tmp_path).activations("fc1")[:], seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)
    # other labels given for the same data: they change the result too
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg, labels=np.arange(64) % 4).run(tmp_path / "labelled", model, FailingAt(second, 40))
    with pytest.warns(RuntimeWarning, match="the labels changed"):
        Activations(cfg, labels=(np.arange(64) + 1) % 4).run(tmp_path / "labelled", model, second)
    assert read(tmp_path / "labelled").instances().column("label").to_pylist() == ((np.arange(64) + 1) % 4).tolist()


def test_data_changed_after_its_first_rows_starts_over_and_says_where(tmp_path):
    """The same first rows and length, other rows further in (before the resume point): resuming would keep the old
    rows' activations beside the new rows' — the rows just before the resume point tell it."""
    torch.manual_seed(3)
    model, first = TinyCNN(), image_data(96)
    x, y = first.tensors[0].clone(), first.tensors[1]
    x[70:] = torch.randn(26, 1, 8, 8)  # rows 70 on differ: after the first 64, before the 80 kept
    second = torch.utils.data.TensorDataset(x, y)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=16, progress=False)
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path, model, FailingAt(first, 85))
    assert json.loads((tmp_path / "artifacts/activations/progress.json").read_text())["tail"]["stop"] == 80
    with pytest.warns(RuntimeWarning, match=r"the data \(its rows before row 80\) changed .* after its 80 rows"):
        Activations(cfg).run(tmp_path, model, second)
    seen, _ = manual(model, x, ["fc1"])
    np.testing.assert_allclose(read(tmp_path).activations("fc1")[:], seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)
    # the same data resumes, at any batch size (the digest is of rows, not of batches)
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path / "same", model, FailingAt(first, 85))
    cfg4 = ActivationsConfig(layers=("fc1",), batch_size=4, chunk_rows=16, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        Activations(cfg4).run(tmp_path / "same", model, first)
    assert read(tmp_path / "same").complete


def test_a_resume_without_a_progress_bar_says_where_it_starts(tmp_path, capsys):
    model, data = TinyCNN(), image_data(64)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=16, progress=False)
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path, model, FailingAt(data, 40))
    capsys.readouterr()
    Activations(cfg).run(tmp_path, model, data)
    assert "deepscope.analyze: resuming after 32 rows kept" in capsys.readouterr().err


def test_a_failed_analysis_records_why(tmp_path):
    model, data = TinyCNN(), image_data(64)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=16, progress=False)

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            if i >= 48:
                raise OSError("disk gone")
            return data[i]

    with pytest.raises(OSError, match="disk gone"):
        Activations(cfg).run(tmp_path, model, Broken())
    progress = json.loads((tmp_path / "artifacts/activations/progress.json").read_text())
    assert progress["stopped"] == "OSError: disk gone" and progress["rows_done"] == 48


def test_no_layers_and_mixed_metadata_are_clear_errors_before_work(tmp_path):
    with pytest.raises(ValueError, match="no layers given; name some"):
        deepscope.analyze(TinyCNN(), image_data(10), layers=[], run=tmp_path, progress=False)
    with pytest.raises(TypeError, match="metadata column 'tag' cannot be stored"):
        deepscope.analyze(TinyCNN(), image_data(4), metadata={"tag": [1, "a", 2, "b"]}, run=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"metadata columns \['range'\] are words of subset filters"):
        deepscope.analyze(TinyCNN(), image_data(4), metadata={"range": [1, 2, 3, 4]}, run=tmp_path, progress=False)
    with pytest.raises(TypeError, match="metadata column 'grid' cannot be stored"):
        deepscope.analyze(TinyCNN(), image_data(4), metadata={"grid": np.zeros((4, 2))}, run=tmp_path, progress=False)
    with pytest.raises(TypeError, match="got one string"):  # not a column of its characters
        deepscope.analyze(TinyCNN(), image_data(4), metadata="abcd", run=tmp_path, progress=False)
    assert not (tmp_path / "artifacts").exists()
    r = deepscope.analyze(TinyCNN(), image_data(4), metadata={"t": torch.arange(4)}, run=tmp_path, progress=False)
    assert r.instances().column("t").to_pylist() == [0, 1, 2, 3]  # a tensor column is its values


def test_unknown_layer_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"no layer named 'fc9'.*valid layers: conv1, conv2, fc1, out"):
        deepscope.analyze(TinyCNN(), image_data(10), layers=["fc9"], run=tmp_path, progress=False)
    assert not (tmp_path / "artifacts").exists()  # nothing was written


def test_label_count_mismatch_fails_before_work(tmp_path):
    with pytest.raises(ValueError, match="9 labels for a dataset of 10 instances"):
        deepscope.analyze(TinyCNN(), image_data(10), labels=[0] * 9, run=tmp_path, progress=False)
    with pytest.raises(ValueError, match="11 metadata rows"):
        deepscope.analyze(TinyCNN(), image_data(10), metadata={"t": ["a"] * 11}, run=tmp_path, progress=False)
    with pytest.raises(ValueError, match="class names"):
        deepscope.analyze(
            TinyCNN(), image_data(10), labels=[5] * 10, class_names=list("abcd"), run=tmp_path, progress=False
        )
    assert not (tmp_path / "artifacts").exists()


def test_outputs_that_are_no_class_scores_give_no_predictions(tmp_path):
    """Class names or labels that do not fit the output width (an embedding model, a regressor, a padded head): one
    warning at the first batch, and no predictions, scores or accuracy — the activations all the same."""
    x = torch.randn(10, 1, 8, 8)  # TinyCNN: 4 outputs
    for k, (labels, names, why) in enumerate((([0] * 10, list("abc"), "3 class names"),
                                              (list(range(10)), None, "labels up to 9"))):  # fmt: skip
        with pytest.warns(RuntimeWarning, match=f"4 outputs are no scores of its classes \\({why}\\)"):
            deepscope.analyze(TinyCNN(), x, labels=labels, class_names=names, run=new_dir(tmp_path / str(k)),
                              progress=False)  # fmt: skip
        r = read(tmp_path / str(k))
        assert "prediction" not in r.instances().column_names and r.activations("fc1").shape == (10, 12)
    with pytest.raises(ValueError, match="instance 4 has label 4, but the model has 4 outputs"):
        data = torch.utils.data.TensorDataset(x, torch.arange(10) % 8)  # labels in the data: past 3 in batch 2
        deepscope.analyze(TinyCNN(), data, run=new_dir(tmp_path / "late"), batch_size=4, progress=False)


def test_an_embedding_wider_than_the_classes_is_flagged_and_scores_none_says_so(tmp_path):
    """Labels 0…1 and 4 outputs: taken as scores (a subset of a classifier's classes is ordinary), with a
    warning that names scores='none'; with scores='none', no predictions and no warning."""
    import warnings

    x = torch.randn(10, 1, 8, 8)  # TinyCNN: 4 outputs
    labels = [0, 1] * 5
    with pytest.warns(RuntimeWarning, match=r"4 outputs were taken as scores of classes.*scores='none'"):
        deepscope.analyze(TinyCNN(), x, labels=labels, run=new_dir(tmp_path / "a"), progress=False)
    assert "prediction" in read(tmp_path / "a").instances().column_names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deepscope.analyze(TinyCNN(), x, labels=labels, scores="none", run=new_dir(tmp_path / "b"), progress=False)
    table = read(tmp_path / "b").instances()
    assert "prediction" not in table.column_names and table.column("label").to_pylist() == labels
    with pytest.raises(ValueError, match="'softmax', 'raw' or 'none'"):
        deepscope.analyze(TinyCNN(), x, scores="logits", run=new_dir(tmp_path / "c"), progress=False)


def test_a_dataset_sorted_by_class_is_no_embedding(tmp_path):
    """The labels of the first batch (classes 0 and 1 of a dataset sorted by class) do not make a 10-way classifier
    look like an embedding: the width is judged against every label."""
    import warnings

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = torch.utils.data.TensorDataset(torch.randn(100, 1, 8, 8), torch.arange(100) // 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deepscope.analyze(model, data, batch_size=20, run=tmp_path, progress=False)
    assert "prediction" in read(tmp_path).instances().column_names


def test_unlabelled_instances(tmp_path):
    """-1 (or None) is an unlabelled instance, with class names too; all unlabelled is no labels at all."""
    x = torch.randn(6, 1, 8, 8)
    labels = [0, None, 3, -1, 2, 1]
    deepscope.analyze(
        TinyCNN(), x, labels=labels, class_names=list("abcd"), run=new_dir(tmp_path / "a"), progress=False
    )
    table = read(tmp_path / "a").instances()
    assert table.column("label").to_pylist() == [0, None, 3, None, 2, 1]
    assert table.column("correct").null_count == 2
    deepscope.analyze(TinyCNN(), x, labels=[-1] * 6, run=new_dir(tmp_path / "b"), progress=False)
    assert "label" not in read(tmp_path / "b").instances().column_names


def test_a_loader_over_part_of_the_dataset_counts_that_part(tmp_path):
    data = image_data(10)
    part = torch.utils.data.DataLoader(data, sampler=list(range(0, 10, 2)), batch_size=2)
    with pytest.raises(ValueError, match="10 labels for a dataset of 5 instances"):
        deepscope.analyze(TinyCNN(), part, labels=[0] * 10, run=tmp_path, progress=False)
    deepscope.analyze(TinyCNN(), part, labels=[0] * 5, run=tmp_path, progress=False)
    assert len(read(tmp_path)) == 5
    shuffled = torch.utils.data.DataLoader(data, sampler=torch.utils.data.SubsetRandomSampler(range(5)))
    with pytest.raises(ValueError, match="shuffles"):
        deepscope.analyze(TinyCNN(), shuffled, run=tmp_path, progress=False)


def test_nan_activations_are_an_error(tmp_path):
    x = torch.randn(40, 1, 8, 8)
    x[17, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer 'fc1' is NaN or infinite for instance 17;"):
        deepscope.analyze(TinyCNN(), x, layers=["fc1"], run=tmp_path, batch_size=8, progress=False)


@pytest.mark.parametrize("writer_thread", [False, True])
def test_nan_in_a_later_chunk_names_its_instance_and_keeps_the_chunks_before(tmp_path, monkeypatch, writer_thread):
    monkeypatch.setattr(extraction, "WRITER_THREAD", writer_thread)  # chunks in flight are on disk before the error
    x = torch.randn(60, 1, 8, 8)
    x[37, 0, 0, 0] = float("inf")
    cfg = ActivationsConfig(layers=("fc1",), batch_size=8, chunk_rows=16, progress=False)
    with pytest.raises(ValueError, match="layer 'fc1' is NaN or infinite for instance 37;"):
        Activations(cfg).run(tmp_path, TinyCNN(), x)
    progress = json.loads((tmp_path / "artifacts/activations/progress.json").read_text())
    assert progress["rows_done"] == 32  # the two whole chunks before it


def test_nan_in_a_batch_that_straddles_two_chunks_is_found_in_the_second(tmp_path):
    """Rows 12…23 are one batch, chunks hold 16: its NaN at row 20 is checked with the chunk that stores it."""
    x = torch.randn(48, 1, 8, 8)
    x[20, 0, 0, 0] = float("nan")
    cfg = ActivationsConfig(layers=("fc1",), batch_size=12, chunk_rows=16, progress=False)
    with pytest.raises(ValueError, match="layer 'fc1' is NaN or infinite for instance 20;"):
        Activations(cfg).run(tmp_path, TinyCNN(), x)


def test_nan_names_the_layer_or_the_models_outputs_and_counts_the_instances(tmp_path):
    """A Sequential's layer "1" is quoted as a layer; the scores are the model's outputs, not an array's name; every
    affected instance of the chunk is counted and the first few named."""
    x = torch.randn(40, 4)
    x[[3, 9, 10, 11, 20, 30, 31], 0] = float("nan")
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"layer '1' is NaN or infinite for 7 of the 40 instances 0–39 \(first: 3, 9, "
                                         r"10, 11, 20, …\); fix the model"):  # fmt: skip
        deepscope.analyze(model, x, layers=["1"], run=tmp_path, batch_size=8, progress=False)

    class Overflows(nn.Module):  # finite features, infinite logits where the first input is positive
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Linear(4, 3)

        def forward(self, x):
            return self.features(x) * torch.where(x[:, :1] > 0, float("inf"), 1.0)

    x = torch.randn(40, 4)
    x[:, 0] = -1.0
    x[[5, 17], 0] = 1.0
    with pytest.raises(ValueError, match=r"the model's outputs \(scores\) are NaN or infinite for 2 of the 40 "
                                         r"instances 0–39 \(first: 5, 17\)"):  # fmt: skip
        deepscope.analyze(Overflows(), x, layers=["features"], run=new_dir(tmp_path / "o"), progress=False)


def test_activations_whose_sum_overflows_are_finite_and_stored(tmp_path):
    """Values near float32's largest sum to infinity; every one is finite, so the analysis goes on."""
    big = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    nn.init.constant_(big[1].weight, 0.0)
    nn.init.constant_(big[1].bias, 3e38)
    Activations(ActivationsConfig(layers=("1",), batch_size=8, chunk_rows=16, progress=False)).run(
        tmp_path, big, torch.randn(40, 1, 8, 8)
    )
    assert np.all(read(tmp_path).matrix("1") == np.float32(3e38))


@pytest.mark.parametrize("classes", [2, 10, 33, 200])
def test_softmax_rows_matches_torch(classes):
    logits = torch.randn(300, classes) * 20
    got = logits.numpy().copy()
    softmax_rows(got)
    np.testing.assert_allclose(got, logits.softmax(1).numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("classes", [1, 2, 10, 33, 200])
def test_top_class_is_numpys_argmax_and_max(classes):
    scores = np.random.default_rng(classes).integers(0, 4, (500, classes)).astype(np.float32)  # ties
    scores[7, -1] = np.nan
    pred, top = top_class(scores)
    np.testing.assert_array_equal(pred, scores.argmax(1))
    np.testing.assert_array_equal(top, scores.max(1))
    assert pred.dtype == np.int64 and top.dtype == np.float32


def test_direct_io_refused_at_the_first_chunk_keeps_every_row_in_place(tmp_path, monkeypatch):
    """A file system that refuses O_DIRECT says so at the writer thread's first chunk; the rows of the chunks after
    it, in flight or not, still land where they belong."""
    import os

    from deepscope.analyses import chunk_files

    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(chunk_files, "_direct_ok", None)
    monkeypatch.setattr(chunk_files.os, "open", refusing)
    monkeypatch.setattr(extraction, "WRITER_THREAD", None)
    torch.manual_seed(0)
    model, data = TinyCNN(), image_data(600)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=64, progress=False)  # previews: 4 kB chunks
    Activations(cfg).run(tmp_path, model, data)
    assert not chunk_files.direct_io()  # it was tried, and refused
    seen, _ = manual(model, data.tensors[0], ["fc1"])
    np.testing.assert_allclose(read(tmp_path).matrix("fc1"), seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)


def test_the_last_partial_chunk_is_stored_whole_as_zarr_stores_it(tmp_path, monkeypatch):
    from deepscope.analyses import analysis_state

    written = []
    direct = analysis_state.write_chunk_file
    monkeypatch.setattr(analysis_state, "write_chunk_file", lambda path, v: (written.append(path), direct(path, v)))
    torch.manual_seed(0)
    model, data = TinyCNN(), image_data(40)
    cfg = ActivationsConfig(layers=("fc1",), batch_size=8, chunk_rows=16, progress=False)
    Activations(cfg).run(tmp_path, model, data)
    # every chunk of the layer by the direct writer, the last one (rows 32..39 of 40) too — not by zarr's own write
    assert sorted(p.name for p in written if "fc1.zarr" in str(p)) == ["c.0.0", "c.1.0", "c.2.0"]
    arr = zarr.open_array(str(tmp_path / "artifacts/activations/fc1.zarr"), mode="r")
    width = arr.shape[1]
    last = tmp_path / "artifacts/activations/fc1.zarr/c.2.0"  # chunk files side by side: no directory each
    assert last.stat().st_size == 16 * width * 4  # rows 32..47 of a 40-row array: padded, as zarr pads it
    seen, _ = manual(model, data.tensors[0], ["fc1"])
    np.testing.assert_allclose(arr[:], seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)


def test_a_dataset_whose_length_changes(tmp_path):
    class Shrinking(torch.utils.data.Dataset):
        def __init__(self):
            self.n = 50

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            if i >= self.n:
                raise IndexError(i)
            if i == 20:
                self.n = 30
            return torch.randn(1, 8, 8)

    with pytest.raises(ValueError, match="length changed from 50 to 30"):
        deepscope.analyze(TinyCNN(), Shrinking(), run=tmp_path, batch_size=8, progress=False)


def test_shuffling_loader_is_refused(tmp_path):
    loader = torch.utils.data.DataLoader(image_data(10), shuffle=True)
    with pytest.raises(ValueError, match="shuffle"):
        deepscope.analyze(TinyCNN(), loader, run=tmp_path, progress=False)


def test_no_hook_survives_an_exception(tmp_path):
    model = TinyCNN()
    with pytest.raises(KeyboardInterrupt):
        deepscope.analyze(model, FailingAt(image_data(40), 20), run=tmp_path, batch_size=8, progress=False)
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training


def test_a_layer_followed_by_an_in_place_op_keeps_its_own_output(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(inplace=True), torch.nn.Linear(8, 3))
    x = torch.randn(100, 4)
    r = deepscope.analyze(model, x, layers=["0"], run=tmp_path, batch_size=16, progress=False)
    with torch.no_grad():
        want = model[0](x).numpy()
    assert want.min() < 0  # what the in-place ReLU overwrites
    np.testing.assert_allclose(r.activations("0")[:], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("writer_thread", [False, True])
def test_batches_of_any_size_across_chunk_boundaries(tmp_path, monkeypatch, writer_thread):
    monkeypatch.setattr(extraction, "WRITER_THREAD", writer_thread)  # the thread writes when a GPU computes
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = image_data(300).tensors
    sizes = [7, 100, 1, 64, 90, 38]  # a batch bigger than a chunk, batches that straddle chunks
    edges = np.cumsum([0, *sizes])
    batches = [(x[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    # batch_size: the gathering arrays' room beyond a chunk (32 + 8 rows), which the 100-row batch outgrows
    cfg = ActivationsConfig(layers=("conv2", "fc1"), batch_size=8, chunk_rows=32, progress=False)
    Activations(cfg).run(tmp_path, model, batches)
    seen, out = manual(model, x, ["conv2", "fc1"])
    r = read(tmp_path)
    assert r.complete and len(r) == 300
    np.testing.assert_allclose(r.activations("conv2")[:], seen["conv2"].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.activations("fc1")[:], seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r.instances().column("label").to_numpy(), y.numpy())
    scores = r.scores(np.arange(len(r)))
    np.testing.assert_allclose(scores, out.softmax(1).numpy(), rtol=1e-5, atol=1e-6)


def test_empty_data_and_layer_names_that_cannot_name_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="the data has no instances"):
        deepscope.analyze(TinyCNN(), torch.zeros(0, 1, 8, 8), run=tmp_path, progress=False)
    with pytest.raises(ValueError, match="the data has no instances"):
        deepscope.analyze(TinyCNN(), iter([]), run=new_dir(tmp_path / "b"), progress=False)
    model = nn.Sequential()
    model.add_module("outputs/scores", nn.Linear(4, 3))  # a "/" in a module name: allowed by torch
    with pytest.raises(ValueError, match="'outputs/scores' cannot name their arrays' files"):
        deepscope.analyze(
            model, torch.zeros(8, 4), layers=["outputs/scores"], run=new_dir(tmp_path / "c"), progress=False
        )


def test_labels_in_the_batches_beyond_the_class_names_are_an_error(tmp_path):
    """Class names for 2 classes, batches labelled 0…3: the names would be mixed with numbers everywhere."""
    with pytest.raises(ValueError, match="instance 3 has label 3, but there are 2 class names"):
        deepscope.analyze(TinyCNN(), [(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 1, 3]))], class_names=["a", "b"],
                          run=tmp_path, progress=False)  # fmt: skip


def test_a_dataloader_that_drops_its_last_batch_says_how_many_instances_are_left_out(tmp_path):
    loader = torch.utils.data.DataLoader(image_data(20), batch_size=8, drop_last=True)
    with pytest.warns(RuntimeWarning, match="drop_last=True.*4 of 20 instances are left out"):
        r = deepscope.analyze(TinyCNN(), loader, layers=["fc1"], run=tmp_path, progress=False)
    assert len(r) == 16


def test_a_layer_called_twice_per_pass_records_its_last_call_and_says_so(tmp_path):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared, self.head = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.shared(torch.relu(self.shared(x))))

    torch.manual_seed(0)
    model, x = Twice(), torch.randn(10, 6)
    data = torch.utils.data.TensorDataset(x, torch.arange(10) % 3)
    with pytest.warns(UserWarning, match="'shared' is called more than once in a forward pass.*last call") as seen:
        r = deepscope.analyze(model, data, layers=["shared"], run=tmp_path, batch_size=4, progress=False)
    assert sum("more than once" in str(w.message) for w in seen) == 1  # once, not once per batch
    with torch.no_grad():
        last = model.shared(torch.relu(model.shared(x)))
    np.testing.assert_allclose(r.activations("shared"), last.numpy(), rtol=1e-6, atol=1e-6)


def test_default_layers_stand_a_container_for_its_children_and_never_write_outside_the_analysis(tmp_path):
    class Blocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 3)})  # never called itself

        def forward(self, x):
            return self.blocks["b"](torch.relu(self.blocks["a"](x)))

    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.arange(10) % 3)
    model = Blocks()
    model.spare, model.scales = nn.ModuleList(), nn.ParameterList([nn.Parameter(torch.ones(1))])  # never called
    r = deepscope.analyze(model, data, run=new_dir(tmp_path / "a"), progress=False)
    assert r.layers == ["blocks.a", "blocks.b"]
    escaping = nn.Sequential()
    escaping.add_module(str(tmp_path / "escaped"), nn.Linear(4, 3))  # add_module takes an absolute path as a name
    with pytest.raises(ValueError, match="cannot name their arrays' files.*outside the analysis"):
        deepscope.analyze(escaping, data, run=new_dir(tmp_path / "b"), progress=False)
    assert not list(tmp_path.glob("escaped*"))


def test_a_binary_classifier_with_one_logit_gets_scores_predictions_and_accuracy(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 1))
    x, y = torch.randn(50, 8), (torch.arange(50) % 2)
    r = deepscope.analyze(model, torch.utils.data.TensorDataset(x, y), layers=["1"], run=new_dir(tmp_path / "a"),
                          progress=False)  # fmt: skip
    with torch.no_grad():
        p = torch.sigmoid(model(x)).squeeze(1).numpy()
    np.testing.assert_allclose(r.scores(np.arange(50)), np.stack([1 - p, p], 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r.instances().column("prediction").to_numpy(), (p > 0.5).astype(np.int64))
    assert r.accuracy == pytest.approx(float(((p > 0.5) == y.numpy().astype(bool)).mean()))
    # a regressor's single output (targets beyond 0 and 1) is no class score
    r = deepscope.analyze(model, torch.utils.data.TensorDataset(x, torch.arange(50) % 5), layers=["1"],
                          run=new_dir(tmp_path / "b"), progress=False)  # fmt: skip
    assert r.accuracy is None


def test_bad_labels_and_full_maps_are_refused_before_any_work_with_what_to_pass(tmp_path):
    x = torch.randn(6, 1, 8, 8)
    with pytest.raises(ValueError, match="got strings \\(class names\\?\\).*class_names"):
        deepscope.analyze(TinyCNN(), x, labels=["cat", "dog"] * 3, run=tmp_path, progress=False)
    with pytest.raises(ValueError, match="label -3 of instance 2 is no class index"):
        deepscope.analyze(TinyCNN(), x, labels=[0, 1, -3, 0, 1, 0], run=tmp_path, progress=False)
    with pytest.raises(ValueError, match="full_maps is 'auto', False, a number.*not 'lots'"):
        deepscope.analyze(TinyCNN(), x, full_maps="lots", run=tmp_path, progress=False)
    assert not (tmp_path / "artifacts").exists()  # refused before anything was written


def test_a_tables_inputs_are_stored_as_given_and_images_or_tokens_are_not(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 13)
    model = nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
    r = deepscope.analyze(model, torch.utils.data.TensorDataset(x, torch.arange(40) % 3), layers=["1"],
                          run=new_dir(tmp_path / "table"), batch_size=16, progress=False)  # fmt: skip
    assert r.has_features
    np.testing.assert_array_equal(r.features(np.arange(40)), x.numpy())
    np.testing.assert_array_equal(r.features(7), x[7].numpy())
    images = deepscope.analyze(TinyCNN(), image_data(20), layers=["fc1"], run=new_dir(tmp_path / "img"), progress=False)
    assert not images.has_features and images.features(0) is None
    wide = deepscope.analyze(nn.Linear(65, 2), torch.randn(10, 65), run=new_dir(tmp_path / "wide"), progress=False)
    assert not wide.has_features  # more than 64 numbers an instance (an embedding, a flattened image): not stored


def test_the_layer_named_empty_is_the_model_itself_as_by_default_for_a_model_without_children(tmp_path):
    model = nn.Linear(6, 3)
    x = torch.randn(20, 6)
    r = deepscope.analyze(model, x, layers=[""], run=tmp_path, progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(r.activations("(model)")[:], model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert r.layers == ["(model)"]  # recorded under a name a file and a query can hold
    assert (r.dir / "(model).zarr").is_dir() and not (r.dir / ".zarr").exists()
    assert deepscope.analyze(model, x, run=new_dir(tmp_path / "default"), progress=False).layers == ["(model)"]
    with pytest.raises(ValueError, match=r"no layer named 'fc' in Linear; valid layers: none but the model, and '' "):
        deepscope.analyze(model, x, layers=["fc"], run=new_dir(tmp_path / "bad"), progress=False)
    with pytest.raises(ValueError, match=r"valid layers: conv1, conv2, fc1, out, and '' for the model itself"):
        deepscope.analyze(TinyCNN(), image_data(4), layers=["fc9"], run=new_dir(tmp_path / "cnn"), progress=False)


def test_a_pandas_series_is_one_metadata_column(tmp_path):
    pd = pytest.importorskip("pandas")
    tags = pd.Series(["a", "b", "a", "c"], name="tag")
    r = deepscope.analyze(TinyCNN(), image_data(4), metadata=tags, run=new_dir(tmp_path / "named"), progress=False)
    assert r.instances().column("tag").to_pylist() == ["a", "b", "a", "c"]
    r = deepscope.analyze(TinyCNN(), image_data(4), metadata=pd.Series([1.5, 2, 3, 4]), run=new_dir(tmp_path / "anon"),
                          progress=False)  # fmt: skip
    assert r.instances().column("value").to_pylist() == [1.5, 2, 3, 4]
    r = deepscope.analyze(TinyCNN(), image_data(4), metadata=pd.Series([1, 2, 3, 4], name=0),
                          run=new_dir(tmp_path / "zero"), progress=False)  # fmt: skip
    assert r.instances().column("0").to_pylist() == [1, 2, 3, 4]  # a name that is 0 is a name


def test_a_list_of_single_images_says_how_batches_are_read(tmp_path):
    images = [torch.rand(1, 8, 8) for _ in range(5)]  # single instances without labels: read as batches
    with pytest.raises(ValueError, match=r"rows for a batch of 1; the data is read as batches (.|\n)* \(torch.stack\)"):
        deepscope.analyze(TinyCNN(), images, layers=["conv1"], run=tmp_path, progress=False)
    r = deepscope.analyze(TinyCNN(), torch.stack(images), layers=["conv1"], run=new_dir(tmp_path / "b"), progress=False)
    assert len(r) == 5
