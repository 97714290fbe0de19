// Draws the layer × step overview on a canvas: one pixel column per step bucket (an ImageData of rows ×
// buckets scaled without smoothing), layer labels on the left, a step axis below, the selection on top.
import type { ColorScale } from "../core/colorscale";
import { rowValues, type DisplayRow } from "../core/layerrows";
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
  steps: number[];
  scale: ColorScale;
  rowScales?: ColorScale[]; // per display row, when each row has its own scale
  selectedRow: number; // -1: none
  selectedCol: number; // -1: none
}

const FONT = '11px system-ui, -apple-system, "Segoe UI", sans-serif';
const EMPTY: [number, number, number] = [241, 243, 246];

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

/** Draws the picture; returns the step axis's ticks (step, x in CSS pixels). */
export function drawMatrix(canvas: HTMLCanvasElement, p: MatrixPicture): { step: number; x: number }[] {
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
  if (!p.cols || !p.rows.length) return [];

  // Cells: one pixel per (row, bucket), scaled up.
  const img = new ImageData(p.cols, p.rows.length);
  p.rows.forEach((row, r) => {
    const header = row.kind === "header";
    const vals = header ? null : rowValues(p.values, p.cols, row);
    const scale = p.rowScales?.[r] ?? p.scale;
    for (let c = 0; c < p.cols; c++) {
      const rgb = header ? [255, 255, 255] : (scale.color(vals![c]) ?? EMPTY);
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

  // Labels: every row when rows are tall enough, else every k-th.
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  const every = Math.max(1, Math.ceil(12 / p.rowH));
  p.rows.forEach((row, r) => {
    if (row.kind === "layer" && r % every) return;
    const y = r * p.rowH + p.rowH / 2;
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
  });

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
  const cw = p.plotW / p.cols;
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
  const ticks = stepTicks(p.steps[0], p.steps[p.cols - 1], Math.max(2, Math.floor(p.plotW / 90))).map((s) => ({
    step: s,
    x: p.labelW + stepColumn(p.steps, s) * cw,
  }));
  for (const { step: s, x } of ticks) {
    ctx.beginPath();
    ctx.moveTo(x, y0);
    ctx.lineTo(x, y0 + 4);
    ctx.stroke();
    ctx.fillText(fmtStep(s), Math.min(Math.max(x, p.labelW + 12), width - 16), y0 + 6);
  }
  ctx.textAlign = "left";
  return ticks;
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
