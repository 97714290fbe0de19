// Where the graph view's canvas shows the laid-out graph: the whole graph fitted, a zoom about a point, a module
// just opened or closed kept in sight, an item centred, a centre kept through a resize, and points carried between
// the graph and the screen.
import { LEGIBLE, type Transform } from "./render";
import type { Rect } from "./types";

/** The canvas, in CSS pixels. */
export interface Size {
  w: number;
  h: number;
}

/** The whole graph centred with a margin, never zoomed in past 1.4, its top at least 30 px down. */
export function fitAll(graph: { width: number; height: number }, size: Size): Transform {
  const k = Math.min(1.4, Math.max(0.02, Math.min((size.w - 60) / (graph.width || 1), (size.h - 60) / (graph.height || 1))));
  return { k, tx: (size.w - graph.width * k) / 2, ty: Math.max(30, (size.h - graph.height * k) / 2) };
}

/** `t` zoomed by `f` (kept within 0.02–4) about the screen point (cx, cy), which stays where it is. */
export function zoomAbout(t: Transform, f: number, cx: number, cy: number): Transform {
  const k = Math.min(4, Math.max(0.02, t.k * f));
  return { k, tx: cx - ((cx - t.tx) * k) / t.k, ty: cy - ((cy - t.ty) * k) / t.k };
}

/** At zoom `k`, the graph point (x, y) put at the screen point (sx, sy). */
export const pin = (k: number, x: number, y: number, sx: number, sy: number): Transform => ({ k, tx: sx - x * k, ty: sy - y * k });

/** `tr` moved the least to show box `r` (a module just opened or closed) whole: zoomed out about its corner when
 * it is too big, never in, and not past legible text (a module of hundreds of blocks shows its top, not a line). */
export function keepInView(r: Rect, tr: Transform, size: Size): Transform {
  const m = 24;
  const fits = Math.min((size.w - 2 * m) / r.w, (size.h - 2 * m) / r.h);
  const k = Math.min(tr.k, Math.max(fits, Math.min(tr.k, LEGIBLE)));
  let tx = tr.tx + r.x * (tr.k - k);
  let ty = tr.ty + r.y * (tr.k - k);
  const slide = (lo: number, len: number, room: number) => (lo < m || len > room - 2 * m ? m - lo : Math.min(0, room - m - (lo + len)));
  tx += slide(tx + r.x * k, r.w * k, size.w);
  ty += slide(ty + r.y * k, r.h * k, size.h);
  return { k, tx, ty };
}

/** Box `r` centred on the screen, zoomed in to 0.8 if `t` was further out. */
export function centreOn(r: Rect, t: Transform, size: Size): Transform {
  const k = Math.max(t.k, 0.8);
  return { k, tx: size.w / 2 - (r.x + r.w / 2) * k, ty: size.h / 2 - (r.y + r.h / 2) * k };
}

/** `t` for a canvas resized from `from` to `to`: the graph point at the centre of the one at the centre of the other. */
export const keepCentre = (t: Transform, from: Size, to: Size): Transform => ({
  k: t.k,
  tx: t.tx + (to.w - from.w) / 2,
  ty: t.ty + (to.h - from.h) / 2,
});

/** The graph point under the screen point (sx, sy). */
export const toGraph = (t: Transform, sx: number, sy: number): [number, number] => [(sx - t.tx) / t.k, (sy - t.ty) / t.k];

/** The screen point of the graph point (x, y). */
export const toScreen = (t: Transform, x: number, y: number): [number, number] => [t.tx + x * t.k, t.ty + y * t.k];
