// The projection view's drawing on one canvas. New points are drawn as soon as their coordinates arrive (grey
// until the colours are known), with a stand-in spatial index; the real one is built in a worker from the same
// moment (hover, click, lasso). Large projections are first drawn on the CPU into the same canvas, since WebGL
// without a GPU takes seconds a frame; regl-scatterplot's frame then replaces that picture.
import { emptyIndex, fillIndex } from "./kdindex";
import {
  categories,
  focusedSize,
  indexInWorker,
  loadScatter,
  painted,
  PENDING_COLOR,
  pointArrays,
  pointSize,
  RASTER_MIN,
  rasterize,
  type RasterPoints,
  type Renderer,
  type Scatterplot,
} from "./scatter";

/** Coordinates as the plot draws them, and a key that changes with them. */
export interface PlotPoints {
  key: string;
  n: number;
  x: Float32Array;
  y: Float32Array;
}

/** A category per point and the category's colour. */
export interface PlotColours {
  cat: Int32Array;
  colors: string[];
}

/** What the view hears from the plot. */
export interface PlotEvents {
  select(i: number | null): void;
  lasso(picked: number[], polygon: [number, number][]): void; // the polygon in the plot's coordinates
  hover(i: number | null): void;
  /** The drawn points (`key`) changed, or their colours, or their index became ready. */
  state(s: PlotState): void;
  unsupported(): void;
  error(message: string): void;
}

export interface PlotState {
  key: string; // the points drawn by WebGL
  colored: boolean; // in their colours
  indexed: boolean; // hover, click and the lasso find them
}

type Paint = { c: PlotPoints; z: Float32Array | null; palette: string[]; order: number[] | null; large: Float32Array | null };
type IndexJob = { key: string; index: ArrayBuffer | null; done: Promise<ArrayBuffer> };

const SELECTED_SIZE = 7; // the selected point's dot, in pixels …
const SELECTED_RING = 5; // … and the width of the white and dark rings around it (half each)
const SELECTED_COLOR = "#111827";
const IDENTITY = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];

export class ProjectionPlot {
  plot: Scatterplot | null = null;
  /** ms: the last WebGL draw, the first of new points, the index build, the last CPU picture; page times of the
   * first CPU picture of new points (drawn, not yet painted), of the points on screen (CPU picture painted, or
   * WebGL frame), of their first WebGL frame, of the first picture in colour, of the index ready; WebGL frames. */
  readonly timing = { draw: 0, firstDraw: 0, index: 0, raster: 0, rasterAt: 0, shownAt: 0, drawnAt: 0, coloredAt: 0, indexedAt: 0, frames: 0 };
  state: PlotState = { key: "", colored: false, indexed: false };

  private renderer: Renderer | null = null;
  private creating = false;
  private dead = false;
  private size = { width: 1, height: 1 };
  private lassoMode = false;
  private selected: number | null = null;
  private lassoing = false;
  // this press drew a lasso: the click its release makes is no click on a point (a loop closed where it began
  // would otherwise select the point under the pointer)
  private lassoPress = false;
  // the points last drawn on the CPU; live while that picture is on the canvas (until the next WebGL frame)
  private raster: { key: string; pts: RasterPoints; live: boolean } | null = null;
  // the points as the plot holds them and the index it searches (a stand-in until the worker's is copied in)
  private held: { key: string; pts: [number, number, number, number][]; index: ArrayBuffer; colored: boolean } | null = null;
  private indexJob: IndexJob | null = null;
  private queued: Paint | null = null;
  private lastPaint: Paint | null = null;
  private painting = false;

  constructor(
    private canvas: HTMLCanvasElement,
    private on: PlotEvents,
  ) {}

  /** New coordinates were asked for: the page times start again. */
  restart(): void {
    Object.assign(this.timing, { rasterAt: 0, shownAt: 0, drawnAt: 0, coloredAt: 0, indexedAt: 0 });
  }

  /** Shows `c` in `colours` (none yet: grey), `mask` (the focus) vivid and on top. */
  show(c: PlotPoints, colours: PlotColours | null, mask: Uint8Array | null): void {
    const { z, palette, order, large } =
      colours && colours.cat.length === c.n
        ? categories(colours.cat, colours.colors, mask && mask.length === c.n ? mask : null)
        : { z: null, palette: [PENDING_COLOR], order: null, large: null };
    const req = { c, z, palette, order, large };
    if (c.n >= RASTER_MIN) this.drawRaster(req);
    else this.raster = null;
    this.startIndex(c);
    this.queued = req;
    if (this.plot) void this.paintQueued();
    else void this.create(c.n);
  }

