// Text widths for layouts that size themselves to their labels, measured once in a shared canvas context.

let ctx: CanvasRenderingContext2D | null | undefined;

/** The width in CSS pixels of `text` in the canvas `font` (0 where no 2-D context can be had). */
export function textWidth(font: string, text: string): number {
  if (ctx === undefined) ctx = document.createElement("canvas").getContext("2d");
  if (!ctx) return 0;
  if (ctx.font !== font) ctx.font = font;
  return ctx.measureText(text).width;
}

/** `text` cut in the middle to fit `maxWidth` pixels in `font`: its start and its end kept around a "…" (class names
 * that differ only near their end, "category 50 with a long suffix", stay told apart). */
export function fitMiddle(font: string, text: string, maxWidth: number): string {
  if (textWidth(font, text) <= maxWidth || text.length < 3) return text;
  let lo = 0; // the most characters kept that fit
  let hi = text.length - 1;
  const cut = (keep: number) => {
    const tail = Math.floor(keep / 2);
    return text.slice(0, keep - tail) + "…" + text.slice(text.length - tail);
  };
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (textWidth(font, cut(mid)) <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return cut(Math.max(lo, 2));
}

/** A canvas font string in the page's own font family (`style`: weight and size, "600 13px"): a bare "system-ui"
 * can measure wider in a canvas than the text the page lays out. */
export function pageFont(style: string): string {
  return `${style} ${getComputedStyle(document.body).fontFamily}`;
}

/** A Svelte action: the element shows `text` cut in the middle to fit its width (in its own font), the whole of it in
 * its title; refitted when the element is resized or the text or its look (`look`: anything that changes its font,
 * a selected row's bold) changes. */
export function middleText(node: HTMLElement, arg: { text: string; look?: unknown }) {
  let text = arg.text;
  const fit = () => {
    node.title = text;
    node.textContent = node.clientWidth > 0 ? fitMiddle(getComputedStyle(node).font, text, node.clientWidth - 1) : text;
  };
  const observer = new ResizeObserver(fit);
  observer.observe(node);
  fit();
  return {
    update(next: { text: string; look?: unknown }) {
      text = next.text;
      fit();
    },
    destroy() {
      observer.disconnect();
    },
  };
}
