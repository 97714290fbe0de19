"""The layer × step matrix against NumPy on the rows themselves: one bucket per step when they fit, otherwise each
bucket the mean of exactly the rows whose steps it spans — whether read from the rows or from the rollups, for
ranges that start and end anywhere, with NaNs, layers that appear late, several appends and a stream that went
back. Beside each mean, the count of rows that were not finite (the tensor held NaN/Inf, or the statistic is ±Inf)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from deepscope.store import format as fmt
from deepscope.store.layerstats import BLOCK, KIND_INDEX, LayerStatsBuffer

KIND = KIND_INDEX["weight"]


def rows_table(
    steps: np.ndarray, layers: list[str], kind: str, rng: np.random.Generator, nan: float = 0.0, inf: float = 0.0
) -> pa.Table:
    """One row per (step, layer) of ``kind``; random statistics, a share ``nan`` of them NaN and ``inf`` ±Inf (so
    ``nonfinite_frac``, random as well, is > 0 in about half of the rows)."""
    step = np.repeat(steps, len(layers))
    layer = np.tile(np.arange(len(layers), dtype=np.int32), len(steps))
    cols = {
        "step": step,
        "wall_time": step * 0.5,
        "layer": pa.DictionaryArray.from_arrays(pa.array(layer), pa.array(layers)),
        "kind": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(step), np.int8)), pa.array([kind], pa.string())),
    }
    for s in fmt.LAYER_STATS:
        v = (rng.normal(size=len(step)) + layer).astype(np.float32)
        v[rng.random(len(step)) < nan] = np.nan
        if inf:
            v[rng.random(len(step)) < inf] = np.inf * rng.choice([-1, 1])
        cols[s] = v
    return pa.table(cols)


def oracle(tables: list[pa.Table], kind: str, stat: str, names: list[str], m, start=None) -> None:  # noqa: ANN001
    """Each returned bucket is the mean, per layer, of the rows whose steps lie after the previous bucket's last
    step (or from ``start``) and up to its own, and counts those of them that are not finite."""
    t = pa.concat_tables(tables)
    t = t.filter(pa.compute.equal(t["kind"].cast(pa.string()), kind))
    step = t["step"].to_numpy()
    layer = np.array(t["layer"].cast(pa.string()).to_pylist())
    val = t[stat].to_numpy().astype(np.float64)
    bad = (t["nonfinite_frac"].to_numpy() > 0) | np.isinf(val)
    prev = -np.inf if start is None else start - 1
    for b, last in enumerate(m.step):
        inside = (step > prev) & (step <= last)
        assert inside.any()
        for li, name in enumerate(names):
            v = val[inside & (layer == name)]
            assert m.nonfinite[li, b] == bad[inside & (layer == name)].sum()
            v = v[np.isfinite(v)]
            expected = v.mean() if len(v) else np.nan
            np.testing.assert_allclose(m.values[li, b], expected, rtol=1e-9, atol=1e-9, equal_nan=True)
        prev = last


@pytest.mark.parametrize("n_steps", [50, 3000, 40_000])
def test_the_matrix_is_each_buckets_mean_of_its_rows(n_steps):
    rng = np.random.default_rng(n_steps)
    layers = [f"l{i}" for i in range(5)]
    steps = np.sort(rng.choice(n_steps * 3, n_steps, replace=False))  # irregular recording
    buf = LayerStatsBuffer()
    tables = []
    for part in np.array_split(steps, 7):  # appended as a live run is read
        for kind in ("act", "grad"):
            tables.append(rows_table(part, layers, kind, rng, nan=0.05))
            buf.append(tables[-1])
    names = [*layers[::-1], "absent"]  # the caller's order; a name without rows stays NaN
    ranges = [(None, None, 100), (None, None, 7), (int(steps[3]), int(steps[-5]), 50),
              (int(steps[n_steps // 3]) + 1, None, 64), (None, int(steps[n_steps // 2]), 1000)]  # fmt: skip
    for start, end, buckets in ranges:
        m = buf.matrix("grad", "mean", start, end, buckets, names)
        in_range = steps[(steps >= (start or 0)) & (steps <= (end if end is not None else np.inf))]
        assert m.exact == (len(in_range) <= buckets)
        assert len(m.step) == min(len(in_range), buckets) or not m.exact
        assert 0 < len(m.step) <= buckets and m.step[-1] == in_range[-1]
        assert np.isnan(m.values[-1]).all()
        oracle(tables, "grad", "mean", names, m, start)


def test_wide_ranges_read_the_rollups_and_agree_with_the_rows():
    rng = np.random.default_rng(1)
    layers = [f"l{i}" for i in range(3)]
    steps = np.arange(0, 2 * BLOCK**3 * 300, 1)  # enough for two levels of rollups at 300 buckets
    tables = [rows_table(part, layers, "act", rng, nan=0.01, inf=0.01) for part in np.array_split(steps, 5)]
    buf = LayerStatsBuffer()
    for t in tables:
        buf.append(t)
    m = buf.matrix("act", "rms", None, None, 300, layers)
    assert buf._kinds[0].rollups  # the rollups answered
    assert not m.exact and 150 <= len(m.step) <= 300
    oracle(tables, "act", "rms", layers, m)
    # a late layer, then more steps: the rollups grow with them and stay right
    late = rows_table(steps[-1] + 1 + np.arange(BLOCK**3), [*layers, "late"], "act", rng)
    buf.append(late)
    tables.append(late)
    m = buf.matrix("act", "rms", 17, None, 300, [*layers, "late"])
    oracle(tables, "act", "rms", [*layers, "late"], m, 17)
    assert np.isfinite(m.values[3]).sum() >= 1 and np.isnan(m.values[3, 0])


def test_a_stream_that_went_back_is_read_in_step_order():
    rng = np.random.default_rng(2)
    layers = ["a", "b"]
    first = rows_table(np.arange(1000, 3000), layers, "weight", rng)
    back = rows_table(np.arange(0, 1000), layers, "weight", rng)
    buf = LayerStatsBuffer()
    buf.append(first)
    buf.append(back)
    m = buf.matrix("weight", "norm", None, None, 20, layers)
    assert m.step[0] < 1000 and np.all(np.diff(m.step) > 0)
    oracle([first, back], "weight", "norm", layers, m)
    assert list(buf.steps()[:3]) == [0, 1, 2] and len(buf.steps()) == 3000
    at, values = buf.profile("weight", "norm", 999, layers)
    want = back.filter(pa.compute.equal(back["step"], 999))["norm"].to_numpy()
    assert at == 999 and np.allclose(values, want)


def test_profile_and_series_read_the_kind_they_are_asked():
    rng = np.random.default_rng(3)
    buf = LayerStatsBuffer()
    act = rows_table(np.arange(10), ["x", "y"], "act", rng)
    grad = rows_table(np.arange(0, 10, 2), ["x", "y"], "grad", rng)
    buf.append(pa.concat_tables([act, grad]))
    at, values = buf.profile("grad", "std", 5, ["y", "x"])
    g4 = grad.filter(pa.compute.equal(grad["step"], 4))["std"].to_numpy()
    assert at == 4 and np.allclose(values, g4[::-1])
    assert buf.profile("grad", "std", -1, ["x"])[0] is None
    s = buf.series("y", "act", "max", None, None, 100)
    assert np.allclose(s.mean, act.filter(pa.compute.equal(act["layer"].cast(pa.string()), "y"))["max"].to_numpy())
    with pytest.raises(ValueError, match="unknown statistic"):
        buf.matrix("act", "nope", None, None, 10, ["x"])


def test_each_kind_counts_only_its_own_layers():
    """Modules and parameters share the run's names: a kind's rollups and buckets are as wide as its own layers."""
    rng = np.random.default_rng(4)
    modules, params = [f"m{i}" for i in range(3)], [f"m{i}.weight" for i in range(40)]
    steps = np.arange(4 * BLOCK**2 * 10)
    act = rows_table(steps, modules, "act", rng)
    weight = rows_table(steps, params, "weight", rng)
    buf = LayerStatsBuffer()
    buf.append(pa.concat_tables([act, weight]))
    m = buf.matrix("act", "mean", None, None, 10, modules)
    assert {lv.total.shape[1] for lv in buf._kinds[0].rollups[0]} == {3}
    oracle([act], "act", "mean", modules, m)
    w = buf.matrix("weight", "mean", None, None, 10, params[::-1])
    oracle([weight], "weight", "mean", params[::-1], w)
    at, values = buf.profile("weight", "mean", 7, params[:2])
    want = weight.filter(pa.compute.equal(weight["step"], 7))["mean"].to_numpy()[:2]
    assert at == 7 and np.allclose(values, want)
    assert buf.series("m1.weight", "weight", "mean", None, None, 10).count.sum() == len(steps)


def test_kinds_interleaved_or_together_read_the_same():
    """The writer groups a chunk's rows by kind (a slice each); chunks written before interleave them per step
    (gathered by index). Both give the same rows, steps and answers."""
    rng = np.random.default_rng(5)
    steps = np.arange(0, 600, 3)
    kinds = {k: rows_table(steps, ["p", "q", "r"], k, rng, nan=0.1) for k in fmt.LAYER_KINDS}
    together = pa.concat_tables(kinds.values()).unify_dictionaries().combine_chunks()
    order = np.lexsort((np.arange(together.num_rows), together["step"].to_numpy()))  # by step, kinds interleaved
    interleaved = together.take(pa.array(order))
    assert not np.all(np.diff(interleaved["kind"].combine_chunks().indices.to_numpy()) >= 0)
    bufs = []
    for t in (together, interleaved):
        buf = LayerStatsBuffer()
        for part in (t.slice(0, 500), t.slice(500)):  # one chunk's rows, then the next
            buf.append(part)
        bufs.append(buf)
    a, b = bufs
    assert np.array_equal(a.steps(), steps) and np.array_equal(b.steps(), steps)
    for kind in fmt.LAYER_KINDS:
        for buckets in (1000, 20):
            ma, mb = (x.matrix(kind, "rms", None, None, buckets, ["r", "p"]) for x in bufs)
            assert np.array_equal(ma.step, mb.step)
            np.testing.assert_array_equal(ma.values, mb.values)
            oracle([kinds[kind]], kind, "rms", ["r", "p"], ma)
        assert np.array_equal(a.profile(kind, "max", 300, ["q"])[1], b.profile(kind, "max", 300, ["q"])[1])
        sa, sb = (x.series("q", kind, "min", None, None, 10_000) for x in bufs)
        np.testing.assert_array_equal(sa.mean, sb.mean)


def test_a_layer_that_diverged_is_told_from_one_without_values():
    """From step 65 a layer's statistic is NaN and its tensor held NaN; another layer's statistic does not apply (NaN,
    tensor finite). Both have no finite value; only the first counts rows not finite, at one bucket per step and
    through the rollups alike."""
    n = 4 * BLOCK**2 * 20
    steps = np.arange(n)
    t = rows_table(steps, ["ok", "diverged", "na"], "weight", np.random.default_rng(6)).to_pandas()
    layer = t["layer"].astype(str).to_numpy()
    t["nonfinite_frac"] = np.where((layer == "diverged") & (t["step"] >= 65), 1.0, 0.0).astype(np.float32)
    t.loc[(layer == "diverged") & (t["step"] >= 65), "update_ratio"] = np.nan
    t.loc[layer == "na", "update_ratio"] = np.nan
    table = pa.Table.from_pandas(t, preserve_index=False)
    buf = LayerStatsBuffer()
    buf.append(table)
    for buckets in (n, 40):
        m = buf.matrix("weight", "update_ratio", None, None, buckets, ["ok", "diverged", "na"])
        oracle([table], "weight", "update_ratio", ["ok", "diverged", "na"], m)
        after = m.step >= 65 + (0 if m.exact else n // buckets)
        assert np.isnan(m.values[1, after]).all() and (m.nonfinite[1, after] > 0).all()
        assert np.isnan(m.values[2]).all() and not m.nonfinite[2].any() and not m.nonfinite[0].any()
    assert buf._kinds[KIND].rollups


def test_a_kind_this_reader_does_not_know_adds_no_step_in_either_layout():
    """A later writer's new kind, at a step only it recorded: skipped alike whether a chunk's kinds lie together or
    interleaved."""
    rng = np.random.default_rng(6)
    known = rows_table(np.array([1, 2]), ["a"], "act", rng)
    future = rows_table(np.array([5]), ["a"], "act", rng)
    kind = pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array(["future"]))
    future = future.set_column(3, "kind", kind)
    both = pa.concat_tables([known, future]).unify_dictionaries().combine_chunks()
    for t in (both, both.take(pa.array([2, 0, 1]))):  # kinds together (unknown last), then interleaved
        buf = LayerStatsBuffer()
        buf.append(t)
        assert buf.steps().tolist() == [1, 2]


@pytest.mark.parametrize("slice_rows", [7, 1 << 20])
def test_total_norm_grows_with_appends_and_keeps_nonfinite_steps(monkeypatch, slice_rows):
    """Each step's √(Σ norm²) over its rows, extended as tables arrive (read a slice of whole steps at a time);
    a step with a NaN/Inf norm is not finite."""
    from deepscope.store import layerstats

    monkeypatch.setattr(layerstats, "_SLICE", slice_rows)
    rng = np.random.default_rng(3)
    layers = ["a.weight", "a.bias", "b.weight"]
    first = rows_table(np.arange(0, 40), layers, "param_grad", rng)
    second = rows_table(np.arange(40, 100), layers, "param_grad", rng, nan=0.05)
    buf = LayerStatsBuffer()
    buf.append(first)
    assert len(buf.total_norm("param_grad", None, None, 1000)) == 40
    buf.append(second)
    got = buf.total_norm("param_grad", None, None, 1000)
    norm = np.concatenate([t["norm"].to_numpy() for t in (first, second)]).astype(np.float64).reshape(100, 3)
    want = np.sqrt((norm**2).sum(axis=1))
    assert got.exact and got.step.tolist() == list(range(100))
    np.testing.assert_allclose(got.last, want, rtol=1e-9, equal_nan=True)
    assert got.nonfinite.sum() == np.isnan(want).sum() > 0
    wide = buf.total_norm("param_grad", 10, 89, 8)  # buckets: min/max over the steps they merge
    assert not wide.exact and len(wide) <= 8 and wide.step[-1] == 89
    assert np.nanmax(wide.max) == np.nanmax(want[10:90])
    with pytest.raises(ValueError, match="param_grad or weight"):
        buf.total_norm("act", None, None, 10)
