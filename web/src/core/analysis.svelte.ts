// Shared state of the analysis views (deepscope.analyze): which selected runs have an analysis, the focused
// run's summary and instance table, the subsets (filters in the URL, lasso selections in memory) with their
// resolved row masks, a neuron's top instances, and the *focus* — the instances every view highlights.
//
// Linking: a selection anywhere writes `view` (aClass, aSubset, aNeuron, aInstance); every view reads it. The
// focus mask follows the newest of class / subset / neuron selections (`view.aFocus`, kept in the URL).
import { untrack } from "svelte";
import { analysis, packMask, unpackMask, type AnalysisSummary, type Instances, type SubsetRequest } from "../api/analysis";
import { HttpError } from "../api/client";
import { loadSummary, summaryOf } from "./analysissummaries.svelte";
import { view } from "./state.svelte";
import { hook } from "./testhook";
import type { FocusKind, SubsetDef } from "./viewstate";

/** Ten categorical colours (Tableau 10), one per class; more classes repeat them. */
const CLASS_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const SUBSET_PALETTE = ["#7048e8", "#0c8599", "#c2255c", "#5c940d", "#e67700", "#1c7ed6"];
export const CORRECT_COLOR = "#2f9e44";
export const WRONG_COLOR = "#e03131";
export const UNKNOWN_COLOR = "#adb5bd";
export const FOCUS_COLOR = "#f59f00";

export function classColor(c: number): string {
  return c < 0 ? UNKNOWN_COLOR : CLASS_PALETTE[c % CLASS_PALETTE.length];
}

export function subsetColor(i: number): string {
  return SUBSET_PALETTE[i % SUBSET_PALETTE.length];
}

/** A subset with its rows resolved: `rows[i] === 1` for members. */
export interface LiveSubset {
  name: string;
  where: Record<string, unknown> | null; // a filter (kept in the URL), or null for a lasso selection
  rows: Uint8Array;
  count: number;
  color: string;
}

// ---- which runs have an analysis (analysissummaries.svelte.ts) ----------------------------------------
export { loadReason, loadSummary, newer, reasons, summaries, summaryOf } from "./analysissummaries.svelte";

// ---- the focused run's data --------------------------------------------------------------------------
export const an = $state({
  run: null as string | null,
  error: null as string | null,
  /** Subsets of the focused run, filter subsets first (in `view.aSubsets` order), then lasso ones. */
  subsets: [] as LiveSubset[],
  /** The version of the analysis the views loaded (a new `deepscope.analyze` of the run changes the summary's). */
  version: null as string | null,
  /** The selected neuron's top instances (of the layer the views show). */
  top: null as { layer: string; neuron: number; indices: number[]; values: number[]; constant?: number | null } | null,
});
/** The instance table's core columns (typed arrays: not deeply reactive). */
let instances = $state.raw<Instances | null>(null);
export function instancesOf(): Instances | null {
  return instances;
}

const lasso = new Map<string, LiveSubset>(); // lasso subsets of the focused run, by name

/** Make `run` the focused run: load its instance table and resolve its subsets. */
export async function focusRun(run: string | null): Promise<void> {
  if (run === an.run) return;
  an.run = run;
  an.version = summaryOf(run)?.version ?? null;
  an.error = null;
  an.subsets = [];
  an.top = null;
  instances = null;
  lasso.clear();
  if (!run) return;
  try {
    const table = await analysis.instances(run);
    if (an.run !== run) return;
    instances = table;
    await resolveSubsets();
  } catch (e) {
    if (an.run === run) an.error = String((e as Error).message ?? e);
  }
}

/** Resolve every filter subset of the URL (server-side filters) and keep the lasso ones. A filter the server refuses
 * (a lasso on a layer a new analysis no longer has, a column gone) is dropped from the URL, its reason shown once:
 * kept, every reload would repeat the error. */
