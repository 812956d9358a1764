import { httpStatusCode, unexpectedSuccessCode } from "../core/codes";
import { backoffMs, type CloseOutcome } from "../core/closeOutcome";
import { COOLDOWN_STATUSES, isSessionGone, retryAfterTime, type GraphErrorBody } from "../core/graphAnswer";


/** Codes of a session that cannot be closed by us, now or later. */
const SESSION_REFUSED = new Set(["invalidsessionauthentication", "invalidsessionrestricted", "invalidsessionunsupportedworkbook"]);
/** Codes of a passing condition in the workbook service. */
const SESSION_BUSY = new Set(["invalidsessionaccessconflict", "invalidsessionunexpected", "editmodecannotacquirelock", "editmodecannotacquirelocktoomanyrequests"]);


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
  if (isSessionGone(status, codes)) return { ...base, kind: "expired" };
  if (codes.some((c) => SESSION_BUSY.has(c)) || status === 409 || status === 500 || status === 502) {
    return { ...base, kind: "retry", retryAt: later(backoffMs(context.attempts)), cooldown: false };
  }
  if (codes.some((c) => SESSION_REFUSED.has(c))) return { ...base, kind: "failed" };
  return { ...base, kind: "failed" };
}
