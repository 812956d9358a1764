import { httpStatusCode, unexpectedSuccessCode } from "../core/codes";
import { backoffMs, type CloseOutcome } from "../core/closeOutcome";

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
/** Codes of a session that cannot be closed by us, now or later. */
const SESSION_REFUSED = new Set(["invalidsessionauthentication", "invalidsessionrestricted", "invalidsessionunsupportedworkbook"]);
/** Codes of a passing condition in the workbook service. */
const SESSION_BUSY = new Set(["invalidsessionaccessconflict", "invalidsessionunexpected", "editmodecannotacquirelock", "editmodecannotacquirelocktoomanyrequests"]);

/** Statuses Graph uses for "too busy, come back later"; they may carry Retry-After. */
const COOLDOWN_STATUSES = new Set([429, 503, 504]);

/**
 * Maps a non-204 answer from closeSession to an outcome. Decided on the status first and on the
 * codes only where present: error bodies may be empty, HTML, or JSON without an inner code.
 */
export function outcomeForResponse(
  response: { status: number; retryAfter: string | null; date?: string | null; requestId?: string; body: GraphErrorBody },
  context: { now: Date; attempts: number },
): Exclude<CloseOutcome, { kind: "closed" }> {
  const { status, body } = response;
  const codes = [body.innerCode, body.code].filter((c): c is string => Boolean(c)).map((c) => c.toLowerCase());
  const code = body.innerCode ?? body.code ?? httpStatusCode(status);
  const message = body.message ?? `Graph answered ${status}.`;
  const base = { status, code, message, ...(response.requestId && { requestId: response.requestId }) };
  const later = (ms: number) => new Date(context.now.getTime() + ms);

  if (status >= 200 && status < 300) {
    // Not the documented 204: the session may or may not be closed. The next attempt will say.
    return { ...base, kind: "retry", retryAt: later(backoffMs(context.attempts)), cooldown: false, code: unexpectedSuccessCode(status), message: `closeSession answered ${status}, not 204.` };
  }
  if (COOLDOWN_STATUSES.has(status)) {
    const retryAt = retryAfterTime(response.retryAfter, context.now, response.date);
    return { ...base, kind: "retry", retryAt: retryAt ?? later(backoffMs(context.attempts)), cooldown: retryAt !== undefined };
  }
  if (codes.some((c) => SESSION_GONE.has(c)) || status === 404) return { ...base, kind: "expired" };
  if (codes.some((c) => SESSION_BUSY.has(c)) || status === 409 || status === 500 || status === 502) {
    return { ...base, kind: "retry", retryAt: later(backoffMs(context.attempts)), cooldown: false };
  }
  if (codes.some((c) => SESSION_REFUSED.has(c))) return { ...base, kind: "failed" };
  return { ...base, kind: "failed" };
}

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