  resize(width: number, height: number): void {
    if (width <= 0 || height <= 0) return;
    this.size = { width, height };
    if (!this.plot) return;
    this.renderer?.resize(width, height);
    void this.plot.set({ width, height }); // clears the canvas
    if (this.raster?.live) this.showRaster(this.view());
  }

  setLassoMode(on: boolean): void {
    this.lassoMode = on;
    void this.plot?.set({ mouseMode: on ? "lasso" : "panZoom" });
  }

  /** Shows instance `i` as selected, unless it already is (a change of selection costs a frame). */
  setSelected(i: number | null): void {
    this.selected = i;
    const p = this.plot;
    if (!p || !this.state.key) return;
    const want = this.wantSelected();
    const has = p.get("selectedPoints") as number[];
    if (has.length === want.length && has.every((v, k) => v === want[k])) return;
    if (want.length) p.select(want, { preventEvent: true });
    else p.deselect({ preventEvent: true });
  }

  destroy(): void {
    this.dead = true;
    this.canvas.removeEventListener("mousedown", this.onPress, true);
    this.canvas.removeEventListener("click", this.onClick, true);
    this.plot?.destroy();
    this.renderer?.destroy();
    this.plot = null;
  }

  /** Screen positions of points (CSS pixels, relative to the canvas). */
  screen(indices: number[]): ([number, number] | null)[] {
    const p = this.plot;
    if (!p) return [];
    return indices.map((i) => (p.getScreenPosition(i) as [number, number] | undefined) ?? null);
  }

  /** The sizes points are drawn at (CSS pixels): most points, those drawn large (a small focus) and how many
   * are, the selected point with its rings. */
  sizes(): { point: number; large: number; largeCount: number; selected: number } | null {
    const p = this.plot;
    if (!p || !this.held) return null;
    const [point, large] = p.get("pointSize") as number[];
    const largeCount = this.held.pts.reduce((a, pt) => a + pt[3], 0);
    return { point, large, largeCount, selected: SELECTED_SIZE + 2 * SELECTED_RING };
  }

  /** The smaller side of the view, in the plot's coordinates (2 at first: the points' square). */
  viewSpan(): number {
    const v = this.view();
    const aspect = this.size.width / this.size.height;
    return Math.min(2 / v[5], (2 * aspect) / v[0]);
  }

  /** Lassos the points inside `polygon` (the plot's coordinates) through the plot's own search. */
  lasso(polygon: [number, number][]): void {
    this.plot?.lassoSelect(polygon, { isGl: true });
  }

  /** The CPU picture of the last drawn points against the canvas now (WebGL's frame): pixels drawn in each, and
   * the share of pixels drawn in either that are the same in both. */
  compareRaster(): { preview: number; drawn: number; agree: number } | null {
    const ctx = this.canvas.getContext("2d");
    if (!this.raster || !ctx || !this.plot || !this.held) return null;
    const { width: w, height: h } = this.canvas;
    const n = this.raster.pts.x.length;
    const cpu = rasterize(w, h, this.raster.pts, this.view(), this.rasterSize(pointSize(n)), this.rasterSize(focusedSize(n)));
    const a = new Uint32Array(cpu.data.buffer);
    const b = new Uint32Array(ctx.getImageData(0, 0, w, h).data.buffer);
    let [inA, inB, either, same] = [0, 0, 0, 0];
    for (let i = 0; i < a.length; i++) {
      inA += +(a[i] !== 0);
      inB += +(b[i] !== 0);
      if (a[i] || b[i]) {
        either++;
        same += +(a[i] === b[i]);
      }
    }
    return { preview: inA, drawn: inB, agree: either ? same / either : 1 };
  }

  // ---- the WebGL plot ---------------------------------------------------------------------------------------

