// The projection's points for regl-scatterplot (WebGL): coordinates scaled into its [-1, 1] square (aspect kept),
// and one categorical colour per point — a class, correctness, or a bin of a neuron's activation — with a faded
// copy of every colour for the points outside the focus. The library loads lazily, as its own chunk; the spatial
// index it searches is built in a worker (kdindex.ts).
import type { ColorScale } from "../core/colorscale";

type ScatterLib = typeof import("regl-scatterplot");
export type Scatterplot = ReturnType<ScatterLib["default"]>;
export type Renderer = ReturnType<ScatterLib["createRenderer"]>;

/** The points' colour before the instance table (which the colours need) has arrived. */
export const PENDING_COLOR = "#8d99ae";

let lib: Promise<ScatterLib> | null = null;
export function loadScatter(): Promise<ScatterLib> {
  lib ??= import("regl-scatterplot");
  return lib;
}

let worker: Worker | null = null;
let nextJob = 0;
const jobs = new Map<number, (index: ArrayBuffer) => void>();

/** The k-d tree of the points (`x[i]`, `y[i]`) in KDBush's layout, built off the main thread. */
export function indexInWorker(x: Float32Array, y: Float32Array): Promise<ArrayBuffer> {
  if (!worker) {
    worker = new Worker(new URL("./kdindex.worker.ts", import.meta.url), { type: "module" });
    worker.onmessage = (ev: MessageEvent<{ id: number; buffer: ArrayBuffer }>) => {
      jobs.get(ev.data.id)?.(ev.data.buffer);
      jobs.delete(ev.data.id);
    };
  }
  const id = nextJob++;
  const [xs, ys] = [x.slice(), y.slice()]; // the worker takes these copies
  return new Promise((resolve) => {
    jobs.set(id, resolve);
    worker!.postMessage({ id, x: xs, y: ys }, [xs.buffer, ys.buffer]);
  });
}

/**
 * The points as regl-scatterplot keeps them (`[x, y, category, large]` each), made once per projection: the library
 * reads them for hover, click and the lasso, and a new colouring only rewrites the last two entries.
 */
export function pointArrays(x: Float32Array, y: Float32Array): [number, number, number, number][] {
  const pts = new Array<[number, number, number, number]>(x.length);
  for (let i = 0; i < x.length; i++) pts[i] = [x[i], y[i], 0, 0];
  return pts;
}

/** `xy` (x0, y0, x1, y1, …) scaled into [-0.95, 0.95], both axes by the same factor: `x = (data - c) · k`. */
export function toNdc(xy: Float32Array): { x: Float32Array; y: Float32Array; ndc: Ndc } {
  const n = xy.length >> 1;
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const a = xy[2 * i];
    const b = xy[2 * i + 1];
    if (a < x0) x0 = a;
    if (a > x1) x1 = a;
    if (b < y0) y0 = b;
    if (b > y1) y1 = b;
  }
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const half = Math.max(x1 - x0, y1 - y0) / 2 || 1;
  const k = 0.95 / half;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = Number.isFinite(xy[2 * i]) ? (xy[2 * i] - cx) * k : 0;
    y[i] = Number.isFinite(xy[2 * i + 1]) ? (xy[2 * i + 1] - cy) * k : 0;
  }
  return { x, y, ndc: { cx, cy, k } };
}

/** How data coordinates were scaled into the plot's: `ndc = (data - c) · k`. */
export interface Ndc {
  cx: number;
  cy: number;
  k: number;
}

export const LASSO_VERTICES = 200; // at most, in a lasso kept as a filter (in the URL)

/** A polygon drawn in the plot's coordinates, in the data's (7 significant digits), thinned to at most
 * `LASSO_VERTICES` vertices. */
export function polygonToData(polygon: [number, number][], t: Ndc): [number, number][] {
  const every = Math.ceil(polygon.length / LASSO_VERTICES);
  const kept = polygon.filter((_, i) => i % every === 0);
  const round = (v: number) => +v.toPrecision(7);
  return kept.map(([x, y]) => [round(x / t.k + t.cx), round(y / t.k + t.cy)]);
}

/**
 * What a lasso filter holds (in the URL): the polygon drawn in the plot's coordinates, in the data's, rounded to a
 * tenth of `tolerance` (in the plot's coordinates) and thinned by `thinPolygon` — exactly the `picked` points (of
 * `x`, `y`, in the plot's coordinates) inside it; a rounding that moves a point in or out is made finer.
 */
