// The view state that a link reproduces, and its round trip through the URL's query string.

import { LOG_DEFAULT } from "./colorscale";
export type XMode = "step" | "wall" | "relative";
export type Tab = "runs" | "charts" | "run" | "internals" | "graph" | "analysis";
export type ProjMethod = "pca" | "umap" | "tsne";
export const PROJ_METHODS: ProjMethod[] = ["pca", "umap", "tsne"];
/** What colours instances in the analysis views. */
/** How the projection colours its points: by a class, correctness, the selected neuron, a metadata column
 * (`column:<name>`), or one colour ("none", for a run with neither labels nor predictions). */
export type ColorBy = "label" | "prediction" | "correct" | "neuron" | "none" | `column:${string}`;
/** Which selection the analysis views highlight: the newest of the class, subset and neuron selections. */
export type FocusKind = "class" | "subset" | "neuron";
const FOCUS_KINDS: FocusKind[] = ["class", "subset", "neuron"];
/** A user-defined subset of instances: a filter over the instance table (see `Subset` in the API schema). */
export interface SubsetDef {
  name: string;
  where: Record<string, unknown>;
}
/** What colours the graph view's nodes. */
export type GraphOverlay = "none" | "stat" | "params" | "size";
/** The panels of the training-internals tab. */
export type Panel = "overview" | "layer" | "flow" | "diagnoses" | "ranks";
export const PANELS: Panel[] = ["overview", "layer", "flow", "diagnoses", "ranks"];
export type LayerKind = "act" | "grad" | "param_grad" | "weight";
export const LAYER_KINDS: LayerKind[] = ["act", "grad", "param_grad", "weight"];
/** The statistic each kind opens on (a link without `stat`): a gradient's or a weight's L2 norm, not the mean. */
export const KIND_DEFAULT_STAT: Record<LayerKind, string> = { act: "mean", grad: "mean", param_grad: "norm", weight: "norm" };

export interface ViewState {
  tab: Tab;
  runs: string[]; // selected run ids
  detail: string | null; // the run shown by the detail view
  q: string; // key search
  x: XMode;
  smoothing: number; // 0 … 0.99
  log: boolean;
  zoom: [number, number] | null; // visible x range, in the unit of `x`
  collapsed: string[]; // collapsed key groups
  bigChart: string | null; // the metric shown enlarged over the charts
  eachRank: boolean; // a metric several ranks of a run logged: a line per rank (else rank 0's)
  filter: string; // runs table text filter
  cfgKey: string; // runs table config filter
  cfgValue: string;
  sort: string; // runs table sort column, "-" prefix = descending
  metric: string; // runs table metric column: a scalar key, its last value per run ("" for none)
  // Training internals (run.watch); the run is `detail`.
  panel: Panel;
  kind: LayerKind; // layer statistics kind
  stat: string; // layer statistic
  colorLog: boolean; // log colour scale in the layer × step overview
  rowScale: boolean; // each overview row coloured on its own scale (rows of very different magnitudes)
  layerLog: boolean; // the layer detail's charts on log axes (symmetric for signed statistics)
  stepZoom: [number, number] | null; // visible step range of the layer × step overview
  /** Overview rows: module groups this deep or deeper are collapsed (0: all; null: none), except those in `rowFold`. */
  rowDepth: number | null;
  rowFold: string[]; // overview groups toggled from what `rowDepth` gives (a click on a group's row)
  /** The selected layer (module or parameter path), shared by every view that shows layers. */
  selectedLayer: string | null;
  /** The selected step, shared by every view that shows one step. */
  selectedStep: number | null;
  rank: number; // the rank whose statistics the internals views show (a distributed run's)
  // Graph view (the run is `detail`; the statistic overlay uses `kind`, `stat` and `selectedStep`).
  expanded: string[]; // open module paths
  graphNode: string | null; // the selected visible item ("n:<node id>" or "m:<module path>")
  overlay: GraphOverlay;
  overlayAgg: "max" | "mean" | "min"; // how a collapsed module combines its layers' values
  // Instances and neurons (deepscope.analyze; the run is `detail`). Selections are shared by every view.
  aLayer: string | null; // the analysed layer shown by the matrix, projection and neighbours
  aInstance: number | null; // the selected instance
  aNeuron: number | null; // the selected neuron of `aLayer`
  aClass: number | null; // the selected class
  aSubset: string | null; // the selected subset (by name)
  /** Which of aClass, aSubset and aNeuron is highlighted: the newest chosen (a link without it: subset, class, neuron). */
  aFocus: FocusKind | null;
  aPinned: number[]; // instances pinned as rows of the activation matrix
  aSubsets: SubsetDef[]; // subsets defined by filters (a lasso's: its polygon on a projection)
  aProj: ProjMethod;
  aColor: ColorBy;
  aSort: string | null; // the matrix row whose values order the neuron columns
  aRows: string | null; // the matrix's rows: "label", "prediction" or "column:<name>" (null: the run's classes)
}

