// The instance grid's rows: instances grouped by class, correct and misclassified apart, most confident first.
// Built with one native sort of packed numeric keys and a counting sort, not a comparator: a comparator sort of
// 1M indices holds the main thread for seconds.
import type { Instances } from "../api/analysis";

export interface InstanceGroup {
  cls: number; // -1: no label / prediction
  correct: Int32Array; // instance indices, most confident first
  wrong: Int32Array; // misclassified, by predicted class then most confident first (every instance without labels)
}

const INDEX_SPAN = 2 ** 21; // indices below this pack beside a 32-bit score key within a float64's 53 bits

/** Instance indices by score, highest first, NaN last, ties by index. */
export function byScore(score: Float32Array): Int32Array {
  const n = score.length;
  if (n > INDEX_SPAN) {
    const s = (i: number) => (Number.isNaN(score[i]) ? -Infinity : score[i]);
    return Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => s(b) - s(a) || a - b);
  }
  // A float32's bits, made to order as unsigned integers do (negative: all bits flipped; else the sign bit set),
  // then reversed for highest first; NaN takes the key of -Infinity's neighbour below it, so it sorts last.
  const bits = new Uint32Array(score.buffer, score.byteOffset, n);
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = bits[i];
    const ascending = Number.isNaN(score[i]) ? 0 : u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
    keys[i] = (0xffffffff - ascending) * INDEX_SPAN + i;
  }
  keys.sort();
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = keys[i] % INDEX_SPAN;
  return out;
}

/**
 * One group per class (the true class, or the prediction without labels) up to `nClasses` or the largest class
 * seen, then one for instances without any (only when there are such).
 */
export function groupInstances(t: Instances, hasLabels: boolean, nClasses: number): InstanceGroup[] {
  const key = hasLabels ? t.label : t.prediction;
  let k = nClasses;
  let preds = 1; // sub-slots of a class's misclassified block: one per prediction (+1 for none) with labels
  for (let i = 0; i < t.n; i++) {
    if (key[i] + 1 > k) k = key[i] + 1;
    if (hasLabels && t.prediction[i] + 2 > preds) preds = t.prediction[i] + 2;
  }
  // slot of instance i: its class's correct block, or the misclassified block's sub-slot of its prediction
  const stride = 1 + preds;
  const slotOf = (i: number) => {
    const c = key[i] < 0 ? k : key[i];
    if (hasLabels && t.correct[i] === 1) return c * stride;
    return c * stride + 1 + (hasLabels ? t.prediction[i] + 1 : 0);
  };
  const starts = new Int32Array((k + 1) * stride + 1);
  for (let i = 0; i < t.n; i++) starts[slotOf(i) + 1]++;
  for (let s = 1; s < starts.length; s++) starts[s] += starts[s - 1];
  const placed = new Int32Array(t.n);
  const next = starts.slice(0, -1);
  for (const i of byScore(t.score)) placed[next[slotOf(i)]++] = i; // in score order: each slot stays sorted
  const groups: InstanceGroup[] = [];
  for (let c = 0; c <= k; c++) {
    const at = c * stride;
    const g = {
      cls: c === k ? -1 : c,
      correct: placed.subarray(starts[at], starts[at + 1]),
      wrong: placed.subarray(starts[at + 1], starts[at + stride]),
    };
    if (g.cls >= 0 || g.correct.length + g.wrong.length > 0) groups.push(g);
  }
  return groups;
}
