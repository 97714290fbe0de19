"""``deepscope.analyze`` after training, with no ``deepscope.init()`` active: a run of its own, finished when the
analysis ends — and none left behind by an analysis that fails before any row is kept. Unknown keywords are a
``TypeError``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.analyses.models import FailingAt, TinyCNN, image_data
from tests.conftest import new_dir

import deepscope
from deepscope.run import current


def quiet(**kw):
    return {"progress": False, "full_maps": False, "projection": False, **kw}


def expected_fc1(model, data) -> np.ndarray:
    x = data.tensors[0]
    with torch.no_grad():
        h = torch.relu(model.conv2(torch.relu(model.conv1(x)))).mean((2, 3))
        return model.fc1(h).numpy()


def test_without_an_active_run_analyze_starts_and_finishes_one_of_its_own(root, capsys):
    model, data = TinyCNN().eval(), image_data(64)
    assert current() is None
    r = deepscope.analyze(model, data, layers=["fc1"], dir=root, **quiet())
    (info,) = deepscope.open(root).runs()
    assert r.run_id == info.id and r.run_dir == root / info.id
    assert info.status == "finished" and info.project == "analyze" and info.name == "TinyCNN"
    assert info.config["command"] == "deepscope.analyze"
    assert current() is None  # nothing left active for deepscope.log to write into
    err = capsys.readouterr().err
    assert f"new run {info.id!r}" in err and f"deepscope serve {root}" in err
    np.testing.assert_allclose(r.matrix("fc1"), expected_fc1(model, data), rtol=1e-5, atol=1e-6)


def test_the_new_runs_project_and_name_and_the_default_runs_directory(root, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_DIR", str(root))
    r = deepscope.analyze(TinyCNN(), image_data(32), project="eval", name="ckpt-3", **quiet())
    (info,) = deepscope.open(root).runs()
    assert (info.project, info.name, r.run_id) == ("eval", "ckpt-3", info.id)


@pytest.mark.parametrize(
    ("keyword", "message"),
    [
        ({"epochs": 3}, r"unexpected keyword argument 'epochs'; it takes layers, "),
        ({"batchsize": 8}, r"'batchsize' \(did you mean 'batch_size'\?\)"),
        ({"directory": "x", "runs": 1}, r"arguments 'directory' \(did you mean 'dir'\?\), 'runs' \(did you mean 'run'"),
    ],
)
def test_an_unknown_keyword_is_a_type_error_naming_it(root, keyword, message):
    with pytest.raises(TypeError, match=message):
        deepscope.analyze(TinyCNN(), image_data(32), dir=root, **keyword)
    with deepscope.init(dir=root) as run, pytest.raises(TypeError, match=message):  # with a run active, alike
        deepscope.analyze(TinyCNN(), image_data(32), **keyword)
    assert [i.id for i in deepscope.open(root).runs()] == [run.id]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"layers": ["fc9"]}, ValueError, "fc9"),
        ({"labels": np.zeros(5, np.int64)}, ValueError, "5 labels for a dataset of 32 instances"),
        ({"scores": "logits"}, ValueError, "scores must be"),
        ({"output": "logits"}, ValueError, "output='logits' names none of the model's outputs"),  # at the first batch
    ],
)
def test_an_analysis_refused_before_any_row_leaves_no_run_of_its_own(root, arguments, error, message):
    with pytest.raises(error, match=message):
        deepscope.analyze(TinyCNN(), image_data(32), dir=root, **quiet(**arguments))
    assert not deepscope.open(root).runs() and not list(root.iterdir())


def test_an_interrupted_analysis_keeps_its_run_and_resumes_into_it(root):
    model, base = TinyCNN().eval(), image_data(96)
    data = FailingAt(base, 40)
    with pytest.raises(KeyboardInterrupt) as caught:
        deepscope.analyze(model, data, layers=["fc1"], dir=root, batch_size=16, **quiet())
    (info,) = deepscope.open(root).runs()
    assert info.status == "finished" and "interrupted" in info.exit_reason
    run_dir = root / info.id
    assert any(f"run={str(run_dir)!r}" in note for note in caught.value.__notes__)
    assert not any("again the same way" in note for note in caught.value.__notes__)  # that would start another run
    data.armed = False
    r = deepscope.analyze(model, data, layers=["fc1"], run=str(run_dir), batch_size=16, **quiet())
    assert len(r) == 96 and [i.id for i in deepscope.open(root).runs()] == [info.id]
    np.testing.assert_allclose(r.matrix("fc1"), expected_fc1(model, base), rtol=1e-5, atol=1e-6)


def test_a_model_that_fails_at_its_first_batch_leaves_no_run_of_its_own(root):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 3))  # does not fit the data
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        deepscope.analyze(model, image_data(32), dir=root, **quiet())
    assert not deepscope.open(root).runs()


def test_a_new_runs_arguments_beside_a_run_to_add_to_are_refused(root, tmp_path):
    with pytest.raises(ValueError, match="run= is the run to add the analysis to, project= and name= are for a new"):
        deepscope.analyze(TinyCNN(), image_data(32), run=new_dir(tmp_path / "r"), name="x", **quiet())
    with deepscope.init(dir=root) as run:
        with pytest.raises(ValueError, match=f"run {run.id!r} is active, and the analysis goes into it"):
            deepscope.analyze(TinyCNN(), image_data(32), project="eval", **quiet())
        r = deepscope.analyze(TinyCNN(), image_data(32), **quiet())  # into the active run, as before
    assert r.run_id == run.id and len(deepscope.open(root).runs()) == 1


def test_a_runs_id_is_looked_up_in_dir(root):
    with deepscope.init(dir=root) as run:
        pass
    r = deepscope.analyze(TinyCNN(), image_data(32), run=run.id, dir=root, **quiet())
    assert r.run_dir == root / run.id
    with pytest.raises(FileNotFoundError, match="nor a run of that id in"):
        deepscope.analyze(TinyCNN(), image_data(32), run="nope", dir=root, **quiet())


def test_feature_maps_of_a_run_analyze_started_are_asked_for_by_its_id(root):
    model, data = TinyCNN().eval(), image_data(32)
    r = deepscope.analyze(model, data, layers=["conv2"], dir=root, batch_size=16, **quiet())
    with pytest.raises(RuntimeError, match="which analysed run\\? Pass run="):
        deepscope.feature_maps(model, data, layer="conv2", indices=[3])
    maps = deepscope.feature_maps(model, data, run=r.run_id, dir=root, layer="conv2", indices=[3])
    with torch.no_grad():
        want = model.conv2(torch.relu(model.conv1(data[3][0][None])))  # the hooked module's output: before the relu
    np.testing.assert_allclose(maps["conv2"][0], want[0].numpy(), rtol=1e-5, atol=1e-6)
