// From a collapsed view to a drawable scene: the view is split into levels (the items directly inside each
// open module, expanded children standing as one big item), each level is laid out on its own (and cached, so
// an expansion lays out only the opened module and re-places its ancestors), then levels are nested.
import type { GEdge, GModule, GNode, GraphView, LevelInput, LevelLayout, PlacedContainer, PlacedEdge, PlacedNode, Rect, Scene } from "./types";

export const PAD = 14; // container padding
export const HEADER = 26; // container title bar
export const TITLE_INSET = 10; // the title's left margin
export const TITLE_GAP = 6; // between the name and the type
export const CLOSE_W = 30; // the "−" at the right of the title bar
const NODE_H = 30;
const BOX_H = 42;
const CHAR_W = 6.6;

/** Wide enough for the inner level and the title ("name  Type  −"; a very long one is cut, its type first). */
function containerWidth(path: string, type: string, inner: number): number {
  const label = path.slice(path.lastIndexOf(".") + 1);
  const title = TITLE_INSET + label.length * 7.5 + TITLE_GAP + shortType(type).length * 6.8 + CLOSE_W + 4;
  return Math.max(inner + 2 * PAD, Math.min(300, title));
}

export function nodeSize(n: GNode): [number, number] {
  if (n.kind === "module") {
    const chars = Math.max(n.label.length, shortType(n.type).length + 8);
    return [Math.min(230, Math.max(96, chars * CHAR_W + 28)), BOX_H];
  }
  return [Math.min(200, Math.max(64, n.label.length * CHAR_W + 22)), NODE_H];
}

export function shortType(t: string): string {
  // an ATen operation without its overload (aten.add.Tensor → add), a class without its module path
  if (t.startsWith("aten.")) return t.slice(5).split(".")[0] || t;
  return t.slice(t.lastIndexOf(".") + 1) || t;
}

/** The tree as maps, and the open modules (the root always). */
export class Tree {
  readonly byPath = new Map<string, GModule>();
  constructor(modules: GModule[]) {
    for (const m of modules) this.byPath.set(m.path, m);
  }
  parent(path: string): string | null {
    const m = this.byPath.get(path);
    if (m) return m.parent;
    if (path === "") return null;
    const i = path.lastIndexOf(".");
    return i < 0 ? "" : path.slice(0, i);
  }
  /** The path from the root to `path`, both included. */
  chain(path: string): string[] {
    const out: string[] = [];
    for (let p: string | null = path; p !== null; p = this.parent(p)) out.push(p);
    return out.reverse();
  }
  /** The module a layer name stands for: itself, or the owner of a parameter path ("a.b.weight" → "a.b"). */
  moduleFor(name: string): string | null {
    if (this.byPath.has(name)) return name;
    const i = name.lastIndexOf(".");
    return i > 0 && this.byPath.has(name.slice(0, i)) ? name.slice(0, i) : null;
  }
}

interface Built {
  levels: Map<string, { items: string[]; sizes: [number, number][]; edges: [number, number][] }>;
  levelOf: Map<string, string>; // visible id → the open module it sits in
}

function build(view: GraphView, tree: Tree): Built {
  const open = new Set(["", ...view.expanded]);
  const levelOf = new Map<string, string>();
  const levels: Built["levels"] = new Map();
  const itemIndex = new Map<string, Map<string, number>>();
  const level = (path: string) => {
    let l = levels.get(path);
    if (!l) {
      l = { items: [], sizes: [], edges: [] };
      levels.set(path, l);
      itemIndex.set(path, new Map());
    }
    return l;
  };
  const add = (path: string, id: string, size: [number, number]) => {
    const l = level(path);
    const idx = itemIndex.get(path)!;
    if (idx.has(id)) return;
    idx.set(id, l.items.length);
    l.items.push(id);
    l.sizes.push(size);
  };
  for (const n of view.nodes) {
    const at = n.kind === "node" ? n.module_path : (tree.parent(n.module_path) ?? "");
    levelOf.set(n.id, at);
    // every open ancestor below the root holds this item: each stands in its own parent as a container
    const chain = tree.chain(at);
    for (let i = chain.length - 1; i > 0; i--) {
      if (!open.has(chain[i])) break;
      add(chain[i - 1], `c:${chain[i]}`, [0, 0]);
    }
    add(at, n.id, nodeSize(n));
  }
  for (const e of view.edges) {
    const a = tree.chain(levelOf.get(e.src) ?? "");
    const b = tree.chain(levelOf.get(e.dst) ?? "");
    let k = 0;
    while (k < a.length && k < b.length && a[k] === b[k]) k++;
    const common = a[k - 1];
    const ra = k < a.length ? `c:${a[k]}` : e.src;
    const rb = k < b.length ? `c:${b[k]}` : e.dst;
    if (ra === rb) continue;
    const idx = itemIndex.get(common);
    const i = idx?.get(ra);
    const j = idx?.get(rb);
    if (i !== undefined && j !== undefined) levels.get(common)!.edges.push([i, j]);
  }
  return { levels, levelOf };
}

export type LayoutFn = (levels: LevelInput[]) => Promise<LevelLayout[]>;

const cache = new Map<string, LevelLayout>();

