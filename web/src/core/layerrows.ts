// Rows of the layer × step overview: layers in model order, grouped by their parent module's dotted path
// (`features.0`, `features.1` … under `features`); a collapsed group is one row holding its members' mean.

export interface DisplayRow {
  kind: "header" | "layer" | "group";
  label: string;
  group: string; // the group's prefix ("" for top-level layers)
  members: number[]; // matrix rows shown by this row (none for an expanded group's header)
  name: string | null; // the layer path of a "layer" row
  indent: boolean;
  note?: string; // e.g. the module type, drawn muted after the label
}

/** The module a row names: itself for modules, without the parameter name for parameters. */
function moduleOf(name: string, isParam: boolean): string {
  const i = name.lastIndexOf(".");
  return isParam && i > 0 ? name.slice(0, i) : name;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf(".");
  return i > 0 ? path.slice(0, i) : "";
}

/** Group consecutive rows with the same parent module; groups of one stay plain rows. */
export function groupRows(names: string[], isParam: boolean, collapsed: ReadonlySet<string>): DisplayRow[] {
  const out: DisplayRow[] = [];
  let i = 0;
  while (i < names.length) {
    const g = parentOf(moduleOf(names[i], isParam));
    let j = i + 1;
    while (j < names.length && parentOf(moduleOf(names[j], isParam)) === g) j++;
    const members = Array.from({ length: j - i }, (_, k) => i + k);
    if (!g || members.length < 2) {
      for (const m of members) out.push({ kind: "layer", label: names[m], group: g, members: [m], name: names[m], indent: false });
    } else if (collapsed.has(g)) {
      out.push({ kind: "group", label: `▸ ${g}.* (${members.length})`, group: g, members, name: null, indent: false });
    } else {
      out.push({ kind: "header", label: `▾ ${g}`, group: g, members: [], name: null, indent: false });
      for (const m of members) {
        out.push({ kind: "layer", label: names[m].slice(g.length + 1), group: g, members: [m], name: names[m], indent: true });
      }
    }
    i = j;
  }
  return out;
}

/** Every group prefix with at least two members (for "collapse all"). */
export function groupsOf(names: string[], isParam: boolean): string[] {
  const rows = groupRows(names, isParam, new Set());
  return rows.filter((r) => r.kind === "header").map((r) => r.group);
}

/** One value per column for a display row: the layer's own, or the mean of a collapsed group's members. */
export function rowValues(values: Float32Array, cols: number, row: DisplayRow): Float32Array {
  if (row.members.length === 1) return values.subarray(row.members[0] * cols, (row.members[0] + 1) * cols);
  const out = new Float32Array(cols).fill(NaN);
  for (let c = 0; c < cols; c++) {
    let s = 0;
    let n = 0;
    for (const m of row.members) {
      const v = values[m * cols + c];
      if (Number.isFinite(v)) {
        s += v;
        n++;
      }
    }
    if (n) out[c] = s / n;
  }
  return out;
}
