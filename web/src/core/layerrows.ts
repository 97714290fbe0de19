// Rows of the layer × step overview: layers in the order they run (else model order), nested by module path (`transformer` › `h.0` › `attn` ›
// `c_attn`): a module holding two or more rows is a group, collapsible at any depth; a collapsed group is one row
// holding its members' mean.

export interface DisplayRow {
  kind: "header" | "layer" | "group";
  label: string;
  group: string; // the path of the group this row heads or stands for, or that holds it ("" at the top)
  members: number[]; // matrix rows shown by this row (none for an expanded group's header)
  name: string | null; // the layer path of a "layer" row
  depth: number; // nesting: how many groups hold this row
  note?: string; // e.g. the module type, drawn muted after the label
}

/** A name's path segments. A parameter belongs to the module its path names (all before its last dot): an
 * attention's own `attn.in_proj_weight` and its `attn.out_proj.weight` are rows of one group `attn`, an LSTM's
 * `lstm.weight_ih_l0`, `lstm.bias_ih_l0`… rows of the group `lstm`. */
function segments(name: string): string[] {
  return name.split(".");
}

/** The rows, nested: consecutive names under the same child module of a group form a group of their own when they
 * are two or more; a chain of groups with one child each reads as one (`h.0` rather than `h` › `0`). */
export function groupRows(names: string[], collapsed: ReadonlySet<string>, order?: number[]): DisplayRow[] {
  const segs = names.map(segments);
  const out: DisplayRow[] = [];
  const walk = (idx: number[], at: number, prefix: string, depth: number) => {
    let i = 0;
    while (i < idx.length) {
      const head = segs[idx[i]][at];
      let j = i + 1;
      while (j < idx.length && segs[idx[j]][at] === head && segs[idx[j]].length > at + 1 === segs[idx[i]].length > at + 1) j++;
      const run = idx.slice(i, j);
      i = j;
      const deeper = segs[run[0]].length > at + 1;
      if (!deeper || run.length === 1) {
        for (const m of run) {
          const label = segs[m].slice(at).join(".");
          out.push({ kind: "layer", label, group: prefix, members: [m], name: names[m], depth });
        }
        continue;
      }
      // a group: extend it through children that are all one module (a chain), then list or collapse it
      let upto = at + 1;
      while (run.every((m) => segs[m].length > upto + 1 && segs[m][upto] === segs[run[0]][upto])) upto++;
      const label = segs[run[0]].slice(at, upto).join(".");
      const path = prefix ? `${prefix}.${label}` : label;
      if (collapsed.has(path)) {
        out.push({ kind: "group", label: `▸ ${label} (${run.length})`, group: path, members: run, name: null, depth });
      } else {
        out.push({ kind: "header", label: `▾ ${label}`, group: path, members: [], name: null, depth });
        walk(run, upto, path, depth + 1);
      }
    }
  };
  walk(order ?? names.map((_, k) => k), 0, "", 0);
  return out;
}

/** The order to list `names` (layer paths, or parameter paths) in: as the layers ran (`callOrder`: layer paths in the
 * order of their first call), every group's rows kept together — a group sits where its first-run member does —,
 * a parameter where the layer owning it ran; names the order does not know (a container's own parameter) after
 * those it knows, in model order. Model order without a call order. */
export function runOrder(names: string[], callOrder: readonly string[] | null | undefined): number[] {
  const idx = names.map((_, k) => k);
  if (!callOrder?.length) return idx;
  const rank = new Map(callOrder.map((p, i) => [p, i]));
  const segs = names.map(segments);
  const own = names.map((n) => rank.get(n) ?? rank.get(n.slice(0, n.lastIndexOf("."))) ?? Infinity);
  const first = new Map<string, number>(); // each module path: its earliest-run row
  segs.forEach((s, k) => {
    for (let d = 1; d <= s.length; d++) {
      const p = s.slice(0, d).join(".");
      first.set(p, Math.min(first.get(p) ?? Infinity, own[k]));
    }
  });
  return idx.sort((a, b) => {
    for (let d = 0; d < Math.min(segs[a].length, segs[b].length); d++) {
      if (segs[a][d] === segs[b][d]) continue;
      const ra = first.get(segs[a].slice(0, d + 1).join("."))!;
      const rb = first.get(segs[b].slice(0, d + 1).join("."))!;
      return ra !== rb ? ra - rb : a - b;
    }
    return a - b;
  });
}

/** Every group, with its depth (0: outermost). */
export function groupsOf(names: string[], order?: number[]): { path: string; depth: number }[] {
  const rows = groupRows(names, new Set(), order);
  return rows.filter((r) => r.kind === "header").map((r) => ({ path: r.group, depth: r.depth }));
}

/** The collapsed groups: those at `depth` or deeper (none for null), each of `toggled` the other way. */
export function collapsedGroups(groups: { path: string; depth: number }[], depth: number | null, toggled: readonly string[]): Set<string> {
  const flip = new Set(toggled);
  return new Set(groups.filter((g) => (depth !== null && g.depth >= depth) !== flip.has(g.path)).map((g) => g.path));
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

/** Per column, how many steps were NaN/Inf for a display row (summed over a collapsed group's members); null: none. */
export function rowNonfinite(nonfinite: Int32Array | null, cols: number, row: DisplayRow): Int32Array | null {
  if (!nonfinite || !row.members.length) return null;
  if (row.members.length === 1) return nonfinite.subarray(row.members[0] * cols, (row.members[0] + 1) * cols);
  const out = new Int32Array(cols);
  for (const m of row.members) for (let c = 0; c < cols; c++) out[c] += nonfinite[m * cols + c];
  return out;
}
