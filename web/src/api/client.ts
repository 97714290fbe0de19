// A small typed client over the HTTP API (docs/http-api.md). Types come from the generated schema.
import type { components, paths } from "./schema";

type Json<P extends keyof paths> = paths[P] extends {
  get: { responses: { 200: { content: { "application/json": infer T } } } };
}
  ? T
  : never;

export type RunSummary = Json<"/api/runs">["runs"][number];
export type RunDetail = Json<"/api/runs/{run_id}">;
export type KeyInfo = Json<"/api/runs/{run_id}/keys">["keys"][number];
export type ScalarSummary = Json<"/api/runs/{run_id}/summary">["scalars"][number];
export type RunEvent = Json<"/api/runs/{run_id}/events">["events"][number];
export type Health = Json<"/api/health">;
/** The data of a live `run` event. */
export type LiveRun = components["schemas"]["LiveRun"];

/** One scalar series as the server downsampled it: a column per field, one row per bucket. */
export interface Columns {
  step: Float64Array;
  wall: Float64Array;
  min: Float64Array;
  max: Float64Array;
  mean: Float64Array;
  last: Float64Array;
  count: Int32Array;
  nonfinite: Int32Array; // NaN and ±Inf values in each bucket (the mean, min and max are of the others)
  exact: boolean;
}

export interface ScalarQuery {
  key: string;
  start?: number;
  end?: number;
  buckets?: number;
  rank?: number;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly url: string,
  ) {
    super(`HTTP ${status} for ${url}`);
  }
}

// A page opened with ?token=… keeps the token in memory (the server also sets a cookie) and drops it from
// the address bar, so that a copied link does not carry it.
let token: string | null = null;

export function takeTokenFromUrl(): void {
  const url = new URL(window.location.href);
  const t = url.searchParams.get("token");
  if (t) {
    token = t;
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url);
  }
}

function headers(): HeadersInit {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function get(path: string, signal?: AbortSignal): Promise<Response> {
  const res = await fetch(path, { headers: headers(), signal, credentials: "same-origin" });
  if (!res.ok) throw await failure(res, path);
  return res;
}

/** The error of an answer that is not OK: with the server's reason (its JSON `detail`) when it gave one. */
async function failure(res: Response, path: string): Promise<HttpError> {
  try {
    const detail = ((await res.json()) as { detail?: unknown }).detail;
    if (typeof detail === "string" && detail) return new ApiError(res.status, path, detail);
  } catch {
    /* not JSON */
  }
  return new HttpError(res.status, path);
}

export async function getJson<T>(path: string): Promise<T> {
  return (await (await get(path)).json()) as T;
}

/** An error answer with the server's reason (`detail`), for views that show it. */
export class ApiError extends HttpError {
  constructor(
    status: number,
    url: string,
    readonly detail: string,
  ) {
    super(status, url);
    this.message = detail;
  }
}

export async function postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, {
    method: "POST",
    headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (!res.ok) {
    let detail = `HTTP ${res.status}`;
    try {
      detail = ((await res.json()) as { detail?: unknown }).detail?.toString() ?? detail;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, path, detail);
  }
  return (await res.json()) as T;
}

const enc = encodeURIComponent;

// The Arrow decoder is most of the bundle: it loads as its own chunk, started at boot in parallel with the
// first requests (the runs list needs no Arrow), and is shared by every scalar request.
let arrow: Promise<typeof import("apache-arrow/ipc/serialization")> | null = null;

/** The columns of a downsampled series (`/scalars`, `/layerstats/series`): one Arrow record batch. */
export function seriesColumns(table: import("apache-arrow").Table): Columns {
  const f64 = (name: string) => {
    const col = table.getChild(name);
    return col ? Float64Array.from(col.toArray() as ArrayLike<number>) : new Float64Array(table.numRows);
  };
  const i32 = (name: string) => {
    const col = table.getChild(name);
    return col ? Int32Array.from(col.toArray() as ArrayLike<number>) : new Int32Array(table.numRows);
  };
  return {
    step: f64("step"),
    wall: f64("wall_time"),
    min: f64("min"),
    max: f64("max"),
    mean: f64("mean"),
    last: f64("last"),
    count: i32("count"),
    nonfinite: i32("nonfinite"),
    exact: table.schema.metadata.get("exact") === "true",
  };
}

export function loadArrow() {
  arrow ??= import("apache-arrow/ipc/serialization");
  return arrow;
}

export const api = {
  health: () => getJson<Health>("api/health"),
  runs: async () => (await getJson<Json<"/api/runs">>("api/runs")).runs,
  run: (id: string) => getJson<RunDetail>(`api/runs/${enc(id)}`),
  keys: async (id: string) => (await getJson<Json<"/api/runs/{run_id}/keys">>(`api/runs/${enc(id)}/keys?rank=0`)).keys,
  /** Every rank's keys, each with its rank. */
  allKeys: async (id: string) => (await getJson<Json<"/api/runs/{run_id}/keys">>(`api/runs/${enc(id)}/keys`)).keys,
  summary: async (id: string) =>
    (await getJson<Json<"/api/runs/{run_id}/summary">>(`api/runs/${enc(id)}/summary?rank=0`)).scalars,
  events: async (id: string) => (await getJson<Json<"/api/runs/{run_id}/events">>(`api/runs/${enc(id)}/events`)).events,

  async scalars(id: string, q: ScalarQuery, signal?: AbortSignal): Promise<Columns> {
    const p = new URLSearchParams({ key: q.key });
    if (q.start !== undefined) p.set("start", String(Math.max(0, Math.floor(q.start))));
    if (q.end !== undefined) p.set("end", String(Math.ceil(q.end)));
    if (q.buckets !== undefined) p.set("buckets", String(q.buckets));
    if (q.rank !== undefined) p.set("rank", String(q.rank));
    const [res, { tableFromIPC }] = await Promise.all([get(`api/runs/${enc(id)}/scalars?${p}`, signal), loadArrow()]);
    return seriesColumns(tableFromIPC(new Uint8Array(await res.arrayBuffer())));
  },

  /** The live stream; the token rides in the query because EventSource cannot send headers. */
  live(): EventSource {
    return new EventSource(token ? `api/live?token=${enc(token)}` : "api/live");
  },
};
