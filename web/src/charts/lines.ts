// From per-run columns to uPlot's aligned data and options: for each run a raw line, an EMA-smoothed line
// and, where the server merged points into buckets, a faint min–max band.
import type uPlot from "uplot";
import { withAlpha } from "../core/colors";
import { fmtClock, fmtNumber } from "../core/format";
import { middleRange } from "../core/smooth";
import type { XMode } from "../core/viewstate";

export interface RunLine {
  id: string;
  name: string;
  color: string;
  dash?: number[]; // a rank's line beside rank 0's of the same run
  x: Float64Array; // ascending
  y: Float64Array; // NaN = gap
  smooth: Float64Array | null;
  lo: Float64Array | null; // band, when the series is downsampled
  hi: Float64Array | null;
  bad: Int32Array | null; // NaN/±Inf values behind each point (marked above the plot)
  last?: Float64Array | null; // each point's raw value, when exact (which of NaN, Inf, −Inf)
}

export const SERIES_PER_RUN = 4; // raw, smooth, lo, hi

/** A log axis's labels: its powers of ten (and 2, 5 between them over two decades or fewer; every split when that
 * leaves fewer than two, within a decade), all in one notation — `1e-4 … 1e6` when the axis reaches past 10,000 or
 * below 0.01, plain numbers otherwise. */
export function logLabels(_u: unknown, splits: number[]): string[] {
  const shown = splits.filter((v) => v > 0);
  if (!shown.length) return splits.map(() => "");
  const lo = Math.min(...shown);
  const hi = Math.max(...shown);
  const narrow = Math.log10(hi / lo) <= 2;
  const exp = hi >= 1e4 || lo < 1e-2;
  const every = shown.filter((v) => major(v, narrow)).length < 2;
  return splits.map((v) => {
    if (!(v > 0) || !(every || major(v, narrow))) return "";
    const k = Math.floor(Math.log10(v) + 1e-9);
    return exp ? `${+(v / 10 ** k).toPrecision(3)}e${k}` : fmtNumber(+v.toPrecision(6));
  });
}

/** Whether a log split is a power of ten, or (``more``) 2 or 5 times one. */
function major(v: number, more: boolean): boolean {
  const mant = Math.round(v / 10 ** Math.floor(Math.log10(v) + 1e-9));
  return mant === 1 || (more && (mant === 2 || mant === 5));
}


/** Pixels from one log-axis label to the next at least (11 px text). */
const LOG_SPACE = 24;

/** How many pixels a decade spans on the axis's scale (on a symmetric log one, where decades are even: well past its
 * linear part). */
function decadePx(u: uPlot, axisIdx: number): number {
  const key = u.axes[axisIdx].scale ?? "y";
  const base = u.scales[key].distr === 4 ? 10 * (u.scales[key].asinh ?? 1) : 1;
  return Math.abs(u.valToPos(10 * base, key) - u.valToPos(base, key));
}

/** Every how many decades a log axis labels a power of ten: 1, 2, 3, 5, 10, 20… — as few as keep its labels apart. */
function decadeStride(u: uPlot, axisIdx: number): number {
  const px = decadePx(u, axisIdx);
  const need = px > 0 ? LOG_SPACE / px : Infinity;
  for (let k = 1; ; k *= 10) for (const m of [1, 2, 3, 5]) if (m * k >= need || m * k >= 1e3) return m * k;
}

/** A log axis's splits: each digit of each decade where a decade has room for labels between its ends, each power of
 * ten otherwise, from the range's bottom to its top — exact (`5e29`, `1e30`): uPlot's own, summed in floating point,
 * drifted past 1e16 and stopped labelling a loss that reached 1e30 at 1e22. */
export function logAxisSplits(u: uPlot, axisIdx: number, min: number, max: number): number[] {
  if (!(min > 0) || !(max >= min) || !Number.isFinite(max)) return [];
  const digits = decadePx(u, axisIdx) * Math.log10(2) >= LOG_SPACE / 2 ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : [1];
  const out: number[] = [];
  const e0 = Math.floor(Math.log10(min));
  const e1 = Math.floor(Math.log10(max));
  for (let e = e0; e <= e1; e++) {
    for (const m of digits) {
      const v = Number(`${m}e${e}`);
      if (v >= min * (1 - 1e-12) && v <= max * (1 + 1e-12)) out.push(v);
    }
  }
  return out;
}

/** The splits of a log axis that are labelled: powers of ten — every k-th decade (`decadeStride`) where decades lie
 * closer than a label's room —, and of the digits between them those that leave each label its room (all of them, or
 * 1 2 3 5 7, or 1 2 5). `logLabels` then writes them. */