export function lassoFilterPolygon(
  polygon: [number, number][],
  t: Ndc,
  tolerance: number,
  pts: { x: Float32Array; y: Float32Array; picked: number[] },
): [number, number][] {
  const want = new Uint8Array(pts.x.length);
  for (const i of pts.picked) want[i] = 1;
  for (let step = tolerance / 10 / t.k, tries = 0; tries < 4; step /= 10, tries++) {
    const unit = 10 ** Math.floor(Math.log10(step)); // the data's units, a power of ten
    const round = (v: number) => (unit < 1 ? +v.toFixed(Math.min(20, -Math.log10(unit))) : Math.round(v / unit) * unit);
    const data = polygon.map(([x, y]) => [round(x / t.k + t.cx), round(y / t.k + t.cy)] as [number, number]);
    const plot = data.map(([x, y]) => [(x - t.cx) * t.k, (y - t.cy) * t.k] as [number, number]);
    if (!insidePolygon(pts.x, pts.y, plot).every((v, i) => v === want[i])) continue;
    return thinPolygon(plot, tolerance, pts.x, pts.y).map((i) => data[i]);
  }
  return polygonToData(polygon, t);
}

/**
 * The vertices of a closed polygon (indices, in order) that keep its outline within `tolerance` and the same
 * points (`x`, `y`) inside it: a vertex b between a and c is left out where every vertex left out so far between
 * them lies within `tolerance` of the line ac and the triangle abc holds no point — by the even–odd rule, leaving
 * b out moves exactly the points in that triangle in or out.
 */
export function thinPolygon(polygon: [number, number][], tolerance: number, x: Float32Array, y: Float32Array): number[] {
  const keep = polygon.map((_, i) => i);
  const grid = new PointGrid(polygon, tolerance, x, y);
  const far = (a: number, c: number) => {
    // some vertex from a to c (around the outline) lies farther than the tolerance from the line ac
    const [[ax, ay], [cx, cy]] = [polygon[a], polygon[c]];
    const len = Math.hypot(cx - ax, cy - ay);
    for (let i = (a + 1) % polygon.length; i !== c; i = (i + 1) % polygon.length) {
      const [px, py] = polygon[i];
      const d = len > 0 ? Math.abs((cx - ax) * (ay - py) - (ax - px) * (cy - ay)) / len : Math.hypot(px - ax, py - ay);
      if (d > tolerance) return true;
    }
    return false;
  };
  for (let thinned = true; thinned && keep.length > 3; ) {
    thinned = false;
    for (let k = 0; k < keep.length && keep.length > 3; k++) {
      const [a, b, c] = [keep[(k + keep.length - 1) % keep.length], keep[k], keep[(k + 1) % keep.length]];
      if (far(a, c) || grid.anyIn(polygon[a], polygon[b], polygon[c])) continue;
      keep.splice(k--, 1);
      thinned = true;
    }
  }
  return keep;
}

/** The points near a polygon, bucketed in a grid of its bounding box, to ask whether a triangle holds any. */
class PointGrid {
  private x0: number;
  private y0: number;
  private cell: number;
  private cols: number;
  private rows: number;
  private buckets: number[][];

  constructor(
    polygon: [number, number][],
    margin: number,
    private x: Float32Array,
    private y: Float32Array,
  ) {
    const [xs, ys] = [polygon.map((v) => v[0]), polygon.map((v) => v[1])];
    [this.x0, this.y0] = [Math.min(...xs) - margin, Math.min(...ys) - margin];
    const [w, h] = [Math.max(...xs) + margin - this.x0, Math.max(...ys) + margin - this.y0];
    this.cell = Math.max(w, h) / 128 || 1;
    [this.cols, this.rows] = [Math.floor(w / this.cell) + 1, Math.floor(h / this.cell) + 1];
    this.buckets = Array.from({ length: this.cols * this.rows }, () => []);
    for (let i = 0; i < x.length; i++) {
      const [c, r] = [Math.floor((x[i] - this.x0) / this.cell), Math.floor((y[i] - this.y0) / this.cell)];
      if (c >= 0 && r >= 0 && c < this.cols && r < this.rows) this.buckets[r * this.cols + c].push(i);
    }
  }

