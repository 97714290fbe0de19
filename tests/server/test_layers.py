"""Training-internals routes over a run written by the real ``run.watch`` (two ranks, one slowed)."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.server.helpers import make_client
from torch import nn

import deepscope
from deepscope.server import create_app

STEPS = 12


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    root = tmp_path_factory.mktemp("watched")
    for rank in (0, 1):
        torch.manual_seed(rank)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with deepscope.init(id="w", dir=root, rank=rank, world_size=2) as run:
            run.watch(model, opt, histograms_every=5, print_findings=False)
            for step in range(STEPS):
                if rank == 1:
                    time.sleep(0.02)  # a slow data loader
                loss = model(torch.randn(32, 8)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log({"train/loss": loss}, step=step)
    with deepscope.init(id="plain", dir=root) as run:
        run.log({"x": 1.0}, step=0)
    with make_client(create_app(root)) as client:
        yield client, deepscope.open(root).run("w")


def arrow(resp) -> pa.RecordBatch:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.apache.arrow.stream"
    return pa.ipc.open_stream(resp.content).read_next_batch()


def test_layer_table(watched):
    client, reader = watched
    t = client.get("/api/runs/w/layers").json()
    assert [la["path"] for la in t["layers"]] == ["0", "1", "2", "3", "4"]
    assert [la["role"] for la in t["layers"]] == [None, "relu", None, "sigmoid", None]
    assert t["params"] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert (t["steps"], t["first_step"], t["last_step"]) == (STEPS, 0, STEPS - 1)
    assert t["step_unit"] == "optimizer step" and len(t["histogram_edges"]) == 259
    assert client.get("/api/runs/plain/layers").status_code == 404
    assert client.get("/api/runs/nope/layers").status_code == 404


def test_matrix_matches_the_reader(watched):
    client, reader = watched
    b = arrow(client.get("/api/runs/w/layerstats/matrix", params={"kind": "act", "stat": "mean"}))
    want = reader.layer_matrix("act", "mean")
    meta = {k.decode(): v.decode() for k, v in b.schema.metadata.items()}
    assert meta["kind"] == "act" and meta["stat"] == "mean" and meta["exact"] == "true"
    assert json.loads(meta["steps"]) == list(range(STEPS))
    assert b.column("name").to_pylist() == want.names
    got = np.array(b.column("values").to_pylist(), dtype=np.float64)
    np.testing.assert_allclose(got, want.values, rtol=1e-6)
    assert b.column("nonfinite").null_count == len(want.names)  # a healthy run: no layer with NaN/Inf
    coarse = arrow(client.get("/api/runs/w/layerstats/matrix", params={"stat": "max", "buckets": 3}))
    assert len(json.loads(coarse.schema.metadata[b"steps"])) == 3
    assert client.get("/api/runs/w/layerstats/matrix", params={"stat": "bogus"}).status_code == 422
    assert client.get("/api/runs/plain/layerstats/matrix").status_code == 404
    # a range past the last step (a stale zoom in a link): no bucket, every layer's lists empty
    empty = arrow(client.get("/api/runs/w/layerstats/matrix", params={"start": STEPS + 100}))
    assert json.loads(empty.schema.metadata[b"steps"]) == [] and empty.num_rows == len(want.names)
    assert empty.column("nonfinite").null_count == len(want.names)


def test_profile_and_series(watched):
    client, reader = watched
    p = client.get("/api/runs/w/layerstats/profile", params={"kind": "param_grad", "stat": "norm", "step": 5}).json()
    assert p["step"] == 5 and p["names"][0] == "0.weight"
    _, _, want = reader.layer_profile("param_grad", "norm", 5)
    np.testing.assert_allclose(p["values"], want, rtol=1e-6)
    s = arrow(client.get("/api/runs/w/layerstats/series", params={"layer": "3", "kind": "act", "stat": "sat_frac"}))
    assert s.column("step").to_pylist() == list(range(STEPS))
    np.testing.assert_allclose(s.column("last").to_numpy(), reader.layer_series("3", "act", "sat_frac").last)
    assert client.get("/api/runs/w/layerstats/series", params={"layer": "nope"}).status_code == 404


def test_total_norm_over_steps(watched):
    """The global gradient norm at each step: √(Σ ‖∇p‖²) of the profile's per-parameter norms at that step."""
    client, reader = watched
    s = arrow(client.get("/api/runs/w/layerstats/total", params={"kind": "param_grad"}))
    assert s.column("step").to_pylist() == list(range(STEPS))
    for step in (0, 5, STEPS - 1):
        _, _, norms = reader.layer_profile("param_grad", "norm", step)
        np.testing.assert_allclose(s.column("last")[step].as_py(), np.sqrt(np.sum(norms.astype(np.float64) ** 2)))
    rank1 = arrow(client.get("/api/runs/w/layerstats/total", params={"rank": 1, "buckets": 4}))
    assert rank1.num_rows <= 4 and rank1.column("step")[rank1.num_rows - 1].as_py() == STEPS - 1
    assert client.get("/api/runs/w/layerstats/total", params={"kind": "act"}).status_code == 422
    assert client.get("/api/runs/plain/layerstats/total").status_code == 404