export async function resolveSubsets(): Promise<void> {
  const run = an.run;
  const table = instances;
  if (!run || !table) return;
  const defs = view.aSubsets;
  // read without tracking: an effect that calls this must not re-run because this writes `an.subsets`
  const held = untrack(() => an.subsets);
  const out: LiveSubset[] = [];
  const refused: { def: SubsetDef; reason: string }[] = [];
  for (const [i, def] of defs.entries()) {
    const known = held.find((s) => s.name === def.name && JSON.stringify(s.where) === JSON.stringify(def.where));
    if (known) {
      out.push({ ...known, color: subsetColor(i) });
      continue;
    }
    try {
      const res = await subsetRows(run, def);
      out.push({ name: def.name, where: def.where, rows: unpackMask(res.mask, table.n), count: res.count, color: subsetColor(i) });
    } catch (e) {
      const reason = (e as Error).message;
      if (e instanceof HttpError && (e.status === 400 || e.status === 422)) refused.push({ def, reason });
      else if (an.run === run) an.error = `Subset “${def.name}”: ${reason}`; // the server unreachable: kept, tried again
    }
  }
  let i = out.length;
  for (const s of lasso.values()) out.push({ ...s, color: subsetColor(i++) });
  if (an.run !== run) return;
  an.subsets = out;
  if (refused.length) {
    const keyOf = (d: SubsetDef) => JSON.stringify([d.name, d.where]);
    const gone = new Set(refused.map((r) => keyOf(r.def)));
    view.aSubsets = view.aSubsets.filter((d) => !gone.has(keyOf(d)));
    for (const { def } of refused) {
      if (view.aSubset === def.name) view.aSubset = null;
      if (view.aSort === `subset:${def.name}`) view.aSort = null;
    }
    an.error = refused.map((r) => `Subset “${r.def.name}” was removed from the views and the link: ${r.reason}`).join(" · ");
  }
}

/** One request per subset asked for at once (the tab resolves its subsets from several places as it opens). */
const asking = new Map<string, Promise<{ mask: string; count: number }>>();
function subsetRows(run: string, def: SubsetDef): Promise<{ mask: string; count: number }> {
  const key = JSON.stringify([run, def.name, def.where]);
  let p = asking.get(key);
  if (!p) {
    p = analysis.subset(run, { name: def.name, where: def.where }).finally(() => asking.delete(key));
    asking.set(key, p);
  }
  return p;
}

function uniqueName(base: string): string {
  const taken = new Set([...view.aSubsets.map((s) => s.name), ...lasso.keys()]);
  if (!taken.has(base)) return base;
  let k = 2;
  while (taken.has(`${base} ${k}`)) k++;
  return `${base} ${k}`;
}

/** Subsets a run's views hold at once: the neuron matrix averages each (the server answers at most 64). */
export const MAX_SUBSETS = 64;

function checkRoom(): void {
  if (view.aSubsets.length + lasso.size >= MAX_SUBSETS) throw new Error(`At most ${MAX_SUBSETS} subsets: remove one first`);
}

/** Add a subset defined by a filter (checked by the server first); it becomes the selected subset. */
export async function addFilterSubset(name: string, where: Record<string, unknown>): Promise<void> {
  if (!an.run) return;
  checkRoom();
  const rows = await analysis.subset(an.run, { name, where }); // throws the server's reason for a bad filter
  if (rows.count === 0) throw new Error("No instance matches these conditions");
  const def: SubsetDef = { name: uniqueName(name || "subset"), where };
  view.aSubsets = [...view.aSubsets, def];
  await resolveSubsets();
  selectSubset(def.name);
}

/** Add a subset of explicit rows (a lasso selection, a confusion cell's instances, …); throws when there are
 * `MAX_SUBSETS` already. */
export function addRowsSubset(name: string, rows: Uint8Array): string {
  checkRoom();
  const s: LiveSubset = { name: uniqueName(name), where: null, rows, count: rows.reduce((a, b) => a + b, 0), color: "" };
  lasso.set(s.name, s);
  void resolveSubsets().then(() => selectSubset(s.name));
  return s.name;
}

export function removeSubset(name: string): void {
  lasso.delete(name);
  view.aSubsets = view.aSubsets.filter((s) => s.name !== name);
  if (view.aSubset === name) view.aSubset = null;
  if (view.aSort === `subset:${name}`) view.aSort = null;
  void resolveSubsets();
}

/** What the matrix route needs to aggregate a subset: its filter, or its rows as a packed mask. */
export function subsetRequest(s: LiveSubset): SubsetRequest {
  return s.where ? { name: s.name, where: s.where } : { name: s.name, mask: packMask(s.rows) };
}

// ---- selections, shared by every view -----------------------------------------------------------------
// Which of them is highlighted is `view.aFocus`, in the URL: a reload or a shared link highlights the same.

/** Select class `c`, or deselect it when it is what is highlighted (chosen before a subset or a neuron, it is
 * highlighted again). */
export function selectClass(c: number | null): void {
  view.aClass = view.aClass === c && focusState.kind === "class" ? null : c;
  view.aFocus = view.aClass === null ? null : "class";
}

