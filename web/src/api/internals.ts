// The training-internals routes (docs/http-api.md, "Training internals (run.watch)"): layer tables, the
// layer × step matrix, depth profiles, per-layer series, watch histograms, rank reports.
import { get, getJson, loadArrow, seriesColumns, type Columns } from "./client";
import type { components } from "./schema";

export type LayerTable = components["schemas"]["LayerTable"];
export type WatchedLayer = LayerTable["layers"][number];
export type LayerProfile = components["schemas"]["LayerProfile"];
export type RankReport = components["schemas"]["RankReport"];
export type HistogramPoint = components["schemas"]["HistogramPoint"];

/** Layers × step buckets of one statistic: `values[row * cols + col]`, NaN where a layer has no finite value;
 * `nonfinite[row * cols + col]`: how many of the bucket's steps were NaN/Inf for the layer (null: none anywhere). */
export interface LayerMatrix {
  kind: string;
  stat: string;
  names: string[];
  steps: number[]; // each bucket's last step
  values: Float32Array;
  nonfinite: Int32Array | null;
  exact: boolean;
}

export interface MatrixQuery {
  kind: string;
  stat: string;
  start?: number;
  end?: number;
  buckets: number;
  rank?: number;
  /** The first step a windowed statistic can hold a value at (the end of the watch's first window). */
  firstWindowEnd?: number;
}

const enc = encodeURIComponent;
const base = (run: string) => `api/runs/${enc(run)}`;

function query(q: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null) p.set(k, String(v));
  return p.toString();
}

async function arrowTable(path: string, signal?: AbortSignal) {
  const [res, { tableFromIPC }] = await Promise.all([get(path, signal), loadArrow()]);
  return tableFromIPC(new Uint8Array(await res.arrayBuffer()));
}

export const internals = {
  layers: (run: string, rank = 0) => getJson<LayerTable>(`${base(run)}/layers?rank=${rank}`),

  async matrix(run: string, q: MatrixQuery, signal?: AbortSignal): Promise<LayerMatrix> {
    const qs = query({ kind: q.kind, stat: q.stat, start: q.start, end: q.end, buckets: q.buckets, rank: q.rank || undefined });
    const table = await arrowTable(`${base(run)}/layerstats/matrix?${qs}`, signal);
    const meta = table.schema.metadata;
    const steps = JSON.parse(meta.get("steps") ?? "[]") as number[];
    const cols = steps.length;
    const names = (table.getChild("name")?.toArray() ?? []) as string[];
    const values = new Float32Array(names.length * cols).fill(NaN);
    const list = table.getChild("values");
    for (let r = 0; r < names.length && list; r++) {
      const row = list.get(r);
      if (row) values.set((row.toArray() as Float32Array).subarray(0, cols), r * cols);
    }
    // null rows (layers without NaN/Inf) are most or all of them: no array at all when every row is null
    const bad = table.getChild("nonfinite");
    let nonfinite: Int32Array | null = null;
    if (bad && bad.nullCount < names.length) {
      nonfinite = new Int32Array(names.length * cols);
      for (let r = 0; r < names.length; r++) {
        const row = bad.get(r);
        if (row) nonfinite.set((row.toArray() as Int32Array).subarray(0, cols), r * cols);
      }
    }
    if (WINDOWED.has(q.stat)) fillWindows(values, names.length, steps, q.firstWindowEnd ?? Infinity);
    return { kind: q.kind, stat: q.stat, names: Array.from(names), steps, values, nonfinite, exact: meta.get("exact") === "true" };
  },

  profile: (run: string, kind: string, stat: string, step: number | null, rank = 0) =>
    getJson<LayerProfile>(`${base(run)}/layerstats/profile?${query({ kind, stat, step, rank: rank || undefined })}`),

  async series(run: string, layer: string, kind: string, stat: string, buckets = 1000, rank = 0): Promise<Columns> {
    const qs = query({ layer, kind, stat, buckets, rank: rank || undefined });
    return seriesColumns(await arrowTable(`${base(run)}/layerstats/series?${qs}`));
  },

  /** The norm of all parameters' gradients (or weights) together at each step, downsampled like a scalar. */
  async total(run: string, kind: "param_grad" | "weight" = "param_grad", buckets = 1000, rank = 0, start?: number, end?: number): Promise<Columns> {
    const qs = query({ kind, start, end, buckets, rank: rank || undefined });
    return seriesColumns(await arrowTable(`${base(run)}/layerstats/total?${qs}`));
  },

  histograms: async (run: string, key: string, rank = 0) =>
    (await getJson<{ histograms: HistogramPoint[] }>(`${base(run)}/histograms?${query({ key, rank: rank || undefined })}`)).histograms,

  ranks: (run: string) => getJson<RankReport>(`${base(run)}/ranks`),
};

/** Statistics recorded once per window of steps (at its end), about the whole window. */
const WINDOWED = new Set(["dead_frac"]);

/** Each row's windowed values spread over the buckets of their window — from the previous value's bucket on —, so
 * that zoomed in a value is a band, not a one-bucket line on an empty row. The window in progress stays empty, and so
 * do the steps before `firstWindowEnd` (the first window was still filling there: nothing was measured); a zoom that
 * starts later has its first value spread back to its start. `steps`: each column's last step. */
export function fillWindows(values: Float32Array, rows: number, steps: number[], firstWindowEnd: number): void {
  const cols = steps.length;
  for (let r = 0; r < rows; r++) {
    const row = values.subarray(r * cols, (r + 1) * cols);
    const first = row.findIndex((v) => !Number.isNaN(v));
    let next = NaN;
    for (let c = cols - 1; c >= 0; c--) {
      if (!Number.isNaN(row[c])) next = row[c];
      else if (c > first || steps[c] >= firstWindowEnd) row[c] = next;
    }
  }
}
