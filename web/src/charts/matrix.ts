// Draws the layer × step overview on a canvas: one pixel column per step bucket (an ImageData of rows ×
// buckets scaled without smoothing), layer labels on the left, a step axis below, the selection on top. Labels
// and ticks never overprint: those that do not fit are left out, the least important first; a stretch of steps
// that was not recorded (a watch stopped and started again) is marked where its two columns meet.
import type { ColorScale } from "../core/colorscale";
import { rowNonfinite, rowValues, type DisplayRow } from "../core/layerrows";
import { fmtNumber } from "../core/format";
import { fmtStep } from "./lines";

export interface MatrixGeometry {
  labelW: number;
  plotW: number;
  rowH: number;
  axisH: number;
  cols: number;
}

export interface MatrixPicture extends MatrixGeometry {
  rows: DisplayRow[];
  values: Float32Array;
  nonfinite: Int32Array | null; // per (layer, bucket): steps that were NaN/Inf
  steps: number[];
  scale: ColorScale;
  rowScales?: ColorScale[]; // per display row, when each row has its own scale
  selectedRow: number; // -1: none
  selectedCol: number; // -1: none
}

const FONT = '11px system-ui, -apple-system, "Segoe UI", sans-serif';
const EMPTY: [number, number, number] = [241, 243, 246];
/** Cells whose values were NaN/Inf: a magenta no colour scale uses (a grey would read as "no value"). */
export const NONFINITE_COLOR = "#e81fc8";
const NONFINITE: [number, number, number] = [232, 31, 200];
const LABEL_GAP = 12; // px from one row label's centre to the next
const TICK_PAD = 10; // px between two tick labels

export interface MatrixDrawn {
  ticks: { step: number; x: number; w: number }[]; // x: the tick's position, w: its label's width
  labels: { row: number; y: number }[]; // the rows labelled, at their label's centre
  gaps: StepGap[];
}

/** Where consecutive columns lie farther apart than the recording's stride: steps after `after` up to `before` were
 * not recorded (or their buckets are empty); `col` is the first column after the gap. */
export interface StepGap {
  col: number;
  after: number;
  before: number;
}

/** Gaps between columns: a step difference more than twice the larger of its neighbours' (the stride on either
 * side, which may differ when `every` changed) and more than twice the typical one. */
export function stepGaps(steps: number[]): StepGap[] {
  const n = steps.length;
  if (n < 3) return [];
  const d = steps.slice(1).map((s, i) => s - steps[i]);
  const typical = [...d].sort((a, b) => a - b)[d.length >> 1];
  const out: StepGap[] = [];
  for (let i = 0; i < d.length; i++) {
    const near = Math.max(i > 0 ? d[i - 1] : 0, i + 1 < d.length ? d[i + 1] : 0);
    if (d[i] > 2 * near && d[i] > 2 * typical) out.push({ col: i + 1, after: steps[i], before: steps[i + 1] });
  }
  return out;
}

/** A stretch of columns recorded at one stride (one watch's `every`): steps `first`…`last`; `joined` when the next
 * period follows it without a gap (a watch stopped and started again at once with another `every`). */
export interface StepPeriod {
  first: number;
  last: number;
  every: number;
  joined: boolean;
}

/** The periods of one stride in `steps` (one step per column), split at `gaps` and where the stride changes. A stride
 * that holds for a single difference only is the seam between two watches (the step a new watch started at), not a
 * period of its own; a period starts at the first step of its stride. */
export function stepPeriods(steps: number[], gaps: StepGap[]): StepPeriod[] {
  const out: StepPeriod[] = [];
  const ends = [...gaps.map((g) => g.col), steps.length];
  let a = 0;
  for (const b of ends) {
    let i = a;
    while (i < b - 1) {
      const every = steps[i + 1] - steps[i];
      let j = i + 1;
      while (j + 1 < b && steps[j + 1] - steps[j] === every) j++;
      const whole = i === a && j === b - 1; // a stretch between gaps of a single difference (two steps)
      if (j - i >= 2 || whole) {
        if (out.length && out[out.length - 1].last >= steps[a]) out[out.length - 1].joined = true;
        out.push({ first: steps[i], last: steps[j], every, joined: false });
      }
      i = j;
    }
    a = b;
  }
  return out;
}

