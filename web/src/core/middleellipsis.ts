// A Svelte action that cuts an element's text in the middle to fit its box, measured in the page's own layout
// (a canvas measures some fonts wider than the page draws them): "category number 50 with a long suffix" reads
// "category nu…long suffix" where the end tells names apart. The element needs `overflow: hidden` and a width.

function fit(el: HTMLElement, text: string): void {
  el.textContent = text;
  if (el.scrollWidth <= el.clientWidth + 0.5 || text.length < 3) return;
  const cut = (keep: number) => {
    const tail = Math.floor(keep / 2);
    return text.slice(0, keep - tail) + "…" + text.slice(text.length - tail);
  };
  let lo = 2;
  let hi = text.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    el.textContent = cut(mid);
    if (el.scrollWidth <= el.clientWidth + 0.5) lo = mid;
    else hi = mid - 1;
  }
  el.textContent = cut(lo);
}

export function middleEllipsis(el: HTMLElement, text: string) {
  let current = text;
  const observer = new ResizeObserver(() => fit(el, current));
  observer.observe(el);
  fit(el, current);
  return {
    update(next: string) {
      current = next;
      fit(el, current);
    },
    destroy() {
      observer.disconnect();
    },
  };
}