/** Select a subset, or deselect it when it is what is highlighted. */
export function selectSubset(name: string | null): void {
  view.aSubset = view.aSubset === name && focusState.kind === "subset" ? null : name;
  view.aFocus = view.aSubset === null ? null : "subset";
}

export function selectInstance(i: number | null): void {
  view.aInstance = i;
}

export function selectNeuron(n: number | null): void {
  view.aNeuron = view.aNeuron === n ? null : n;
  view.aFocus = view.aNeuron === null ? null : "neuron";
}

export function togglePin(i: number): void {
  view.aPinned = view.aPinned.includes(i) ? view.aPinned.filter((p) => p !== i) : [...view.aPinned, i].slice(-16);
}

/** Load the selected neuron's top instances when the neuron or layer changes. */
export async function loadTop(k = 24): Promise<void> {
  const run = an.run;
  const layer = currentLayer(summaryOf(run)); // the URL's layer, else the default one the views show
  const neuron = view.aNeuron;
  if (!run || !layer || neuron === null) {
    an.top = null;
    return;
  }
  if (an.top && an.top.layer === layer && an.top.neuron === neuron) return;
  try {
    const res = await analysis.top(run, layer, neuron, k);
    if (an.run === run && currentLayer(summaryOf(run)) === layer && view.aNeuron === neuron) an.top = { layer, neuron, ...res };
  } catch {
    an.top = null;
  }
}

/** The instances every view highlights (1 = in focus), or null when nothing is selected. */
export const focus = {
  get mask(): Uint8Array | null {
    return focusMask();
  },
  get label(): string {
    return focusLabel();
  },
  /** What the focus is: a subset, a class, or a neuron's top instances (null: nothing selected). */
  get kind(): "subset" | "class" | "neuron" | null {
    return focusState.kind;
  },
  /** The class highlighted now (null while a subset or a neuron is: a class chosen before it no longer looks chosen). */
  get class(): number | null {
    return focusState.kind === "class" ? view.aClass : null;
  },
  /** The subset highlighted now (null while a class or a neuron is). */
  get subset(): string | null {
    return focusState.kind === "subset" ? view.aSubset : null;
  },
};

function classMask(c: number): Uint8Array | null {
  const t = instances;
  if (!t) return null;
  const m = new Uint8Array(t.n);
  for (let i = 0; i < t.n; i++) m[i] = t.label[i] === c ? 1 : 0;
  return m;
}

const focusState = $derived.by((): { mask: Uint8Array | null; label: string; kind: FocusKind | null } => {
  const t = instances;
  if (!t) return { mask: null, label: "", kind: null };
  /** What selection `kind` highlights; `pending`: the URL's focus, whose rows are still on their way — nothing
   * highlighted meanwhile rather than another selection. */
  const pick = (kind: FocusKind | null, pending: boolean) => {
    if (kind === "subset" && view.aSubset !== null) {
      const s = an.subsets.find((x) => x.name === view.aSubset);
      if (s) return { mask: s.rows, label: `subset “${s.name}”`, kind };
      if (pending && view.aSubsets.some((d) => d.name === view.aSubset)) return { mask: null, label: `subset “${view.aSubset}”`, kind };
    }
    if (kind === "class" && view.aClass !== null) return { mask: classMask(view.aClass), label: `class ${className(view.aClass)}`, kind };
    if (kind === "neuron" && view.aNeuron !== null) {
      const label = `top instances of neuron ${view.aNeuron}`;
      if (an.top && an.top.neuron === view.aNeuron) {
        const m = new Uint8Array(t.n);
        for (const i of an.top.indices) m[i] = 1;
        return { mask: m, label, kind };
      }
      if (pending) return { mask: null, label, kind };
    }
    return null;
  };
  // the newest selection (the URL's `focus`); a link without one: subset, class, neuron
  const focused = pick(view.aFocus, true);
  if (focused) return focused;
  for (const kind of ["subset", "class", "neuron"] as const) {
    const got = pick(kind, false);
    if (got) return got;
  }
  return { mask: null, label: "", kind: null };
});

function focusMask(): Uint8Array | null {
  return focusState.mask;
}

function focusLabel(): string {
  return focusState.label;
}

/** A layer selected in another view (a box of the graph): the Instances tab shows it too, when the run analysed it. */
export async function selectAnalysedLayer(run: string | null, layer: string | null): Promise<void> {
  if (!run || !layer) return;
  await loadSummary(run);
  if (summaryOf(run)?.layers.some((l) => l.name === layer) && view.aLayer !== layer) {
    view.aLayer = layer;
    view.aNeuron = null;
    view.aSort = null;
  }
}

