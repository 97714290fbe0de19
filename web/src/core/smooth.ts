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

/** How far beyond the middle 98 % of a series' values (in multiples of its spread) a value is an absurd outlier. */
export const OUTLIER_REACH = 1000;

/**
 * The 1st and 99th percentiles of the finite values, and whether some value lies more than `OUTLIER_REACH` ×
 * their spread beyond them (a loss of 1e35 at one step); null for fewer than 20 values or no spread.
 */
export function middleRange(values: Iterable<number | null>): { lo: number; hi: number; outliers: boolean } | null {
  const finite: number[] = [];
  for (const v of values) if (v !== null && Number.isFinite(v)) finite.push(v);
  if (finite.length < 20) return null;
  finite.sort((a, b) => a - b);
  const lo = finite[Math.floor(finite.length * 0.01)];
  const hi = finite[Math.ceil(finite.length * 0.99) - 1];
  const reach = OUTLIER_REACH * (hi - lo);
  if (!(reach > 0)) return null;
  return { lo, hi, outliers: finite[0] < lo - reach || finite[finite.length - 1] > hi + reach };
}

/**
 * `values` with its absurd outliers (`middleRange`) as NaN, for smoothing: one would otherwise dominate an
 * average for hundreds of steps. Ordinary series come back unchanged (the same array).
 */
export function withoutOutliers(values: Float64Array): Float64Array {
  const m = middleRange(values);
  if (!m || !m.outliers) return values;
  const reach = OUTLIER_REACH * (m.hi - m.lo);
  return values.map((v) => (v < m.lo - reach || v > m.hi + reach ? NaN : v));
}

/** Whether a series holds its value for most steps and jumps between (a learning-rate schedule, an epoch counter):
 * at least 90 % of consecutive finite values are equal. Smoothing would draw its jumps as ramps. */
export function isStepwise(values: ArrayLike<number>): boolean {
  let same = 0;
  let pairs = 0;
  for (let i = 1; i < values.length; i++) {
    const a = values[i - 1];
    const b = values[i];
    if (!Number.isFinite(a) || !Number.isFinite(b)) continue;
    pairs++;
    if (a === b) same++;
  }
  return pairs > 0 && same >= 0.9 * pairs;
}

/** Whether a series has no noise to smooth away: its direction changes at fewer than 5 % of its steps (a warm-up and
 * cosine schedule, a counter, a monotone curve). Smoothing such a series only makes it lag behind its values. A
 * noisy series (a loss) changes direction at about half of them. */
export function isNoiseFree(values: ArrayLike<number>): boolean {
  let flips = 0;
  let moves = 0;
  let prev = 0; // sign of the last non-zero change
  for (let i = 1; i < values.length; i++) {
    const d = values[i] - values[i - 1];
    if (!Number.isFinite(d) || d === 0) continue;
    const sign = d > 0 ? 1 : -1;
    if (prev !== 0 && sign !== prev) flips++;
    prev = sign;
    moves++;
  }
  return moves > 0 && flips < 0.05 * moves;
}
