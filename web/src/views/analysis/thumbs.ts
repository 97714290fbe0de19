// Image thumbnails of instances, fetched lazily from the instance detail route and kept as data URLs.
import { analysis, type InstanceDetail } from "../../api/analysis";

const cache = new Map<string, Promise<string | null>>();

/** The stored preview (uint8, height × width × channels) as a PNG data URL. */
export function imageUrl(image: NonNullable<InstanceDetail["image"]>): string {
  const { width, height, channels } = image;
  const raw = Uint8Array.from(atob(image.data), (c) => c.charCodeAt(0));
  const img = new ImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const o = i * channels;
    img.data[4 * i] = raw[o];
    img.data[4 * i + 1] = raw[channels >= 3 ? o + 1 : o];
    img.data[4 * i + 2] = raw[channels >= 3 ? o + 2 : o];
    img.data[4 * i + 3] = channels === 4 ? raw[o + 3] : 255;
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d")!.putImageData(img, 0, 0);
  return canvas.toDataURL();
}

/** Instance `index`'s thumbnail, or null when the run stores no image for it. */
export function thumbnail(run: string, index: number): Promise<string | null> {
  const key = `${run}\u0000${index}`;
  let hit = cache.get(key);
  if (!hit) {
    hit = analysis.instance(run, index).then(
      (d) => (d.image ? imageUrl(d.image) : null),
      () => null,
    );
    if (cache.size > 2000) cache.clear();
    cache.set(key, hit);
  }
  return hit;
}