def test_rank_report_flags_the_slow_rank(watched):
    client, _ = watched
    r = client.get("/api/runs/w/ranks").json()
    by_rank = {row["rank"]: row for row in r["ranks"]}
    assert by_rank[1]["straggler"] and not by_rank[0]["straggler"]
    assert by_rank[1]["data_time"] > by_rank[0]["data_time"]
    assert r["divergence_steps"] == list(range(STEPS)) and len(r["divergence"]) == STEPS


def test_watch_histograms_are_served_with_their_recorded_bins(watched):
    client, reader = watched
    h = client.get("/api/runs/w/histograms", params={"key": "watch/act/1"}).json()["histograms"]
    assert [x["step"] for x in h] == [0, 1, 2, 5, 10]  # every 5th step, and 1, 2 before the first
    assert len(h[0]["edges"]) == 259 and sum(h[0]["counts"]) > 0


def test_matrix_counts_steps_that_were_not_finite(tmp_path):
    """A NaN input at step 6 makes every weight NaN from step 7 on: the weights' update ratios there have no finite
    value and count as not finite; the steps before, and a healthy run's layers, count none."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with deepscope.init(id="nan", dir=tmp_path) as run:
        run.watch(model, opt, print_findings=False)
        for step in range(STEPS):
            x = torch.randn(4, 8)
            if step == 6:
                x[0, 0] = float("nan")
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    with make_client(create_app(tmp_path)) as client:
        b = arrow(client.get("/api/runs/nan/layerstats/matrix", params={"kind": "weight", "stat": "update_ratio"}))
    want = deepscope.open(tmp_path).run("nan").layer_matrix("weight", "update_ratio")
    got = np.array([row or [0] * len(want.step) for row in b.column("nonfinite").to_pylist()])
    np.testing.assert_array_equal(got, want.nonfinite)
    weight = b.column("name").to_pylist().index("0.weight")
    assert (got[weight, 7:] == 1).all() and not got[weight, :6].any()
    assert np.isnan(np.array(b.column("values")[weight].as_py()[7:], dtype=float)).all()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda m: {k: v for k, v in m.items() if k != "sample"}, "sample: Field required"),
        (lambda m: m | {"layers": [{"index": 0, "type": "Linear"}]}, "layers.0.path: Field required"),
        (lambda m: m | {"params": "0.weight"}, "params: Input should be a valid list"),
        (lambda m: m | {"layers": [["0", "Linear"]]}, "layers.0: Input should be a valid dictionary"),
        (lambda m: m | {"every": "often"}, "every: Input should be a valid integer"),
        (lambda m: [m], "not a JSON object"),
    ],
)
def test_a_damaged_watch_manifest_is_404_with_the_field(watched, tmp_path, damage, reason):
    """A watch.json written by hand or by another program: the layer table says what is wrong with it (not a 500)."""
    with deepscope.init(id="odd", dir=tmp_path) as run:
        run.log({"x": 1.0}, step=0)
    manifest = json.loads((watched[1].dir / "streams" / "0" / "watch.json").read_text())
    (tmp_path / "odd" / "streams" / "0" / "watch.json").write_text(json.dumps(damage(manifest)))
    with make_client(create_app(tmp_path)) as client:
        r = client.get("/api/runs/odd/layers")
        matrix = client.get("/api/runs/odd/layerstats/matrix")
    assert r.status_code == 404 and r.json()["detail"].startswith(
        f"run 'odd': unreadable watch.json on rank 0: {reason}"
    )
    assert matrix.status_code == 404  # a run without layer statistics, whatever its watch.json holds
