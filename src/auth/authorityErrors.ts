import type { CloseOutcome } from "../core/closeOutcome";
import { Codes } from "../core/codes";

/**
 * The user can no longer be represented, and by then the session has idled out on Graph too: an
 * assertion lives 60-90 minutes, a session 5-7 minutes without activity.
 */
const SESSION_OUTLIVED: Record<string, string> = {
  "500133": "The user's assertion has expired.",
  "700082": "The user's refresh token has expired from inactivity.",
  "50173": "The user's grant was revoked (for example by a password change).",
  "50078": "The user must complete multi-factor authentication again.",
  "50076": "The user must complete multi-factor authentication again.",
};

/** The authority had a passing problem; asking again later may work. */
const TRANSIENT = new Set(["90033", "90006", "90019", "90086", "50196", "900561"]);

/**
 * Maps what @azure/identity threw while exchanging a user's assertion to a close outcome. Every
 * authority error arrives as AuthenticationRequiredError (or CredentialUnavailableError) with the
 * AADSTS code only in its message, so the code is read from there. The outcome's message is ours:
 * the authority's text is not passed on, it may quote what was sent.
 */
export function classifyAuthorityError(error: unknown, context: { now: Date; retryAfterMs: number }): Exclude<CloseOutcome, { kind: "closed" }> {
  const text = error instanceof Error ? `${error.name} ${error.message}` : String(error);
  const aadsts = /AADSTS(\d{4,7})/.exec(text)?.[1];
  const retryAt = new Date(context.now.getTime() + context.retryAfterMs);
  if (aadsts && SESSION_OUTLIVED[aadsts]) {
    return { kind: "expired", code: `AADSTS${aadsts}`, message: SESSION_OUTLIVED[aadsts]! };
  }
  if (aadsts && TRANSIENT.has(aadsts)) {
    return { kind: "retry", retryAt, cooldown: false, code: `AADSTS${aadsts}`, message: "The authority is temporarily unavailable." };
  }
  if (aadsts) {
    return {
      kind: "failed",
      code: `AADSTS${aadsts}`,
      message: "The authority refused the on-behalf-of exchange (check the app registration, its credential and its Graph permission).",
    };
  }
  if (/endpoints_resolution_error|ENOTFOUND|ECONNREFUSED|ECONNRESET|ETIMEDOUT|fetch failed|socket|network|timeout/i.test(text)) {
    return { kind: "retry", retryAt, cooldown: false, code: Codes.AuthorityUnreachable, message: "The authority could not be reached." };
  }
  return { kind: "retry", retryAt, cooldown: false, code: Codes.TokenError, message: "The token request failed without an authority error code." };
}
