// The projection's spatial index: a k-d tree over the points, in the serialised KDBush v4 layout that
// regl-scatterplot reads with `KDBush.from` — an 8-byte header, the point ids (uint16 below 65,536 points, else
// uint32), padding to 8 bytes, then the x, y pairs (float32 here), kd-sorted. Hover, click and the lasso search it.

const MAGIC = 0xdb;
const VERSION = 1;
const FLOAT32 = 7; // the coordinates' array type, in KDBush's numbering
export const NODE_SIZE = 16; // items per leaf, as regl-scatterplot uses

type Ids = Uint16Array | Uint32Array;

/** An index's buffer and its views: header, ids, then x, y pairs. */
export function indexLayout(n: number, nodeSize = NODE_SIZE): { buffer: ArrayBuffer; ids: Ids; xy: Float32Array } {
  const idBytes = n < 65536 ? 2 : 4;
  const pad = (8 - ((n * idBytes) % 8)) % 8;
  const buffer = new ArrayBuffer(8 + n * idBytes + pad + n * 8);
  new Uint8Array(buffer, 0, 2).set([MAGIC, (VERSION << 4) + FLOAT32]);
  new Uint16Array(buffer, 2, 1)[0] = nodeSize;
  new Uint32Array(buffer, 4, 1)[0] = n;
  const ids = idBytes === 2 ? new Uint16Array(buffer, 8, n) : new Uint32Array(buffer, 8, n);
  const xy = new Float32Array(buffer, 8 + n * idBytes + pad, 2 * n);
  return { buffer, ids, xy };
}

/** An index of `n` points that finds none of them (every coordinate NaN): a stand-in until the real one is built. */
export function emptyIndex(n: number): ArrayBuffer {
  const { buffer, xy } = indexLayout(n);
  xy.fill(NaN);
  return buffer;
}

/** The k-d tree of the points (`x[i]`, `y[i]`). */
export function buildIndex(x: Float32Array, y: Float32Array, nodeSize = NODE_SIZE): ArrayBuffer {
  const n = x.length;
  const { buffer, ids, xy } = indexLayout(n, nodeSize);
  for (let i = 0; i < n; i++) {
    ids[i] = i;
    xy[2 * i] = x[i];
    xy[2 * i + 1] = y[i];
  }
  if (n > 0) kdSort(ids, xy, nodeSize, 0, n - 1, 0);
  return buffer;
}

/** Copies a finished index into the stand-in a plot holds; false if their sizes differ (other points). */
export function fillIndex(target: ArrayBuffer, index: ArrayBuffer): boolean {
  if (target.byteLength !== index.byteLength) return false;
  new Uint8Array(target).set(new Uint8Array(index));
  return true;
}

/** Reorders items `left` … `right` in place into a k-d tree: split at the median, x and y in turn. */
function kdSort(ids: Ids, xy: Float32Array, nodeSize: number, left: number, right: number, axis: number): void {
  if (right - left <= nodeSize) return; // a leaf: the reader scans it
  const m = (left + right) >> 1; // where the reader looks for the split
  select(ids, xy, m, left, right, axis);
  kdSort(ids, xy, nodeSize, left, m - 1, 1 - axis);
  kdSort(ids, xy, nodeSize, m + 1, right, 1 - axis);
}

/** Puts the k-th smallest coordinate on `axis` at k, smaller ones before it, larger after (Hoare's FIND). */
function select(ids: Ids, xy: Float32Array, k: number, l: number, r: number, axis: number): void {
  while (l < r) {
    const a = xy[2 * l + axis];
    const b = xy[2 * k + axis];
    const c = xy[2 * r + axis];
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b; // median of three
    let i = l;
    let j = r;
    while (i <= j) {
      while (xy[2 * i + axis] < pivot) i++;
      while (pivot < xy[2 * j + axis]) j--;
      if (i <= j) {
        swap(ids, xy, i, j);
        i++;
        j--;
      }
    }
    if (j < k) l = i;
    if (k < i) r = j;
  }
}

function swap(ids: Ids, xy: Float32Array, i: number, j: number): void {
  const id = ids[i];
  ids[i] = ids[j];
  ids[j] = id;
  const x = xy[2 * i];
  const y = xy[2 * i + 1];
  xy[2 * i] = xy[2 * j];
  xy[2 * i + 1] = xy[2 * j + 1];
  xy[2 * j] = x;
  xy[2 * j + 1] = y;
}
