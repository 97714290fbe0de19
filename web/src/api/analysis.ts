// The analysis routes (docs/http-api.md, "Analyses"): a run's deepscope.analyze results — summary, instance
// table (Arrow), instance detail, subsets as packed row masks, the activation matrix, top instances,
// neighbours, projections (float32 x, y pairs), an instance's full feature maps and the confusion matrix.
import { get, getJson, HttpError, loadArrow, postJson as post } from "./client";
import type { components } from "./schema";

type S = components["schemas"];
export type AnalysisSummary = S["AnalysisSummary"];
export type AnalysisProgress = S["AnalysisProgress"];
export type AnalysisLayer = S["AnalysisLayer"];
export type ProjectionStatus = S["ProjectionStatus"];
export type InstanceDetail = S["InstanceDetail"];
export type ActivationMatrix = S["ActivationMatrix"];
export type MatrixRow = S["MatrixRow"];
export type MatrixRequest = S["MatrixRequest"];
export type InstanceList = S["InstanceList"];
export type ConfusionMatrix = S["ConfusionMatrix"];
export type SubsetRequest = S["Subset"];
export type SubsetRows = S["SubsetRows"];
export type FeatureMapLayer = S["FeatureMapLayer"];

/** An instance's full feature maps in one layer: `shape` [C, H, W] (or [C, L]), float32 values in C order. */
export interface FeatureMapValues {
  shape: number[];
  values: Float32Array;
}

/** The instance table's core columns: one entry per instance; -1 where there is no label / prediction. */
export interface Instances {
  n: number;
  label: Int32Array;
  prediction: Int32Array;
  /** 1 correct, 0 wrong, -1 unknown (no label) */
  correct: Int8Array;
  score: Float32Array;
}

const enc = encodeURIComponent;
const base = (run: string) => `api/runs/${enc(run)}/analysis`;

function ints(col: { toArray(): ArrayLike<unknown> } | null, n: number, nulls?: (i: number) => boolean): Int32Array {
  const out = new Int32Array(n).fill(-1);
  if (!col) return out;
  const raw = col.toArray() as ArrayLike<number | bigint>;
  for (let i = 0; i < n; i++) if (!nulls?.(i)) out[i] = Number(raw[i]);
  return out;
}

/** A boolean row mask from the server's packed form (base64, least significant bit first). */
export function unpackMask(packed: string, n: number): Uint8Array {
  const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (bytes[i >> 3] >> (i & 7)) & 1;
  return out;
}

/** The packed form of a boolean row mask (base64, least significant bit first). */
export function packMask(mask: Uint8Array): string {
  const bytes = new Uint8Array((mask.length + 7) >> 3);
  for (let i = 0; i < mask.length; i++) if (mask[i]) bytes[i >> 3] |= 1 << (i & 7);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export const analysis = {
  summary: (run: string) => getJson<AnalysisSummary>(base(run)),
  /** How far the latest analysis came: a 200 for an unfinished one (whose summary is a 404). */
  progress: (run: string) => getJson<AnalysisProgress>(`${base(run)}/progress`),

  async instances(run: string): Promise<Instances> {
    const [res, { tableFromIPC }] = await Promise.all([get(`${base(run)}/instances`), loadArrow()]);
    const t = tableFromIPC(new Uint8Array(await res.arrayBuffer()));
    const n = t.numRows;
    const labelCol = t.getChild("label");
    const correctCol = t.getChild("correct");
    const correct = new Int8Array(n).fill(-1);
    if (correctCol) for (let i = 0; i < n; i++) correctCol.isValid(i) && (correct[i] = correctCol.get(i) ? 1 : 0);
    const scoreCol = t.getChild("score");
    return {
      n,
      label: ints(labelCol, n, labelCol ? (i) => !labelCol.isValid(i) : undefined),
      prediction: ints(t.getChild("prediction"), n),
      correct,
      score: scoreCol ? Float32Array.from(scoreCol.toArray() as ArrayLike<number>) : new Float32Array(n).fill(NaN),
    };
  },

  /** Other columns of the instance table (metadata), as plain arrays. */
  async columns(run: string, names: string[]): Promise<Record<string, unknown[]>> {
    const qs = names.map((c) => `columns=${enc(c)}`).join("&");
    const [res, { tableFromIPC }] = await Promise.all([get(`${base(run)}/instances?${qs}`), loadArrow()]);
    const t = tableFromIPC(new Uint8Array(await res.arrayBuffer()));
    return Object.fromEntries(names.map((c) => [c, t.getChild(c)?.toArray() ? Array.from(t.getChild(c)!) : []]));
  },

  instance: (run: string, index: number) => getJson<InstanceDetail>(`${base(run)}/instances/${index}`),

  subset: (run: string, s: SubsetRequest) => post<SubsetRows>(`${base(run)}/subset`, s),

  matrix: (run: string, req: MatrixRequest, signal?: AbortSignal) => post<ActivationMatrix>(`${base(run)}/matrix`, req, signal),

  top: (run: string, layer: string, neuron: number, k = 20) =>
    getJson<InstanceList>(`${base(run)}/top?layer=${enc(layer)}&neuron=${neuron}&k=${k}`),

  neighbors: (run: string, layer: string, index: number, k = 12, metric: "cosine" | "euclidean" = "cosine") =>
    getJson<InstanceList>(`${base(run)}/neighbors?layer=${enc(layer)}&index=${index}&k=${k}&metric=${metric}`),

  /** x, y per instance: `xy[2 * i]`, `xy[2 * i + 1]`; null when not computed yet. */
  async projection(run: string, layer: string, method: string): Promise<Float32Array | null> {
    try {
      const res = await get(`${base(run)}/projection?layer=${enc(layer)}&method=${method}`);
      return new Float32Array(await res.arrayBuffer());
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) return null;
      throw e;
    }
  },

  /** One neuron's activation on every instance (float32, instance order). */
  async column(run: string, layer: string, neuron: number, signal?: AbortSignal): Promise<Float32Array> {
    const res = await get(`${base(run)}/column?layer=${enc(layer)}&neuron=${neuron}`, signal);
    return new Float32Array(await res.arrayBuffer());
  },

  /** The stored full feature maps of instance `index` in `layer` (the summary's `feature_maps` lists them). */
  async featureMaps(run: string, layer: string, index: number, signal?: AbortSignal): Promise<FeatureMapValues> {
    const res = await get(`${base(run)}/instances/${index}/maps?layer=${enc(layer)}`, signal);
    const shape = (res.headers.get("X-Deepscope-Shape") ?? "").split(",").map(Number);
    return { shape, values: new Float32Array(await res.arrayBuffer()) };
  },

  startProjection: (run: string, layer: string, method: string) =>
    post<ProjectionStatus>(`${base(run)}/projection?layer=${enc(layer)}&method=${method}`, null),

  confusion: (run: string) => getJson<ConfusionMatrix>(`${base(run)}/confusion`),
};
