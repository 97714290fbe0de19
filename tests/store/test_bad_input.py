"""Bad input gets a clear error at the API boundary, naming what is wrong."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tests.conftest import reopen

import deepscope


@pytest.fixture
def run(root):
    r = deepscope.init(dir=root)
    yield r
    r.finish()


@pytest.mark.parametrize("value", ["0.5", None, [1.0], {"a": 1}, object()])
def test_a_value_that_is_no_number_is_left_out_with_one_warning_naming_the_key(run, root, value):
    """Inside a training loop a bad value must not end the training: it is skipped, the other keys are logged."""
    with pytest.warns(RuntimeWarning, match="'train/loss'.*not recorded") as seen:
        for step in range(3):
            run.log({"train/loss": value, "lr": 0.1}, step=step)
    assert len(seen) == 1 and seen[0].filename == __file__  # once per key, not per step; at the caller's line
    run.flush()
    r = reopen(root, run.id)
    assert [k.key for k in r.keys()] == ["lr"]
    np.testing.assert_array_equal(r.series("lr").step, [0, 1, 2])


def _unstorable_values():
    torch = pytest.importorskip("torch")
    values = [np.array(1 + 2j), np.complex64(1), 1 + 2j, torch.tensor(1 + 2j), 10**400, -(10**400),
              np.array(np.timedelta64(3, "s"))]  # fmt: skip
    if np.finfo(np.longdouble).max > np.finfo(np.float64).max:
        values.append(np.longdouble("1e400"))  # a long double beyond float64
    return values


@pytest.mark.parametrize("index", range(8))
def test_a_number_that_is_no_float64_is_left_out_with_one_warning_and_costs_no_other_value(run, root, index):
    """Complex numbers, ints beyond float64's range: the writer cannot store them — and one it tried to convert lost
    every value, histogram and event taken with it. log() leaves them out like any other bad value."""
    values = _unstorable_values()
    if index >= len(values):
        pytest.skip("no long double beyond float64 here")
    run.log({"loss": 0.5}, step=0)
    run.event("note", "kept", step=0)
    with pytest.warns(RuntimeWarning, match="'v'.*(complex|float64|real numbers).*not recorded") as seen:
        for step in range(1, 4):
            run.log({"v": values[index], "loss": 1.0 / step}, step=step)
    assert len(seen) == 1
    run.log({"v": 2.0}, step=4)  # the key itself is fine
    run.finish()
    r = reopen(root, run.id)
    assert r.series("loss").step.tolist() == [0, 1, 2, 3]
    assert r.series("v").step.tolist() == [4]
    assert [e.text for e in r.events()] == ["kept"]


def test_ints_within_float64_and_int_enums_are_numbers(run, root):
    import enum

    class Phase(enum.IntEnum):
        TRAIN = 2

    run.log({"n": 10**300, "big": 2**64, "phase": Phase.TRAIN}, step=0)
    run.finish()
    r = reopen(root, run.id)
    assert (r.series("n").value[0], r.series("big").value[0], r.series("phase").value[0]) == (1e300, 2.0**64, 2.0)


def test_module_level_log_warns_at_the_callers_line_too(run):
    with pytest.warns(RuntimeWarning, match="'bad'.*not recorded") as seen:
        deepscope.log({"bad": "x"}, step=0)
    with pytest.warns(RuntimeWarning, match="went backwards") as back:
        deepscope.log({"fine": 1.0}, step=5)
        deepscope.log({"fine": 2.0}, step=1)
    assert seen[0].filename == back[0].filename == __file__


def test_one_element_arrays_and_tensors_are_scalars_and_longer_ones_point_to_log_histogram(run, root):
    torch = pytest.importorskip("torch")
    run.log({"a": np.array([1.5]), "t": torch.tensor([[2.5]]), "n": np.float32(3)}, step=0)
    with pytest.warns(RuntimeWarning, match="log_histogram"):
        run.log({"x": np.ones(3), "a": 4.0}, step=1)
    with pytest.warns(RuntimeWarning, match="log_histogram"):
        run.log({"w": torch.ones(3)}, step=2)
    run.flush()
    r = reopen(root, run.id)
    np.testing.assert_array_equal(r.series("a").value, [1.5, 4.0])
    np.testing.assert_array_equal(r.series("t").value, [2.5])


@pytest.mark.parametrize(
    ("key", "match"),
    [("", "empty"), (" x", "whitespace"), ("a" * 300, "limit"), ("a\nb", "control"), ("a\x00", "control")],
)
def test_invalid_keys_are_left_out_with_a_warning(run, key, match):
    with pytest.warns(RuntimeWarning, match=match):
        run.log({key: 1.0, "ok": 2.0})


def test_non_string_key(run):
    with pytest.warns(RuntimeWarning, match="keys must be str"):
        run.log({1: 1.0})


def test_a_bad_step_keeps_the_values_at_the_next_step_with_one_warning(run, root):
    run.log({"x": 1.0}, step=3)
    with pytest.warns(RuntimeWarning, match=r"step must be an int.*logged at the next step \(4\)"):
        run.log({"x": 2.0}, step=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        run.log({"x": 3.0}, step=-1)
    run.log({"x": 4.0}, step=torch.tensor(9))  # a global_step kept as a tensor
    run.log({"x": 5.0}, step=np.array([10]))
    run.log({"x": 6.0}, step=torch.tensor(11, dtype=torch.int32))
    with pytest.raises(TypeError, match="step must be an int"):
        run.log_histogram("h", [1.0, 2.0], step=torch.tensor(1.5))
    run.finish()
    r = reopen(root, run.id)
    assert r.series("x").step.tolist() == [3, 4, 5, 9, 10, 11]
    assert r.series("x").value.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_log_after_finish_raises(run):
    run.finish()
    with pytest.raises(RuntimeError, match="finished"):
        run.log({"x": 1.0})
    with pytest.raises(RuntimeError, match="finished"):
        run.event("note", "late")


def test_not_a_dict_is_left_out_with_one_warning_and_the_loop_goes_on(run, root):
    with pytest.warns(RuntimeWarning, match=r"log\(\) takes a dict of key → number, got Tensor.*'loss': loss"):
        run.log(torch.tensor(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per kind of thing
        run.log(torch.tensor(0.4))
    with pytest.warns(RuntimeWarning, match="got list"):
        run.log([("x", 1.0)])
    run.log({"x": 1.0})
    run.finish()
    assert reopen(root, run.id).series("x").value.tolist() == [1.0]


def test_histogram_bad_input(run):
    with pytest.raises(ValueError, match="len\\(edges\\)"):
        run.log_histogram("h", counts=[1, 2], edges=[0, 1])
    with pytest.raises(ValueError, match="increasing"):
        run.log_histogram("h", counts=[1, 2], edges=[0, 2, 1])
    with pytest.raises(TypeError, match="values, or counts and edges"):
        run.log_histogram("h")
    with pytest.raises(TypeError, match="real numbers"):
        run.log_histogram("h", ["a", "b"])


def test_event_bad_severity(run):
    with pytest.raises(ValueError, match="severity"):
        run.event("note", "x", severity="fatal")


def test_init_bad_arguments(root):
    with pytest.raises(TypeError, match="config must be a dict"):
        deepscope.init(dir=root, config=[1, 2])
    with pytest.raises(ValueError, match="invalid run id"):
        deepscope.init(dir=root, id="../escape")
    with pytest.raises(ValueError, match="invalid run id"):
        deepscope.init(dir=root, id="run\n")  # a directory name ending in a newline
    with pytest.raises(ValueError, match="rank"):
        deepscope.init(dir=root, rank=3, world_size=2)


def test_existing_run_id_needs_resume(root):
    deepscope.init(dir=root, id="same").finish()
    with pytest.raises(FileExistsError, match="resume=True"):
        deepscope.init(dir=root, id="same")
    r = deepscope.init(dir=root, id="same", resume=True)
    r.log({"x": 1.0}, step=0)
    r.finish()
    assert deepscope.open(root).run("same").series("x").value.tolist() == [1.0]


def test_none_tags_and_notes_are_none_and_a_bad_run_json_hides_no_other_run(root, tmp_path):
    import json

    from fastapi.testclient import TestClient

    from deepscope.server.app import create_app

    deepscope.init(dir=root, id="a", tags=None, notes=None).finish()  # as W&B takes them
    info = deepscope.open(root).info("a")
    assert info.tags == () and info.notes == ""
    deepscope.init(dir=root, id="b").finish()
    meta = json.loads((root / "b" / "run.json").read_text())
    (root / "b" / "run.json").write_text(json.dumps({**meta, "notes": None, "tags": None}))  # by hand, or older
    deepscope.init(dir=root, id="c").finish()
    meta = json.loads((root / "c" / "run.json").read_text())
    (root / "c" / "run.json").write_text(json.dumps({**meta, "name": 5}))  # not a string: left out of the list
    with TestClient(create_app(root)) as client:
        runs = client.get("/api/runs", headers={"host": "127.0.0.1"}).json()["runs"]
    assert sorted(r["id"] for r in runs) == ["a", "b"]


def test_arrays_are_logged_by_value_not_by_reference(run, root):
    acc, zero_d = np.zeros(1), np.zeros(())
    for step in range(3):
        acc[0] = step + 0.5
        zero_d[()] = step
        run.log({"acc": acc, "n": zero_d}, step=step)  # the caller changes both in place afterwards
    run.flush()
    r = reopen(root, run.id)
    np.testing.assert_array_equal(r.series("acc").value, [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(r.series("n").value, [0, 1, 2])


def test_log_after_finish_says_how_to_add_to_the_run_and_that_way_works(root):
    run = deepscope.init(dir=root, name="done")
    run.log({"loss": 1.0}, step=0)
    run.finish()
    with pytest.raises(RuntimeError, match=r"finished; log\(\) after finish\(\).*resume=True") as caught:
        run.log({"test/acc": 0.9})
    assert "log_histogram() after" in str(pytest.raises(RuntimeError, run.log_histogram, "h", [1.0]).value)
    code = str(caught.value).split("resume it: ")[1]
    again = eval(code, {"deepscope": deepscope})  # the advice, as given
    again.log({"test/acc": 0.9})
    again.finish()
    r = reopen(root, run.id)
    assert r.series("test/acc").step.tolist() == [1] and r.series("loss").step.tolist() == [0]
