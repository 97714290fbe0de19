// Text widths for layouts that size themselves to their labels, measured once in a shared canvas context.

let ctx: CanvasRenderingContext2D | null | undefined;

/** The width in CSS pixels of `text` in the canvas `font` (0 where no 2-D context can be had). */
export function textWidth(font: string, text: string): number {
  if (ctx === undefined) ctx = document.createElement("canvas").getContext("2d");
  if (!ctx) return 0;
  if (ctx.font !== font) ctx.font = font;
  return ctx.measureText(text).width;
}
