"""Downsampling against a slow, obvious NumPy reference: min / max / mean / last per bucket."""

from __future__ import annotations

import numpy as np
import pytest

from deepscope.store.series import BLOCK, SeriesBuffer


def reference(step, value, start, end, buckets):
    """Per bucket of equal step width over the points in [start, end]; one Python loop, plain NumPy."""
    sel = (step >= start) & (step <= end)
    s, v = step[sel], value[sel]
    lo, hi = s[0], s[-1]
    edges = lo + (hi - lo + 1) * np.arange(buckets + 1) / buckets
    rows = []
    for b in range(buckets):
        m = (s >= edges[b]) & (s < edges[b + 1]) if b < buckets - 1 else (s >= edges[b])
        if not m.any():
            continue
        vb = v[m]
        fin = vb[np.isfinite(vb)]
        rows.append(
            (s[m][-1], fin.min() if fin.size else np.nan, fin.max() if fin.size else np.nan,
             fin.mean() if fin.size else np.nan, vb[-1], m.sum(), (~np.isfinite(vb)).sum())
        )  # fmt: skip
    return [np.array(c) for c in zip(*rows)]


def make(n, rng, step_stride=1, nan_every=0):
    step = np.arange(n, dtype=np.int64) * step_stride
    value = rng.normal(size=n).cumsum()
    if nan_every:
        value[::nan_every] = np.nan
        value[5::nan_every] = np.inf
    buf = SeriesBuffer("x")
    for a in range(0, n, 7919):  # arrive in flushes, as from a live writer
        buf.append(step[a : a + 7919], step[a : a + 7919] * 0.1, value[a : a + 7919])
    return buf, step, value


def check(buf, step, value, start, end, buckets, exact_bucketing):
    got = buf.downsample(start, end, buckets)
    s, mn, mx, mean, last, count, nonfin = reference(step, value, start, end, buckets)
    assert count.sum() == got.count.sum()
    if exact_bucketing:
        np.testing.assert_array_equal(got.step, s)
        np.testing.assert_array_equal(got.min, mn)
        np.testing.assert_array_equal(got.max, mx)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(got.last, last)
        np.testing.assert_array_equal(got.count, count)
        np.testing.assert_array_equal(got.nonfinite, nonfin)
    # with or without rollups: extremes are never lost, the last point is the last point
    assert np.nanmin(got.min) == np.nanmin(mn) and np.nanmax(got.max) == np.nanmax(mx)
    assert got.last[-1] == last[-1] or (np.isnan(got.last[-1]) and np.isnan(last[-1]))
    assert len(got) <= buckets


@pytest.mark.parametrize("buckets", [1, 7, 100, 1000])
def test_raw_buckets_match_reference(buckets):
    rng = np.random.default_rng(buckets)
    buf, step, value = make(20_000, rng, step_stride=3, nan_every=97)
    for start, end in [(0, step[-1]), (1000, 31_000)]:
        n = ((step >= start) & (step <= end)).sum()
        # below one block per bucket no rollup is used and bucketing is exact
        check(buf, step, value, start, end, buckets, exact_bucketing=n < BLOCK * buckets)


def test_rollups_keep_extremes_and_counts():
    rng = np.random.default_rng(5)
    n = 2_000_000
    buf, step, value = make(n, rng, nan_every=1013)
    value_spike = value.copy()
    buf.append(np.array([n]), np.array([0.0]), np.array([1e9]))  # a spike at the very end
    step = np.append(step, n)
    value_spike = np.append(value_spike, 1e9)
    for start, end, buckets in [(0, n, 2000), (12345, 1_500_000, 300), (0, n, 50), (0, n, 1), (777, n - 5, 3)]:
        got = buf.downsample(start, end, buckets)
        assert not got.exact and len(got) <= buckets
        sel = (step >= start) & (step <= end)
        assert got.count.sum() == sel.sum()
        assert got.nonfinite.sum() == (~np.isfinite(value_spike[sel])).sum()
        fin = value_spike[sel][np.isfinite(value_spike[sel])]
        assert np.nanmax(got.max) == fin.max() and np.nanmin(got.min) == fin.min()
        # each bucket's mean is a mean of its members: weighted means add up to the total
        nf = got.count - got.nonfinite
        np.testing.assert_allclose(np.nansum(got.mean * nf), fin.sum(), rtol=1e-9)
    # a spike stays visible at the screen's resolution
    assert buf.downsample(0, n, 2000).max[-1] == 1e9


