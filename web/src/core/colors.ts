// One colour per run, the same in every chart and list. A run keeps its colour as new runs arrive:
// the index is the run's rank by start time, oldest first.

const PALETTE = [
  "#2563eb", "#e8590c", "#0f9960", "#d6336c", "#7048e8",
  "#0c8599", "#c2255c", "#5c940d", "#e67700", "#1c7ed6",
  "#ae3ec9", "#2b8a3e", "#f03e3e", "#364fc7", "#087f5b",
];

export function runColor(index: number): string {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

export function withAlpha(hex: string, alpha: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}
