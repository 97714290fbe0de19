// Shared state of the training-internals views: each run's layer table, its diagnoses (findings), which
// statistics apply to which kind, and the selected layer (`view.selectedLayer`, read and written by every
// view that shows layers) mapped between module paths and parameter paths.
import { type RunEvent } from "../api/client";
import { api } from "../api/client";
import { internals, type LayerTable } from "../api/internals";
import { perRunLoader, runById, view } from "./state.svelte";
import { hook } from "./testhook";
import type { LayerKind } from "./viewstate";

export const KIND_LABELS: Record<LayerKind, string> = {
  act: "Activations",
  grad: "Output gradients",
  param_grad: "Parameter gradients",
  weight: "Weights",
};

const COMMON = ["mean", "std", "rms", "min", "max", "zero_frac", "nonfinite_frac"];
/** The statistics recorded for each kind, most telling first (docs/store-format.md, "layerstats"). */
export const STATS: Record<LayerKind, string[]> = {
  act: ["mean", "std", "rms", "min", "max", "sat_frac", "dead_frac", "zero_frac", "nonfinite_frac"],
  grad: COMMON,
  param_grad: ["norm", ...COMMON],
  weight: ["norm", "update_ratio", ...COMMON],
};

/** The statistic last picked in the Statistic menu: a change of kind keeps it where the new kind records it. */
export const statPick = $state<{ stat: string | null }>({ stat: null });

/** The statistic to show on `kind` after a change of kind from `from` showing `stat` (`own`: the statistic a choice
 * stands for, update ratio's). A statistic the user chose — picked in the menu, or another than its kind's default
 * (a link, a finding's evidence) — is kept where `kind` records it; a kind's default is only that kind's: parameter
 * gradients open on their L2 norm, not on the mean Activations opened on. */
export function statForKind(kind: LayerKind, from: { kind: LayerKind; stat: string }, own?: string): string {
  if (own) return own;
  const fromDefault = from.stat === "update_ratio" && from.kind === "weight" ? "update_ratio" : STATS[from.kind][0];
  const chosen = from.stat !== fromDefault || from.stat === statPick.stat;
  return chosen && from.stat !== "update_ratio" && STATS[kind].includes(from.stat) ? from.stat : STATS[kind][0];
}

export const STAT_LABELS: Record<string, string> = {
  mean: "mean",
  std: "std",
  rms: "rms",
  min: "min",
  max: "max",
  norm: "L2 norm",
  zero_frac: "zero share",
  sat_frac: "saturated share",
  nonfinite_frac: "NaN/Inf share",
  dead_frac: "dead-unit share",
  update_ratio: "update ratio",
};

// ---- layer tables ------------------------------------------------------------------------------------
export const tables = $state<Record<string, LayerTable | "none">>({});

/** Load (or reload, for a live run) the layer table of `run`; "none" when the run was not watched. */
export const loadTable = perRunLoader(tables, "watch", (run) => internals.layers(run));

export function tableOf(run: string | null): LayerTable | null {
  const t = run ? tables[run] : undefined;
  return t && t !== "none" ? t : null;
}

/** The module a row belongs to: the row itself for act/grad, the owner of a parameter otherwise. */
export function moduleOf(table: LayerTable, path: string): string {
  if (table.layers.some((l) => l.path === path)) return path;
  const owner = table.layers.find((l) => l.params.includes(path));
  return owner ? owner.path : path;
}

/** The row of `kind` that stands for the selected layer (a module's first parameter for parameter kinds). */
export function rowFor(table: LayerTable, kind: LayerKind, selected: string | null): string | null {
  if (!selected) return null;
  const module = moduleOf(table, selected);
  if (kind === "act" || kind === "grad") return module;
  if (table.params.includes(selected)) return selected;
  const layer = table.layers.find((l) => l.path === module);
  return layer?.params.find((p) => p.endsWith("weight")) ?? layer?.params[0] ?? null;
}

/** Select a layer (and a step) everywhere. */
export function selectLayer(path: string | null, step?: number | null): void {
  view.selectedLayer = path;
  if (step !== undefined) view.selectedStep = step;
}

// ---- findings ----------------------------------------------------------------------------------------
export const findings = $state<Record<string, RunEvent[]>>({});
/** The run whose findings badge was clicked: the diagnoses list shows only its findings until asked for all. */
export const findingsFocus = $state<{ run: string | null }>({ run: null });
/** A loss spike's evidence shows its run alone: the runs selected before, to go back to them from the charts. */
export const spikeEvidence = $state<{ run: string | null; key: string | null; step: number | null; before: string[]; what: string }>({
  run: null,
  key: null,
  step: null,
  before: [],
  what: "loss spike", // or "NaN/Inf loss": what the chart marks and the notice names
});
const findingsSeen = new Map<string, number | null>(); // max_step at the last load
const findingsTimers = new Map<string, ReturnType<typeof setTimeout>>();

// Findings load two at a time: a runs table of a hundred runs asks for all of them at once, and the browser's six
// connections must stay free for what the page shows first (keys, series).
const FINDINGS_AT_ONCE = 2;
let findingsLoading = 0;
const findingsQueue: (() => void)[] = [];

async function fetchFindings(run: string): Promise<void> {
  findingsSeen.set(run, runById(run)?.max_step ?? null);
  if (findingsLoading >= FINDINGS_AT_ONCE) await new Promise<void>((go) => findingsQueue.push(go));
  findingsLoading++;
  try {
    const events = await api.events(run);
    findings[run] = events.filter((e) => e.kind.startsWith("diagnosis/"));
  } catch {
    // the run may have gone; the runs list drops it
  } finally {
    findingsLoading--;
    findingsQueue.shift()?.();
  }
}

/** Diagnoses of `run`, loaded once and reloaded (at most every 3 s) while the run grows. */
export function needFindings(run: string): RunEvent[] {
  if (!runById(run)) return findings[run] ?? []; // asked for once the run list names it (not a stale link's run)
  const step = runById(run)?.max_step ?? null;
  if (!findingsSeen.has(run)) void fetchFindings(run);
  else if (findingsSeen.get(run) !== step && !findingsTimers.has(run)) {
    findingsTimers.set(
      run,
      setTimeout(() => {
        findingsTimers.delete(run);
        void fetchFindings(run);
      }, 3000),
    );
  }
  return findings[run] ?? [];
}

/** Open the internals tab on `run`, at a panel, optionally on a layer and step. */
export function openInternals(run: string, panel = view.panel, layer?: string | null, step?: number | null): void {
  view.detail = run;
  view.tab = "internals";
  view.panel = panel;
  if (layer !== undefined) view.selectedLayer = layer;
  if (step !== undefined) view.selectedStep = step;
  if (!view.runs.includes(run)) view.runs = [...view.runs, run];
}

/** What the internals views hold, for the browser tests. */
export const testState: Record<string, unknown> = {};
(hook as unknown as { internals: Record<string, unknown> }).internals = testState;