  private async create(n: number): Promise<void> {
    if (this.creating || this.plot) return;
    this.creating = true;
    const { default: createScatterplot, createRenderer } = await loadScatter();
    if (this.raster?.live) await painted(); // making the plot takes a while: the CPU picture goes to the screen first
    if (this.dead) return;
    const { width, height } = this.size;
    // its own offscreen canvas the size of the plot (the default one is the size of the window)
    const r = createRenderer({ canvas: document.createElement("canvas") });
    r.resize(width, height);
    const p = createScatterplot({
      canvas: this.canvas,
      renderer: r,
      width,
      height,
      backgroundColor: [1, 1, 1, 1],
      pointSize: pointSize(n),
      // the selected point: a dot in a white ring in a dark ring, larger than any other point
      pointSizeSelected: SELECTED_SIZE,
      pointOutlineWidth: SELECTED_RING,
      pointColorActive: SELECTED_COLOR,
      pointColorHover: SELECTED_COLOR,
      lassoColor: "#2f5bea",
      lassoMinDelay: 10,
      lassoMinDist: 2,
      performanceMode: n >= RASTER_MIN, // square points, no blending: as `rasterize` draws them
      deselectOnDblClick: true,
      deselectOnEscape: false,
      showReticle: false,
      mouseMode: this.lassoMode ? "lasso" : "panZoom",
    });
    if (!p.isSupported) {
      p.destroy();
      r.destroy();
      this.on.unsupported();
      return;
    }
    // before the plot's own listeners: a capturing listener on the canvas runs first
    this.canvas.addEventListener("mousedown", this.onPress, true);
    this.canvas.addEventListener("click", this.onClick, true);
    p.subscribe("lassoStart", () => {
      this.lassoing = true;
      this.lassoPress = true;
    });
    p.subscribe("lassoEnd", ({ coordinates }) => {
      this.lassoing = false;
      const polygon = pairs((coordinates ?? []) as unknown as number[] | [number, number][]);
      this.on.lasso([...(p.get("selectedPoints") as number[])].sort((a, b) => a - b), polygon);
      this.setSelected(this.selected);
    });
    p.subscribe("select", ({ points }) => {
      if (!this.lassoing && points.length === 1) this.on.select(points[0]);
    });
    p.subscribe("deselect", () => {
      if (!this.lassoing) this.on.select(null);
    });
    p.subscribe("drawing", () => {
      this.timing.frames++;
      if (this.raster) this.raster.live = false;
    });
    p.subscribe("pointOver", (i) => this.on.hover(i));
    p.subscribe("pointOut", () => this.on.hover(null));
    this.renderer = r;
    this.plot = p;
    if (this.raster?.live) this.showRaster(IDENTITY); // sizing the canvas cleared it
    void this.paintQueued();
  }

  private onPress = (): void => {
    this.lassoPress = false;
  };

  /** The release of a press that drew a lasso: the plot would take it for a click on the point under it. */
  private onClick = (ev: MouseEvent): void => {
    if (!this.lassoPress) return;
    this.lassoPress = false;
    ev.stopImmediatePropagation();
  };

  /** Draws the queued request, then any newer one (only the newest waits while a draw runs). */
  private async paintQueued(): Promise<void> {
    if (this.painting) return;
    this.painting = true;
    try {
      while (this.queued && this.plot) {
        const next = this.queued;
        this.queued = null;
        await this.paint(this.plot, next);
      }
    } catch (e) {
      if (this.plot) this.on.error(String((e as Error).message ?? e));
    } finally {
      this.painting = false;
    }
  }

  private async paint(p: Scatterplot, req: Paint): Promise<void> {
    const { c, z, palette, order, large } = req;
    this.lastPaint = req;
    if (c.n >= RASTER_MIN) await painted(); // the CPU picture goes to the screen before the work below
    const t0 = performance.now();
    const fresh = this.held?.key !== c.key;
    const job = this.indexJob?.key === c.key ? this.indexJob : null;
    if (fresh) this.held = { key: c.key, pts: pointArrays(c.x, c.y), index: job?.index ?? emptyIndex(c.n), colored: false };
    const h = this.held!;
    // the library keeps the arrays it is given: a new colouring rewrites their third and fourth entries
    for (let i = 0; i < c.n; i++) {
      h.pts[i][2] = z ? z[i] : 0;
      h.pts[i][3] = large ? large[i] : 0;
    }
    const sizes = [pointSize(c.n), focusedSize(c.n)]; // by the fourth entry: a small focus is drawn large
    await p.set({
      colorBy: "valueA",
      sizeBy: "valueB",
      pointColor: palette,
      // one per colour, or the library draws a selected point in its own colour, lost among its class (its types
      // say one colour; it takes a list as it does for `pointColor`)
      pointColorActive: palette.map(() => SELECTED_COLOR) as unknown as string,
      pointColorHover: palette as unknown as string,
      pointOrder: order,
      pointSize: sizes,
    });
    if (fresh && this.state.key) void p.zoomToOrigin({ transition: false }); // other points: the whole view, same frame
    await p.draw(h.pts, { zDataType: "categorical", wDataType: "categorical", spatialIndex: h.index, select: this.wantSelected() });
    const now = performance.now();
    const t = this.timing;
    if (z && !h.colored) {
      h.colored = true;
      if (c.n < RASTER_MIN) t.coloredAt = now;
    }
    if (fresh) {
      t.firstDraw = now - t0;
      t.drawnAt = now;
      if (c.n < RASTER_MIN) t.shownAt = now;
      this.state = { key: c.key, colored: h.colored, indexed: false };
      if (job) void this.indexPoints(p, job, h);
    } else this.state = { ...this.state, colored: h.colored && z !== null };
    t.draw = now - t0;
    this.on.state(this.state);
  }