export const defaults: ViewState = {
  tab: "charts",
  runs: [],
  detail: null,
  q: "",
  x: "step",
  smoothing: 0.6,
  log: false,
  zoom: null,
  collapsed: [],
  bigChart: null,
  eachRank: false,
  filter: "",
  cfgKey: "",
  metric: "",
  cfgValue: "",
  sort: "-start",
  panel: "overview",
  kind: "act",
  stat: "mean",
  colorLog: false,
  rowScale: false,
  layerLog: false,
  stepZoom: null,
  rowDepth: null,
  rowFold: [],
  rank: 0,
  selectedLayer: null,
  selectedStep: null,
  expanded: [],
  graphNode: null,
  overlay: "none",
  overlayAgg: "max",
  aLayer: null,
  aInstance: null,
  aNeuron: null,
  aClass: null,
  aSubset: null,
  aFocus: null,
  aPinned: [],
  aSubsets: [],
  aProj: "pca",
  aColor: "label",
  aSort: null,
  aRows: null,
};

const COLOR_BY: ColorBy[] = ["label", "prediction", "correct", "neuron", "none"];

function colorBy(v: string | null): ColorBy {
  if (v?.startsWith("column:") && v.length > 7) return v as ColorBy;
  return COLOR_BY.find((c) => c === v) ?? "label";
}

function intOrNull(v: string | null): number | null {
  const n = v === null ? NaN : Number(v);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

function subsets(raw: string | null): SubsetDef[] {
  if (!raw) return [];
  try {
    const parsed = JSON.parse(raw) as unknown;
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (s): s is SubsetDef =>
        typeof s === "object" && s !== null && typeof s.name === "string" && typeof s.where === "object" && s.where !== null && !Array.isArray(s.where),
    );
  } catch {
    return [];
  }
}

const list = (s: string | null) => (s ? s.split(",").filter(Boolean) : []);

export function parse(search: string): ViewState & { hasRuns: boolean } {
  const p = new URLSearchParams(search);
  const num = (k: string, d: number) => {
    const v = Number(p.get(k));
    return p.has(k) && Number.isFinite(v) ? v : d;
  };
  const tab = p.get("tab");
  const x = p.get("x");
  const z = list(p.get("zoom")).map(Number);
  const sz = list(p.get("steps")).map(Number);
  const panel = p.get("panel") as Panel;
  const kind = p.get("kind") as LayerKind;
  const step = p.has("step") ? Number(p.get("step")) : NaN;
  return {
    tab: tab === "runs" || tab === "run" || tab === "internals" || tab === "graph" || tab === "analysis" ? tab : "charts",
    runs: list(p.get("runs")),
    hasRuns: p.has("runs"),
    detail: p.get("run"),
    q: p.get("q") ?? "",
    x: x === "wall" || x === "relative" ? x : "step",
    smoothing: Math.min(0.99, Math.max(0, num("smooth", defaults.smoothing))),
    log: p.get("log") === "1",
    zoom: z.length === 2 && z.every(Number.isFinite) && z[0] < z[1] ? [z[0], z[1]] : null,
    collapsed: list(p.get("collapsed")),
    bigChart: p.get("chart"),
    eachRank: p.get("ranks") === "each",
    filter: p.get("filter") ?? "",
    cfgKey: p.get("cfg") ?? "",
    metric: p.get("metric") ?? "",
    cfgValue: p.get("cfgv") ?? "",
    sort: p.get("sort") ?? defaults.sort,
    panel: PANELS.includes(panel) ? panel : defaults.panel,
    kind: LAYER_KINDS.includes(kind) ? kind : defaults.kind,
    stat: p.get("stat") ?? KIND_DEFAULT_STAT[LAYER_KINDS.includes(kind) ? kind : defaults.kind],
    // absent: the statistic's own default (norms log, shares linear), as choosing it in the view gives
    colorLog: p.has("clog")
      ? p.get("clog") === "1"
      : LOG_DEFAULT.has(p.get("stat") ?? KIND_DEFAULT_STAT[LAYER_KINDS.includes(kind) ? kind : defaults.kind]),
    rowScale: p.get("rowscale") === "1",
    layerLog: p.get("llog") === "1",
    stepZoom: sz.length === 2 && sz.every(Number.isFinite) && sz[0] <= sz[1] ? [sz[0], sz[1]] : null,
    rowDepth: intOrNull(p.get("odepth")),
    rowFold: p.getAll("ofold"), // repeated: a module path may hold a comma
    selectedLayer: p.get("layer"),
    selectedStep: Number.isInteger(step) && step >= 0 ? step : null,
    rank: Number.isInteger(Number(p.get("rank"))) && Number(p.get("rank")) > 0 ? Number(p.get("rank")) : 0,
    expanded: p.getAll("gx"), // repeated: a module path may hold a comma
    graphNode: p.get("gnode"),
    overlay: (["stat", "params", "size"] as const).find((o) => o === p.get("ov")) ?? "none",
    overlayAgg: (["mean", "min"] as const).find((a) => a === p.get("agg")) ?? "max",
    aLayer: p.get("alayer"),
    aInstance: intOrNull(p.get("inst")),
    aNeuron: intOrNull(p.get("neuron")),
    aClass: intOrNull(p.get("cls")),
    aSubset: p.get("sub"),
    aFocus: FOCUS_KINDS.find((k) => k === p.get("focus")) ?? null,
    aPinned: list(p.get("pin")).map(Number).filter((n) => Number.isInteger(n) && n >= 0),
    aSubsets: subsets(p.get("subs")),
    aProj: PROJ_METHODS.find((m) => m === p.get("proj")) ?? "pca",
    aColor: colorBy(p.get("color")),
    aSort: p.get("asort"),
    aRows: p.get("arows"),
  };
}

