"""Every route over a real store, through the ASGI app; Arrow payloads checked against the readers and NumPy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from tests.server.helpers import STEPS

import deepscope
from deepscope.server.queries import ARROW_STREAM


def scalars(client, run_id, **params) -> pa.Table:
    r = client.get(f"/api/runs/{run_id}/scalars", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ARROW_STREAM
    return pa.ipc.open_stream(r.content).read_all()


def test_health(client, store):
    assert client.get("/api/health").json() == {"version": deepscope.__version__, "root": str(store.root)}


def test_runs_newest_first_with_summary_fields(client, store):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == [store.multi, store.main]
    main = runs[1]
    assert main["name"] == "main <b>run</b>"  # user strings travel as data, untouched
    assert main["status"] == "finished" and main["max_step"] == STEPS - 1
    assert main["config_flat"] == {"lr": 1e-3, "opt.name": "adam", "opt.betas": "[0.9, 0.999]", "bad": None}
    assert main["tags"] == ["t1"] and main["world_size"] == 1 and main["end_time"] >= main["start_time"]


def test_run_detail(client, store):
    detail = client.get(f"/api/runs/{store.main}").json()
    assert detail["config"] == {"lr": 1e-3, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "bad": None}
    assert detail["ranks"] == [0] and detail["exit_reason"] is None and detail["python_version"]
    assert client.get(f"/api/runs/{store.multi}").json()["ranks"] == [0, 1]


def test_keys_of_all_ranks_or_one(client, store):
    keys = client.get(f"/api/runs/{store.main}/keys").json()["keys"]
    assert [(k["key"], k["kind"], k["count"], k["last_step"]) for k in keys] == [
        ("lr", "scalar", STEPS, STEPS - 1),
        ("train/loss", "scalar", STEPS, STEPS - 1),
        ("weights/fc", "histogram", 3, 20),
    ]
    multi = client.get(f"/api/runs/{store.multi}/keys").json()["keys"]
    assert [(k["key"], k["rank"]) for k in multi] == [("x", 0), ("x", 1)]
    one = client.get(f"/api/runs/{store.multi}/keys", params={"rank": 1}).json()["keys"]
    assert [(k["key"], k["rank"]) for k in one] == [("x", 1)]


def test_scalars_full_fidelity_equals_logged_values(client, store):
    table = scalars(client, store.main, key="train/loss", buckets=10_000)
    assert table.schema.metadata == {b"key": b"train/loss", b"exact": b"true"}
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("step", "double"), ("wall_time", "double"), ("min", "double"), ("max", "double"),
        ("mean", "double"), ("last", "double"), ("count", "int32"), ("nonfinite", "int32"),
    ]  # fmt: skip
    np.testing.assert_array_equal(table["step"].to_numpy(), np.arange(STEPS, dtype=np.float64))
    np.testing.assert_array_equal(table["last"].to_numpy(), store.loss)  # NaN and ±Inf included
    finite = np.where(np.isfinite(store.loss), store.loss, np.nan)
    np.testing.assert_array_equal(table["min"].to_numpy(), finite)
    np.testing.assert_array_equal(table["nonfinite"].to_numpy(), (~np.isfinite(store.loss)).astype(np.int32))


def test_scalars_downsampled_match_the_reader_and_keep_extremes(client, store):
    table = scalars(client, store.main, key="train/loss", buckets=100)
    expected = deepscope.open(store.root).run(store.main).downsample("train/loss", buckets=100)
    assert table.schema.metadata[b"exact"] == b"false" and table.num_rows == len(expected) <= 100
    for name in ("step", "wall_time", "min", "max", "mean", "last", "count", "nonfinite"):
        np.testing.assert_array_equal(table[name].to_numpy(), getattr(expected, name), err_msg=name)
    finite = store.loss[np.isfinite(store.loss)]
    assert table["count"].to_numpy().sum() == STEPS and table["nonfinite"].to_numpy().sum() == 3
    assert np.nanmax(table["max"].to_numpy()) == finite.max()
    assert np.nanmin(table["min"].to_numpy()) == finite.min()


def test_scalars_step_range_and_rank(client, store):
    table = scalars(client, store.main, key="train/loss", start=1000, end=1009)
    np.testing.assert_array_equal(table["step"].to_numpy(), np.arange(1000, 1010))
    np.testing.assert_array_equal(table["last"].to_numpy(), store.loss[1000:1010])
    assert scalars(client, store.main, key="train/loss", start=STEPS + 10).num_rows == 0
    assert scalars(client, store.multi, key="x", rank=1)["last"].to_pylist() == [1.0, 2.0]


@pytest.mark.parametrize("params", [{}, {"key": ""}, {"key": "lr", "buckets": 0}, {"key": "lr", "buckets": 10_001}])
def test_scalars_bad_parameters_are_422(client, store, params):
    assert client.get(f"/api/runs/{store.main}/scalars", params=params).status_code == 422


def test_histograms(client, store):
    hs = client.get(f"/api/runs/{store.main}/histograms", params={"key": "weights/fc"}).json()["histograms"]
    assert [h["step"] for h in hs] == [0, 10, 20]
    assert all(len(h["edges"]) == len(h["counts"]) + 1 == 17 and sum(h["counts"]) == 1000 for h in hs)
    assert np.all(np.diff(hs[0]["edges"]) > 0)


def test_events(client, store):
    events = client.get(f"/api/runs/{store.main}/events").json()["events"]
    assert [(e["step"], e["kind"], e["severity"], e["text"], e["key"]) for e in events] == [
        (5, "note", "info", "hello <script>", None),
        (200, "alert", "warning", "loss spiked", "train/loss"),
    ]
    assert client.get(f"/api/runs/{store.main}/events", params={"rank": 1}).json() == {"events": []}


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/no-such-run",
        "/api/runs/no-such-run/keys",
        "/api/runs/no-such-run/events",
        "/api/runs/no-such-run/scalars?key=lr",
        "/api/runs/no-such-run/histograms?key=lr",
        "/api/runs/%2e%2e",
        "/api/runs/%2e%2e/keys",
        "/api/runs/%2E%2E%2F%2E%2E%2Fetc/events",
        "/api/runs/%2Fetc%2Fpasswd",
        "/api/runs/%2Fetc/keys",
        "/api/runs/.hidden",
        "/api/runs/a%00b/keys",
        "/api/nothing-here",
    ],
)
def test_unknown_and_malformed_ids_are_404(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_unknown_key_or_rank_is_404(client, store):
    assert client.get(f"/api/runs/{store.main}/scalars", params={"key": "nope"}).status_code == 404
    assert client.get(f"/api/runs/{store.main}/scalars", params={"key": "lr", "rank": 3}).status_code == 404
    assert client.get(f"/api/runs/{store.main}/histograms", params={"key": "train/loss"}).status_code == 404


def test_summary_is_each_scalars_last_value_and_finite_range(client, store):
    """The run detail's metric table: last value, minimum, maximum — against NumPy over the values logged (NaN and
    ±Inf among them: out of the range, counted apart)."""
    rows = {s["key"]: s for s in client.get(f"/api/runs/{store.main}/summary", params={"rank": 0}).json()["scalars"]}
    loss = rows["train/loss"]
    finite = store.loss[np.isfinite(store.loss)]
    assert (loss["count"], loss["last_step"], loss["rank"]) == (STEPS, STEPS - 1, 0)
    assert loss["min"] == finite.min() and loss["max"] == finite.max()
    assert loss["nonfinite"] == int((~np.isfinite(store.loss)).sum()) > 0
    assert loss["last"] == (float(store.loss[-1]) if np.isfinite(store.loss[-1]) else None)
    keys = {k["key"] for k in client.get(f"/api/runs/{store.main}/keys", params={"rank": 0}).json()["keys"]
            if k["kind"] == "scalar"}  # fmt: skip
    assert set(rows) == keys  # every scalar, no histogram
    assert client.get("/api/runs/nope/summary").status_code == 404
