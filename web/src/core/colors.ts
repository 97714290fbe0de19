// One colour per run, the same in every chart and list. A run keeps its colour as new runs arrive:
// the index is the run's rank by start time, oldest first; the selected runs never share one.

// Twelve hues far enough apart to tell lines apart (no two blues or greens of nearly the same shade).
const PALETTE = [
  "#2563eb", "#e8590c", "#2b8a3e", "#d6336c", "#7048e8", "#0c8599",
  "#a16207", "#e03131", "#5c940d", "#ae3ec9", "#1e293b", "#f59f00",
];

/** Distinct colours for `selected` (ids in start order, each with its own colour index): a run keeps its own
 * colour unless a run before it in the selection has it already; then it takes the next free one. */
export function distinctColors(selected: { id: string; index: number }[]): Map<string, string> {
  const out = new Map<string, string>();
  const used = new Set<number>();
  for (const { id, index } of selected) {
    let k = ((index % PALETTE.length) + PALETTE.length) % PALETTE.length;
    for (let tries = 0; used.has(k) && tries < PALETTE.length; tries++) k = (k + 1) % PALETTE.length;
    used.add(k);
    out.set(id, PALETTE[k]);
  }
  return out;
}

export function runColor(index: number): string {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

export function withAlpha(hex: string, alpha: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

// Ranks of one run: a sequence of their own (viridis, without its palest yellows), so that rank 0 is never drawn in
// the colour of another run.
const RANK_STOPS = [
  [68, 1, 84],
  [65, 68, 135],
  [42, 120, 142],
  [34, 168, 132],
  [122, 209, 81],
  [189, 223, 38],
];

/** The colour of `rank` among `world` ranks: from dark violet (rank 0) to green-yellow (the last). */
export function rankColor(rank: number, world: number): string {
  const t = world > 1 ? Math.min(1, Math.max(0, rank / (world - 1))) : 0;
  const x = t * (RANK_STOPS.length - 1);
  const i = Math.min(RANK_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = RANK_STOPS[i].map((v, k) => Math.round(v + (RANK_STOPS[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
