// The scalars of a distributed run: rank 0's are charted as they are; a key that only other ranks logged (a
// per-rank throughput) is charted too, as `key` + RANK_MARK + rank — a control character no key can hold.
import type { KeyInfo } from "../api/client";

export const RANK_MARK = "\u001f";
const MAX_OTHER_RANKS = 8; // charts of one key, from ranks other than 0

export function rankKey(key: string, rank: number): string {
  return rank ? `${key}${RANK_MARK}${rank}` : key;
}

/** The logged key and the rank of a chart's key. */
export function splitRankKey(k: string): { key: string; rank: number } {
  const i = k.lastIndexOf(RANK_MARK);
  return i < 0 ? { key: k, rank: 0 } : { key: k.slice(0, i), rank: Number(k.slice(i + 1)) || 0 };
}

/** How a chart's key reads: "throughput · rank 1". */
export function displayKey(k: string): string {
  const { key, rank } = splitRankKey(k);
  return rank ? `${key} · rank ${rank}` : key;
}

/** The scalar keys to chart from every rank's: rank 0's, then each key no rank 0 logged, from each rank that did. */
function rank0Keys(keys: KeyInfo[]): Set<string> {
  return new Set(keys.filter((k) => (k.rank ?? 0) === 0).map((k) => k.key));
}

export function chartKeys(keys: KeyInfo[]): KeyInfo[] {
  const onRank0 = rank0Keys(keys);
  const others = new Map<string, number>();
  const out: KeyInfo[] = [];
  for (const k of keys) {
    const rank = k.rank ?? 0;
    if (rank === 0) out.push(k);
    else if (!onRank0.has(k.key) && (others.get(k.key) ?? 0) < MAX_OTHER_RANKS) {
      others.set(k.key, (others.get(k.key) ?? 0) + 1);
      out.push({ ...k, key: rankKey(k.key, rank) });
    }
  }
  return out;
}

/** For each key rank 0 logged, the other ranks that logged it too (ascending); keys no other rank logged are left
 * out. */
export function otherRanks(keys: KeyInfo[]): Record<string, number[]> {
  const onRank0 = rank0Keys(keys);
  const out: Record<string, number[]> = {};
  for (const k of keys) {
    const rank = k.rank ?? 0;
    if (rank && onRank0.has(k.key)) (out[k.key] ??= []).push(rank);
  }
  for (const ranks of Object.values(out)) ranks.sort((a, b) => a - b);
  return out;
}