export function logAxisFilter(u: uPlot, splits: number[], axisIdx: number): (number | null)[] {
  const px = decadePx(u, axisIdx);
  const stride = decadeStride(u, axisIdx);
  const room = (m: number) => px * Math.log10(10 / m) >= LOG_SPACE;
  const digits = room(9) ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : room(7) ? [1, 2, 3, 5, 7] : room(5) ? [1, 2, 5] : [1];
  return splits.map((v) => {
    if (!(v > 0)) return null;
    const e = Math.floor(Math.log10(v) + 1e-9);
    const m = Math.round(v / 10 ** e);
    if (m === 1) return ((e % stride) + stride) % stride === 0 ? v : null;
    return stride === 1 && digits.includes(m) ? v : null;
  });
}

/** A symmetric log axis (uPlot's asinh, linear within ± its `asinh`): a log axis's splits on each side of 0, and 0. */
export function symlogAxisSplits(u: uPlot, axisIdx: number, min: number, max: number): number[] {
  const t = u.scales[u.axes[axisIdx].scale ?? "y"].asinh ?? 1;
  const neg = min < -t ? logAxisSplits(u, axisIdx, t, -min).map((v) => -v).reverse() : [];
  const pos = max > t ? logAxisSplits(u, axisIdx, t, max) : [];
  return [...neg, ...(min <= 0 && max >= 0 ? [0] : []), ...pos];
}

/** A log axis's filter (labels, grid lines) applied to the magnitudes of a symmetric log axis's splits: its two sides
 * alike, and 0 kept — without the splits closer to it than a label's room (the linear part is a few pixels high). */
function mirrored(filter: (u: uPlot, splits: number[], axisIdx: number) => (number | null)[]) {
  return (u: uPlot, splits: number[], axisIdx: number) => {
    const kept = filter(u, splits.map(Math.abs), axisIdx);
    const key = u.axes[axisIdx].scale ?? "y";
    const zero = u.valToPos(0, key);
    const apart = (v: number) => Math.abs(u.valToPos(v, key) - zero) >= LOG_SPACE;
    return splits.map((v, i) => (v === 0 ? 0 : kept[i] !== null && apart(v) ? v : null));
  };
}

/** A symmetric log axis's labels: a log axis's, of the magnitudes, signed; and 0. */
export function symlogLabels(u: unknown, splits: number[]): string[] {
  const labels = logLabels(u, splits.map(Math.abs));
  return splits.map((v, i) => (v === 0 ? "0" : v < 0 && labels[i] ? `-${labels[i]}` : labels[i]));
}

/** The linear part of a symmetric log axis over `values`: a power of ten at or below the 10th percentile of the nonzero
 * magnitudes — the runs near 0 keep their shape beside one that diverged to 1e35. */
export function symlogThreshold(values: Iterable<number>): number {
  const mags: number[] = [];
  for (const v of values) if (Number.isFinite(v) && v !== 0) mags.push(Math.abs(v));
  if (!mags.length) return 1;
  mags.sort((a, b) => a - b);
  return 10 ** Math.floor(Math.log10(mags[Math.floor(mags.length * 0.1)]));
}

/** A log axis's grid lines: at 1, 2 and 5 of each decade, not at every digit (at every split within a decade); where
 * decades lie closer than a label's room, at the labelled powers of ten only. */
export function logGridFilter(u: uPlot, splits: number[], axisIdx: number): (number | null)[] {
  if (decadeStride(u, axisIdx) > 1) return logAxisFilter(u, splits, axisIdx);
  const kept = splits.filter((v) => v > 0 && major(v, true));
  return kept.length < 2 ? splits : splits.map((v) => (v > 0 && major(v, true) ? v : null));
}

/**
 * One shared x array (the sorted union) and each run's columns placed on it. Where a run has no point (another
 * run's x) the value is `undefined`, which uPlot draws across; where its value is NaN or ±Inf (or not positive, on a
 * log axis) it is `null`, a gap in all four of its lines — a diverged step is not drawn as if nothing happened.
 * A smoothed value left out for being an absurd outlier (`withoutOutliers`) is drawn across.
 */
