import type { DelegatedCredentials } from "../auth/DelegatedCredentials";
import type { CloseAttempt, PausedOutcome, SettledOutcome } from "../core/closeOutcome";
import type { WorkbookSessionCloser } from "../graph/WorkbookSessionCloser";
import type { SessionLedger } from "../ledger/SessionLedger";
import type { RowTransition, SessionToClose } from "../core/session";
import { transitionFor } from "./outcomeTransition";
import { Codes } from "../core/codes";
import { AppFaultError } from "../core/errors";

/** What closing needs: the ledger, the users' credentials and the Graph client. */
export interface CloseDependencies {
  ledger: SessionLedger;
  credentials: DelegatedCredentials;
  closer: WorkbookSessionCloser;
  /** CLAIM_LEASE */
  leaseMs: number;
  /** MAX_ATTEMPTS */
  maxAttempts: number;
}

/** What one attempt on a claimed row came to, and the state the row takes for it (not yet written). */
export interface SettledResult {
  readonly outcome: SettledOutcome;
  readonly sent: boolean;
  readonly transition: RowTransition;
}

/**
 * The app's own settings or credential failed before anything reached Graph: the row takes no
 * transition, it goes back as it was before the claim (`ledger.releaseClaims`), its attempt unspent.
 */
export interface PausedResult {
  readonly outcome: PausedOutcome;
  readonly sent: false;
}

/**
 * The sender held the request back (the tenant's budget or cooldown outlasts this sweep, or its
 * tenant lease was lost): nothing reached Graph, and nothing was learnt about the session. The row
 * goes back as it was before the claim, due at `heldBackUntil`, its attempt unspent.
 */
export interface HeldBackResult {
  readonly heldBackUntil: Date;
  readonly sent: false;
}

export type CloseResult = SettledResult | PausedResult | HeldBackResult;

/**
 * A close of one recorded session (the queue trigger's path):
 * - `lostRace`: the row changed before we claimed it (a heartbeat, another sweeper): nothing sent.
 * - otherwise the attempt's result, and whether its transition was written. `recorded` is false
 *   when the row changed under us after the call and the change already says enough.
 * - `heldBack`: not sent (the tenant's lease was lost, or its budget outlasts the wait); the row is
 *   given back as it was, due at `nextAttemptAt`, for the tenant's sender.
 * A paused attempt (the app's own fault) is no report: the row is given back and AppFaultError thrown.
 */
export type CloseReport =
  | { readonly result: "lostRace"; readonly reason: "changed" | "gone" }
  | { readonly result: "heldBack"; readonly nextAttemptAt: Date }
  | (SettledResult & { readonly result: SettledOutcome["kind"]; readonly recorded: boolean });

/**
 * Waits for the sweep's turn to send to the row's tenant: a paced slot, the time before which the
 * request must not go out (the tenant's budget or cooldown outlasts this sweep), or a pause: the
 * app's settings or credential failed for this tenant or for all, and nothing is to be sent.
 */
export type SendSlot = () => Promise<{ send: true } | { send: false; retryAt: Date } | { send: false; paused: PausedOutcome }>;

export interface CloseOptions {
  /** The pacer's slot, awaited after every check and right before the request goes out. @default send at once */
  waitForSendSlot?: SendSlot;
}

/**
 * Claim → token → closeSession → mark, for one row (the queue trigger's path). When the app's own
 * settings or credential fail (a `paused` outcome), the row goes back as it was before the claim,
 * its attempt unspent, and AppFaultError is thrown with the cause's code. A request held back goes
 * back the same way, due when it may be sent.
 */
export async function closeRecordedSession(row: SessionToClose, deps: CloseDependencies, options: CloseOptions = {}): Promise<CloseReport> {
  const claim = await deps.ledger.claim(row, { leaseMs: deps.leaseMs });
  if (!claim.claimed) return { result: "lostRace", reason: claim.reason };
  const closed = await closeClaimed(claim.row, row, deps, options);
  if ("heldBackUntil" in closed) {
    await deps.ledger.releaseClaims([{ claimed: claim.row, original: row }], { nextAttemptAt: closed.heldBackUntil });
    return { result: "heldBack", nextAttemptAt: closed.heldBackUntil };
  }
  if (!("transition" in closed)) {
    await deps.ledger.releaseClaims([{ claimed: claim.row, original: row }]);
    const { scope, code, message } = closed.outcome;
    throw new AppFaultError(code, message, scope, scope === "tenant" ? row.tenantId : undefined);
  }
  const [recorded] = await deps.ledger.recordTransitions([{ row: claim.row, transition: closed.transition }]);
  return { result: closed.outcome.kind, ...closed, recorded: recorded! };
}

/**
 * Token → closeSession for a row this caller claimed, and the transition it calls for. `original`
 * is the row as read before the claim: a row taken over from a dead sweeper is told apart.
 */
export async function closeClaimed(
  claimed: SessionToClose,
  original: SessionToClose,
  deps: Pick<CloseDependencies, "credentials" | "closer" | "maxAttempts">,
  options: CloseOptions = {},
): Promise<CloseResult> {
  const attempt = await attemptClose(claimed, deps, options);
  if ("heldBackUntil" in attempt) return attempt;
  if (attempt.outcome.kind === "paused") return { outcome: attempt.outcome, sent: false };
  const outcome = original.status === "closing" ? afterInterruptedClose(attempt.outcome) : attempt.outcome;
  return { outcome, sent: attempt.sent, transition: transitionFor(outcome, claimed, deps.maxAttempts) };
}

/**
 * The user's credential, the checks on where the request would go, then the sender's slot, then
 * closeSession, for a row this caller has claimed. Pacing is the sweep's: the Graph client only
 * checks and sends.
 */
export async function attemptClose(
  claimed: SessionToClose,
  deps: Pick<CloseDependencies, "credentials" | "closer">,
  options: CloseOptions = {},
): Promise<CloseAttempt | HeldBackResult> {
  const credential = await deps.credentials.forRow(claimed);
  if (!credential.ok) return { outcome: credential.outcome, sent: false };
  const checked = deps.closer.check({
    workbook: claimed.workbook,
    sessionId: claimed.sessionId,
    credential: credential.credential,
    scope: deps.credentials.scope,
    attempts: claimed.attempts,
  });
  if (!checked.ok) return { outcome: checked.outcome, sent: false };
  if (options.waitForSendSlot) {
    const slot = await options.waitForSendSlot();
    if ("paused" in slot) return { outcome: slot.paused, sent: false };
    // Not the session's fate: it was never asked about.
    if (!slot.send) return { heldBackUntil: slot.retryAt, sent: false };
  }
  const outcome = await deps.closer.send(checked.request);
  // A paused outcome here is a token the Graph client could not get: nothing reached Graph.
  return { outcome, sent: outcome.kind !== "paused" };
}

/**
 * A row taken over from a sweeper that died mid-close: if Graph now says the session is gone, the
 * dead sweeper's request may have closed it (its 204 never recorded) or it idled out. Neither can
 * be proven, so the row is `expired` (never `closed` without a 204 in hand) with a code that says so.
 */
function afterInterruptedClose(outcome: SettledOutcome): SettledOutcome {
  if (outcome.kind !== "expired" || outcome.status === undefined) return outcome;
  return {
    ...outcome,
    code: Codes.GoneAfterInterruptedClose,
    message: `The session was gone when a close interrupted by a stopped sweeper was retried; that attempt may have closed it (${outcome.code}).`,
  };
}
