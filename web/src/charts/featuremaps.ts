// An instance's full feature maps (C × H × W, or C × L) as a grid of small heatmaps on one canvas: one tile per
// channel, ordered by the channel's mean (or by index), all on one colour scale so that tiles compare (or each on
// its own, so that the patterns of weak channels show). Each tile is
// drawn from a one-pixel-per-value image, scaled up crisply (integer factors) or down smoothly.

export interface Maps {
  channels: number;
  height: number; // 1 for 1-d maps
  width: number;
  values: Float32Array; // values[(c * height + y) * width + x]
}

/** Sequential (viridis) when no value is negative, else diverging (blue–white–red) around 0. */
export const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
export const DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];

const rgb = (hex: string) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

export interface MapScale {
  kind: "sequential" | "diverging";
  lo: number;
  hi: number;
  color(v: number): [number, number, number];
  gradient: string;
}

/** One scale for all channels: [min, max] of the values, or ±max |v| when some are negative. */
export function mapScale(values: Float32Array): MapScale {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!(lo <= hi)) [lo, hi] = [0, 1];
  const kind = lo < 0 ? "diverging" : "sequential";
  if (kind === "diverging") {
    const m = Math.max(-lo, hi);
    [lo, hi] = [-m, m];
  }
  const hexes = kind === "diverging" ? DIVERGING : VIRIDIS;
  const stops = hexes.map(rgb);
  const span = hi - lo || 1;
  const color = (v: number): [number, number, number] => {
    const x = Math.min(1, Math.max(0, (v - lo) / span)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const f = x - i;
    const a = stops[i];
    const b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  };
  const css = hexes.map((c, i) => `${c} ${(i / (hexes.length - 1)) * 100}%`);
  return { kind, lo, hi, color, gradient: `linear-gradient(to right, ${css.join(", ")})` };
}

/** A scale per channel (each tile on its own range: patterns of weak channels show), or the one shared scale. */
export function tileScales(m: Maps, shared: MapScale | null): (c: number) => MapScale {
  if (shared) return () => shared;
  const size = m.height * m.width;
  const cache = new Map<number, MapScale>();
  return (c) => {
    let s = cache.get(c);
    if (!s) cache.set(c, (s = mapScale(m.values.subarray(c * size, (c + 1) * size))));
    return s;
  };
}

/** Each channel's mean over its positions (the value the activation matrix shows for this instance). */
export function channelMeans(m: Maps): Float64Array {
  const size = m.height * m.width;
  const out = new Float64Array(m.channels);
  for (let c = 0; c < m.channels; c++) {
    let s = 0;
    for (let i = c * size; i < (c + 1) * size; i++) s += m.values[i];
    out[c] = s / size;
  }
  return out;
}

/** Channels by mean, highest first (stable), or in model order. */
export function channelOrder(means: Float64Array, by: "mean" | "channel"): Int32Array {
  const order = Int32Array.from(means, (_, i) => i);
  return by === "mean" ? order.sort((a, b) => means[b] - means[a] || a - b) : order;
}

export interface TileLayout {
  shown: Int32Array; // slot s shows channel shown[s]
  cols: number;
  tileW: number; // CSS pixels of the heatmap
  tileH: number;
  cellW: number; // tile + gap
  cellH: number; // tile + label + gap
  width: number;
  height: number;
}

export const GAP = 4;
export const LABEL_H = 11;
const TARGET = 44; // the longer side of a tile, about

/** Tiles of about TARGET px (an integer multiple of the map when it is smaller), as many columns as fit. */
export function tileLayout(m: Maps, shown: Int32Array, width: number): TileLayout {
  const long = Math.max(m.height, m.width);
  const f = long >= TARGET ? TARGET / long : Math.floor(TARGET / long);
  const tileW = Math.max(1, Math.round(m.width * f));
  const tileH = m.height === 1 ? 12 : Math.max(1, Math.round(m.height * f)); // 1-d maps: a strip
  const cellW = tileW + GAP;
  const cellH = tileH + LABEL_H + GAP;
  const cols = Math.max(1, Math.floor((width + GAP) / cellW));
  const rows = Math.ceil(shown.length / cols);
  return { shown, cols, tileW, tileH, cellW, cellH, width: cols * cellW - GAP, height: rows * cellH };
}

/** Where slot `s`'s heatmap starts. */
export function tileOrigin(l: TileLayout, s: number): { x: number; y: number } {
  return { x: (s % l.cols) * l.cellW, y: Math.floor(s / l.cols) * l.cellH };
}

/** The channel and map position under (x, y) in CSS pixels, or null (a gap, a label, past the last tile). */
export function tileAt(l: TileLayout, m: Maps, x: number, y: number): { slot: number; channel: number; row: number; col: number } | null {
  const cx = Math.floor(x / l.cellW);
  const cy = Math.floor(y / l.cellH);
  if (x < 0 || y < 0 || cx >= l.cols) return null;
  const slot = cy * l.cols + cx;
  if (slot >= l.shown.length) return null;
  const dx = x - cx * l.cellW;
  const dy = y - cy * l.cellH;
  if (dx >= l.tileW || dy >= l.tileH) return null;
  return {
    slot,
    channel: l.shown[slot],
    row: Math.min(m.height - 1, Math.floor((dy / l.tileH) * m.height)),
    col: Math.min(m.width - 1, Math.floor((dx / l.tileW) * m.width)),
  };
}

export function drawFeatureMaps(
  canvas: HTMLCanvasElement,
  m: Maps,
  l: TileLayout,
  scaleOf: (c: number) => MapScale,
  selected: number | null,
): void {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(l.width * dpr);
  canvas.height = Math.round(l.height * dpr);
  canvas.style.width = `${l.width}px`;
  canvas.style.height = `${l.height}px`;
  const ctx = canvas.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, l.width, l.height);
  // every shown channel at one pixel per value, side by side in one image; tiles are scaled copies of it
  const atlas = document.createElement("canvas");
  atlas.width = m.width * l.shown.length;
  atlas.height = m.height;
  const img = new ImageData(atlas.width, atlas.height);
  const size = m.height * m.width;
  l.shown.forEach((c, s) => {
    const scale = scaleOf(c);
    for (let y = 0; y < m.height; y++)
      for (let x = 0; x < m.width; x++) {
        const [r, g, b] = scale.color(m.values[c * size + y * m.width + x]);
        const o = 4 * (y * atlas.width + s * m.width + x);
        img.data[o] = r;
        img.data[o + 1] = g;
        img.data[o + 2] = b;
        img.data[o + 3] = 255;
      }
  });
  atlas.getContext("2d")!.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = l.tileW < m.width; // crisp when scaled up, averaged when scaled down
  ctx.font = "9px system-ui, sans-serif";
  ctx.textBaseline = "top";
  l.shown.forEach((c, s) => {
    const { x, y } = tileOrigin(l, s);
    ctx.drawImage(atlas, s * m.width, 0, m.width, m.height, x, y, l.tileW, l.tileH);
    ctx.fillStyle = c === selected ? "#e8590c" : "#868e96";
    ctx.fillText(String(c), x, y + l.tileH + 1, l.tileW);
  });
  if (selected !== null) {
    const s = Array.prototype.indexOf.call(l.shown, selected) as number;
    if (s >= 0) {
      const { x, y } = tileOrigin(l, s);
      ctx.strokeStyle = "#f59f00";
      ctx.lineWidth = 2;
      ctx.strokeRect(x - 1, y - 1, l.tileW + 2, l.tileH + 2);
    }
  }
}
