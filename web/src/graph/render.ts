// Draws a scene on a canvas (one draw call per kind of mark, culled to the viewport, text only when legible)
// and answers what is under the pointer. Labels are drawn with fillText: user strings never become markup.
import type { PlacedContainer, PlacedEdge, PlacedNode, Scene } from "./types";
import { CLOSE_W, HEADER, shortType, TITLE_GAP, TITLE_INSET } from "./scene";

export interface Transform {
  k: number;
  tx: number;
  ty: number;
}

export interface Paint {
  fill(n: PlacedNode): string | null; // overlay colour, null: the default
  noValue(n: PlacedNode): boolean; // an overlay is on and gives this item no value
  selected: string | null; // visible id
  selectedContainer: string | null; // module path
  hoverNode: string | null;
  hoverEdge: PlacedEdge | null;
  matches: Set<string>;
}

/** The zoom below which boxes draw no text of their own. */
export const LEGIBLE = 0.35;

const FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif";
const TITLE_FONT = `600 12px ${FONT}`;
const TYPE_FONT = `11px ${FONT}`;

/** How an item without an overlay value looks: grey behind a dashed outline, apart from every colour of a scale
 * (a diverging scale's 0 is near-white, a box's default). The legend draws its swatch with the same colours. */
export const NO_VALUE = { fill: "#e4e7ec", stroke: "#8e97a8", dash: [4, 3] };

function luminance(css: string): number {
  const m = css.match(/\d+(\.\d+)?/g);
  if (!m || m.length < 3) return 1;
  const [r, g, b] = m.slice(0, 3).map(Number);
  return (0.299 * r + 0.587 * g + 0.114 * b) / 255;
}

function roundRect(ctx: CanvasRenderingContext2D, x: number, y: number, w: number, h: number, r: number) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, r);
}

function clipText(ctx: CanvasRenderingContext2D, text: string, max: number): string {
  if (ctx.measureText(text).width <= max) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + "…").width <= max) lo = mid;
    else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

/** An open module's title bar: its name whole where it fits, then its type in the room left (left out when only a
 * letter or two would show), and the "−" that closes it. */
function title(ctx: CanvasRenderingContext2D, c: PlacedContainer): string {
  const y = c.y + HEADER / 2;
  const room = c.w - TITLE_INSET - CLOSE_W;
  ctx.textBaseline = "middle";
  ctx.font = TITLE_FONT;
  ctx.fillStyle = "#3b4a6b";
  const label = clipText(ctx, c.label, room);
  ctx.fillText(label, c.x + TITLE_INSET, y);
  const lw = ctx.measureText(label).width;
  ctx.font = TYPE_FONT;
  ctx.fillStyle = "#8a93a6";
  const type = clipText(ctx, shortType(c.type), room - lw - TITLE_GAP);
  const shown = type && !/^.{0,2}…$/.test(type);
  if (shown) ctx.fillText(type, c.x + TITLE_INSET + lw + TITLE_GAP, y);
  ctx.font = `600 13px ${FONT}`;
  ctx.fillText("−", c.x + c.w - 20, y);
  return shown ? `${label} ${type}` : label;
}

/** What a draw wrote, for the tests: the open modules' titles (by path) and the names over a zoomed-out view. */
export interface Drawn {
  titles: Map<string, string>;
  overview: string[];
}

/** Draws the scene; returns the titles drawn and the names drawn at a legible size over a zoomed-out view (none
 * when zoomed in: then every box has its text). */
