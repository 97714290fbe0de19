// Colour scales of the layer × step overview: sequential (viridis) for magnitudes and shares, optionally on a
// log axis, diverging (blue–white–red) around 0 for signed statistics. Domains come from the data held, from robust
// percentiles: values beyond them take the end colours.

export type ScaleKind = "sequential" | "diverging" | "share";

const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
const DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];

/** A log scale's exact zeros (and negatives): a grey outside the ramp — dark purple made 0 read as "smallest". */
export const ZERO_COLOR = "#8d939c";
const rgb = (hex: string) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const VIR = VIRIDIS.map(rgb);
const DIV = DIVERGING.map(rgb);
const ZERO = rgb(ZERO_COLOR) as [number, number, number];

function interp(stops: number[][], t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

/** Which scale a statistic gets: signed values diverge around 0, shares run 0–1, the rest are magnitudes. */
export function scaleKind(stat: string): ScaleKind {
  if (stat === "mean" || stat === "min" || stat === "max") return "diverging";
  if (stat.endsWith("_frac")) return "share";
  return "sequential";
}

/** Statistics whose values span orders of magnitude: a log colour scale is the natural default. */
export const LOG_DEFAULT = new Set(["norm", "update_ratio", "rms", "std"]);

export interface ColorScale {
  kind: ScaleKind;
  log: boolean;
  lo: number;
  hi: number;
  /** RGB of a value; null for NaN (drawn as the empty background). */
  color(v: number): [number, number, number] | null;
  /** CSS gradient for the legend, low to high. */
  gradient: string;
  /** Tick values for the legend. */
  ticks: number[];
  /** The smallest and largest finite values, when they lie beyond the scale's ends (drawn in the end colours). */
  below: number | null;
  above: number | null;
  /** What the ends are, for the legend: "from the 1st to the 99th percentile". */
  span: string;
}

/** The finite values' smallest and largest — the positive ones' on a log scale — (NaN, NaN when there is none). */
function extent(values: ArrayLike<number>, positive: boolean): [number, number] {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v) || (positive && v <= 0)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return min <= max ? [min, max] : [NaN, NaN];
}

function quantiles(values: ArrayLike<number>, log: boolean): [number, number] {
  const xs: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    if (log && v <= 0) continue;
    xs.push(v);
  }
  if (!xs.length) return [0, 1];
  xs.sort((a, b) => a - b);
  const q = (p: number) => xs[Math.min(xs.length - 1, Math.max(0, Math.round(p * (xs.length - 1))))];
  return [q(0.01), q(0.99)];
}

/** Where a diverging scale ends (±`end`) and which percentile of the nonzero magnitudes that is: the 99th — or, where
 * that leaves most cells white, the highest of the 98th, 95th … 50th under which a quarter of them at least take a
 * visible colour (a tenth of the way to an end or more). A diverged run's last steps (values up to 1e19) made ±1e19
 * the ends and every step before them white; now they take the end colours, and the steps before show. Exact zeros
 * are white on any scale: they do not count. */
function divergingEnd(values: ArrayLike<number>): { end: number; pct: number } {
  const xs: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = Math.abs(values[i]);
    if (Number.isFinite(v) && v > 0) xs.push(v);
  }
  if (!xs.length) return { end: 1, pct: 99 };
  xs.sort((a, b) => a - b);
  const q = (p: number) => xs[Math.min(xs.length - 1, Math.max(0, Math.round(p * (xs.length - 1))))];
  const atLeast = (v: number) => {
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    return xs.length - lo;
  };
  for (const pct of [99, 98, 95, 90, 80, 70, 60, 50]) {
    const end = q(pct / 100);
    if (atLeast(0.1 * end) >= 0.25 * xs.length) return { end, pct };
  }
  return { end: q(0.5), pct: 50 };
}

const ordinal = (n: number) => `${n}${n % 10 === 1 && n !== 11 ? "st" : n % 10 === 2 && n !== 12 ? "nd" : n % 10 === 3 && n !== 13 ? "rd" : "th"}`;

/** The scale of `stat` over `values`; `own`: a row's own scale, low → high over its values whatever the statistic (a
 * sigmoid's mean, 0.49 to 0.5, was one dark red on a scale symmetric around 0). */
export function makeScale(stat: string, values: ArrayLike<number>, logWanted: boolean, own = false): ColorScale {
  const kind = own ? "sequential" : scaleKind(stat);
  const log = kind === "sequential" && logWanted;
  let lo: number;
  let hi: number;
  let span = "from the 1st to the 99th percentile";
  if (kind === "share") [lo, hi] = [0, 1];
  else if (kind === "diverging") {
    const { end, pct } = divergingEnd(values);
    [lo, hi] = [-end, end];
    span = `± the ${ordinal(pct)} percentile of the magnitudes${pct < 99 ? " (larger ones would leave most cells white)" : ""}`;
  } else {
    [lo, hi] = quantiles(values, log);
    if (lo === hi) [lo, hi] = log ? [lo / 2, hi * 2] : [lo - 0.5, hi + 0.5];
  }
  const tf = (v: number) => (log ? Math.log10(v) : v);
  const a = tf(lo);
  const b = tf(hi);
  const stops = kind === "diverging" ? DIV : VIR;
  const color = (v: number): [number, number, number] | null => {
    if (Number.isNaN(v)) return null;
    if (log && v <= 0) return ZERO; // exactly 0 (a dead layer's gradient): no colour of the ramp, whose low end is small
    const t = v === Infinity ? 1 : v === -Infinity ? 0 : (tf(v) - a) / (b - a || 1);
    return interp(stops, t);
  };
  const css = (kind === "diverging" ? DIVERGING : VIRIDIS).map((c, i, all) => `${c} ${(i / (all.length - 1)) * 100}%`);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => (log ? 10 ** (a + (b - a) * t) : a + (b - a) * t));
  // the scale spans the 1st to 99th percentile, so that one outlier does not wash out the rest: say what lies beyond
  const [min, max] = extent(values, log);
  const below = min < lo ? min : null;
  const above = max > hi ? max : null;
  return { kind, log, lo, hi, color, gradient: `linear-gradient(to right, ${css.join(", ")})`, ticks, below, above, span };
}