def test_rollup_bucketing_is_close_to_exact():
    """Rollup blocks are at most a bucket wide: each bucket's count is within a block of the exact one."""
    rng = np.random.default_rng(9)
    n = 1_100_000
    buf, step, value = make(n, rng)
    got = buf.downsample(0, n - 1, 1000)
    _, _, _, _, _, count, _ = reference(step, value, 0, n - 1, 1000)
    assert np.all(np.abs(got.count - count) <= 2 * BLOCK**2)


def test_a_block_or_more_per_bucket_reads_blocks():
    """100 points a bucket, 1.6 blocks: blocks, not a scan of every point (10,000 buckets of a million points scanned
    them all, 60 ms a request); each bucket still within a block of the exact one, none empty."""
    rng = np.random.default_rng(11)
    n, buckets = 100_000, 1000
    buf, step, value = make(n, rng, nan_every=331)
    got = buf.downsample(0, n - 1, buckets)
    assert not got.exact and len(buf._units_for(step, step * 0.1, value, 0, n, buckets)) < n // BLOCK + 2 * BLOCK
    s, mn, mx, _, last, count, nonfin = reference(step, value, 0, n - 1, buckets)
    assert len(got) == buckets and np.all(np.abs(got.count - count) < BLOCK)
    assert got.count.sum() == n and got.nonfinite.sum() == nonfin.sum() and got.last[-1] == last[-1]
    assert np.nanmin(got.min) == np.nanmin(mn) and np.nanmax(got.max) == np.nanmax(mx)


def test_a_query_reads_whole_blocks_and_finer_ones_only_at_its_ends():
    """One bucket over two million points: three blocks of 262,144 points and at most 2 × 64 of each finer level at
    the ends (the raw points past the last whole coarse block were read one by one: up to 262,143 of them)."""
    rng = np.random.default_rng(12)
    n = 2_000_000
    buf, step, value = make(n, rng)
    buf.downsample(None, None, 1)  # builds the rollups
    for i0, i1 in [(0, n), (12_345, n - 6_789), (300_000, 1_700_001)]:
        units = buf._units_for(step, step * 0.1, value, i0, i1, 1)
        assert units.count.sum() == i1 - i0 and len(units) <= BLOCK + 3 * 2 * BLOCK
        assert units.first[0] == step[i0] and units.last[-1] == step[i1 - 1] and np.all(np.diff(units.first) > 0)


def test_incremental_appends_match_one_shot():
    rng = np.random.default_rng(3)
    value = rng.normal(size=300_000)
    step = np.arange(len(value))
    one = SeriesBuffer("x")
    one.append(step, step * 1.0, value)
    inc = SeriesBuffer("x")
    for a in range(0, len(value), 50_000):
        inc.append(step[a : a + 50_000], step[a : a + 50_000] * 1.0, value[a : a + 50_000])
        inc.downsample(None, None, 100)  # forces rollups to be built part by part
    a, b = one.downsample(None, None, 100), inc.downsample(None, None, 100)
    for f in ("step", "min", "max", "last", "count"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_allclose(a.mean, b.mean)


def test_out_of_order_steps_are_sorted_stably():
    buf = SeriesBuffer("x")
    buf.append(np.array([0, 1, 2, 3]), np.zeros(4), np.array([0.0, 1, 2, 3]))
    buf.append(np.array([2, 3, 4]), np.ones(3), np.array([20.0, 30, 40]))  # a restart from step 2
    s = buf.series()
    assert s.step.tolist() == [0, 1, 2, 2, 3, 3, 4]
    assert s.value.tolist() == [0, 1, 2, 20, 3, 30, 40]
    d = buf.downsample(None, None, 2)
    assert d.count.sum() == 7 and d.last[-1] == 40


def test_small_range_is_exact():
    buf = SeriesBuffer("x")
    buf.append(np.arange(10), np.zeros(10), np.arange(10.0))
    d = buf.downsample(3, 6, 100)
    assert d.exact and d.step.tolist() == [3, 4, 5, 6] and d.last.tolist() == [3, 4, 5, 6]
    assert len(buf.downsample(100, 200, 10)) == 0