export function align(lines: RunLine[], log: boolean): uPlot.AlignedData {
  const xs = unionSorted(lines.map((l) => l.x));
  const out: (number | null | undefined)[][] = [];
  const drawable = (v: number) => Number.isFinite(v) && (!log || v > 0);
  for (const l of lines) {
    const cols: (Float64Array | null)[] = [l.y, l.smooth, l.lo, l.hi];
    const placed = cols.map(() => new Array<number | null | undefined>(xs.length).fill(undefined));
    let j = 0;
    for (let i = 0; i < l.x.length; i++) {
      const x = l.x[i];
      while (xs[j] < x) j++;
      const gap = !drawable(l.y[i]);
      for (let c = 0; c < cols.length; c++) {
        const col = cols[c];
        if (!col) continue;
        placed[c][j] = gap ? null : drawable(col[i]) ? col[i] : undefined;
      }
    }
    out.push(...placed);
  }
  return [xs, ...out] as uPlot.AlignedData;
}

/** Where each run held NaN/±Inf values: small marks of its colour along the top of the plot. */
function drawNonFinite(u: uPlot, lines: RunLine[]): void {
  const ctx = u.ctx;
  const { left, top, width } = u.bbox;
  const px = devicePixelRatio || 1;
  ctx.save();
  lines.forEach((l, k) => {
    if (!l.bad || !u.series[1 + k * SERIES_PER_RUN].show) return;
    ctx.fillStyle = l.color;
    for (let i = 0; i < l.x.length; i++) {
      if (!(l.bad[i] > 0)) continue;
      const x = u.valToPos(l.x[i], "x", true);
      if (x < left - 1 || x > left + width + 1) continue;
      const y = top + (2 + 5 * k) * px; // one row per run: two runs' marks at one step stay apart
      ctx.beginPath();
      ctx.moveTo(x - 3.5 * px, y);
      ctx.lineTo(x + 3.5 * px, y);
      ctx.lineTo(x, y + 5 * px);
      ctx.closePath();
      ctx.fill();
    }
  });
  ctx.restore();
}

/** The first x from which every y is NaN/±Inf (a training that diverged leaves every later value so; its line ends
 * there), or null when the last y is finite. */
export function notFiniteFrom(x: ArrayLike<number>, y: ArrayLike<number>): number | null {
  let i = y.length - 1;
  if (i < 0 || Number.isFinite(y[i])) return null;
  while (i >= 0 && !Number.isFinite(y[i])) i--;
  return x[i + 1];
}

/** A step a chart points at: red for a finding's, `color` for a chosen one. */
export interface Marker {
  x: number;
  label: string;
  color?: string;
}

/** A dashed vertical line at `m.x`, labelled at its top. */
function drawMarker(u: uPlot, m: Marker | null): void {
  if (!m) return;
  const { left, top, width, height } = u.bbox;
  const x = Math.round(u.valToPos(m.x, "x", true));
  if (x < left - 1 || x > left + width + 1) return;
  const px = devicePixelRatio || 1;
  const ctx = u.ctx;
  ctx.save();
  const color = m.color ?? "#c92a2a";
  ctx.strokeStyle = color;
  ctx.lineWidth = px;
  ctx.setLineDash([4 * px, 3 * px]);
  ctx.beginPath();
  ctx.moveTo(x, top);
  ctx.lineTo(x, top + height);
  ctx.stroke();
  ctx.font = `${11 * px}px system-ui, sans-serif`;
  ctx.fillStyle = color;
  ctx.textBaseline = "top";
  const w = ctx.measureText(m.label).width;
  ctx.textAlign = x + 4 * px + w > left + width ? "right" : "left"; // inside the plot, on the side with room
  ctx.fillText(m.label, ctx.textAlign === "right" ? x - 4 * px : x + 4 * px, top + 8 * px);
  ctx.restore();
}

function unionSorted(arrays: Float64Array[]): number[] {
  if (arrays.length === 1) return Array.from(arrays[0]);
  let n = 0;
  for (const a of arrays) n += a.length;
  const all = new Float64Array(n);
  let o = 0;
  for (const a of arrays) {
    all.set(a, o);
    o += a.length;
  }
  all.sort();
  const out: number[] = [];
  for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[i - 1]) out.push(all[i]);
  return out;
}

export interface ChartConfig {
  x: XMode;
  log: boolean;
  symlog?: number | null; // signed values on a symmetric log axis, linear within ± this (`log` false)
  smoothing: number;
  onZoom: (range: [number, number]) => void;
  onReset: () => void;
  onCursor: (idx: number | null, left: number, top: number) => void;
  xRange: () => [number, number] | null;
  onYScale?: (min: number | null, max: number | null, distr: number) => void;
  onYLabels?: (labels: string[]) => void; // the y axis's labels as drawn (for the browser tests)
  marker?: () => Marker | null; // a step to point at (a diagnosed loss spike; the step another view shows)
  lines?: () => RunLine[]; // the lines now (the options outlive the data they were made with)
}

