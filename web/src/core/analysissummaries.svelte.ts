// Which runs have an analysis: each run's analysis summary, loaded when the run list says it has one, and — for a
// run without one — why not, in the server's words (never analysed, or an analysis that stopped part-way).
import { analysis, type AnalysisSummary } from "../api/analysis";
import { ApiError, HttpError } from "../api/client";
import { holds, perRunLoader, runById } from "./state.svelte";

export const summaries = $state<Record<string, AnalysisSummary | "none">>({});
/** Why a run has no analysis to show, in the server's words (its 404's `detail`: never analysed, or an analysis
 * that stopped part-way and how to resume it). Text, never markup. */
export const reasons = $state<Record<string, string>>({});
/** A newer analysis of a run whose views hold an older one: kept apart until the views load it (the page reloads),
 * so that they never mix the two — one summary's layers and counts with the other's instance table. */
export const newer = $state<Record<string, AnalysisSummary>>({});
export const loadSummary = perRunLoader(summaries, "analysis", summaryOrReason);

async function summaryOrReason(run: string): Promise<AnalysisSummary> {
  try {
    const s = await analysis.summary(run);
    delete reasons[run];
    const held = summaries[run];
    if (held && held !== "none" && held.version !== s.version) {
      newer[run] = s;
      return held;
    }
    return s;
  } catch (e) {
    reasons[run] = reasonOf(e);
    throw e;
  }
}

function reasonOf(e: unknown): string {
  if (e instanceof ApiError) return e.detail;
  if (e instanceof HttpError) return `the server answered ${e.status}`;
  return `the server could not be reached (${(e as Error).message ?? e})`;
}

const askedWhy = new Set<string>();
/** Why run `id` has no analysis: none recorded (the run list says so), or — asked of the server once, for a run the
 * list marks `analysis_unfinished` — how far an analysis stopped part-way came, and why. */
export async function loadReason(id: string): Promise<void> {
  if (askedWhy.has(id) || id in reasons || holds(id, "analysis") !== false || !runById(id)) return;
  if (!holds(id, "analysis_unfinished")) {
    reasons[id] = "no analysis recorded";
    return;
  }
  askedWhy.add(id);
  try {
    const p = await analysis.progress(id); // a 200 either way: no failed request in the console
    // finished since the list was read: the list says so soon, and the summary is loaded then
    if (!p.complete) reasons[id] = p.reason ?? "its analysis is unfinished";
  } catch (e) {
    reasons[id] = reasonOf(e);
  }
}

export function summaryOf(run: string | null): AnalysisSummary | null {
  const s = run ? summaries[run] : undefined;
  return s && s !== "none" ? s : null;
}
