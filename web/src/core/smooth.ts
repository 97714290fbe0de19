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
