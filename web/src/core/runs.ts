// Filtering and sorting the runs list: pure functions over run summaries.
import type { RunSummary } from "../api/client";
import { fmtValue } from "./format";

export function duration(r: RunSummary, now: number): number {
  const end = r.status === "running" ? now : (r.end_time ?? r.heartbeat ?? r.start_time);
  return end - r.start_time;
}

export function configKeys(runs: RunSummary[]): string[] {
  // What tells runs apart first: keys whose values differ between the runs that have them (a sweep's), the
  // more runs have them the sooner; then keys only some runs have (another kind of run's settings); then the
  // keys every run shares with one value.
  const values = new Map<string, Set<string>>();
  const count = new Map<string, number>();
  for (const r of runs)
    for (const [k, v] of Object.entries(r.config_flat ?? {})) {
      let s = values.get(k);
      if (!s) values.set(k, (s = new Set()));
      s.add(fmtValue(v));
      count.set(k, (count.get(k) ?? 0) + 1);
    }
  const rank = (k: string) => (values.get(k)!.size > 1 ? 0 : count.get(k)! < runs.length ? 1 : 2);
  return [...values.keys()].sort(
    (a, b) => rank(a) - rank(b) || count.get(b)! - count.get(a)! || a.localeCompare(b, undefined, { numeric: true }),
  );
}

/** The projects of `runs`, newest run's first. */
export function projects(runs: RunSummary[]): string[] {
  return [...new Set([...runs].sort((a, b) => b.start_time - a.start_time).map((r) => r.project))];
}

export function configValues(runs: RunSummary[], key: string): string[] {
  const s = new Set<string>();
  for (const r of runs) if (key in (r.config_flat ?? {})) s.add(fmtValue(r.config_flat[key]));
  return [...s].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
}

export function matches(r: RunSummary, text: string, cfgKey: string, cfgValue: string): boolean {
  if (cfgKey && cfgValue && fmtValue(r.config_flat?.[cfgKey]) !== cfgValue) return false;
  if (!text) return true;
  const needle = text.toLowerCase();
  const hay = [r.name, r.id, r.project, r.status, r.notes, ...r.tags, ...Object.values(r.config_flat ?? {}).map(fmtValue)];
  return hay.some((h) => String(h).toLowerCase().includes(needle));
}

export function sortRuns(
  runs: RunSummary[],
  sort: string,
  now: number,
  metric: (id: string) => number | null = () => null,
): RunSummary[] {
  const desc = sort.startsWith("-");
  const col = desc ? sort.slice(1) : sort;
  const val = (r: RunSummary): string | number | null => {
    switch (col) {
      case "name":
        return r.name.toLowerCase();
      case "status":
        return r.status;
      case "start":
        return r.start_time;
      case "duration":
        return duration(r, now);
      case "step":
        return r.max_step ?? -1;
      case "project":
        return r.project.toLowerCase();
      case "metric":
        return metric(r.id);
      default: {
        const v = col.startsWith("cfg:") ? r.config_flat?.[col.slice(4)] : undefined;
        return typeof v === "number" ? v : v === undefined || v === null ? null : fmtValue(v);
      }
    }
  };
  const sign = desc ? -1 : 1;
  return [...runs].sort((a, b) => {
    const x = val(a);
    const y = val(b);
    if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1; // runs without the key: last, either way
    if (typeof x === "number" && typeof y === "number") return sign * (x - y);
    return sign * String(x).localeCompare(String(y), undefined, { numeric: true });
  });
}
