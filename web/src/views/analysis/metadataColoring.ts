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
  /** Set for numbers: the scale its legend draws. */
  scale: ColorScale | null;
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
