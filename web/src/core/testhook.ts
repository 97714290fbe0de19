// What the charts hold, published on `window.__deepscope` so that browser tests check data, not pixels.

export interface ChartRunData {
  points: number;
  firstX: number | null;
  lastX: number | null;
  lastStep: number | null;
  lastY: number | null;
  exact: boolean;
  zoomed: boolean;
  nonfinite: number; // points marked as holding NaN/±Inf
}

export interface FetchRecord {
  run: string;
  key: string;
  start: number | null;
  end: number | null;
  rows: number;
  exact: boolean;
  ms: number;
}

export interface Hook {
  charts: Record<string, Record<string, ChartRunData>>;
  fetches: FetchRecord[];
  live: { events: number; lastEvent: number | null };
  xRange: Record<string, [number, number] | null>;
  /** Each chart's y scale as uPlot last set it: its range and distribution (1 linear, 3 logarithmic). */
  yScale: Record<string, { min: number | null; max: number | null; distr: number }>;
  yLabels: Record<string, string[]>;
  markers: Record<string, { x: number; label: string } | null>;
  /** `performance.now()` when a chart first held data (first meaningful paint). */
  firstData: number | null;
  /** The view state (what the URL holds). */
  view: () => unknown;
}

export const hook: Hook = {
  charts: {},
  fetches: [],
  live: { events: 0, lastEvent: null },
  xRange: {},
  yScale: {},
  yLabels: {},
  markers: {},
  firstData: null,
  view: () => null,
};

(window as unknown as { __deepscope: Hook }).__deepscope = hook;

export function record(f: FetchRecord): void {
  hook.fetches.push(f);
  if (hook.fetches.length > 5000) hook.fetches.splice(0, 1000);
}
