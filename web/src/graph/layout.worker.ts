// Lays out the levels of the graph view off the main thread: each level is the items directly inside one open
// module. Small levels get dagre (crossing reduction, balanced placement); large ones — a ModuleList of 200
// blocks — a linear-time layered layout for chains, since dagre costs ~50 ms at 20 items and ~450 ms at 216
// here (docs/views-graph.md has the measurements).
import dagre from "@dagrejs/dagre";
import type { LevelInput, LevelLayout } from "./types";

export const DAGRE_MAX = 40;
const NODESEP = 22;
const RANKSEP = 30;

function withDagre(l: LevelInput): Omit<LevelLayout, "key" | "ms" | "engine"> {
  const g = new dagre.graphlib.Graph({ multigraph: false });
  g.setGraph({ rankdir: "TB", nodesep: NODESEP, ranksep: RANKSEP, marginx: 0, marginy: 0 });
  g.setDefaultEdgeLabel(() => ({}));
  for (let i = 0; i < l.n; i++) g.setNode(String(i), { width: l.w[i], height: l.h[i] });
  for (let e = 0; e < l.src.length; e++) if (l.src[e] !== l.dst[e]) g.setEdge(String(l.src[e]), String(l.dst[e]));
  dagre.layout(g);
  const x = new Float64Array(l.n);
  const y = new Float64Array(l.n);
  for (let i = 0; i < l.n; i++) {
    const v = g.node(String(i));
    x[i] = v.x;
    y[i] = v.y;
  }
  return normalise(l, x, y);
}

/** Longest-path ranks in model order (back edges of a cycle ignored), each item near its predecessors. */
function chain(l: LevelInput): Omit<LevelLayout, "key" | "ms" | "engine"> {
  const n = l.n;
  const preds: number[][] = Array.from({ length: n }, () => []);
  for (let e = 0; e < l.src.length; e++) if (l.src[e] < l.dst[e]) preds[l.dst[e]].push(l.src[e]); // forward in order
  const rank = new Int32Array(n);
  for (let i = 0; i < n; i++) for (const p of preds[i]) rank[i] = Math.max(rank[i], rank[p] + 1);
  const ranks: number[][] = [];
  for (let i = 0; i < n; i++) (ranks[rank[i]] ??= []).push(i);
  const x = new Float64Array(n);
  const y = new Float64Array(n);
  let top = 0;
  for (const row of ranks) {
    if (!row) continue;
    const height = Math.max(...row.map((i) => l.h[i]));
    const want = row.map((i) => (preds[i].length ? preds[i].reduce((s, p) => s + x[p], 0) / preds[i].length : 0));
    const order = row.map((_, k) => k).sort((a, b) => want[a] - want[b] || row[a] - row[b]);
    // place left to right at the wanted centres, pushed apart where they would overlap, then re-centred
    let right = -Infinity;
    let shift = 0;
    const placed: number[] = [];
    for (const k of order) {
      const i = row[k];
      const cx = Math.max(want[k], right + NODESEP + l.w[i] / 2);
      placed.push(cx);
      shift += cx - want[k];
      right = cx + l.w[i] / 2;
    }
    shift /= order.length;
    order.forEach((k, j) => {
      x[row[k]] = placed[j] - shift;
      y[row[k]] = top + height / 2;
    });
    top += height + RANKSEP;
  }
  return normalise(l, x, y);
}

function normalise(l: LevelInput, x: Float64Array, y: Float64Array) {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < l.n; i++) {
    x0 = Math.min(x0, x[i] - l.w[i] / 2);
    x1 = Math.max(x1, x[i] + l.w[i] / 2);
    y0 = Math.min(y0, y[i] - l.h[i] / 2);
    y1 = Math.max(y1, y[i] + l.h[i] / 2);
  }
  if (!l.n) return { x, y, width: 0, height: 0 };
  for (let i = 0; i < l.n; i++) {
    x[i] -= x0;
    y[i] -= y0;
  }
  return { x, y, width: x1 - x0, height: y1 - y0 };
}

export function layoutLevel(l: LevelInput): LevelLayout {
  const t = performance.now();
  const engine = l.n <= DAGRE_MAX ? "dagre" : "chain";
  const r = engine === "dagre" ? withDagre(l) : chain(l);
  return { key: l.key, ...r, engine, ms: performance.now() - t };
}

self.onmessage = (ev: MessageEvent<{ id: number; levels: LevelInput[] }>) => {
  const { id, levels } = ev.data;
  const out = levels.map(layoutLevel);
  (self as unknown as Worker).postMessage({ id, layouts: out });
};
