// The client's copy of scalar series: per (run, key) a coarse overview of the whole series, grown by live
// tails, and a finer copy of the zoomed range. Fetches go through a small queue so that the first charts on
// the page fill first and the browser's connection pool (one connection is the live stream) stays free.
import { api, type Columns } from "../api/client";
import { splitRankKey } from "./rankkeys";
import { record } from "./testhook";

export const BUCKETS = 1000;
const MAX_HELD = 4000; // a live series is halved (pairs of buckets merged) past this many rows
const CONCURRENCY = 5;

export interface Held {
  run: string;
  key: string;
  coarse: Columns | null;
  zoom: { range: [number, number]; cols: Columns } | null;
  error: string | null;
  fetching: boolean;
  tailing: boolean;
  tailAgain: boolean;
  zoomWanted: [number, number] | null;
}

type Listener = () => void;

const held = new Map<string, Held>();
const listeners = new Map<string, Set<Listener>>();
const queue: Array<() => Promise<void>> = [];
let active = 0;

const id = (run: string, key: string) => `${run}\u0000${key}`;

export function get(run: string, key: string): Held | undefined {
  return held.get(id(run, key));
}

function entry(run: string, key: string): Held {
  let h = held.get(id(run, key));
  if (!h) {
    h = { run, key, coarse: null, zoom: null, error: null, fetching: false, tailing: false, tailAgain: false, zoomWanted: null };
    held.set(id(run, key), h);
  }
  return h;
}

/** Call `fn` whenever the data of `key` changes for any run. */
export function subscribe(key: string, fn: Listener): () => void {
  let set = listeners.get(key);
  if (!set) listeners.set(key, (set = new Set()));
  set.add(fn);
  return () => set.delete(fn);
}

function notify(key: string) {
  for (const fn of listeners.get(key) ?? []) fn();
}

function enqueue(job: () => Promise<void>, urgent = false) {
  if (urgent) queue.unshift(job);
  else queue.push(job);
  pump();
}

function pump() {
  while (active < CONCURRENCY && queue.length) {
    const job = queue.shift()!;
    active++;
    job().finally(() => {
      active--;
      pump();
    });
  }
}

async function fetchCols(run: string, key: string, start?: number, end?: number): Promise<Columns> {
  const t0 = performance.now();
  const { key: logged, rank } = splitRankKey(key); // a key only other ranks logged: that rank's values
  const cols = await api.scalars(run, { key: logged, start, end, buckets: BUCKETS, rank: rank || undefined });
  record({ run, key, start: start ?? null, end: end ?? null, rows: cols.step.length, exact: cols.exact, ms: performance.now() - t0 });
  return cols;
}

/** Make sure the overview of (run, key) is held or on its way. */
export function need(run: string, key: string): void {
  const h = entry(run, key);
  if (h.coarse || h.fetching) return;
  h.fetching = true;
  enqueue(async () => {
    try {
      h.coarse = await fetchCols(run, key);
      h.error = null;
    } catch (e) {
      h.error = String(e);
    } finally {
      h.fetching = false;
    }
    notify(key);
    if (h.tailAgain) tail(run, key);
  });
}

/** Live: fetch only what was logged after the last step held, and append it. */
export function tail(run: string, key: string): void {
  const h = held.get(id(run, key));
  if (!h) return;
  if (!h.coarse || h.tailing || h.fetching) {
    h.tailAgain = true;
    return;
  }
  h.tailing = true;
  h.tailAgain = false;
  const from = h.coarse.step.length ? h.coarse.step[h.coarse.step.length - 1] + 1 : 0;
  enqueue(async () => {
    try {
      const t = await fetchCols(run, key, from);
      if (t.step.length && h.coarse) {
        h.coarse = compact(append(h.coarse, t));
        notify(key);
      }
    } catch (e) {
      h.error = String(e);
    } finally {
      h.tailing = false;
    }
    if (h.tailAgain) tail(run, key);
  }, true);
}

/** Every run and key held: used to catch up after the live stream reconnects. */
export function heldKeys(run: string): string[] {
  return [...held.values()].filter((h) => h.run === run && h.coarse).map((h) => h.key);
}

/** Fetch (run, key) at full resolution over steps [start, end]; `null` drops the zoomed copy. */
export function zoom(run: string, key: string, steps: [number, number] | null): void {
  const h = entry(run, key);
  if (!steps) {
    h.zoomWanted = null;
    if (h.zoom) {
      h.zoom = null;
      notify(key);
    }
    return;
  }
  if (same(h.zoomWanted, steps)) return; // held, or on its way
  h.zoomWanted = steps;
  // A series the overview holds at full fidelity needs no request.
  if (h.coarse?.exact) {
    h.zoom = { range: steps, cols: h.coarse };
    notify(key);
    return;
  }
  enqueue(async () => {
    if (!same(h.zoomWanted, steps)) return;
    try {
      const cols = await fetchCols(run, key, steps[0], steps[1]);
      if (same(h.zoomWanted, steps)) {
        h.zoom = { range: steps, cols };
        notify(key);
      }
    } catch (e) {
      h.error = String(e);
    }
  }, true);
}

const same = (a: [number, number] | null, b: [number, number] | null) =>
  !!a && !!b && a[0] === b[0] && a[1] === b[1];

function concat<T extends Float64Array | Int32Array>(a: T, b: T): T {
  const out = new (a.constructor as new (n: number) => T)(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

export function append(a: Columns, b: Columns): Columns {
  return {
    step: concat(a.step, b.step),
    wall: concat(a.wall, b.wall),
    min: concat(a.min, b.min),
    max: concat(a.max, b.max),
    mean: concat(a.mean, b.mean),
    last: concat(a.last, b.last),
    count: concat(a.count, b.count),
    nonfinite: concat(a.nonfinite, b.nonfinite),
    exact: a.exact && b.exact,
  };
}

/** Merge neighbouring buckets pairwise once a live series holds too many rows. */
export function compact(c: Columns): Columns {
  const n = c.step.length;
  if (n <= MAX_HELD) return c;
  const m = Math.ceil(n / 2);
  const out: Columns = {
    step: new Float64Array(m),
    wall: new Float64Array(m),
    min: new Float64Array(m),
    max: new Float64Array(m),
    mean: new Float64Array(m),
    last: new Float64Array(m),
    count: new Int32Array(m),
    nonfinite: new Int32Array(m),
    exact: false,
  };
  for (let j = 0; j < m; j++) {
    const a = 2 * j;
    const b = Math.min(a + 1, n - 1);
    out.step[j] = c.step[b];
    out.wall[j] = c.wall[b];
    out.last[j] = c.last[b];
    out.min[j] = nanMin(c.min[a], c.min[b]);
    out.max[j] = nanMax(c.max[a], c.max[b]);
    const ca = c.count[a];
    const cb = b === a ? 0 : c.count[b];
    out.count[j] = ca + cb;
    out.nonfinite[j] = c.nonfinite[a] + (b === a ? 0 : c.nonfinite[b]);
    const ma = c.mean[a];
    const mb = c.mean[b];
    const fa = ca - c.nonfinite[a]; // each mean is of its bucket's finite values
    const fb = b === a ? 0 : cb - c.nonfinite[b];
    out.mean[j] = Number.isNaN(ma) ? mb : Number.isNaN(mb) || b === a ? ma : (ma * fa + mb * fb) / (fa + fb || 1);
  }
  return out;
}

const nanMin = (a: number, b: number) => (Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.min(a, b));
const nanMax = (a: number, b: number) => (Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.max(a, b));
