"""A new analysis of a run that has one, lists of instances, labels that are not classes, and run paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.analyses.models import FailingAt, TinyCNN, image_data

import deepscope
from deepscope.analyses import read
from deepscope.analyses.activations import Activations, ActivationsConfig


def _forward(model, x):
    with torch.no_grad():
        return model(x).softmax(1).numpy()


def test_a_failed_new_analysis_keeps_the_finished_one(tmp_path):
    """The finished analysis stays readable while a new one fails, is interrupted and resumes beside it; the new
    one replaces it only when complete."""
    data = image_data(64)
    cfg = ActivationsConfig(layers=("fc1",), chunk_rows=16, progress=False)
    old, new = TinyCNN(), TinyCNN()
    Activations(cfg).run(tmp_path, old, data)
    want_old = _forward(old, data.tensors[0])

    class Broken(TinyCNN):
        def forward(self, x):  # noqa: D102
            raise RuntimeError("a bug in forward")

    with pytest.raises(RuntimeError, match="a bug in forward"):
        Activations(cfg).run(tmp_path, Broken(), data)
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path, new, FailingAt(data, 40))
    r = read(tmp_path)
    assert r.complete and len(r) == 64
    np.testing.assert_allclose(r.scores(np.arange(len(r))), want_old, rtol=1e-5)
    assert (tmp_path / "artifacts" / "activations.next" / "progress.json").exists()  # the interrupted one, resumable

    Activations(cfg).run(tmp_path, new, data)  # resumes beside the old one, then replaces it
    r = read(tmp_path)
    assert r.complete and len(r) == 64
    got = r.scores(np.arange(len(r)))
    np.testing.assert_allclose(got, _forward(new, data.tensors[0]), rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir() if p.name.startswith("activations")) == [
        "activations"
    ]


def test_data_of_unknown_length_stops_once_past_its_labels(tmp_path):
    x, _ = image_data(100).tensors
    seen = []

    def batches():
        for i in range(0, 100, 10):
            seen.append(i)
            yield x[i : i + 10]

    with pytest.raises(ValueError, match="more instances than the 30 labels"):
        deepscope.analyze(TinyCNN(), batches(), labels=np.zeros(30, int), run=tmp_path, progress=False)
    assert len(seen) == 4  # stopped at the first batch past the labels, not after all of them


def test_a_list_of_labelled_instances_is_batched(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(10, 6)
    tuples = list(zip(x, np.arange(10) % 3))  # NumPy integer labels
    dicts = [{"input": x[i], "label": torch.tensor(i % 3)} for i in range(10)]
    for k, data in enumerate([tuples, dicts]):
        run_dir = tmp_path / str(k)
        run_dir.mkdir()
        r = deepscope.analyze(model, data, layers=["1"], run=run_dir, batch_size=4, progress=False)
        assert r.instances().column("label").to_pylist() == [i % 3 for i in range(10)]
        np.testing.assert_allclose(r.activations("1")[:], model[:2](x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_labels_that_are_not_classes_are_refused(tmp_path):
    data = image_data(10)
    with pytest.raises(ValueError, match="integer class indices; got non-integer floats"):
        deepscope.analyze(TinyCNN(), data, labels=np.linspace(0, 3, 10), run=tmp_path, progress=False)
    r = deepscope.analyze(TinyCNN(), data, labels=np.arange(10.0) % 4, run=tmp_path, progress=False)  # whole floats
    assert r.instances().column("label").to_pylist() == [i % 4 for i in range(10)]


def test_a_run_directory_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory .*typo"):
        deepscope.analyze(TinyCNN(), image_data(10), run=tmp_path / "typo", progress=False)
    assert not (tmp_path / "typo").exists()


def test_groups_by_prediction_cover_every_class_and_duplicates_are_at_distance_0(tmp_path):
    """A class the model never predicts is a group of 0 instances (not missing); cosine distances are never < 0."""
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))  # always predicts class 0
    x = torch.randn(12, 6)
    x[1] = x[0]  # a duplicate
    r = deepscope.analyze(model, x, layers=["0"], run=tmp_path, progress=False, projection=False)
    agg = r.aggregate("0", by="prediction")
    assert agg.mean.shape == (3, 3) and agg.count.tolist() == [12, 0, 0]
    idx, dist = deepscope.analyses.read(tmp_path).neighbors("0", 0, k=3)
    assert (dist >= 0).all()


def test_a_crash_between_the_renames_is_recovered(tmp_path, monkeypatch):
    """``replace_dir`` renames the finished analysis away, then the new one into place: a crash between the two leaves
    no ``activations``; the next call puts the complete new one in place before anything else."""
    from deepscope.analyses import progress as resume

    data = image_data(32)
    cfg = ActivationsConfig(layers=("fc1",), progress=False)
    Activations(cfg).run(tmp_path, TinyCNN(), data)
    renames = []
    real = resume.os.rename

    def crash_on_second(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise KeyboardInterrupt("killed between the renames")
        real(src, dst)

    monkeypatch.setattr(resume.os, "rename", crash_on_second)
    new = TinyCNN()
    with pytest.raises(KeyboardInterrupt):
        Activations(cfg).run(tmp_path, new, data)
    monkeypatch.setattr(resume.os, "rename", real)
    assert not (tmp_path / "artifacts" / "activations").exists()
    resume.recover_swap(tmp_path / "artifacts" / "activations")
    r = read(tmp_path)
    got = r.scores(np.arange(len(r)))
    np.testing.assert_allclose(got, _forward(new, data.tensors[0]), rtol=1e-5)
    assert not (tmp_path / "artifacts" / "activations.old").exists()
    Activations(cfg).run(tmp_path, new, data)  # and a run after it works as usual
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir() if p.name.startswith("activations")) == [
        "activations"
    ]


def test_projections_of_an_earlier_analysis_are_not_shown(tmp_path):
    from deepscope.analyses.projection import compute_projection

    data = image_data(40)
    deepscope.analyze(TinyCNN(), data, layers=["fc1"], run=tmp_path, progress=False)
    assert read(tmp_path).projection("fc1", "pca") is not None
    deepscope.analyze(TinyCNN(), data, layers=["fc1"], run=tmp_path, progress=False, projection=False)
    r = read(tmp_path)
    assert r.projection("fc1", "pca") is None and r.projection_info("fc1") == {}  # other weights: stale
    compute_projection(tmp_path, "fc1", "pca")
    assert read(tmp_path).projection("fc1", "pca").shape == (40, 2)
