// The neuron activation matrix (ActiVis): rows (classes, subsets, pinned instances) × the neurons of a layer,
// one colour per mean activation. Cells are one pixel per (row, neuron) in an ImageData, scaled to the plot:
// averaged when there are more neurons than pixels, blocky when fewer.
import type { ColorScale } from "../core/colorscale";

/** The matrix as the view holds it: `mean[r * neurons + n]`, NaN where undefined (an empty subset). */
export interface NeuronRows {
  neurons: number;
  keys: string[]; // "class:3", "subset:name", "instance:17" — what `view.aSort` names
  mean: Float64Array;
  std: Float64Array;
}

export interface NeuronPicture {
  rows: NeuronRows;
  order: Int32Array; // column c shows neuron order[c]
  scale: ColorScale;
  width: number; // CSS pixels
  rowH: number;
  gaps: number[]; // a gap (GAP px) is drawn before each of these row indices
  selectedRows: number[];
  selectedNeuron: number | null;
}

export const GAP = 4;
const EMPTY: [number, number, number] = [241, 243, 246];

/** Neuron indices ordered by one row's values, highest first (stable; NaN last), or model order. */
export function columnOrder(rows: NeuronRows, sortRow: number): Int32Array {
  const n = rows.neurons;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (sortRow < 0) return order;
  const v = rows.mean.subarray(sortRow * n, (sortRow + 1) * n);
  const key = (i: number) => (Number.isNaN(v[i]) ? -Infinity : v[i]);
  return order.sort((a, b) => key(b) - key(a) || a - b);
}

/** The y of row `r`'s top edge, with the group gaps before it. */
export function rowTop(p: Pick<NeuronPicture, "rowH" | "gaps">, r: number): number {
  let gaps = 0;
  for (const g of p.gaps) if (g <= r) gaps++;
  return r * p.rowH + gaps * GAP;
}

/** The row under `y`, or -1 (in a gap or below the rows). */
export function rowAt(p: Pick<NeuronPicture, "rowH" | "gaps">, count: number, y: number): number {
  for (let r = 0; r < count; r++) {
    const top = rowTop(p, r);
    if (y >= top && y < top + p.rowH) return r;
  }
  return -1;
}

export function matrixHeight(p: Pick<NeuronPicture, "rowH" | "gaps">, count: number): number {
  return count ? rowTop(p, count - 1) + p.rowH : 0;
}

export function drawNeuronMatrix(canvas: HTMLCanvasElement, p: NeuronPicture): void {
  const dpr = window.devicePixelRatio || 1;
  const { neurons } = p.rows;
  const count = p.rows.keys.length;
  const height = matrixHeight(p, count);
  canvas.width = Math.max(1, Math.round(p.width * dpr));
  canvas.height = Math.max(1, Math.round(height * dpr));
  canvas.style.width = `${p.width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, p.width, height);
  if (!neurons || !count) return;

  const img = new ImageData(neurons, count);
  for (let r = 0; r < count; r++) {
    const base = r * neurons;
    for (let c = 0; c < neurons; c++) {
      const rgb = p.scale.color(p.rows.mean[base + p.order[c]]) ?? EMPTY;
      const o = (base + c) * 4;
      img.data[o] = rgb[0];
      img.data[o + 1] = rgb[1];
      img.data[o + 2] = rgb[2];
      img.data[o + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = neurons;
  off.height = count;
  off.getContext("2d")!.putImageData(img, 0, 0);
  // more neurons than pixels: average them; fewer: crisp blocks
  ctx.imageSmoothingEnabled = neurons > p.width * dpr;
  for (let r = 0; r < count; r++) ctx.drawImage(off, 0, r, neurons, 1, 0, rowTop(p, r), p.width, p.rowH);

  const cw = p.width / neurons;
  ctx.strokeStyle = "#2f5bea";
  ctx.lineWidth = 1.5;
  for (const r of p.selectedRows) ctx.strokeRect(0.75, rowTop(p, r) + 0.75, p.width - 1.5, p.rowH - 1.5);
  if (p.selectedNeuron !== null) {
    const c = p.order.indexOf(p.selectedNeuron);
    if (c >= 0) {
      const w = Math.max(2, cw);
      const x = c * cw + cw / 2 - w / 2;
      ctx.strokeStyle = "#111827";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(Math.max(0.75, x), 0.75, w, height - 1.5);
    }
  }
}
