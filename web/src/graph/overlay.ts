// Overlay values per visible item: a layer statistic at one step (a collapsed module aggregates its layers),
// the parameter count, or the output size (elements of the first output tensor); the colour scale over them, the
// legend's words, and the text of a tensor's shape.
import { LOG_DEFAULT, makeScale, type ColorScale } from "../core/colorscale";
import { KIND_LABELS, STAT_LABELS } from "../core/internals.svelte";
import type { LayerKind } from "../core/viewstate";
import type { GEdge, GNode, GraphView, PlacedEdge } from "./types";

export type OverlayMode = "none" | "stat" | "params" | "size";
export type Aggregate = "max" | "mean" | "min";

const numel = (s: (number | string)[] | null | undefined) =>
  s && s.length && s.every((d) => typeof d === "number") ? (s as number[]).reduce((a, b) => a * b, 1) : NaN;

/** The statistic of each item: an operation takes its module's own rows, a box every row inside it. */
export function statValues(nodes: GNode[], names: string[], values: (number | null)[], agg: Aggregate): Map<string, number> {
  const out = new Map<string, number>();
  for (const n of nodes) {
    if (n.op === "input" || n.op === "output") continue;
    const p = n.module_path;
    if (n.kind === "node" && p === "") continue;
    const xs: number[] = [];
    names.forEach((name, i) => {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) return;
      const own = name === p || (name.startsWith(p + ".") && !name.slice(p.length + 1).includes("."));
      const inside = p === "" || name === p || name.startsWith(p + ".");
      if (n.kind === "node" ? own : inside) xs.push(v);
    });
    if (!xs.length) continue;
    out.set(n.id, agg === "max" ? Math.max(...xs) : agg === "min" ? Math.min(...xs) : xs.reduce((a, b) => a + b, 0) / xs.length);
  }
  return out;
}

export function paramValues(nodes: GNode[]): Map<string, number> {
  return new Map(nodes.filter((n) => n.n_params > 0).map((n) => [n.id, n.n_params]));
}

/** Elements of each item's output: an operation's first output, a box's largest outgoing tensor. */
export function sizeValues(nodes: GNode[], edges: GEdge[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const n of nodes) {
    const v = numel(n.output_shapes?.[0]);
    if (Number.isFinite(v)) out.set(n.id, v);
  }
  for (const e of edges) {
    const v = numel(e.shape);
    if (e.src.startsWith("m:") && Number.isFinite(v)) out.set(e.src, Math.max(out.get(e.src) ?? 0, v));
  }
  return out;
}

/** A layer statistic at one step, as the server profiles it: a value (or none) per layer name. */
export interface StatProfile {
  names: string[];
  values: (number | null)[];
  step: number | null;
}

/** The colours over the graph: each item's value, their scale, the legend's title, and what the legend calls an
 * item without a value. */
export interface Overlay {
  values: Map<string, number>;
  scale: ColorScale;
  label: string;
  missing: string;
}

/** Which layer statistic colours the graph, and how a collapsed module combines its layers' values. */
export interface StatChoice {
  kind: LayerKind;
  stat: string;
  overlayAgg: Aggregate;
}

/** The overlay a mode gives the visible graph; none while a statistic's profile has not come. */
export function makeOverlay(mode: OverlayMode, graph: GraphView, profile: StatProfile | null, choice: StatChoice): Overlay | null {
  if (mode === "params") {
    const v = paramValues(graph.nodes);
    return { values: v, scale: makeScale("n_params", [...v.values()], true), label: "parameters", missing: "no parameters" };
  }
  if (mode === "size") {
    const v = sizeValues(graph.nodes, graph.edges);
    return { values: v, scale: makeScale("numel", [...v.values()], true), label: "output elements", missing: "size unknown" };
  }
  if (mode === "stat" && profile) {
    const { kind, stat } = choice;
    const v = statValues(graph.nodes, profile.names, profile.values, choice.overlayAgg);
    const all = profile.values.filter((x): x is number => x !== null);
    const scale = makeScale(stat, all, LOG_DEFAULT.has(stat));
    const label = `${KIND_LABELS[kind] ?? kind} · ${STAT_LABELS[stat] ?? stat}`;
    return { values: v, scale, label, missing: "no value (not a watched layer, or none at this step)" };
  }
  return null;
}

/** The fill of each item the overlay colours, as CSS. */
export function overlayFills(overlay: Overlay | null): Map<string, string> {
  const m = new Map<string, string>();
  if (!overlay) return m;
  for (const [id, v] of overlay.values) {
    const c = overlay.scale.color(v);
    if (c) m.set(id, `rgb(${c.map((x) => Math.round(x)).join(",")})`);
  }
  return m;
}

/** Under an overlay, an item it gives no value (the graph's input and output take none: they keep their look). */
export const lacksValue = (overlay: Overlay | null, n: GNode) =>
  overlay !== null && !overlay.values.has(n.id) && n.op !== "input" && n.op !== "output";

export function formatCount(v: number): string {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(a >= 1e10 ? 0 : 1)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(v));
}

export function formatBytes(b: number): string {
  if (b >= 2 ** 30) return `${(b / 2 ** 30).toFixed(1)} GiB`;
  if (b >= 2 ** 20) return `${(b / 2 ** 20).toFixed(1)} MiB`;
  if (b >= 2 ** 10) return `${(b / 2 ** 10).toFixed(1)} KiB`;
  return `${b} B`;
}

export const shapeText = (s: (number | string)[] | null | undefined) => (s ? `[${s.join(", ")}]` : "–");

/** What a tensor on an edge is: its shape, and its dtype when known. */
export const edgeLabel = (e: PlacedEdge) => `${shapeText(e.edge.shape)}${e.edge.dtype ? ` · ${e.edge.dtype}` : ""}`;
