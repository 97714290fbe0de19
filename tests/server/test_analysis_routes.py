"""``/api/runs/{run}/analysis…``: the routes over ``deepscope.analyze`` results, checked against NumPy."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.server.helpers import make_client

import deepscope
from deepscope.analyses import read
from deepscope.server import create_app

N = 240
ODD = '<img src=x onerror="alert(1)">'
SITE = [None if i % 5 == 0 else ("north" if i % 3 else "south") for i in range(N)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3)
    )


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis-runs")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (N,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    note = [ODD if i % 7 == 0 else f"item {i}" for i in range(N)]
    with deepscope.init(project="p", name="analysed", dir=root) as run:
        run.log({"loss": 1.0}, step=0)
        deepscope.analyze(_model(), data, run=run, layers=["0", "3"], labels=y, class_names=["a", "b", ODD],
                          metadata={"note": note, "even": [i % 2 == 0 for i in range(N)], "site": SITE},
                          progress=False)  # fmt: skip
        run_id, run_dir = run.id, run.dir
    with deepscope.init(project="p", name="plain", dir=root) as run:
        run.log({"loss": 1.0}, step=0)
        plain = run.id
    return root, run_id, run_dir, plain


@pytest.fixture(scope="module")
def client(analysed):
    with make_client(create_app(analysed[0])) as c:
        yield c


def _url(analysed, tail: str = "") -> str:
    return f"/api/runs/{analysed[1]}/analysis{tail}"


def test_summary(client, analysed):
    r = client.get(_url(analysed))
    assert r.status_code == 200
    s = r.json()
    assert s["rows"] == N and s["complete"] and s["has_labels"] and s["has_scores"]
    assert [(layer["name"], layer["width"]) for layer in s["layers"]] == [("0", 4), ("3", 3)]
    pca = {p["method"]: p["state"] for p in s["layers"][0]["projections"]}
    assert pca["pca"] == "ready" and pca["umap"] == "missing"
    assert s["class_names"] == ["a", "b", ODD]
    cols = {c["name"]: c["kind"] for c in s["columns"]}
    assert cols["note"] == "string" and cols["even"] == "bool" and cols["label"] == "int"
    distinct = {c["name"]: c["distinct"] for c in s["columns"]}  # what rows per value would make of each
    assert distinct["note"] == N - len(range(0, N, 7)) + 1 and distinct["even"] == 2 and distinct["site"] == 2
    assert distinct["label"] == 3 and distinct["score"] is None
    table = read(analysed[2]).instances()
    acc = np.mean(table.column("correct").to_numpy())
    assert s["accuracy"] == pytest.approx(acc)
    assert s["input_kind"] == "image" and s["has_images"]


def test_no_analysis_is_404(client, analysed):
    r = client.get(f"/api/runs/{analysed[3]}/analysis")
    assert r.status_code == 404 and "deepscope.analyze" in r.json()["detail"]
    assert client.get("/api/runs/../analysis").status_code == 404
    assert client.get("/api/runs/nope/analysis").status_code == 404


def test_instances_arrow(client, analysed):
    r = client.get(_url(analysed, "/instances"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    got = pa.ipc.open_stream(r.content).read_all()
    want = read(analysed[2]).instances()
    assert got.column_names == ["label", "prediction", "correct", "score"]  # the row number is the index
    for c in got.column_names:
        assert got.column(c).to_pylist() == want.column(c).to_pylist()
    assert got.schema.field("label").type == pa.int8() and got.schema.field("prediction").type == pa.int8()
    r = client.get(_url(analysed, "/instances"), params={"columns": ["index", "note"]})
    assert pa.ipc.open_stream(r.content).read_all().column("note").to_pylist()[0] == ODD
    assert client.get(_url(analysed, "/instances"), params={"columns": ["nope"]}).status_code == 404
    r = client.get(_url(analysed, "/instances"), params={"columns": ["note", "label", "note", "label"]})  # once each
    assert r.status_code == 200 and pa.ipc.open_stream(r.content).read_all().column_names == ["note", "label"]


def test_instance_detail(client, analysed):
    table = read(analysed[2]).instances()
    d = client.get(_url(analysed, "/instances/7")).json()
    scores = read(analysed[2]).scores(7)
    assert [s["index"] for s in d["scores"]] == np.argsort(-scores, kind="stable").tolist()
    assert d["scores"][0]["score"] == pytest.approx(scores.max())
    assert d["label"] == table.column("label")[7].as_py()
    assert d["fields"] == {"note": ODD, "even": False, "site": "north"}  # a user string travels as data, unchanged
    img = d["image"]
    assert (img["height"], img["width"], img["channels"]) == (8, 8, 1)
    pixels = np.frombuffer(base64.b64decode(img["data"]), np.uint8).reshape(8, 8, 1)
    assert np.array_equal(pixels, read(analysed[2]).image(7))
    assert client.get(_url(analysed, f"/instances/{N}")).status_code == 404


def _mask(packed: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8), count=N, bitorder="little").astype(bool)


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()


def test_subset_filters_and_masks(client, analysed):
    table = read(analysed[2]).instances()
    label = table.column("label").to_numpy()
    pred = table.column("prediction").to_numpy()
    r = client.post(_url(analysed, "/subset"), json={"where": {"label": 2, "predicted": [0, 1]}})
    assert r.status_code == 200
    want = (label == 2) & np.isin(pred, [0, 1])
    assert r.json()["count"] == want.sum() and np.array_equal(_mask(r.json()["mask"]), want)
    lasso = np.arange(N) < 50
    r = client.post(_url(analysed, "/subset"), json={"where": {"text_contains": "onerror"}, "mask": _pack(lasso)})
    assert r.json()["count"] == sum(1 for i in range(50) if i % 7 == 0)
    assert client.post(_url(analysed, "/subset"), json={"where": {"nope": 1}}).status_code == 400
    odd = [{"index": [10**20]}, {"index": [-1]}, {"index": [1.5]}, {"label": 10**30},
           {"range": {"label": [0, 10**400]}}, {"contains": {"label": "1"}}, {"contains": ["note"]}]  # fmt: skip
    for where in odd:  # each a 400 that names the filter (an OverflowError or an Arrow error was a 500)
        r = client.post(_url(analysed, "/subset"), json={"where": where})
        assert r.status_code == 400 and any(k in r.json()["detail"] for k in ("index", "label", "contains")), where
    # a lasso: a polygon on a stored projection, the instances inside it
    xy = read(analysed[2]).projection("3", "pca")[:, :2].astype(np.float64)
    (x0, y0), (x1, y1) = np.percentile(xy, 20, axis=0), np.percentile(xy, 70, axis=0)
    square = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    r = client.post(
        _url(analysed, "/subset"), json={"where": {"lasso": {"layer": "3", "method": "pca", "polygon": square}}}
    )
    want = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
    assert r.status_code == 200 and want.sum() > 5 and np.array_equal(_mask(r.json()["mask"]), want)
    bad = {"lasso": {"layer": "3", "method": "tsne", "polygon": square}}
    r = client.post(_url(analysed, "/subset"), json={"where": bad})
    assert r.status_code == 400 and "not computed" in r.json()["detail"]
    assert client.post(_url(analysed, "/subset"), json={"mask": "AAAA"}).status_code == 400
    assert client.post(_url(analysed, "/subset"), json={"mask": "not base64!"}).status_code == 400


def test_matrix_rows_match_numpy(client, analysed):
    reader = read(analysed[2])
    x = reader.matrix("0")
    label = reader.instances().column("label").to_numpy()
    pred = reader.instances().column("prediction").to_numpy()
    wrong = (label == 1) & (pred != 1)
    body = {"layer": "0", "subsets": [{"name": "b, wrong", "where": {"label": 1, "correct": False}},
                                       {"name": "empty", "where": {"index": [0]}, "mask": _pack(np.zeros(N, bool))}],
            "pinned": [3, 9]}  # fmt: skip
    r = client.post(_url(analysed, "/matrix"), json=body)
    assert r.status_code == 200
    m = r.json()
    assert m["neurons"] == 4
    rows = {row["name"]: row for row in m["rows"]}
    assert [row["kind"] for row in m["rows"]] == ["class"] * 3 + ["subset"] * 2 + ["instance"] * 2
    for c, name in enumerate(["a", "b", ODD]):
        np.testing.assert_allclose(rows[name]["mean"], x[label == c].mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rows[name]["std"], x[label == c].std(0), rtol=1e-3, atol=1e-5)
        assert rows[name]["count"] == (label == c).sum()
    np.testing.assert_allclose(rows["b, wrong"]["mean"], x[wrong].mean(0), rtol=1e-4, atol=1e-6)
    assert rows["empty"]["count"] == 0 and rows["empty"]["mean"] == [None] * 4
    np.testing.assert_allclose(rows["#9"]["mean"], x[9], rtol=1e-6)
    r = client.post(_url(analysed, "/matrix"), json={"layer": "3", "group_by": "prediction"})
    assert [row["count"] for row in r.json()["rows"]] == np.bincount(pred, minlength=3).tolist()
    assert client.post(_url(analysed, "/matrix"), json={"layer": "nope"}).status_code == 404
    assert client.post(_url(analysed, "/matrix"), json={"layer": "0", "pinned": [N]}).status_code == 404


def test_matrix_subsets_are_at_most_64(client, analysed):
    """Each subset is a pass over the layer under the run's lock: a 1 MiB body held 20,000 of them (20 minutes)."""
    one = {"name": "n", "where": {"label": 1}}
    r = client.post(_url(analysed, "/matrix"), json={"layer": "0", "group_by": None, "subsets": [one] * 64})
    assert r.status_code == 200 and len(r.json()["rows"]) == 64
    r = client.post(_url(analysed, "/matrix"), json={"layer": "0", "group_by": None, "subsets": [one] * 65})
    assert r.status_code == 422 and "at most 64" in r.json()["detail"][0]["msg"]


