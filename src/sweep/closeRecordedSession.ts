import type { DelegatedCredentials } from "../auth/DelegatedCredentials";
import type { CloseAttempt, CloseOutcome } from "../graph/CloseOutcome";
import type { CloseRequest, WorkbookSessionCloser } from "../graph/WorkbookSessionCloser";
import type { SessionLedger } from "../ledger/SessionLedger";
import { isTerminal, type RowTransition, type SessionToClose } from "../ledger/models";
import { transitionFor } from "./outcomeTransition";

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

/**
 * - `lostRace`: the row changed before we claimed it (a heartbeat, another sweeper): nothing sent.
 * - otherwise the attempt's outcome, the state written, and whether the write landed. `recorded`
 *   is false when the row changed under us after the call and the change already says enough.
 */
export type CloseReport =
  | { readonly result: "lostRace"; readonly reason: "changed" | "gone" }
  | {
      readonly result: CloseOutcome["kind"];
      readonly outcome: CloseOutcome;
      readonly transition: RowTransition;
      readonly recorded: boolean;
      /** Whether a request went to Graph (not when the token or a refused location ended it first). */
      readonly sent: boolean;
    };

/** Claim → token → closeSession → mark, for one row (the queue trigger's path). */
export async function closeRecordedSession(row: SessionToClose, deps: CloseDependencies, options: Pick<CloseRequest, "beforeSend"> = {}): Promise<CloseReport> {
  const claim = await deps.ledger.claim(row, { leaseMs: deps.leaseMs });
  if (!claim.claimed) return { result: "lostRace", reason: claim.reason };
  const closed = await closeClaimed(claim.row, row, deps, options);
  const [recorded] = await recordTransitions(deps.ledger, [{ row: claim.row, transition: closed.transition }]);
  return { result: closed.outcome.kind, ...closed, recorded: recorded! };
}

/** What one attempt on a claimed row came to, and the state it calls for (not yet written). */
export interface ClaimedAttempt {
  readonly outcome: CloseOutcome;
  readonly transition: RowTransition;
  readonly sent: boolean;
}

/**
 * Token → closeSession for a row this caller claimed, and the transition it calls for. `original`
 * is the row as read before the claim: a row taken over from a dead sweeper is told apart.
 */
export async function closeClaimed(
  claimed: SessionToClose,
  original: SessionToClose,
  deps: Pick<CloseDependencies, "credentials" | "closer" | "maxAttempts">,
  options: Pick<CloseRequest, "beforeSend"> = {},
): Promise<ClaimedAttempt> {
  const attempt = await attemptClose(claimed, deps, options);
  const outcome = original.status === "closing" ? afterInterruptedClose(attempt.outcome) : attempt.outcome;
  return { outcome, transition: transitionFor(outcome, claimed, deps.maxAttempts), sent: attempt.sent };
}

/** Token, then closeSession, for a row this caller has claimed. */
export async function attemptClose(
  claimed: SessionToClose,
  deps: Pick<CloseDependencies, "credentials" | "closer">,
  options: Pick<CloseRequest, "beforeSend"> = {},
): Promise<CloseAttempt> {
  const credential = await deps.credentials.forRow(claimed);
  if (!credential.ok) return { outcome: credential.outcome, sent: false };
  return deps.closer.close({
    workbook: claimed.workbook,
    sessionId: claimed.sessionId,
    credential: credential.credential,
    scope: deps.credentials.scope,
    attempts: claimed.attempts,
    ...options,
  });
}

/**
 * A row taken over from a sweeper that died mid-close: if Graph now says the session is gone, the
 * dead sweeper's request may have closed it (its 204 never recorded) or it idled out. Neither can
 * be proven, so the row is `expired` (never `closed` without a 204 in hand) with a code that says so.
 */
function afterInterruptedClose(outcome: CloseOutcome): CloseOutcome {
  if (outcome.kind !== "expired" || outcome.status === undefined) return outcome;
  return {
    ...outcome,
    code: "goneAfterInterruptedClose",
    message: `The session was gone when a close interrupted by a stopped sweeper was retried; that attempt may have closed it (${outcome.code}).`,
  };
}

/**
 * Writes transitions on the claimed rows' ETags (batched by partition). Where a row changed
 * meanwhile (its producer released it, or our lease ran out and another sweeper took it), the row
 * is read again: a finished row is left as it is; a 204 we received is still the truth about the
 * session, so `closed` is written over a row that is not finished. Anything else is left to
 * whoever holds it. Returns, per item, whether our transition (or our `closed`) landed.
 */
export async function recordTransitions(ledger: SessionLedger, items: readonly { row: SessionToClose; transition: RowTransition }[]): Promise<boolean[]> {
  const results = await ledger.applyTransitions(items);
  return Promise.all(
    results.map(async (result, i) => {
      if (result.written) return true;
      const { row, transition } = items[i]!;
      if (result.reason === "gone" || transition.to !== "closed") return false;
      const current = await ledger.getToClose(row);
      if (!current || isTerminal(current.status)) return false;
      return (await ledger.markClosed(current)).written;
    }),
  );
}
