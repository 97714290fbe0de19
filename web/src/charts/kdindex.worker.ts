// Builds the projection's spatial index off the main thread (a second or so for a million points on a slow CPU).
import { buildIndex } from "./kdindex";

self.onmessage = (ev: MessageEvent<{ id: number; x: Float32Array; y: Float32Array }>) => {
  const { id, x, y } = ev.data;
  const buffer = buildIndex(x, y);
  self.postMessage({ id, buffer }, { transfer: [buffer] });
};
