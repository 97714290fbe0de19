// Application state: the view state (mirrored in the URL) and the data the server gave us (runs, keys).
import { api, HttpError, type KeyInfo, type LiveRun, type RunSummary } from "../api/client";
import { distinctColors, runColor } from "./colors";
import { chartKeys, otherRanks } from "./rankkeys";
import * as series from "./series";
import { hook } from "./testhook";
import { parse, serialize, type ViewState } from "./viewstate";

const initial = parse(window.location.search);

export const view: ViewState = $state({ ...initial });

hook.view = () => $state.snapshot(view);

export const data = $state({
  runs: [] as RunSummary[],
  keys: {} as Record<string, KeyInfo[]>,
  /** Per run, the ranks other than 0 that logged each of rank 0's keys too (a distributed run's local loss). */
  otherRanks: {} as Record<string, Record<string, number[]>>,
  loaded: false,
  error: null as string | null,
  missing: [] as string[], // run ids of the link this store does not hold (left out of the view)
  live: "connecting" as "connecting" | "open" | "reconnecting",
  now: Date.now() / 1000,
});

/** Colour index of each run: its rank by start time, oldest first, so that new runs do not recolour others. */
const colors = $derived.by(() => {
  const order = [...data.runs].sort((a, b) => a.start_time - b.start_time || a.id.localeCompare(b.id));
  const all = new Map(order.map((r, i) => [r.id, runColor(i)]));
  // the selected runs (and the one in focus) in start order, each with its own index: they never share a colour
  const chosen = new Set([...view.runs, ...(view.detail ? [view.detail] : [])]);
  const picked = order.flatMap((r, i) => (chosen.has(r.id) ? [{ id: r.id, index: i }] : []));
  for (const [id, c] of distinctColors(picked)) all.set(id, c);
  return all;
});

export function colorOf(id: string): string {
  return colors.get(id) ?? "#888";
}

/** Whether run `id` holds `what` (a watch, a graph, a finished analysis), by the run list: null until the list
 * has loaded (wait for it); false for a run it does not list (a stale link: nothing to ask the server for — asked
 * once the list names it). */
export function holds(id: string, what: Holding): boolean | null {
  if (!data.loaded) return null;
  const r = runById(id);
  return r ? r.contents.includes(what) : false;
}

export type Holding = "watch" | "graph" | "analysis" | "analysis_unfinished";

/** A loader of what runs may hold into `store` (by run id): the server's answer, or "none" — not asked for when
 * the run list says the run holds no `what` (asked again once it says otherwise), nor before the list is in. */
export function perRunLoader<T>(
  store: Record<string, T | "none">,
  what: Holding,
  fetch: (run: string) => Promise<T>,
): (run: string, fresh?: boolean) => Promise<void> {
  const loading = new Set<string>();
  const listedNone = new Set<string>(); // "none" because the run list said so
  return async (run, fresh = false) => {
    const has = holds(run, what);
    if (has === null) return; // called again once the run list is in
    if (!has) {
      if (store[run] !== "none") store[run] = "none"; // nothing to ask the server for
      listedNone.add(run);
      return;
    }
    if (loading.has(run) || (!fresh && run in store && !listedNone.has(run))) return;
    listedNone.delete(run);
    loading.add(run);
    try {
      store[run] = await fetch(run);
    } catch {
      store[run] = "none";
    } finally {
      loading.delete(run);
    }
  };
}

export function runById(id: string): RunSummary | undefined {
  return data.runs.find((r) => r.id === id);
}

/** Each run's name as the views show it: names that several runs share get their start time (and, started in the
 * same second, the end of their id) — twenty "hf-bf16" runs could not be told apart. */
const labels = $derived.by(() => {
  const byName = new Map<string, RunSummary[]>();
  for (const r of data.runs) byName.set(r.name, [...(byName.get(r.name) ?? []), r]);
  const out = new Map<string, string>();
  for (const [name, runs] of byName) {
    const times = runs.map((r) => new Date(r.start_time * 1000).toLocaleTimeString([], { hour12: false }));
    runs.forEach((r, i) => {
      if (runs.length === 1) out.set(r.id, name);
      else if (times.filter((t) => t === times[i]).length === 1) out.set(r.id, `${name} · ${times[i]}`);
      else out.set(r.id, `${name} · ${times[i]} · ${r.id.slice(-4)}`);
    });
  }
  return out;
});

/** How the views name run `id` (see `labels`); its id while the run list does not know it. */
export function runLabel(id: string): string {
  return labels.get(id) ?? runById(id)?.name ?? id;
}

// ---- URL ---------------------------------------------------------------------------------------------
let lastSearch = serialize(view);
/** Where the user is: a tab, its run, the internals' panel, the instance whose detail is open. Going elsewhere is a
 * history entry (Back returns, e.g. from a finding's evidence to the findings, from a neighbour to the instance it
 * was found from); a change within one place (a selection, a zoom) replaces the URL. */
const placeOf = (detail: string | null = view.detail) =>
  `${view.tab}|${detail}|${view.tab === "internals" ? view.panel : ""}|${view.tab === "analysis" ? view.aInstance : ""}`;
let lastPlace = placeOf();

function syncUrl() {
  const search = serialize(view);
  if (search === lastSearch) return;
  const place = placeOf();
  const url = `${window.location.pathname}?${search}`;
  if (place !== lastPlace) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  lastSearch = search;
  lastPlace = place;
}

/** Open a run's detail (its config, summary and events), as a click on its name does in the runs table and the run
 * list. */
export function openRunDetail(id: string): void {
  view.detail = id;
  view.tab = "run";
}

