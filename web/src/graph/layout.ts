// The main thread's side of the layout worker: one request per batch of levels, answered in order.
import type { LevelInput, LevelLayout } from "./types";

let worker: Worker | null = null;
let next = 0;
const pending = new Map<number, (l: LevelLayout[]) => void>();

function start(): Worker {
  const w = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module" });
  w.onmessage = (ev: MessageEvent<{ id: number; layouts: LevelLayout[] }>) => {
    pending.get(ev.data.id)?.(ev.data.layouts);
    pending.delete(ev.data.id);
  };
  return w;
}

export function layoutLevels(levels: LevelInput[]): Promise<LevelLayout[]> {
  worker ??= start();
  const id = next++;
  return new Promise((resolve) => {
    pending.set(id, resolve);
    worker!.postMessage({ id, levels });
  });
}
