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

/** `order` stably sorted by `key(i)` in 0 … `range` − 1 (a counting sort); also the start of each key's run. */
function countingSort(order: Int32Array, key: (i: number) => number, range: number): { out: Int32Array; starts: Int32Array } {
  const starts = new Int32Array(range + 1);
  for (const i of order) starts[key(i) + 1]++;
  for (let k = 1; k <= range; k++) starts[k] += starts[k - 1];
  const next = starts.slice(0, range);
  const out = new Int32Array(order.length);
  for (const i of order) out[next[key(i)]++] = i;
  return { out, starts };
}

/**
 * One group per class (the true class, or the prediction without labels) up to `nClasses` or the largest class
 * seen, then one for instances without any (only when there are such). Linear in instances + classes: by score,
 * then stably by prediction (misclassified ones are shown by predicted class), then stably by class and
 * correctness.
 */
export function groupInstances(t: Instances, hasLabels: boolean, split: boolean, nClasses: number): InstanceGroup[] {
  const key = hasLabels ? t.label : t.prediction;
  let k = nClasses;
  let preds = 0;
  for (let i = 0; i < t.n; i++) {
    if (key[i] + 1 > k) k = key[i] + 1;
    if (t.prediction[i] + 1 > preds) preds = t.prediction[i] + 1;
  }
  let order = byScore(t.score);
  if (hasLabels) order = countingSort(order, (i) => t.prediction[i] + 1, preds + 1).out; // −1 (none) first
  // slot 2c: class c's correct instances, 2c + 1: the others (every instance when not `split`); c = k: no class
  const slot = (i: number) => 2 * (key[i] < 0 ? k : key[i]) + (split && t.correct[i] === 1 ? 0 : 1);
  const { out, starts } = countingSort(order, slot, 2 * (k + 1));
  const groups: InstanceGroup[] = [];
  for (let c = 0; c <= k; c++) {
    const g = {
      cls: c === k ? -1 : c,
      correct: out.subarray(starts[2 * c], starts[2 * c + 1]),
      wrong: out.subarray(starts[2 * c + 1], starts[2 * c + 2]),
    };
    if (g.cls >= 0 || g.correct.length + g.wrong.length > 0) groups.push(g);
  }
  return groups;
}
