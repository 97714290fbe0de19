/**
 * TensorBoard's smoothing: an exponential moving average, debiased so that the first points are not pulled
 * towards zero. Non-finite values pass through and do not disturb the average.
 */
export function ema(values: ArrayLike<number>, weight: number): Float64Array {
  const out = new Float64Array(values.length);
  let last = 0;
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    n++;
    const debias = weight === 1 ? 1 : 1 - Math.pow(weight, n);
    out[i] = last / debias;
  }
  return out;
}

/**
 * `values` with its absurd outliers as NaN, for smoothing: values more than 1000 × the spread of the middle 98 %
 * away from it (a loss of 1e35 at one step) would otherwise dominate an average for hundreds of steps. Ordinary
 * series come back unchanged (the same array).
 */
export function withoutOutliers(values: Float64Array): Float64Array {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length < 20) return values;
  const sorted = Float64Array.from(finite).sort();
  const lo = sorted[Math.floor(sorted.length * 0.01)];
  const hi = sorted[Math.ceil(sorted.length * 0.99) - 1];
  const reach = 1000 * (hi - lo);
  if (!(reach > 0) || (sorted[0] >= lo - reach && sorted[sorted.length - 1] <= hi + reach)) return values;
  return values.map((v) => (v < lo - reach || v > hi + reach ? NaN : v));
}