  /** Whether a point lies in the triangle abc or on its edges (near the polygon: within its margin). */
  anyIn(a: [number, number], b: [number, number], c: [number, number]): boolean {
    const col = (v: number) => Math.min(this.cols - 1, Math.max(0, Math.floor((v - this.x0) / this.cell)));
    const row = (v: number) => Math.min(this.rows - 1, Math.max(0, Math.floor((v - this.y0) / this.cell)));
    const side = (p: [number, number], q: [number, number], px: number, py: number) =>
      (q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0]);
    for (let r = row(Math.min(a[1], b[1], c[1])); r <= row(Math.max(a[1], b[1], c[1])); r++) {
      for (let q = col(Math.min(a[0], b[0], c[0])); q <= col(Math.max(a[0], b[0], c[0])); q++) {
        for (const i of this.buckets[r * this.cols + q]) {
          const [d1, d2, d3] = [side(a, b, this.x[i], this.y[i]), side(b, c, this.x[i], this.y[i]), side(c, a, this.x[i], this.y[i])];
          if (!((d1 < 0 || d2 < 0 || d3 < 0) && (d1 > 0 || d2 > 0 || d3 > 0))) return true; // inside or on an edge
        }
      }
    }
    return false;
  }
}

/** Whether each point lies inside the closed polygon, by the even–odd rule as the server decides a lasso filter
 * (`deepscope.analyses.lasso.inside_polygon`). */
export function insidePolygon(x: Float32Array, y: Float32Array, polygon: [number, number][]): Uint8Array {
  const out = new Uint8Array(x.length);
  const m = polygon.length;
  const vx = Float64Array.from(polygon, (v) => v[0]);
  const vy = Float64Array.from(polygon, (v) => v[1]);
  const [x0, x1, y0, y1] = [Math.min(...vx), Math.max(...vx), Math.min(...vy), Math.max(...vy)];
  for (let i = 0; i < x.length; i++) {
    const px = x[i];
    const py = y[i];
    if (!(px >= x0 && px <= x1 && py >= y0 && py <= y1)) continue; // NaN: never
    let inside = 0;
    for (let a = m - 1, b = 0; b < m; a = b++) {
      // each edge (the closing one first): a ray to the right of the point crosses it?
      if (vy[a] !== vy[b] && vy[a] > py !== vy[b] > py && px < vx[a] + ((py - vy[a]) * (vx[b] - vx[a])) / (vy[b] - vy[a])) inside ^= 1;
    }
    out[i] = inside;
  }
  return out;
}

/** A colour `share` of the way from `hex` to white. */
export function fade(hex: string, share = 0.82): string {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `#${c.map((v) => Math.round(v + (255 - v) * share).toString(16).padStart(2, "0")).join("")}`;
}

export const NEURON_BINS = 48;

/** The palette of a neuron's activation: NEURON_BINS colours from low to high along `scale`. */
export function binPalette(scale: ColorScale): string[] {
  const hex = (v: number) => Math.round(v).toString(16).padStart(2, "0");
  return Array.from({ length: NEURON_BINS }, (_, b) => {
    const v = scale.lo + ((b + 0.5) / NEURON_BINS) * (scale.hi - scale.lo);
    const [r, g, bl] = scale.color(v) ?? [200, 200, 200];
    return `#${hex(r)}${hex(g)}${hex(bl)}`;
  });
}

/** The bin of each value along `scale` (0 … NEURON_BINS - 1). */
export function bins(values: Float32Array, scale: ColorScale): Int32Array {
  const out = new Int32Array(values.length);
  const span = scale.hi - scale.lo || 1;
  for (let i = 0; i < values.length; i++) {
    const t = (values[i] - scale.lo) / span;
    out[i] = Number.isFinite(t) ? Math.min(NEURON_BINS - 1, Math.max(0, Math.floor(t * NEURON_BINS))) : 0;
  }
  return out;
}

/**
 * Category per point (`palette[z]`): `cat[i]` for points in `focus` (or all, without a focus), `cat[i] + k`
 * for the others, where `palette` holds the k colours then their faded copies. Points outside the focus are
 * drawn first (`order`), so that the focus stays on top. A focus of at most `FEW_FOCUSED` points is drawn
 * large (`large[i]` = 1): a few 3-pixel dots among thousands are not found.
 */