export function draw(ctx: CanvasRenderingContext2D, scene: Scene, t: Transform, css: { w: number; h: number }, p: Paint): Drawn {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, css.w, css.h);
  ctx.setTransform(dpr * t.k, 0, 0, dpr * t.k, dpr * t.tx, dpr * t.ty);
  const vx0 = -t.tx / t.k;
  const vy0 = -t.ty / t.k;
  const vx1 = vx0 + css.w / t.k;
  const vy1 = vy0 + css.h / t.k;
  const inView = (x: number, y: number, w: number, h: number) => x < vx1 && x + w > vx0 && y < vy1 && y + h > vy0;
  const text = t.k >= LEGIBLE;
  const px = 1 / t.k;

  // containers: nested tints, title bars
  const titles = new Map<string, string>();
  for (const c of scene.containers) {
    if (!inView(c.x, c.y, c.w, c.h)) continue;
    const sel = p.selectedContainer === c.path;
    roundRect(ctx, c.x, c.y, c.w, c.h, 8);
    ctx.fillStyle = c.depth % 2 ? "rgba(59,91,219,0.045)" : "rgba(59,91,219,0.075)";
    ctx.fill();
    ctx.lineWidth = (sel ? 2.2 : 1) * px;
    ctx.strokeStyle = sel ? "#3b5bdb" : "rgba(59,91,219,0.35)";
    ctx.stroke();
    if (text) titles.set(c.path, title(ctx, c));
  }

  // edges, each with a gap across the title bars it passes (a title is never struck through)
  ctx.save();
  ctx.beginPath();
  ctx.rect(vx0, vy0, vx1 - vx0, vy1 - vy0);
  for (const c of scene.containers) if (inView(c.x, c.y, c.w, HEADER)) ctx.rect(c.x, c.y, c.w, HEADER);
  ctx.clip("evenodd");
  ctx.lineWidth = 1.2 * px;
  ctx.strokeStyle = "#a9b1c0";
  ctx.beginPath();
  const arrows: PlacedEdge[] = [];
  for (const e of scene.edges) {
    if (!inView(e.box.x, e.box.y, e.box.w, e.box.h)) continue;
    ctx.moveTo(e.pts[0], e.pts[1]);
    for (let i = 2; i < e.pts.length; i += 2) ctx.lineTo(e.pts[i], e.pts[i + 1]);
    arrows.push(e);
  }
  ctx.stroke();
  ctx.fillStyle = "#a9b1c0";
  ctx.beginPath();
  for (const e of arrows) arrowHead(ctx, e, 6);
  ctx.fill();
  if (p.hoverEdge) {
    const e = p.hoverEdge;
    ctx.lineWidth = 2.6 * px;
    ctx.strokeStyle = "#f08c00";
    ctx.beginPath();
    ctx.moveTo(e.pts[0], e.pts[1]);
    for (let i = 2; i < e.pts.length; i += 2) ctx.lineTo(e.pts[i], e.pts[i + 1]);
    ctx.stroke();
    ctx.fillStyle = "#f08c00";
    ctx.beginPath();
    arrowHead(ctx, e, 8);
    ctx.fill();
  }
  ctx.restore();

  // nodes
  for (const n of scene.nodes) {
    if (!inView(n.x, n.y, n.w, n.h)) continue;
    const box = n.node.kind === "module";
    const io = n.node.op === "input" || n.node.op === "output";
    const fill = p.fill(n);
    const none = !fill && p.noValue(n);
    roundRect(ctx, n.x, n.y, n.w, n.h, box ? 6 : io ? n.h / 2 : 4);
    ctx.fillStyle = fill ?? (none ? NO_VALUE.fill : box ? "#ffffff" : io ? "#eef1f6" : "#f7f8fa");
    ctx.fill();
    const sel = p.selected === n.node.id;
    const hov = p.hoverNode === n.node.id;
    const hit = p.matches.has(n.node.id);
    const plain = !sel && !hit && !hov;
    ctx.lineWidth = (sel ? 2.6 : hit || hov ? 2 : box || none ? 1.3 : 1) * px;
    ctx.strokeStyle = sel ? "#1c3fcc" : hit ? "#f08c00" : hov ? "#5c7cfa" : none ? NO_VALUE.stroke : box ? "#7b8aa8" : "#c3c9d4";
    if (none && plain) ctx.setLineDash(NO_VALUE.dash.map((d) => d * px));
    ctx.stroke();
    ctx.setLineDash([]);
    if (box && text) {
      // a stack edge: "there is more inside"
      ctx.beginPath();
      ctx.moveTo(n.x + 4, n.y + n.h + 2.5);
      ctx.lineTo(n.x + n.w - 4, n.y + n.h + 2.5);
      ctx.lineWidth = 1.2 * px;
      ctx.strokeStyle = "#b8c0d0";
      ctx.stroke();
    }
    if (!text) continue;
    const dark = fill ? luminance(fill) < 0.5 : false;
    ctx.textBaseline = "middle";
    ctx.textAlign = "center";
    const cx = n.x + n.w / 2;
    if (box) {
      ctx.font = `600 12px ${FONT}`;
      ctx.fillStyle = dark ? "#ffffff" : "#1d2433";
      ctx.fillText(clipText(ctx, n.node.label, n.w - 12), cx, n.y + 15);
      ctx.font = `11px ${FONT}`;
      ctx.fillStyle = dark ? "rgba(255,255,255,0.8)" : "#6b7385";
      ctx.fillText(clipText(ctx, shortType(n.node.type) + (n.node.size > 1 ? `  ·  ${n.node.size} ops` : ""), n.w - 12), cx, n.y + 30);
    } else {
      ctx.font = `${io ? "600 " : ""}11.5px ${FONT}`;
      ctx.fillStyle = dark ? "#ffffff" : "#2c3445";
      ctx.fillText(clipText(ctx, io ? n.node.label : shortType(n.node.type), n.w - 10), cx, n.y + n.h / 2 + 0.5);
    }
    ctx.textAlign = "start";
  }
  return { titles, overview: text ? [] : overviewLabels(ctx, scene, t, css, dpr) };
}