def test_matrix_rows_per_value_of_a_metadata_column_match_numpy(client, analysed):
    """``group_by: "column:<name>"``: a row per value, most frequent first (ties by value), then the other values
    together beyond the 24 most frequent, then missing values — each the mean and std of its rows."""
    x = read(analysed[2]).matrix("0")
    site = np.array(SITE, dtype=object)
    m = client.post(_url(analysed, "/matrix"), json={"layer": "0", "group_by": "column:site", "pinned": [4]}).json()
    assert [(r["kind"], r["name"], r["index"]) for r in m["rows"]] == [
        ("value", "north", 0), ("value", "south", 1), ("value", "missing", None), ("instance", "#4", None)]  # fmt: skip
    for row, rows in zip(m["rows"], [site == "north", site == "south", site == None]):  # noqa: E711
        assert row["count"] == rows.sum()
        np.testing.assert_allclose(row["mean"], x[rows].mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(row["std"], x[rows].std(0), rtol=1e-3, atol=1e-5)
    even = client.post(_url(analysed, "/matrix"), json={"layer": "0", "group_by": "column:even"}).json()["rows"]
    assert [(r["name"], r["count"]) for r in even] == [("false", N // 2), ("true", N // 2)]  # a tie: by value
    note = client.post(_url(analysed, "/matrix"), json={"layer": "0", "group_by": "column:note"}).json()["rows"]
    assert len(note) == 25 and note[0]["name"] == ODD and note[0]["count"] == len(range(0, N, 7))
    assert note[-1]["name"] == f"{N - len(range(0, N, 7)) - 23} other values" and note[-1]["index"] is None
    assert sum(r["count"] for r in note) == N
    for bad in ("column:nope", "column:label", "weather"):
        r = client.post(_url(analysed, "/matrix"), json={"layer": "0", "group_by": bad})
        assert r.status_code == 400, bad


def test_top_and_neighbors_match_numpy(client, analysed):
    x = read(analysed[2]).matrix("0")
    r = client.get(_url(analysed, "/top"), params={"layer": "0", "neuron": 2, "k": 5}).json()
    assert r["indices"] == np.argsort(-x[:, 2], kind="stable")[:5].tolist()
    np.testing.assert_allclose(r["values"], np.sort(x[:, 2])[::-1][:5], rtol=1e-6)
    assert client.get(_url(analysed, "/top"), params={"layer": "0", "neuron": 4}).status_code == 404
    r = client.get(_url(analysed, "/neighbors"), params={"layer": "0", "index": 11, "k": 4, "metric": "euclidean"})
    d = np.linalg.norm(x - x[11], axis=1)
    d[11] = np.inf
    assert r.json()["indices"] == np.argsort(d, kind="stable")[:4].tolist()
    np.testing.assert_allclose(r.json()["values"], np.sort(d)[:4], rtol=1e-4, atol=1e-5)
    assert client.get(_url(analysed, "/neighbors"), params={"layer": "0", "index": N}).status_code == 404
    assert client.get(_url(analysed, "/neighbors"), params={"layer": "0", "index": 1, "metric": "x"}).status_code == 422


def test_projection_binary(client, analysed):
    r = client.get(_url(analysed, "/projection"), params={"layer": "3", "method": "pca"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    xy = np.frombuffer(r.content, "<f4").reshape(-1, 2)
    np.testing.assert_array_equal(xy, read(analysed[2]).projection("3", "pca")[:, :2])
    assert client.get(_url(analysed, "/projection"), params={"layer": "3", "method": "umap"}).status_code == 404


def test_background_projection(client, analysed):
    r = client.post(_url(analysed, "/projection"), params={"layer": "3", "method": "umap"})
    assert r.status_code == 200 and r.json()["state"] in ("running", "ready")
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        layer = client.get(_url(analysed)).json()["layers"][1]
        state = {p["method"]: p for p in layer["projections"]}["umap"]
        if state["state"] != "running":
            break
        time.sleep(0.2)
    assert state is not None and state["state"] == "ready", state
    xy = np.frombuffer(
        client.get(_url(analysed, "/projection"), params={"layer": "3", "method": "umap"}).content, "<f4"
    )
    assert xy.shape == (2 * N,) and np.isfinite(xy).all()


def test_confusion(client, analysed):
    table = read(analysed[2]).instances()
    label, pred = table.column("label").to_numpy(), table.column("prediction").to_numpy()
    m = client.get(_url(analysed, "/confusion")).json()
    want = np.zeros((3, 3), int)
    np.add.at(want, (label, pred), 1)
    assert m["matrix"] == want.tolist() and m["class_names"] == ["a", "b", ODD]


def test_column_binary(client, analysed):
    r = client.get(_url(analysed, "/column"), params={"layer": "0", "neuron": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    np.testing.assert_array_equal(np.frombuffer(r.content, "<f4"), read(analysed[2]).matrix("0")[:, 3])
    assert client.get(_url(analysed, "/column"), params={"layer": "0", "neuron": 4}).status_code == 404
    assert client.get(_url(analysed, "/column"), params={"layer": "nope", "neuron": 0}).status_code == 404


def _maps(client, analysed, index: int, layer: str = "0"):
    return client.get(_url(analysed, f"/instances/{index}/maps"), params={"layer": layer})


def test_feature_maps_binary_match_the_layer_output(client, analysed):
    s = client.get(_url(analysed)).json()
    reader = read(analysed[2])
    [maps] = s["feature_maps"]  # layer "0" is a convolution; "3" outputs logits
    assert maps["layer"] == "0" and maps["shape"] == [4, 8, 8] and maps["dtype"] == "float32"
    assert maps["instances"] == list(reader.feature_map_layers()["0"].indices) and len(maps["instances"]) == 9
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, 1, 8, 8, generator=g)  # the fixture's inputs
    with torch.no_grad():
        conv = _model()[0](x).numpy()  # the oracle: the layer applied directly
    for i in maps["instances"][:3]:
        r = _maps(client, analysed, i)
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-deepscope-shape"] == "4,8,8" and r.headers["x-deepscope-stored-dtype"] == "float32"
        np.testing.assert_allclose(np.frombuffer(r.content, "<f4").reshape(4, 8, 8), conv[i], rtol=1e-5, atol=1e-6)
    missing = next(i for i in range(N) if i not in maps["instances"])
    r = _maps(client, analysed, missing)
    assert r.status_code == 404 and "deepscope.feature_maps" in r.json()["detail"]
    r = _maps(client, analysed, 0, "3")  # a Linear layer: its outputs are vectors, never maps
    assert r.status_code == 404 and "deepscope.feature_maps" not in r.json()["detail"]
    assert r.json()["detail"] == ("layer '3' has no feature maps: its output is a vector of 3 values per instance; "
                                  "feature maps exist only for convolutional layers, whose outputs are (N, C, H, W) — "
                                  "or (N, C, L) for 1-d convolutions")  # fmt: skip
    assert "only for convolutional layers" in _maps(client, analysed, 0, "never").json()["detail"]
    assert _maps(client, analysed, 0, "../0").status_code == 404
    assert _maps(client, analysed, N).status_code == 404
    assert client.get(_url(analysed, "/instances/0/maps")).status_code == 422  # the layer is required


def test_feature_maps_appended_later_are_served(client, analysed):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (N,), generator=g)
    before = client.get(_url(analysed)).json()["feature_maps"][0]["instances"]
    new = [i for i in (N - 1, 100, 101) if i not in before]
    deepscope.feature_maps(_model(), torch.utils.data.TensorDataset(x, y), run=analysed[2], layer="0", indices=new)
    assert client.get(_url(analysed)).json()["feature_maps"][0]["instances"] == before + sorted(new)
    with torch.no_grad():
        conv = _model()[0](x[new]).numpy()
    for k, i in enumerate(new):
        got = np.frombuffer(_maps(client, analysed, i).content, "<f4").reshape(4, 8, 8)
        np.testing.assert_allclose(got, conv[k], rtol=1e-5, atol=1e-6)


def test_instance_text_is_the_column_the_reader_calls_text(tmp_path):
    """A short string column first ("source"), the text later under a name from the reader's list ("review"):
    the detail shows the review, as the summary's input kind says."""
    x = torch.randn(30, 5)
    meta = {"source": ["web"] * 30, "review": [f"this is review {i}" for i in range(30)]}
    with deepscope.init(project="p", name="texts", dir=tmp_path) as run:
        deepscope.analyze(torch.nn.Linear(5, 3), x, run=run, metadata=meta, progress=False)
    with make_client(create_app(tmp_path)) as c:
        assert c.get(f"/api/runs/{run.id}/analysis").json()["input_kind"] == "text"
        assert c.get(f"/api/runs/{run.id}/analysis/instances/4").json()["text"] == "this is review 4"


def test_a_head_of_many_classes_gives_rows_only_to_the_classes_with_instances(tmp_path):
    """60 outputs, labels 0…2: the matrix by prediction and by label has a row for each class that holds instances
    (with its index), not 60 mostly empty ones; few classes keep their empty rows."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 60))
    names = [f"class_{c}" for c in range(60)]  # a head of 60 named classes, over instances of three
    with deepscope.init(project="p", name="wide", dir=tmp_path) as run:
        deepscope.analyze(model, torch.utils.data.TensorDataset(x, y), layers=["1"], class_names=names, run=run,
                          progress=False)  # fmt: skip
    with make_client(create_app(tmp_path)) as client:
        for by in ("label", "prediction"):
            r = client.post(f"/api/runs/{run.id}/analysis/matrix", json={"layer": "1", "group_by": by})
            rows = [row for row in r.json()["rows"] if row["kind"] == "class"]
            column = read(run.dir).instances().column(by).to_numpy()
            assert [row["index"] for row in rows] == sorted(set(column.tolist()))
            assert all(row["count"] == int((column == row["index"]).sum()) for row in rows)
        # the confusion matrix too: the classes some instance is labelled or predicted as, each count as sklearn's
        from sklearn.metrics import confusion_matrix

        c = client.get(f"/api/runs/{run.id}/analysis/confusion").json()
        t = read(run.dir).instances()
        label, pred = t.column("label").to_numpy(), t.column("prediction").to_numpy()
        assert c["classes"] == sorted(set(label.tolist()) | set(pred.tolist())) and len(c["classes"]) < 60
        np.testing.assert_array_equal(c["matrix"], confusion_matrix(label, pred, labels=c["classes"]))


def test_a_time_column_is_filtered_as_times_and_shown_as_iso_text(tmp_path):
    """A pandas datetime64 column: listed as a time with its first and last value, equality and ranges compare
    times, ``contains`` and the instance detail read its ISO 8601 text; a column of dates is listed as dates."""
    import pandas as pd

    taken = pd.Series(pd.date_range("2024-03-01 09:00", periods=30, freq="12h"))
    with deepscope.init(project="p", name="timed", dir=tmp_path) as run:
        metadata = pd.DataFrame({"taken": taken, "day": taken.dt.date, "n": np.arange(30) - 4.5, "s": ["x"] * 30})
        deepscope.analyze(torch.nn.Linear(5, 3), torch.randn(30, 5), run=run, metadata=metadata, progress=False)
    url = f"/api/runs/{run.id}/analysis"
    rows = lambda answer: np.flatnonzero(_mask(answer.json()["mask"])[:30]).tolist()  # noqa: E731
    with make_client(create_app(tmp_path)) as c:
        columns = {col["name"]: col for col in c.get(url).json()["columns"]}
        assert columns["taken"] == {"name": "taken", "kind": "time", "low": "2024-03-01T09:00:00",
                                    "high": "2024-03-15T21:00:00", "distinct": None}  # fmt: skip
        assert columns["day"] == {"name": "day", "kind": "date", "low": "2024-03-01", "high": "2024-03-15",
                                  "distinct": None}  # fmt: skip
        assert columns["n"] == {"name": "n", "kind": "float", "low": -4.5, "high": 24.5, "distinct": None}
        assert columns["s"] == {"name": "s", "kind": "string", "low": None, "high": None, "distinct": 1}
        assert rows(c.post(f"{url}/subset", json={"where": {"day": "2024-03-02"}})) == [2, 3]
        assert c.get(f"{url}/instances/3").json()["fields"]["taken"] == "2024-03-02T21:00:00"
        ranged = c.post(f"{url}/subset", json={"where": {"range": {"taken": ["2024-03-05", "2024-03-06T12:00"]}}})
        want = ((taken >= "2024-03-05") & (taken <= "2024-03-06 12:00")).to_numpy()
        assert ranged.status_code == 200 and rows(ranged) == np.flatnonzero(want).tolist() == [8, 9, 10]
        assert rows(c.post(f"{url}/subset", json={"where": {"contains": {"taken": "2024-03-02"}}})) == [2, 3]
        assert rows(c.post(f"{url}/subset", json={"where": {"taken": "2024-03-02T21:00:00"}})) == [3]
        bad = c.post(f"{url}/subset", json={"where": {"range": {"taken": ["soon", None]}}})
        assert bad.status_code == 400 and "ISO 8601" in bad.json()["detail"]
        table = pa.ipc.open_stream(c.get(f"{url}/instances", params={"columns": "taken"}).content).read_all()
        assert table.schema.field("taken").type == pa.string()  # as text, not epoch numbers the browser would show
        assert table["taken"][3].as_py() == "2024-03-02T21:00:00"


def test_layers_carry_their_module_type(tmp_path):
    """An analysis records its layers' module types; one recorded before it did takes them from the run's watched
    layers, else has none."""
    model = _model()
    x = torch.rand(16, 1, 8, 8)
    with deepscope.init(project="p", name="watched", dir=tmp_path) as run:
        run.watch(model)
        model(x).sum().backward()
        run.log({"loss": 1.0}, step=0)
        deepscope.analyze(model, x, run=run, layers=["0", "3"], progress=False)
        watched = run.id
    with deepscope.init(project="p", name="unwatched", dir=tmp_path) as run:
        deepscope.analyze(model, x, run=run, layers=["0", "3"], progress=False)
        unwatched = run.id

    def summary(c, run_id: str) -> dict:
        return {la["name"]: la["type"] for la in c.get(f"/api/runs/{run_id}/analysis").json()["layers"]}

    with make_client(create_app(tmp_path)) as c:
        assert summary(c, watched) == summary(c, unwatched) == {"0": "Conv2d", "3": "Linear"}
    for run_id in (watched, unwatched):  # as an analysis written before the types were kept
        progress = next((tmp_path / run_id).rglob("progress.json"))
        state = json.loads(progress.read_text())
        for out in state["outputs"].values():
            del out["type"]
        progress.write_text(json.dumps(state))
    with make_client(create_app(tmp_path)) as c:
        assert summary(c, watched) == {"0": "Conv2d", "3": "Linear"}
        assert summary(c, unwatched) == {"0": None, "3": None}
    manifest = tmp_path / watched / "streams" / "0" / "watch.json"
    layers = json.loads(manifest.read_text())["layers"]
    from_graph = {"0": "torch.nn.modules.conv.Conv2d", "3": "torch.nn.modules.linear.Linear"}
    for odd in ([layers], {"layers": {"0": layers[0]}}, {"layers": [{"type": "Conv2d"}, "3"]}):  # not run.watch's
        manifest.write_text(json.dumps(odd))
        with make_client(create_app(tmp_path)) as c:
            assert summary(c, watched) == from_graph  # the watched layers unreadable: the graph's


def test_a_run_whose_analysis_stopped_says_why_and_how_to_go_on(tmp_path):
    from tests.analyses.models import FailingAt, TinyCNN, image_data

    from deepscope.analyses.activations import Activations, ActivationsConfig

    with deepscope.init(project="p", name="cut", dir=tmp_path) as run:
        cfg = ActivationsConfig(layers=("fc1",), batch_size=16, chunk_rows=16, progress=False)
        with pytest.raises(KeyboardInterrupt):
            Activations(cfg).run(run.dir, TinyCNN(), FailingAt(image_data(64), 40))
    with deepscope.init(project="p", name="never", dir=tmp_path) as other:
        other.log({"loss": 1.0}, step=0)
    with make_client(create_app(tmp_path)) as c:
        stopped = c.get(f"/api/runs/{run.id}/analysis")
        assert stopped.status_code == 404
        assert stopped.json()["detail"] == (
            f"run {run.id!r} has no finished analysis: its analysis was interrupted after 32 of 64 rows: call "
            "deepscope.analyze again the same way to resume it"
        )
        never = c.get(f"/api/runs/{other.id}/analysis")
        assert never.status_code == 404 and never.json()["detail"].endswith("run deepscope.analyze on it")
        progress = c.get(f"/api/runs/{run.id}/analysis/progress")  # the same, as a 200
        assert progress.status_code == 200 and progress.json() == {
            "complete": False, "rows_done": 32, "length": 64, "stopped": "interrupted",
            "reason": stopped.json()["detail"]}  # fmt: skip
        assert c.get(f"/api/runs/{other.id}/analysis/progress").status_code == 404


def test_a_dead_units_top_instances_are_none_and_its_value_is_said(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())
    with torch.no_grad():
        model[0].weight[1] = 0.0
        model[0].bias[1] = -1.0  # unit 1 never fires
    with deepscope.init(project="p", name="dead", dir=tmp_path) as run:
        deepscope.analyze(model, torch.randn(40, 4), run=run, layers=["1"], scores="none", progress=False)
    with make_client(create_app(tmp_path)) as c:
        top = c.get(f"/api/runs/{run.id}/analysis/top", params={"layer": "1", "neuron": 1, "k": 5}).json()
        assert top == {"indices": [], "values": [], "constant": 0.0}
        live = c.get(f"/api/runs/{run.id}/analysis/top", params={"layer": "1", "neuron": 0, "k": 5}).json()
        assert len(live["indices"]) == 5 and live["constant"] is None and min(live["values"]) > 0


def test_a_projection_that_cannot_show_the_layer_carries_its_note(tmp_path):
    """A layer that never varies: its stored PCA says why every point is at the origin, and the summary passes that
    on; a layer that varies has no note."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias.fill_(-1e3)  # the ReLU never fires
    with deepscope.init(project="p", name="flat", dir=tmp_path) as run:
        deepscope.analyze(model, torch.randn(50, 4), run=run, layers=["0", "1"], scores="none", progress=False)
    with make_client(create_app(tmp_path)) as c:
        layers = {la["name"]: la for la in c.get(f"/api/runs/{run.id}/analysis").json()["layers"]}
    pca = {la: next(p for p in layers[la]["projections"] if p["method"] == "pca") for la in layers}
    assert pca["1"]["note"] == "every instance has the same activations in this layer: all points lie at the origin"
    assert pca["0"]["note"] is None