/** Where a row's label goes: its centre, kept inside the rows (a top row 3 px high would clip it). */
export function labelY(r: number, rowH: number, rows: number): number {
  return Math.min(Math.max(r * rowH + rowH / 2, 6), Math.max(6, rows * rowH - 6));
}

/** Rows to label, `minGap` px apart at least: the selected row first, then groups by depth (outermost first),
 * then layers, each in order; a row is left out when a label already taken lies too close. */
export function labelRows(rows: DisplayRow[], rowH: number, selected: number, minGap = LABEL_GAP): number[] {
  const reach = Math.ceil((minGap + 6) / rowH) + 1; // rows whose labels could lie within minGap (clamped ones too)
  const rank = (r: number) => (r === selected ? -1 : rows[r].kind === "layer" ? 1000 : rows[r].depth);
  const order = rows.map((_, r) => r).sort((a, b) => rank(a) - rank(b) || a - b);
  const taken = new Uint8Array(rows.length);
  const out: number[] = [];
  for (const r of order) {
    const y = labelY(r, rowH, rows.length);
    let free = true;
    for (let k = Math.max(0, r - reach); k < Math.min(rows.length, r + reach + 1) && free; k++) {
      free = !taken[k] || Math.abs(labelY(k, rowH, rows.length) - y) >= minGap;
    }
    if (!free) continue;
    taken[r] = 1;
    out.push(r);
  }
  return out.sort((a, b) => a - b);
}

/** The bucket holding `step`: the first whose last step is ≥ it (−1 if beyond the last). */
export function columnOf(steps: number[], step: number): number {
  let lo = 0;
  let hi = steps.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid] < step) lo = mid + 1;
    else hi = mid;
  }
  return lo < steps.length ? lo : -1;
}