export function categories(cat: Int32Array, colors: string[], focus: Uint8Array | null) {
  const k = colors.length;
  const z = new Float32Array(cat.length);
  let order: number[] | null = null;
  let large: Float32Array | null = null;
  if (focus) {
    const inside: number[] = [];
    order = [];
    for (let i = 0; i < cat.length; i++) {
      if (focus[i]) {
        z[i] = cat[i];
        inside.push(i);
      } else {
        z[i] = cat[i] + k;
        order.push(i);
      }
    }
    for (const i of inside) order.push(i);
    if (inside.length <= FEW_FOCUSED) {
      large = new Float32Array(cat.length);
      for (const i of inside) large[i] = 1;
    }
  } else for (let i = 0; i < cat.length; i++) z[i] = cat[i];
  return { z, palette: [...colors, ...colors.map((c) => fade(c))], order, large };
}

/** A highlighted set of at most this many points is drawn at `focusedSize`. */
export const FEW_FOCUSED = 100;

/** A point's size in pixels: large for a few hundred points, one pixel for a million. */
export function pointSize(n: number): number {
  return n <= 2000 ? 5 : n <= 20000 ? 3.5 : n <= 200000 ? 2 : 1;
}

/** The size in pixels of the points of a small highlighted set among `n`: twice the others', at least 9. */
export function focusedSize(n: number): number {
  return Math.max(9, 2 * pointSize(n));
}

/** Projections this large are first drawn on the CPU (`rasterize`), then by WebGL, as squares without blending. */
export const RASTER_MIN = 100_000;

/** What `rasterize` draws: the points, a colour index per point (none: all `palette[0]`), the drawing order, and
 * which points are drawn large (none: all at the one size). */
export interface RasterPoints {
  x: Float32Array;
  y: Float32Array;
  z: Float32Array | null;
  palette: string[];
  order: number[] | null;
  large: Float32Array | null;
}

/**
 * The picture of the points that the WebGL plot draws through its camera `view` (a column-major 4 × 4 matrix,
 * the plot's `cameraView`) on a `w` × `h` canvas: squares of `size` device pixels (`largeSize` for the points
 * marked `large`) in the colour `palette[z[i]]`,
 * in `order`, on a transparent background. Made on the CPU in one pass over the points — a million take tens of
 * milliseconds, where a software WebGL frame (no GPU) takes seconds — so that a large projection is on screen
 * while the plot's own frame, which replaces this picture, is still being rendered.
 */
export function rasterize(w: number, h: number, pts: RasterPoints, view: ArrayLike<number>, size: number, largeSize = size): ImageData {
  const img = new ImageData(Math.max(1, w), Math.max(1, h));
  const px = new Uint32Array(img.data.buffer);
  const rgba = pts.palette.map((c) => {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
    return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; // bytes r, g, b, a (little-endian)
  });
  // clip = projection (x / aspect, y) · view · (x, y, 0, 1); pixels from the top left: x / aspect · w / 2 = x · h / 2
  const k = 0.5 * h;
  const [a, b, c, d, e, f] = [view[0], view[1], view[4], view[5], view[12], view[13]];
  const small = Math.max(1, Math.round(size));
  const big = Math.max(1, Math.round(largeSize));
  const { x, y, z, order, large } = pts;
  const put = (i: number) => {
    const s = large && large[i] ? big : small;
    const off = 0.5 - s / 2; // a square covers the pixels whose centres it contains
    const col = Math.floor(0.5 * w + (a * x[i] + c * y[i] + e) * k + off);
    const row = Math.floor(0.5 * h - (b * x[i] + d * y[i] + f) * k + off);
    const colour = rgba[z ? z[i] : 0];
    if (s === 1) {
      if (col >= 0 && col < w && row >= 0 && row < h) px[row * w + col] = colour;
      return;
    }
    for (let r = Math.max(0, row); r < Math.min(h, row + s); r++)
      for (let q = Math.max(0, col); q < Math.min(w, col + s); q++) px[r * w + q] = colour;
  };
  if (order) for (let j = 0; j < order.length; j++) put(order[j]);
  else for (let i = 0; i < x.length; i++) put(i);
  return img;
}

/** Resolves once what was drawn so far has been painted (the next rendering update has passed). */
export function painted(): Promise<number> {
  return new Promise((resolve) =>
    requestAnimationFrame(() => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => resolve(performance.now());
      ch.port2.postMessage(0);
    }),
  );
}
