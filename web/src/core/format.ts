// Display helpers: numbers, times and durations as short readable text.

export function fmtNumber(v: number | null | undefined): string {
  if (v === null || v === undefined) return "–";
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "−Inf";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3).replace(/\.?0+e/, "e");
  if (Number.isInteger(v)) return String(v);
  return String(+v.toPrecision(5));
}

/** Numbers of one column, with one count of decimals: five significant digits for its largest magnitude (so the
 * decimal points line up and 0.1049 stands as 0.1049 beside -0.2888, not beside -0.28879); `fmtNumber` each where
 * the column spans magnitudes a fixed count cannot (≥ 1e6, or all under 1e-3). */
export function fmtColumn(values: (number | null)[]): string[] {
  const finite = values.filter((v): v is number => v !== null && Number.isFinite(v));
  const top = finite.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  if (!finite.length || top >= 1e6 || top < 1e-3 || finite.every(Number.isInteger)) return values.map(fmtNumber);
  const decimals = Math.max(0, Math.min(8, 4 - Math.floor(Math.log10(top))));
  return values.map((v) => (v === null || !Number.isFinite(v) ? fmtNumber(v) : v.toFixed(decimals)));
}

/** A share (0…1) in percent, with `digits` decimals — or as many more as it takes never to round a share short of 1
 * up to 100 or one above 0 down to 0: 2,999 of 3,000 read "99.97", not "100.0". */
export function fmtPercent(share: number, digits = 1): string {
  if (!Number.isFinite(share)) return "–";
  for (let d = digits; d <= 8; d++) {
    const text = (share * 100).toFixed(d);
    const v = Number(text);
    if (!((v >= 100 && share < 1) || (v <= 0 && share > 0))) return text;
  }
  return share < 1 && share > 0.5 ? ">99.999999" : "<0.000001";
}

/** "41.5 ± 6.7": the spread to two significant digits, the mean to the same decimal place (not 41.452 ± 6.7479). */
export function fmtMeanStd(mean: number, std: number): string {
  if (!Number.isFinite(mean) || !Number.isFinite(std) || std <= 0) return `${fmtNumber(mean)} ± ${fmtNumber(std)}`;
  const decimals = Math.max(0, Math.min(8, 1 - Math.floor(Math.log10(std))));
  if (Math.abs(mean) >= 1e6 || (decimals > 6 && Math.abs(mean) < 1e-3)) return `${fmtNumber(mean)} ± ${fmtNumber(std)}`;
  return `${mean.toFixed(decimals)} ± ${std.toFixed(decimals)}`;
}

/** A config or metadata value as text: an integer whole, its digits grouped from five on ("207,018" and "3,798,010"
 * parameters alike — not "3.798e+6", nor one grouped and the other not; a batch of 1024 or a year stay as written),
 * other numbers as `fmtNumber` writes them. */
export function fmtValue(v: unknown): string {
  if (typeof v === "number" && Number.isSafeInteger(v)) return Math.abs(v) >= 1e4 ? v.toLocaleString("en-US") : String(v);
  if (typeof v === "number") return fmtNumber(v);
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function fmtDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

/** Seconds as h:mm:ss, for a relative-time axis. */
export function fmtClock(seconds: number): string {
  const neg = seconds < 0;
  let s = Math.abs(seconds);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const ss = s < 10 ? `0${s.toFixed(s % 1 ? 1 : 0)}` : s.toFixed(s % 1 ? 1 : 0);
  return `${neg ? "−" : ""}${h ? `${h}:${String(m).padStart(2, "0")}` : m}:${ss}`;
}

export function fmtDate(unix: number | null | undefined): string {
  if (!unix) return "–";
  const d = new Date(unix * 1000);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return `today ${time}`;
  return `${d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${time}`;
}

export function fmtDateFull(unix: number | null | undefined): string {
  return unix ? new Date(unix * 1000).toLocaleString() : "–";
}

/** A layer's path as text: an `nn.Sequential`'s bare index ("3", "0.7") is written "layer 3" — a bare "3" reads as
 * a count beside "3 layers", or as part of a title ("Neurons of 3"). */
export function layerName(path: string): string {
  return /^\d+(\.\d+)*$/.test(path) ? `layer ${path}` : path;
}
