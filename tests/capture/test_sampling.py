"""The sample statistics come from, and the batched reductions (device and host) against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepscope.capture import reducers as R
from deepscope.capture.sampling import Sampler, largest_prime_at_most


def test_small_tensors_are_taken_whole():
    s = Sampler(64)
    x = torch.arange(50, dtype=torch.float32).reshape(5, 10)
    out = torch.full((64,), -1.0)
    assert s.into(x, out) == 50
    np.testing.assert_array_equal(out[:50].numpy(), np.arange(50))
    assert (out[50:] == -1).all()  # the rest is left alone: the reduction knows each row's length


def test_clusters_span_the_tensor_with_a_prime_stride():
    s = Sampler(4096)
    n = 64 * 16 * 28 * 28  # a conv layer's output: 4 × 28 × 28 would alias with the feature maps
    stride, high = s.plan(n)
    assert stride == largest_prime_at_most((n - 16) // 256)
    assert all(stride % d for d in range(2, int(stride**0.5) + 1))
    assert 255 * stride + 16 + high == n  # the last start still fits
    x = torch.arange(n, dtype=torch.float32).reshape(64, 16, 28, 28)
    out = torch.empty(4096)
    assert s.into(x, out) == 4096
    idx = out.numpy().astype(np.int64).reshape(256, 16)
    assert (np.diff(idx, axis=1) == 1).all()  # runs of adjacent elements …
    assert (np.diff(idx[:, 0]) == stride).all()  # … every `stride`
    pixels = idx.reshape(-1) % 784
    channels = idx.reshape(-1) // 784 % 16
    assert len(np.unique(channels)) == 16 and len(np.unique(pixels)) > 700  # of 784: no aliasing
    assert len(np.unique(idx.reshape(-1) // (16 * 784))) == 64  # every sample of the batch


def test_every_element_is_equally_likely_over_steps():
    s = Sampler(256)  # 16 clusters of 16
    n = 20_000
    hits = np.zeros(n)
    x = torch.arange(n, dtype=torch.float32)
    out = torch.empty(256)
    steps = 3000
    for _ in range(steps):
        s.into(x, out)
        hits[out.numpy().astype(np.int64)] += 1
    expected = steps * 256 / n
    stride, _ = s.plan(n)
    inner = hits[stride : n - stride]  # the first and last stride are reached by fewer starts
    assert abs(inner.mean() / expected - 1) < 0.02
    blocks = inner[: len(inner) // 500 * 500].reshape(-1, 500).mean(1)  # sd of a block mean ≈ 2.5 %
    assert np.abs(blocks / expected - 1).max() < 0.12


def test_a_tensor_a_little_larger_than_the_sample_is_read_at_new_positions_each_call():
    """Too small for spaced clusters: a random subset of positions, rotated anew at each call. The same subset at every
    call (and for every tensor of that size) made sampled means of LayerNorm outputs — whose hidden positions differ
    in mean — one shared, made-up pattern; rotated, a feature-position bias averages out over steps."""
    s = Sampler(4096)
    n = 2 * 6 * 512  # (batch, tokens, hidden): 6,144 elements
    assert s.plan(n)[0] == 0  # the subset path
    x = torch.arange(n, dtype=torch.float32)
    out = torch.empty(4096)
    seen = []
    for _ in range(2):
        s.into(x, out)
        seen.append(set(out.numpy().astype(np.int64).tolist()))
    assert len(seen[0]) == 4096 and len(seen[0] & seen[1]) < 3800  # other positions (a random subset overlaps 2/3)
    features = torch.randn(512)  # a per-feature offset, as a LayerNorm's bias gives
    y = features.repeat(12) + 0.01 * torch.randn(n)
    means = [s(y).mean().item() for _ in range(400)]
    assert abs(np.mean(means) - y.mean().item()) < 0.01 * y.std().item() * 3
    kept = torch.empty(4096), torch.empty(4096)
    s.into(x, kept[0], start=0), s.into(x, kept[1], start=0)  # a weight's before / after: the same positions
    assert torch.equal(kept[0], kept[1])


def test_permuted_and_expanded_tensors():
    s = Sampler(1024)
    base = torch.randn(64, 32, 16)
    permuted = base.permute(2, 0, 1)  # dense, not contiguous: its storage holds the same elements
    out = torch.empty(1024)
    assert s.into(permuted, out) == 1024
    assert np.isin(out.numpy(), base.numpy()).all()
    expanded = torch.tensor(3.0).expand(100, 100)  # one element seen 10,000 times
    assert s.into(expanded, out) == 1024 and (out == 3).all()
    medium = torch.randn(1500)  # a little over `sample`: a fixed random subset
    assert s.into(medium, out) == 1024 and np.isin(out.numpy(), medium.numpy()).all()


def _numpy_rows(x: np.ndarray, lengths: np.ndarray, bounds: dict[int, tuple[float, float]]) -> np.ndarray:
    out = np.zeros((len(x), R.ROW))
    for r, k in enumerate(lengths):
        v = x[r, :k].astype(np.float64)
        fin = np.isfinite(v)
        c = np.where(fin, v, 0.0)
        lo, hi = bounds.get(r, (-np.inf, np.inf))
        out[r, : R.MOMENTS] = [
            k,
            c.sum(),
            (c * c).sum(),
            ((c == 0) & fin).sum(),  # NaN/Inf are neither zeros nor saturated
            (((c <= lo) | (c >= hi)) & fin).sum(),
            (~fin).sum(),
            0,
        ]
        out[r, R.MIN] = v[fin].min() if fin.any() else np.finfo(np.float32).max
        out[r, R.MAX] = v[fin].max() if fin.any() else -np.finfo(np.float32).max
    return out


@pytest.mark.parametrize("nonfinite", [False, True])
def test_batched_reductions_match_numpy(nonfinite):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 512)).astype(np.float32)
    x[2] = np.maximum(x[2], 0)  # ReLU-like: many zeros
    x[5] = 1 / (1 + np.exp(-4 * x[5]))  # sigmoid-like: saturated values
    lengths = np.array([512, 512, 512, 300, 512, 512, 40, 40, 0, 512, 1, 512])
    x[3, 300:] = 1e6  # stale values past a row's length are ignored
    if nonfinite:
        x[1, 7], x[4, 9], x[6, 3] = np.nan, np.inf, -np.inf
    sat = R.Saturation.of([5, 6], [(0.05, 0.95), (-0.95, 0.95)])
    want = _numpy_rows(x, lengths, {5: (0.05, 0.95), 6: (-0.95, 0.95)})
    host = R.reduce_rows_host(x, lengths, sat)
    valid = torch.arange(512) < torch.from_numpy(lengths)[:, None]
    device = R.reduce_rows(torch.from_numpy(x), valid, sat).double().numpy()
    staged = lengths > 0
    for got in (host, device):
        np.testing.assert_allclose(got[staged], want[staged], rtol=1e-5, atol=1e-3)


def test_update_sums_use_the_valid_prefix_only():
    rng = np.random.default_rng(1)
    before = rng.standard_normal((3, 64)).astype(np.float32)
    after = before + 0.01 * rng.standard_normal((3, 64)).astype(np.float32)
    after[1, 10:] = 5.0  # stale
    lengths = np.array([64, 10, 64])
    got = R.update_sums_host(after, before, lengths)
    for r, k in enumerate(lengths):
        d = (after[r, :k] - before[r, :k]).astype(np.float64)
        np.testing.assert_allclose(got[r], [(d * d).sum(), (before[r, :k].astype(np.float64) ** 2).sum()], rtol=1e-5)


def test_host_histograms_match_numpy():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 1000)) * 10.0 ** rng.uniform(-6, 6, (3, 1000))).astype(np.float32)
    x[0, :5] = 0.0
    lengths = np.array([1000, 400, 0])
    got = R.histogram_rows(x, lengths)
    for r, k in enumerate(lengths):
        inside = np.clip(x[r, :k].astype(np.float64), R.HIST_EDGES[0], R.HIST_EDGES[-1])  # outermost bins hold the rest
        want, _ = np.histogram(inside, R.HIST_EDGES)
        np.testing.assert_array_equal(got[r], want)


def test_squares_beyond_float32_are_summed_in_float64(recwarn):
    """|values| ≈ 1e20: their squares overflow float32; the host reduction neither returns inf nor warns."""
    x = np.full((2, 64), 1e20, np.float32)
    x[1] = 1.0
    rows = R.reduce_rows_host(x, np.array([64, 64]), None)
    assert rows[0, R.SUMSQ] == pytest.approx(64 * 1e40, rel=1e-6) and rows[1, R.SUMSQ] == 64
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
