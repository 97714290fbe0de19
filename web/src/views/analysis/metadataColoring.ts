// The projection's colours from a metadata column: numbers along a sequential scale, categories (text, booleans)
// in the class palette — the most frequent first, the rest together as "other".
import { binPalette, bins } from "../../charts/scatter";
import { classColor, UNKNOWN_COLOR } from "../../core/analysis.svelte";
import { makeScale, type ColorScale } from "../../core/colorscale";

/** Categories named and coloured apiece; the others share one grey. */
export const MAX_CATEGORIES = 9;

export interface MetadataColoring {
  cat: Int32Array;
  colors: string[];
  /** Set for numbers and times: the scale its legend draws. */
  scale: ColorScale | null;
  /** Set for times: how the legend writes a value of the scale (milliseconds since 1970, UTC). */
  format?: (v: number) => string;
  /** Set for categories: each colour and its value, then "other" and "missing" where they occur. */
  legend: { color: string; name: string }[];
}

/** Numbers along a sequential scale; a missing value (null, NaN) grey. */
export function numericColoring(raw: unknown[]): MetadataColoring {
  const values = Float32Array.from(raw, (v) => (v === null || v === undefined ? NaN : Number(v)));
  const finite = values.filter((v) => Number.isFinite(v));
  const scale = makeScale("value", finite.length ? finite : [0], false, true);
  const cat = bins(values, scale);
  const colors = [...binPalette(scale), UNKNOWN_COLOR];
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) cat[i] = colors.length - 1;
  return { cat, colors, scale, legend: [] };
}

/** ISO 8601 text as milliseconds since 1970: a time without an offset is the column's own (UTC) time, as the
 * server compares it (`Date.parse` would read it as the browser's local time). */
export function timeMillis(v: unknown): number {
  if (typeof v !== "string") return NaN;
  const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(v) || !v.includes("T");
  return Date.parse(zoned ? v : v + "Z");
}

/** Times along a sequential scale, the legend in days — or in minutes when they span under three days. */
export function timeColoring(raw: unknown[]): MetadataColoring {
  const out = numericColoring(raw.map(timeMillis));
  const { lo, hi } = out.scale!;
  const chars = hi - lo < 3 * 86_400_000 ? 16 : 10;
  return { ...out, format: (v) => (Number.isFinite(v) ? new Date(v).toISOString().slice(0, chars).replace("T", " ") : "–") };
}

/** Categories: the `MAX_CATEGORIES` most frequent values in the class palette, the others "other", none "missing". */
export function categoricalColoring(raw: unknown[]): MetadataColoring {
  const counts = new Map<string, number>();
  const keys = raw.map((v) => (v === null || v === undefined ? null : String(v)));
  for (const k of keys) if (k !== null) counts.set(k, (counts.get(k) ?? 0) + 1);
  const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, MAX_CATEGORIES);
  const index = new Map(top.map(([k], c) => [k, c]));
  const [OTHER, MISSING] = [top.length, top.length + 1];
  const cat = Int32Array.from(keys, (k) => (k === null ? MISSING : (index.get(k) ?? OTHER)));
  const colors = [...top.map((_, c) => classColor(c)), "#6c757d", UNKNOWN_COLOR];
  const legend = top.map(([k], c) => ({ color: colors[c], name: k }));
  if (counts.size > top.length) legend.push({ color: colors[OTHER], name: `${(counts.size - top.length).toLocaleString()} other values` });
  if (keys.includes(null)) legend.push({ color: colors[MISSING], name: "missing" });
  return { cat, colors, scale: null, legend };
}
