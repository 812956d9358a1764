/**
 * What Graph's answers say, read the same way by the sweeper's close client (graph/) and by
 * producers (producer/): the error body, Retry-After, and the codes of a session that is gone.
 * No SDK here: the producer entry loads no Graph client.
 */

/** Graph's error body: `{"error":{"code","message","innerError":{"code"}}}`; all parts optional in practice. */
export interface GraphErrorBody {
  code?: string;
  message?: string;
  innerCode?: string;
}

export function parseGraphErrorBody(text: string): GraphErrorBody {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; innerError?: { code?: unknown } } };
    const error = parsed?.error;
    if (!error || typeof error !== "object") return {};
    return {
      ...(typeof error.code === "string" && { code: error.code }),
      ...(typeof error.message === "string" && { message: error.message.slice(0, 500) }),
      ...(typeof error.innerError?.code === "string" && { innerCode: error.innerError.code }),
    };
  } catch {
    return {};
  }
}

/** Codes that say the session no longer exists (workbook-error-codes.md); compared case-insensitively. */
const SESSION_GONE = new Set(["invalidsessionrecreatable", "invalidsessionnotfound", "itemnotfound", "invalidsessionexpired"]);

/** Whether an answer says the session no longer exists: a 404, or one of Graph's session-gone codes. */
export function isSessionGone(status: number, codes: readonly (string | undefined)[]): boolean {
  return status === 404 || codes.some((code) => code !== undefined && SESSION_GONE.has(code.toLowerCase()));
}

/** Statuses Graph uses for "too busy, come back later"; they may carry Retry-After. */
export const COOLDOWN_STATUSES: ReadonlySet<number> = new Set([429, 503, 504]);

/**
 * The longest cooldown taken from a Retry-After: an hour. Graph's reported values are 41 to 315
 * seconds; anything far beyond is a broken header, and must not park a row for centuries (or past
 * the year 9999, which Table Storage refuses).
 */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * `Retry-After` as seconds or as an HTTP date; undefined when absent or unreadable. An HTTP date is
 * Graph's clock: it is read against the answer's own `Date` header (Graph's clock too), so this
 * host's clock only adds the wait, never decides it; without a `Date` header, against this host's
 * clock. A date in the past means "now"; a wait longer than MAX_RETRY_AFTER_MS is cut to it.
 */
export function retryAfterTime(value: string | null, now: Date, responseDate?: string | null): Date | undefined {
  if (!value) return undefined;
  const text = value.trim();
  let at: number;
  if (/^\d+(\.\d+)?$/.test(text)) at = now.getTime() + Math.ceil(Number(text) * 1000);
  else {
    const date = Date.parse(text);
    const sent = responseDate ? Date.parse(responseDate) : Number.NaN;
    at = Number.isFinite(sent) ? now.getTime() + (date - sent) : date;
  }
  if (!Number.isFinite(at)) return undefined;
  return new Date(Math.min(Math.max(at, now.getTime()), now.getTime() + MAX_RETRY_AFTER_MS));
}