export function serialize(s: ViewState): string {
  const p = new URLSearchParams();
  if (s.tab !== defaults.tab) p.set("tab", s.tab);
  p.set("runs", s.runs.join(","));
  if (s.detail) p.set("run", s.detail);
  if (s.q) p.set("q", s.q);
  if (s.x !== defaults.x) p.set("x", s.x);
  if (s.smoothing !== defaults.smoothing) p.set("smooth", String(s.smoothing));
  if (s.log) p.set("log", "1");
  if (s.zoom) p.set("zoom", s.zoom.map((v) => +v.toPrecision(12)).join(","));
  if (s.collapsed.length) p.set("collapsed", s.collapsed.join(","));
  if (s.bigChart) p.set("chart", s.bigChart);
  if (s.eachRank) p.set("ranks", "each");
  if (s.filter) p.set("filter", s.filter);
  if (s.cfgKey) p.set("cfg", s.cfgKey);
  if (s.metric) p.set("metric", s.metric);
  if (s.cfgValue) p.set("cfgv", s.cfgValue);
  if (s.sort !== defaults.sort) p.set("sort", s.sort);
  if (s.panel !== defaults.panel) p.set("panel", s.panel);
  if (s.kind !== defaults.kind) p.set("kind", s.kind);
  if (s.stat !== KIND_DEFAULT_STAT[s.kind]) p.set("stat", s.stat);
  if (s.colorLog !== LOG_DEFAULT.has(s.stat)) p.set("clog", s.colorLog ? "1" : "0");
  if (s.rowScale) p.set("rowscale", "1");
  if (s.layerLog) p.set("llog", "1");
  if (s.stepZoom) p.set("steps", s.stepZoom.join(","));
  if (s.rowDepth !== null) p.set("odepth", String(s.rowDepth));
  for (const path of s.rowFold) p.append("ofold", path);
  if (s.selectedLayer) p.set("layer", s.selectedLayer);
  if (s.selectedStep !== null) p.set("step", String(s.selectedStep));
  if (s.rank) p.set("rank", String(s.rank));
  for (const path of s.expanded) p.append("gx", path);
  if (s.graphNode) p.set("gnode", s.graphNode);
  if (s.overlay !== defaults.overlay) p.set("ov", s.overlay);
  if (s.overlayAgg !== defaults.overlayAgg) p.set("agg", s.overlayAgg);
  if (s.aLayer) p.set("alayer", s.aLayer);
  if (s.aInstance !== null) p.set("inst", String(s.aInstance));
  if (s.aNeuron !== null) p.set("neuron", String(s.aNeuron));
  if (s.aClass !== null) p.set("cls", String(s.aClass));
  if (s.aSubset) p.set("sub", s.aSubset);
  // only while the selection it names is there: a cleared neuron leaves no stale "focus=neuron"
  const chosen = { class: s.aClass !== null, subset: !!s.aSubset, neuron: s.aNeuron !== null };
  if (s.aFocus && chosen[s.aFocus]) p.set("focus", s.aFocus);
  if (s.aPinned.length) p.set("pin", s.aPinned.join(","));
  if (s.aSubsets.length) p.set("subs", JSON.stringify(s.aSubsets));
  if (s.aProj !== defaults.aProj) p.set("proj", s.aProj);
  if (s.aColor !== defaults.aColor) p.set("color", s.aColor);
  if (s.aSort) p.set("asort", s.aSort);
  if (s.aRows) p.set("arows", s.aRows);
  return p.toString().replace(/%2C/g, ",");
}
