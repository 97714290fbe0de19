"""The plain functions behind the routes, without HTTP."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import deepscope
from deepscope.server import queries
from deepscope.types import Downsampled


@pytest.mark.parametrize("run_id", ["nope", "..", ".", "../runs", "/etc", "/etc/passwd", "a/b", "", "a\x00b", "é"])
def test_unknown_or_malformed_run_ids_raise_not_found(store, run_id):
    s = deepscope.open(store.root)
    for query in (queries.run_detail, queries.run_keys, queries.events):
        with pytest.raises(queries.NotFound):
            query(s, run_id)
    with pytest.raises(queries.NotFound):
        queries.scalars(s, run_id, "lr")
    with pytest.raises(queries.NotFound):
        queries.histograms(s, run_id, "weights/fc")


def test_list_runs_reports_max_step(store):
    runs = queries.list_runs(deepscope.open(store.root)).runs
    assert {r.id: r.max_step for r in runs} == {store.main: len(store.loss) - 1, store.multi: 1}


def test_scalars_table_round_trips_through_an_arrow_stream():
    d = Downsampled(
        key="a/b",
        step=np.array([0, 5, 2**53], dtype=np.int64),
        wall_time=np.array([1.0, 2.0, 3.0]),
        min=np.array([0.0, np.nan, -1.0]),
        max=np.array([1.0, np.nan, 2.0]),
        mean=np.array([0.5, np.nan, 0.5]),
        last=np.array([1.0, np.inf, -1.0]),
        count=np.array([2, 1, 3], dtype=np.int64),
        nonfinite=np.array([0, 1, 0], dtype=np.int64),
        exact=False,
    )
    table = pa.ipc.open_stream(queries.arrow_stream(queries.scalars_table(d))).read_all()
    assert table.schema.metadata == {b"key": b"a/b", b"exact": b"false"}
    assert table["step"].to_pylist() == [0.0, 5.0, 2.0**53]
    np.testing.assert_array_equal(table["last"].to_numpy(), d.last)
    np.testing.assert_array_equal(table["min"].to_numpy(), d.min)
    assert table["count"].type == pa.int32() and table["count"].to_pylist() == [2, 1, 3]