/** The display name of class `c` of the focused run. */
export function className(c: number): string {
  const names = summaryOf(an.run)?.class_names;
  return c < 0 ? "—" : (names?.[c] ?? String(c));
}

/** The run's class names: its own, else "0" … "k-1" for the k classes its labels and predictions name (a run
 * analysed without `class_names` still has classes to filter, pick and list). */
export function classNames(summary: Pick<AnalysisSummary, "class_names"> | null): string[] {
  return summary?.class_names?.length ? summary.class_names : numberedClasses;
}
const numberedClasses = $derived.by(() => {
  const t = instances;
  let k = 0;
  if (t) for (let i = 0; i < t.n; i++) k = Math.max(k, t.label[i] + 1, t.prediction[i] + 1);
  return Array.from({ length: k }, (_, c) => String(c));
});

/** Where names are long, the part every class name shares at its start or end ("class_", "_name") elided to "…":
 * cut at a fixed width, "class_017_name" and "class_018_name" both read "class_0…". Per class-name list. */
const shortNames = new WeakMap<string[], string[]>();
export function shortClassName(c: number): string {
  const names = summaryOf(an.run)?.class_names;
  if (c < 0 || !names?.[c]) return className(c);
  let short = shortNames.get(names);
  if (!short) {
    short = elideShared(names);
    shortNames.set(names, short);
  }
  return short[c];
}

/** `names` with their common prefix and suffix (of 3 characters or more) replaced by "…", when the longest name has
 * more than 10 characters and at least 1 of its own would remain. */
export function elideShared(names: string[]): string[] {
  if (names.length < 2 || Math.max(...names.map((n) => n.length)) <= 10) return names;
  const first = names[0];
  let pre = first.length;
  let suf = first.length;
  for (const n of names) {
    let i = 0;
    while (i < pre && i < n.length && n[i] === first[i]) i++;
    pre = i;
    let j = 0;
    while (j < suf && j < n.length && n[n.length - 1 - j] === first[first.length - 1 - j]) j++;
    suf = j;
  }
  // at a word's edge: "class_0" shared by class_000 … class_099 is elided as "class_", keeping "000" whole
  const SEP = /[_\-\s.:/]/;
  const lastSep = Math.max(...[..."_- .:/\t"].map((c) => first.lastIndexOf(c, pre - 1)));
  if (pre > 0 && lastSep >= 0 && lastSep + 1 < pre) pre = lastSep + 1;
  const firstSep = first.slice(first.length - suf).search(SEP);
  if (firstSep > 0) suf -= firstSep;
  // every name keeps at least 1 character of its own ("…0…" of "category 0 with a suffix"): else the suffix, then
  // the prefix, is not elided at all
  const shortest = Math.min(...names.map((n) => n.length));
  if (pre + suf > shortest - 1) suf = 0;
  if (pre > shortest - 1) pre = 0;
  if (pre < 3) pre = 0;
  if (suf < 3) suf = 0;
  if (!pre && !suf) return names;
  return names.map((n) => (pre ? "…" : "") + n.slice(pre, n.length - suf) + (suf ? "…" : ""));
}

/** The analysed layer a view should show: the URL's, else the last layer before the output — the last layer,
 * when it is not the output (as wide as there are classes; without class names, assumed to be). */
export function currentLayer(summary: AnalysisSummary | null): string | null {
  if (!summary || !summary.layers.length) return null;
  if (view.aLayer && summary.layers.some((l) => l.name === view.aLayer)) return view.aLayer;
  const layers = summary.layers;
  const last = layers[layers.length - 1];
  const classes = summary.class_names?.length ?? null;
  // a binary classifier may have one logit for two classes
  const lastIsOutput = layers.length > 1 && (classes === null || last.width === classes || (classes === 2 && last.width === 1));
  return (lastIsOutput ? layers[layers.length - 2] : last).name;
}

// ---- test hook: each view publishes what it shows under `window.__deepscope.analysis[view]` -------------
export const analysisHook: Record<string, unknown> = {};
(hook as unknown as { analysis: Record<string, unknown> }).analysis = analysisHook;
analysisHook.state = () => ({
  run: an.run,
  n: instances?.n ?? 0,
  subsets: an.subsets.map((s) => ({ name: s.name, count: s.count, filter: s.where !== null })),
  focus: focusState.label,
  focusCount: focusState.mask ? focusState.mask.reduce((a, b) => a + b, 0) : 0,
  top: an.top ? an.top.indices.slice() : null,
  error: an.error,
});