const axisFont = '11px system-ui, -apple-system, "Segoe UI", sans-serif';

function xValues(mode: XMode): uPlot.Axis["values"] {
  if (mode === "relative") return (_u, splits) => splits.map(fmtClock);
  if (mode === "step") return (_u, splits) => splits.map(fmtStep);
  return undefined;
}

export function fmtStep(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(Math.round(v * 100) / 100);
}

/** Series with at most this many points in view show them as dots (a single point draws no line at all). */
export const SPARSE_POINTS = 12;

function hasValues(col: uPlot.AlignedData[number] | undefined): boolean {
  if (!col) return false;
  for (let i = 0; i < col.length; i++) if (col[i] != null) return true;
  return false;
}

function fewValues(col: uPlot.AlignedData[number] | undefined, i0: number, i1: number): boolean {
  if (!col) return false;
  let n = 0;
  for (let i = i0; i <= i1; i++) if (col[i] != null && ++n > SPARSE_POINTS) return false;
  return n > 0;
}

export function options(lines: RunLine[], cfg: ChartConfig): Omit<uPlot.Options, "width" | "height"> {
  const series: uPlot.Series[] = [{}];
  const bands: uPlot.Band[] = [];
  const smoothing = cfg.smoothing > 0;
  const sym = !cfg.log && cfg.symlog ? cfg.symlog : null;
  lines.forEach((l, i) => {
    const base = 1 + i * SERIES_PER_RUN;
    const faint = withAlpha(l.color, 0.28);
    series.push(
      {
        label: l.name,
        // faint behind its smoothed line; a series too short to smooth is drawn as it is, with its points
        stroke: (u) => (smoothing && hasValues(u.data[base + 1]) ? faint : l.color),
        width: smoothing ? 1 : 1.5,
        dash: l.dash,
        spanGaps: false,
        points: { show: (u, si, i0, i1) => fewValues(u.data[si], i0, i1), size: 6, fill: l.color, stroke: l.color },
      },
      { label: `${l.name} (smoothed)`, stroke: l.color, width: 1.75, dash: l.dash, spanGaps: false, points: { show: false }, show: smoothing },
      { label: `${l.name} min`, stroke: "transparent", width: 0, spanGaps: false, points: { show: false } },
      { label: `${l.name} max`, stroke: "transparent", width: 0, spanGaps: false, points: { show: false } },
    );
    if (l.lo && l.hi) bands.push({ series: [base + 3, base + 2], fill: withAlpha(l.color, 0.12) });
  });
  return {
    series,
    bands,
    legend: { show: false },
    padding: [10, 12, 0, 0],
    scales: {
      x: {
        time: cfg.x === "wall",
        range: (_u, min, max) => cfg.xRange() ?? (min === max ? [min - 1, max + 1] : [min, max]),
      },
      y: cfg.log
        ? { distr: 3, log: 10 }
        : sym
          ? { distr: 4, asinh: sym }
          : { range: (u, min, max) => robustRange(u, min, max, cfg.xRange(), cfg.marker?.()?.x ?? null) },
    },
    axes: [
      {
        font: axisFont,
        stroke: "#6b7280",
        grid: { stroke: "#eef0f4", width: 1 },
        ticks: { stroke: "#e2e5ea", width: 1, size: 4 },
        values: xValues(cfg.x),
        space: 70,
        size: 34,
      },
      {
        font: axisFont,
        stroke: "#6b7280",
        // undefined would unset uPlot's own
        grid: { stroke: "#eef0f4", width: 1, ...(cfg.log ? { filter: logGridFilter } : sym ? { filter: mirrored(logGridFilter) } : {}) },
        ticks: { show: false },
        size: 52,
        incrs: Y_INCRS, // uPlot's own stop near 1e16: a 1e35 spike left the axis without labels
        ...(cfg.log ? { splits: logAxisSplits, filter: logAxisFilter } : sym ? { splits: symlogAxisSplits, filter: mirrored(logAxisFilter) } : {}),
        values: (u, splits) => {
          const labels = cfg.log ? logLabels(u, splits) : sym ? symlogLabels(u, splits) : splits.map((v) => fmtNumber(v));
          cfg.onYLabels?.(labels);
          return labels;
        },
      },
    ],
    cursor: {
      drag: { x: true, y: false, setScale: false },
      points: { show: false },
      bind: { dblclick: () => null },
    },
    select: { show: true, left: 0, top: 0, width: 0, height: 0 },
    hooks: {
      setSelect: [
        (u) => {
          const { left, width } = u.select;
          if (width > 4) {
            const a = u.posToVal(left, "x");
            const b = u.posToVal(left + width, "x");
            cfg.onZoom([Math.min(a, b), Math.max(a, b)]);
          }
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
        },
      ],
      setCursor: [(u) => cfg.onCursor(u.cursor.idx ?? null, u.cursor.left ?? -1, u.cursor.top ?? -1)],
      setScale: [
        (u, key) => {
          const s = u.scales[key];
          if (key === "y" && cfg.onYScale) cfg.onYScale(s.min ?? null, s.max ?? null, s.distr ?? 1);
        },
      ],
      ready: [(u) => u.over.addEventListener("dblclick", () => cfg.onReset())],
      draw: [
        (u) => {
          drawNonFinite(u, cfg.lines?.() ?? lines);
          drawMarker(u, cfg.marker?.() ?? null);
        },
      ],
    },
  };
}