/** Zoomed out below legible text: the names of the modules wide enough on screen, at a legible size, with a
 * halo, outer containers first, then collapsed modules; a name that would overlap one already drawn is left out.
 * (A deep-opened transformer was an unlabelled maze at Fit.) Drawn in screen space. */
function overviewLabels(ctx: CanvasRenderingContext2D, scene: Scene, t: Transform, css: { w: number; h: number }, dpr: number): string[] {
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const drawn: string[] = [];
  const placed: { x: number; y: number; w: number; h: number }[] = [];
  const free = (r: { x: number; y: number; w: number; h: number }) =>
    r.x >= 0 && r.y >= 0 && r.x + r.w <= css.w && r.y + r.h <= css.h && !placed.some((q) => r.x < q.x + q.w && r.x + r.w > q.x && r.y < q.y + q.h && r.y + r.h > q.y);
  const put = (label: string, x: number, y: number, max: number, font: string, color: string, align: "left" | "center") => {
    ctx.font = font;
    const clipped = clipText(ctx, label, max);
    if (clipped.length < 4 && clipped !== label) return; // "a…": no name
    const w = ctx.measureText(clipped).width;
    const r = { x: align === "center" ? x - w / 2 - 2 : x - 2, y: y - 7, w: w + 4, h: 14 };
    if (!free(r)) return;
    placed.push(r);
    drawn.push(clipped);
    ctx.textAlign = align;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255,255,255,0.9)";
    ctx.strokeText(clipped, x, y);
    ctx.fillStyle = color;
    ctx.fillText(clipped, x, y);
  };
  ctx.textBaseline = "middle";
  ctx.lineJoin = "round";
  const containers = [...scene.containers].sort((a, b) => a.depth - b.depth);
  for (const c of containers) {
    const w = c.w * t.k;
    if (w < 40) continue;
    put(c.label, c.x * t.k + t.tx + 4, c.y * t.k + t.ty + 7, w - 8, `600 11px ${FONT}`, "#3b4a6b", "left");
  }
  for (const n of scene.nodes) {
    const w = n.w * t.k;
    if (n.node.kind !== "module" || w < 30) continue;
    put(n.node.label, (n.x + n.w / 2) * t.k + t.tx, (n.y + n.h / 2) * t.k + t.ty, w + 24, `10.5px ${FONT}`, "#1d2433", "center");
  }
  ctx.textAlign = "start";
  return drawn;
}

function arrowHead(ctx: CanvasRenderingContext2D, e: PlacedEdge, size: number) {
  const n = e.pts.length;
  const x = e.pts[n - 2];
  const y = e.pts[n - 1];
  const dx = x - e.pts[n - 4];
  const dy = y - e.pts[n - 3];
  const len = Math.hypot(dx, dy) || 1;
  const ux = dx / len;
  const uy = dy / len;
  ctx.moveTo(x, y);
  ctx.lineTo(x - ux * size - uy * size * 0.5, y - uy * size + ux * size * 0.5);
  ctx.lineTo(x - ux * size + uy * size * 0.5, y - uy * size - ux * size * 0.5);
  ctx.closePath();
}

export type Hit =
  | { kind: "node"; node: PlacedNode }
  | { kind: "container"; container: PlacedContainer; collapse: boolean }
  | { kind: "edge"; edge: PlacedEdge }
  | null;

/** What is under the world point (x, y); `tol` is the edge tolerance in world units. */
export function hitTest(scene: Scene, x: number, y: number, tol: number): Hit {
  for (let i = scene.nodes.length - 1; i >= 0; i--) {
    const n = scene.nodes[i];
    if (x >= n.x && x <= n.x + n.w && y >= n.y && y <= n.y + n.h) return { kind: "node", node: n };
  }
  let best: PlacedEdge | null = null;
  let bestD = tol * tol;
  for (const e of scene.edges) {
    const b = e.box;
    if (x < b.x - tol || x > b.x + b.w + tol || y < b.y - tol || y > b.y + b.h + tol) continue;
    for (let i = 2; i < e.pts.length; i += 2) {
      const d = segDist2(x, y, e.pts[i - 2], e.pts[i - 1], e.pts[i], e.pts[i + 1]);
      if (d < bestD) {
        bestD = d;
        best = e;
      }
    }
  }
  if (best) return { kind: "edge", edge: best };
  for (let i = scene.containers.length - 1; i >= 0; i--) {
    const c = scene.containers[i];
    if (x >= c.x && x <= c.x + c.w && y >= c.y && y <= c.y + HEADER) {
      return { kind: "container", container: c, collapse: x >= c.x + c.w - 30 };
    }
  }
  return null;
}

function segDist2(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax;
  const dy = by - ay;
  const l = dx * dx + dy * dy;
  const t = l ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / l)) : 0;
  const qx = ax + t * dx - px;
  const qy = ay + t * dy - py;
  return qx * qx + qy * qy;
}