/** Draws the picture; returns what it drew: the step axis's ticks, the labelled rows and the gaps marked. */
export function drawMatrix(canvas: HTMLCanvasElement, p: MatrixPicture): MatrixDrawn {
  const dpr = window.devicePixelRatio || 1;
  const width = p.labelW + p.plotW;
  const height = p.rows.length * p.rowH + p.axisH;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  if (!p.cols || !p.rows.length) return { ticks: [], labels: [], gaps: [] };

  // Cells: one pixel per (row, bucket), scaled up; NaN/Inf without a finite value in the bucket in their colour.
  const img = new ImageData(p.cols, p.rows.length);
  const partly: [number, number, number][] = []; // (row, first column, end column): some steps NaN/Inf, some not
  p.rows.forEach((row, r) => {
    const header = row.kind === "header";
    const vals = header ? null : rowValues(p.values, p.cols, row);
    const bad = header ? null : rowNonfinite(p.nonfinite, p.cols, row);
    const scale = p.rowScales?.[r] ?? p.scale;
    for (let c = 0; c < p.cols; c++) {
      const nan = bad !== null && bad[c] > 0;
      if (nan && Number.isFinite(vals![c])) {
        const last = partly.at(-1);
        if (last && last[0] === r && last[2] === c) last[2] = c + 1;
        else partly.push([r, c, c + 1]);
      }
      const rgb = header ? [255, 255, 255] : (scale.color(vals![c]) ?? (nan ? NONFINITE : EMPTY));
      const o = (r * p.cols + c) * 4;
      img.data[o] = rgb[0];
      img.data[o + 1] = rgb[1];
      img.data[o + 2] = rgb[2];
      img.data[o + 3] = 255;
    }
  });
  const off = document.createElement("canvas");
  off.width = p.cols;
  off.height = p.rows.length;
  off.getContext("2d")!.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, p.labelW, 0, p.plotW, p.rows.length * p.rowH);
  const cw = p.plotW / p.cols;
  // a cell with a finite mean whose bucket also held NaN/Inf steps: its top quarter in the NaN/Inf colour
  ctx.fillStyle = NONFINITE_COLOR;
  const mark = Math.max(1, Math.round(p.rowH / 4));
  for (const [r, c0, c1] of partly) ctx.fillRect(p.labelW + c0 * cw, r * p.rowH, Math.max(1, (c1 - c0) * cw), mark);

  // Gaps in the recorded steps: a white cut with a dashed line down the cells.
  const gaps = stepGaps(p.steps);
  const rowsH = p.rows.length * p.rowH;
  for (const g of gaps) {
    const x = Math.round(p.labelW + g.col * cw) + 0.5;
    ctx.fillStyle = "#fff";
    ctx.fillRect(x - 1.5, 0, 3, rowsH);
    ctx.strokeStyle = "#6b7280";
    ctx.lineWidth = 1;
    ctx.setLineDash([3, 2]);
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, rowsH);
    ctx.stroke();
    ctx.setLineDash([]);
  }

  // Labels: as many as fit without overprinting, outer groups first.
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  const labelled = labelRows(p.rows, p.rowH, p.selectedRow);
  const labels: MatrixDrawn["labels"] = [];
  for (const r of labelled) {
    const row = p.rows[r];
    const y = labelY(r, p.rowH, p.rows.length);
    labels.push({ row: r, y });
    ctx.fillStyle = row.kind === "layer" ? "#374151" : "#111827";
    ctx.font = row.kind === "layer" ? FONT : `600 ${FONT}`;
    const x = 8 + Math.min(row.depth, 6) * 10;
    const max = p.labelW - x - 8;
    const noteW = row.note ? Math.min(72, ctx.measureText(row.note).width + 8) : 0;
    fitText(ctx, row.label, x, y, max - noteW);
    if (row.note && p.rowH >= 10) {
      ctx.fillStyle = "#9aa1ae";
      ctx.textAlign = "right";
      fitText(ctx, row.note, p.labelW - 8, y, 64);
      ctx.textAlign = "left";
    }
  }

  // Each row on its own scale: its range at the right end of the row, on a white tag (without it, no row said what
  // its colours meant).
  if (p.rowScales && p.rowH >= 11) {
    ctx.font = FONT;
    ctx.textAlign = "right";
    p.rows.forEach((row, r) => {
      const s = p.rowScales![r];
      if (row.kind === "header" || !Number.isFinite(s.lo) || !Number.isFinite(s.hi)) return;
      const text = `${fmtNumber(+s.lo.toPrecision(2))} … ${fmtNumber(+s.hi.toPrecision(2))}`;
      const w = ctx.measureText(text).width + 8;
      const y = r * p.rowH + p.rowH / 2;
      ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
      ctx.fillRect(p.labelW + p.plotW - w - 2, y - 7, w, 14);
      ctx.fillStyle = "#374151";
      ctx.fillText(text, p.labelW + p.plotW - 6, y);
    });
    ctx.textAlign = "left";
  }

  // Selection: the selected row framed, the selected step as a vertical line.
  if (p.selectedRow >= 0) {
    ctx.fillStyle = "rgba(47, 91, 234, 0.10)";
    ctx.fillRect(0, p.selectedRow * p.rowH, p.labelW, p.rowH);
    ctx.strokeStyle = "#2f5bea";
    ctx.lineWidth = 1.5;
    ctx.strokeRect(p.labelW + 0.75, p.selectedRow * p.rowH + 0.75, p.plotW - 1.5, Math.max(1, p.rowH - 1.5));
  }
  if (p.selectedCol >= 0) {
    // a dark line in a white casing: seen on the dark end of the colour scale as on the light one
    const x = Math.round(p.labelW + (p.selectedCol + 0.5) * cw) + 0.5;
    for (const [style, width] of [["rgba(255, 255, 255, 0.95)", 3], ["rgba(17, 24, 39, 0.9)", 1]] as const) {
      ctx.strokeStyle = style;
      ctx.lineWidth = width;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, p.rows.length * p.rowH);
      ctx.stroke();
    }
  }

  // Step axis.
  const y0 = p.rows.length * p.rowH;
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#d1d5db";
  ctx.font = FONT;
  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  // Ticks whose labels would overprint are left out: those inside a gap (squeezed between two columns) first.
  const inGap = (s: number) => gaps.some((g) => s > g.after && s < g.before);
  const candidates = stepTicks(p.steps[0], p.steps[p.cols - 1], Math.max(2, Math.floor(p.plotW / 90))).map((s) => {
    const x = p.labelW + stepColumn(p.steps, s) * cw;
    const w = ctx.measureText(fmtStep(s)).width;
    return { step: s, x, w, at: Math.min(Math.max(x, p.labelW + w / 2), width - w / 2 - 2) };
  });
  const kept: typeof candidates = [];
  for (const t of [...candidates.filter((t) => !inGap(t.step)), ...candidates.filter((t) => inGap(t.step))]) {
    if (kept.every((k) => Math.abs(k.at - t.at) >= (k.w + t.w) / 2 + TICK_PAD)) kept.push(t);
  }
  kept.sort((a, b) => a.x - b.x);
  for (const { step: s, x, at } of kept) {
    ctx.beginPath();
    ctx.moveTo(x, y0);
    ctx.lineTo(x, y0 + 4);
    ctx.stroke();
    ctx.fillText(fmtStep(s), at, y0 + 6);
  }
  // a gap's place on the axis: a short break mark (two slanted strokes)
  ctx.strokeStyle = "#6b7280";
  for (const g of gaps) {
    const x = Math.round(p.labelW + g.col * cw);
    for (const dx of [-2, 2]) {
      ctx.beginPath();
      ctx.moveTo(x + dx - 2, y0 + 5);
      ctx.lineTo(x + dx + 2, y0 - 1);
      ctx.stroke();
    }
  }
  ctx.textAlign = "left";
  return { ticks: kept.map(({ step, x, w }) => ({ step, x, w })), labels, gaps };
}