const Y_INCRS = Array.from({ length: 81 }, (_, k) => [1, 2, 5].map((m) => m * 10 ** (k - 40))).flat();

/**
 * The y range: the data's, padded — unless a few raw values of a run (a loss of 1e35 at a step a mixed-precision
 * scaler skipped) lie far beyond where 98 % of that run's values do (`middleRange`, judged run by run); then what
 * each run's 98 % span (and whatever the smoothed lines carry of the outliers) leaves the plot at its edge.
 * Ordinary curves, early losses included, stay whole. Only the points in view count: zoomed onto a spike (fewer
 * than 100 points of its run), the spike is the data — and with the spike's step `marked`, values far above it (a
 * training that diverged after it) leave the plot at its top edge rather than flatten it (`markedTop`).
 */
export function robustRange(
  u: uPlot,
  min: number,
  max: number,
  zoom: [number, number] | null = null,
  marked: number | null = null,
): uPlot.Range.MinMax {
  if (!Number.isFinite(min) || !Number.isFinite(max) || max - min <= 0) return padRange(min, max);
  const xs = u.data[0] as number[];
  // the zoom, not u.scales.x: uPlot ranges y before it stores the new x range
  const [x0, x1] = zoom ?? [-Infinity, Infinity];
  let lo = Infinity;
  let hi = -Infinity;
  let clipped = false;
  for (let s = 1; s < u.data.length; s += SERIES_PER_RUN) {
    const ys = u.data[s] as (number | null)[];
    const shown: (number | null)[] = [];
    for (let i = 0; i < ys.length; i++) if (xs[i] >= x0 && xs[i] <= x1) shown.push(ys[i]);
    const m = middleRange(shown);
    if (m?.outliers) {
      clipped = true;
      lo = Math.min(lo, m.lo);
      hi = Math.max(hi, m.hi);
    } else {
      for (const v of shown) if (v !== null && Number.isFinite(v)) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
    }
  }
  const top = marked === null ? null : markedTop(u, marked, lo, hi);
  if (top !== null) return padRange(lo, top);
  return clipped && hi >= lo ? padRange(lo, hi) : padRange(min, max);
}

/** How far above a marked spike (in multiples of its height over the lowest value shown) a value must lie to leave the
 * plot: a loss of 1e16 two steps after a spike to 400 would draw the spike as flat as the rest. */
const MARKED_REACH = 10;

/** The top of the y range that keeps the marked step's highest value (`x` nearest `marked`) in view when values shown
 * reach far above it (`MARKED_REACH`); null when none does. `lo`, `hi`: the values shown. */
function markedTop(u: uPlot, marked: number, lo: number, hi: number): number | null {
  const xs = u.data[0] as number[];
  let at = -1;
  for (let i = 0; i < xs.length; i++) if (at < 0 || Math.abs(xs[i] - marked) < Math.abs(xs[at] - marked)) at = i;
  let peak = -Infinity;
  for (let s = 1; s < u.data.length; s += SERIES_PER_RUN) {
    const v = (u.data[s] as (number | null)[])[at];
    if (v !== null && v !== undefined && Number.isFinite(v)) peak = Math.max(peak, v);
  }
  return peak > lo && hi > lo + MARKED_REACH * (peak - lo) ? peak : null;
}

export function padRange(min: number, max: number): uPlot.Range.MinMax {
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  // A constant up to rounding (a smoothed 0.001 is 0.0010000000000000002 here and there): drawn as a constant.
  // A range of 1e-19 would make ticks 1e-20 apart — uPlot then fails to allocate their array.
  if (max - min <= Math.max(Math.abs(min), Math.abs(max)) * 1e-9) {
    const d = Math.abs(min) * 0.1 || 1;
    return [min - d, max + d];
  }
  const pad = (max - min) * 0.06;
  return [min - pad, max + pad];
}
