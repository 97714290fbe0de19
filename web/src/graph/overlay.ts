// Overlay values per visible item: a layer statistic at one step (a collapsed module aggregates its layers),
// the parameter count, or the output size (elements of the first output tensor).
import type { GEdge, GNode } from "./types";

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