/** Round steps for the axis: multiples of 1, 2 or 5 × 10^k (at least 1), at most about `count` of them. */
export function stepTicks(first: number, last: number, count: number): number[] {
  if (!(last > first)) return [first];
  const raw = Math.max(1, (last - first) / Math.max(1, count));
  const mag = 10 ** Math.floor(Math.log10(raw));
  const spacing = [1, 2, 5, 10].map((m) => m * mag).find((x) => x >= raw - 1e-9) ?? 10 * mag;
  const out: number[] = [];
  for (let s = Math.ceil(first / spacing) * spacing; s <= last; s += spacing) out.push(s);
  return out;
}

/** Where step `s` falls, in columns from the plot's left edge: a column's centre is its (last) step; a step
 * between two columns' steps (not recorded, or inside a bucket) falls between their centres. */
export function stepColumn(steps: number[], s: number): number {
  const c = columnOf(steps, s);
  if (c < 0) return steps.length - 0.5;
  if (c === 0 || steps[c] === s) return c + 0.5;
  return c - 0.5 + (s - steps[c - 1]) / (steps[c] - steps[c - 1]);
}

function fitText(ctx: CanvasRenderingContext2D, text: string, x: number, y: number, max: number): void {
  if (max <= 0) return;
  if (ctx.measureText(text).width <= max) {
    ctx.fillText(text, x, y);
    return;
  }
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(`…${text.slice(text.length - mid)}`).width <= max) lo = mid;
    else hi = mid - 1;
  }
  ctx.fillText(`…${text.slice(text.length - lo)}`, x, y);
}
