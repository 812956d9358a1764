/** The longest duration anything here accepts: ten years (beyond it a cutoff date is meaningless). */
export const MAX_DURATION_MS = 10 * 366 * 24 * 3_600_000;

/**
 * Durations in settings and requests: ISO-8601 (`PT10M`, `P1D`, `PT1H30M`, `PT0.5S`) or a plain
 * number of seconds (`600`). Returns milliseconds, or undefined when the text is neither.
 * Years and months are refused: their length depends on the calendar.
 */
export function parseDuration(text: string): number | undefined {
  const value = text.trim();
  if (/^\d+(\.\d+)?$/.test(value)) return Math.round(Number(value) * 1000);
  const match = /^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/i.exec(
    value,
  );
  if (!match || value.toUpperCase() === "P" || /T$/i.test(value)) return undefined;
  const [, weeks, days, hours, minutes, seconds] = match.map((part) => (part === undefined ? 0 : Number(part)));
  const ms = ((((weeks! * 7 + days!) * 24 + hours!) * 60 + minutes!) * 60 + seconds!) * 1000;
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** A duration from a number of seconds, or undefined when it is not a finite, non-negative number. */
export function secondsToMs(seconds: unknown): number | undefined {
  return typeof seconds === "number" && Number.isFinite(seconds) && seconds >= 0 ? Math.round(seconds * 1000) : undefined;
}