/** Lay out and nest the view's levels; `stats` receives what was laid out (for the benchmark). */
export async function makeScene(view: GraphView, tree: Tree, layout: LayoutFn, stats?: (l: LevelLayout[]) => void): Promise<Scene> {
  const { levels } = build(view, tree);
  const typeOf = (path: string) => tree.byPath.get(path)?.type ?? "";
  const depth = (p: string) => (p === "" ? 0 : tree.chain(p).length - 1);
  const paths = [...levels.keys()].sort((a, b) => depth(b) - depth(a));
  const done = new Map<string, LevelLayout>();
  const laidOut: LevelLayout[] = [];
  // deepest first: a container's size is its level's laid-out size
  for (let i = 0; i < paths.length; ) {
    const d = depth(paths[i]);
    const batch: LevelInput[] = [];
    const keys: string[] = [];
    for (; i < paths.length && depth(paths[i]) === d; i++) {
      const path = paths[i];
      const l = levels.get(path)!;
      const sizes = l.items.map((id, k) => {
        if (!id.startsWith("c:")) return l.sizes[k];
        const inner = done.get(id.slice(2))!;
        return [containerWidth(id.slice(2), typeOf(id.slice(2)), inner.width), inner.height + HEADER + PAD] as [number, number];
      });
      const key = `${path}\u0000${l.items.map((id, k) => `${id}:${sizes[k][0]}x${sizes[k][1]}`).join("\u0001")}\u0000${l.edges.join(";")}`;
      const hit = cache.get(key);
      if (hit) {
        done.set(path, hit);
        continue;
      }
      keys.push(path);
      batch.push({
        key,
        n: l.items.length,
        w: Float64Array.from(sizes, (s) => s[0]),
        h: Float64Array.from(sizes, (s) => s[1]),
        src: Int32Array.from(l.edges, (e) => e[0]),
        dst: Int32Array.from(l.edges, (e) => e[1]),
      });
    }
    if (batch.length) {
      const out = await layout(batch);
      out.forEach((r, k) => {
        cache.set(r.key, r);
        done.set(keys[k], r);
        laidOut.push(r);
      });
    }
  }
  if (cache.size > 2000) cache.clear();
  stats?.(laidOut);

  const byNode = new Map(view.nodes.map((n) => [n.id, n]));
  const nodes: PlacedNode[] = [];
  const containers: PlacedContainer[] = [];
  const place = (path: string, ox: number, oy: number, d: number) => {
    const l = levels.get(path)!;
    const r = done.get(path)!;
    l.items.forEach((id, k) => {
      const w = id.startsWith("c:") ? containerWidth(id.slice(2), typeOf(id.slice(2)), done.get(id.slice(2))!.width) : l.sizes[k][0];
      const h = id.startsWith("c:") ? done.get(id.slice(2))!.height + HEADER + PAD : l.sizes[k][1];
      const x = ox + r.x[k] - w / 2;
      const y = oy + r.y[k] - h / 2;
      if (id.startsWith("c:")) {
        const p = id.slice(2);
        const m = tree.byPath.get(p);
        containers.push({ path: p, label: p.slice(p.lastIndexOf(".") + 1), type: m?.type ?? "", depth: d + 1, x, y, w, h });
        place(p, x + (w - done.get(p)!.width) / 2, y + HEADER, d + 1);
      } else nodes.push({ node: byNode.get(id)!, x, y, w, h });
    });
  };
  const root = done.get("");
  if (root) place("", 0, 0, 0);
  containers.sort((a, b) => a.depth - b.depth);
  const byId = new Map(nodes.map((p) => [p.node.id, p]));
  const edges = view.edges.flatMap((e) => {
    const a = byId.get(e.src);
    const b = byId.get(e.dst);
    return a && b ? [route(e, a, b)] : [];
  });
  return { nodes, containers, edges, byId, width: root?.width ?? 0, height: root?.height ?? 0 };
}

/** A cubic curve from the bottom of `a` to the top of `b`, bowed sideways when it skips over a column. */
function route(edge: GEdge, a: Rect, b: Rect): PlacedEdge {
  const x0 = a.x + a.w / 2;
  const y0 = a.y + a.h;
  const x3 = b.x + b.w / 2;
  const y3 = b.y;
  let c1: [number, number];
  let c2: [number, number];
  const dy = y3 - y0;
  if (dy < 10) {
    // backwards (a shared module called twice) or side by side: loop out to the right
    const bow = Math.max(a.w, b.w) / 2 + 30;
    c1 = [x0 + bow, y0 + 40];
    c2 = [x3 + bow, y3 - 40];
  } else if (Math.abs(x3 - x0) < 30 && dy > 90) {
    const bow = Math.min(120, 40 + dy * 0.08) + Math.max(a.w, b.w) / 2 - 20;
    c1 = [x0 + bow, y0 + dy * 0.15];
    c2 = [x3 + bow, y3 - dy * 0.15];
  } else {
    const c = Math.max(12, dy / 2);
    c1 = [x0, y0 + c];
    c2 = [x3, y3 - c];
  }
  const n = 16;
  const pts = new Float64Array((n + 1) * 2);
  let bx0 = Infinity;
  let by0 = Infinity;
  let bx1 = -Infinity;
  let by1 = -Infinity;
  for (let i = 0; i <= n; i++) {
    const t = i / n;
    const u = 1 - t;
    const x = u * u * u * x0 + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t * t * t * x3;
    const y = u * u * u * y0 + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t * t * t * y3;
    pts[2 * i] = x;
    pts[2 * i + 1] = y;
    bx0 = Math.min(bx0, x);
    by0 = Math.min(by0, y);
    bx1 = Math.max(bx1, x);
    by1 = Math.max(by1, y);
  }
  return { edge, pts, box: { x: bx0, y: by0, w: bx1 - bx0, h: by1 - by0 } };
}