  private wantSelected(): number[] {
    const i = this.selected;
    return i !== null && this.held && i < this.held.pts.length ? [i] : [];
  }

  // ---- the spatial index --------------------------------------------------------------------------------

  /** Builds the index of new points in the worker, from when they arrive. */
  private startIndex(c: PlotPoints): void {
    if (this.indexJob?.key === c.key) return;
    const t0 = performance.now();
    const job: IndexJob = { key: c.key, index: null, done: indexInWorker(c.x, c.y) };
    void job.done.then((index) => {
      job.index = index;
      this.timing.index = performance.now() - t0;
    });
    this.indexJob = job;
  }

  /** Hands the finished index to the plot that drew `h` with a stand-in. */
  private async indexPoints(p: Scatterplot, job: IndexJob, h: NonNullable<ProjectionPlot["held"]>): Promise<void> {
    const index = job.index ?? (await job.done);
    if (this.held !== h || this.plot !== p) return; // other points (or no plot) by now
    // unless drawn with it already: the plot reads the stand-in's bytes, so the index is copied in; were it to
    // hold a copy, it is redrawn
    if (h.index !== index && !(p.get("spatialIndex") === h.index && fillIndex(h.index, index))) {
      h.index = index;
      this.queued ??= this.lastPaint;
      await this.paintQueued();
    }
    this.timing.indexedAt = performance.now();
    this.state = { ...this.state, indexed: true };
    this.on.state(this.state);
  }

  // ---- the CPU picture ----------------------------------------------------------------------------------

  /** Draws the points on the CPU (`rasterize`) and notes when they, or their colours, are first on screen. */
  private drawRaster({ c, z, palette, order, large }: Paint): void {
    const fresh = this.raster?.key !== c.key;
    this.raster = { key: c.key, pts: { x: c.x, y: c.y, z, palette, order, large }, live: true };
    if (!this.plot) {
      // the plot sizes the canvas once it exists; until then, this does
      this.canvas.width = Math.max(1, Math.floor(this.size.width * devicePixelRatio));
      this.canvas.height = Math.max(1, Math.floor(this.size.height * devicePixelRatio));
    }
    const t0 = performance.now();
    this.showRaster(fresh ? IDENTITY : this.view()); // new points: the whole view
    this.timing.raster = performance.now() - t0;
    if (fresh) this.timing.rasterAt = performance.now();
    const raster = this.raster;
    void painted().then((at) => {
      if (this.raster?.key !== raster.key) return;
      if (fresh) this.timing.shownAt = at;
      if (z && !this.timing.coloredAt) this.timing.coloredAt = at;
    });
  }

  private showRaster(view: ArrayLike<number>): void {
    const ctx = this.canvas.getContext("2d");
    if (!this.raster || !ctx) return;
    const { width: w, height: h } = this.canvas;
    const n = this.raster.pts.x.length;
    ctx.putImageData(rasterize(w, h, this.raster.pts, view, this.rasterSize(pointSize(n)), this.rasterSize(focusedSize(n))), 0, 0);
  }

  /** A point's size on the CPU picture, in device pixels. */
  private rasterSize(cssPixels: number): number {
    return cssPixels * devicePixelRatio;
  }

  /** The plot's camera (before the plot exists: the whole view). */
  private view(): ArrayLike<number> {
    return this.plot ? (this.plot.get("cameraView") as ArrayLike<number>) : IDENTITY;
  }
}

/** A polygon as [x, y] pairs, whether given as pairs or flat (x0, y0, x1, y1, …). */
function pairs(p: number[] | [number, number][]): [number, number][] {
  if (!p.length || Array.isArray(p[0])) return p as [number, number][];
  const flat = p as number[];
  return Array.from({ length: flat.length >> 1 }, (_, i) => [flat[2 * i], flat[2 * i + 1]] as [number, number]);
}