/** Put `id` in focus on behalf of the user — a view that picked a run by itself: the URL is updated in place, not
 * pushed as a new history entry (Back would land on the view, which would pick it again). A change of place the URL
 * does not hold yet (the tab that opened the view, in the same tick) still gets its own entry, the run with it. */
export function adoptDetail(id: string | null): void {
  if (placeOf() === lastPlace) lastPlace = placeOf(id);
  view.detail = id;
}

window.addEventListener("popstate", () => {
  const next = parse(window.location.search);
  const { hasRuns: _, ...state } = next;
  Object.assign(view, state);
  lastSearch = serialize(view);
  lastPlace = placeOf();
});

// ---- loading -----------------------------------------------------------------------------------------
let selectFirst = false; // the page opened on no runs and without a selection in its link

/** The newest run's project: its five newest runs (runs of another project rarely compare with them). */
function defaultSelection(runs: RunSummary[]): string[] {
  return runs.filter((r) => r.project === runs[0]?.project).slice(0, 5).map((r) => r.id);
}

export async function loadRuns(): Promise<void> {
  try {
    const runs = await api.runs();
    data.runs = runs;
    data.error = null;
    if (data.loaded && selectFirst && runs.length) {
      // opened on an empty directory: the first runs to appear are selected as they would have been at load
      selectFirst = false;
      if (!view.runs.length) view.runs = defaultSelection(runs);
    }
    if (!data.loaded) {
      data.loaded = true;
      const known = new Set(runs.map((r) => r.id));
      const missing = [...view.runs, ...(view.detail ? [view.detail] : [])].filter((id) => !known.has(id));
      data.missing = [...new Set(missing)];
      if (!initial.hasRuns) view.runs = defaultSelection(runs);
      else view.runs = view.runs.filter((id) => known.has(id));
      selectFirst = !initial.hasRuns && !runs.length;
      if (view.detail && !known.has(view.detail)) {
        adoptDetail(null); // each view picks a run of its own, as without one in the link
        if (view.tab === "run") view.tab = "runs";
      }
    }
  } catch (e) {
    data.error = e instanceof HttpError && e.status === 401 ? "Not authorised: open the link with its ?token=" : String(e);
    data.loaded = true;
  }
}

// Key lists load one request at a time per run; calls made meanwhile share the one queued behind it.
const keysRunning = new Map<string, Promise<void>>();
const keysQueued = new Map<string, Promise<void>>();

async function fetchKeys(run: string): Promise<void> {
  try {
    const keys = await api.allKeys(run);
    const scalars = keys.filter((k) => k.kind === "scalar");
    data.keys[run] = chartKeys(scalars);
    data.otherRanks[run] = otherRanks(scalars);
  } catch {
    // the run may have been removed; the runs list will drop it
  }
}

/** Load the key list of `run`; `fresh` asks for one requested after this call (live updates). */
export function loadKeys(run: string, fresh = true): Promise<void> {
  const queued = keysQueued.get(run);
  if (queued) return queued;
  const running = keysRunning.get(run);
  if (running && !fresh) return running;
  const start = () => {
    keysQueued.delete(run);
    const p = fetchKeys(run).finally(() => keysRunning.delete(run));
    keysRunning.set(run, p);
    return p;
  };
  if (!running) return start();
  const next = running.then(start);
  keysQueued.set(run, next);
  return next;
}

// ---- live --------------------------------------------------------------------------------------------
let runsTimer: ReturnType<typeof setTimeout> | null = null;

function reloadRunsSoon() {
  if (runsTimer) return;
  runsTimer = setTimeout(() => {
    runsTimer = null;
    void loadRuns();
  }, 100);
}

async function onRunEvent({ run, max_step: maxStep, status }: LiveRun) {
  hook.live.events++;
  hook.live.lastEvent = performance.now();
  const i = data.runs.findIndex((r) => r.id === run);
  if (i < 0) {
    reloadRunsSoon();
    return;
  }
  const r = data.runs[i];
  if (r.max_step !== maxStep || r.status !== status) data.runs[i] = { ...r, max_step: maxStep, status };
  if (!view.runs.includes(run)) return;
  // One small request says which keys grew; only those fetch their tail (start = last step held + 1).
  await loadKeys(run);
  for (const k of data.keys[run] ?? []) {
    const held = series.get(run, k.key);
    const last = held?.coarse?.step.length ? held.coarse.step[held.coarse.step.length - 1] : -1;
    if (held?.coarse && k.last_step > last) series.tail(run, k.key);
  }
}

export function startLive(): void {
  let es: EventSource;
  let everOpen = false;
  const connect = () => {
    es = api.live();
    es.addEventListener("open", () => {
      if (everOpen) {
        void loadRuns();
        for (const run of view.runs) for (const key of series.heldKeys(run)) series.tail(run, key);
      }
      everOpen = true;
      data.live = "open";
    });
    es.addEventListener("error", () => {
      data.live = "reconnecting";
    });
    es.addEventListener("runs", () => reloadRunsSoon());
    es.addEventListener("run", (ev) => {
      try {
        void onRunEvent(JSON.parse((ev as MessageEvent).data) as LiveRun);
      } catch {
        // malformed message: ignore
      }
    });
  };
  connect();
  setInterval(() => (data.now = Date.now() / 1000), 1000);
}

export function initState(): void {
  $effect.root(() => {
    $effect(() => {
      syncUrl();
    });
    // Keys of every selected run the run list names (a stale link's unknown id is dropped when the list loads).
    $effect(() => {
      if (!data.loaded) return;
      for (const run of view.runs) if (!(run in data.keys) && runById(run)) void loadKeys(run, false);
    });
  });
  void loadRuns();
  startLive();
}
