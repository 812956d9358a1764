import type { ErrorInfo } from "./errors";
import type { WorkbookLocation } from "./workbookLocation";

/**
 * Graph session ids are printable ASCII: a header value with anything else would be refused by
 * fetch, and a CR or LF would be header injection. Whoever sends `workbook-session-id` checks this.
 */
export function isSessionIdHeaderValue(sessionId: string): boolean {
  return sessionId.length <= MAX_SESSION_ID_LENGTH && /^[\x21-\x7e]+$/.test(sessionId);
}

/** Real Graph session ids are ~1-2 k characters; a Table Storage string column holds 32 k. */
export const MAX_SESSION_ID_LENGTH = 16_384;

/**
 * - `open`: recorded by a producer, in use or abandoned.
 * - `closing`: claimed by a sweeper, a closeSession call is (or was, if that sweeper died) under way.
 * - `closed`: Graph answered 204 to closeSession (ours, or the producer's own: see `closedBy`).
 * - `expired`: Graph said the session is already gone, or the user's assertion has run out.
 * - `failed`: closing is impossible or the attempts ran out; `lastError` says why.
 */
export type SessionStatus = "open" | "closing" | "closed" | "expired" | "failed";

export const SESSION_STATUSES: readonly SessionStatus[] = ["open", "closing", "closed", "expired", "failed"];
export const TERMINAL_STATUSES: readonly SessionStatus[] = ["closed", "expired", "failed"];

export function isTerminal(status: SessionStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

/** What names one recorded session: the user who opened it and Graph's session id. */
export interface SessionKey {
  tenantId: string;
  userId: string;
  sessionId: string;
}

/**
 * What a sweeper reads of a row to close its session, and all it acts on: who opened it, where,
 * the state columns a claim and an outcome are decided from, and the encrypted assertion. A row is
 * valid to close exactly when these columns decode; the sweep, a dry run, a close request, the
 * malformed-row audit and a producer's touch and release all read it this way, so none of them can
 * refuse a row another one would act on.
 */
export interface SessionToClose {
  readonly partitionKey: string;
  readonly rowKey: string;
  /** The row's ETag when it was read: every change of state is conditional on it. */
  readonly etag: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly sessionId: string;
  readonly workbook: WorkbookLocation;
  /** The last heartbeat, in the storage service's time (see "Liveness" in the README). */
  readonly lastActivityAt: Date;
  /** The producer's lease: closed after this long without a heartbeat. @default the sweeper's STALE_AFTER */
  readonly leaseMs?: number;
  readonly status: SessionStatus;
  /** Close attempts so far (a claim counts as one). */
  readonly attempts: number;
  /** Not to be tried before this time (a Graph cooldown or a retry back-off). */
  readonly nextAttemptAt?: Date;
  /** While `closing`: after this time the claim is considered abandoned. */
  readonly leaseUntil?: Date;
  /** The user's assertion, encrypted at rest; empty once the row is terminal. Not read by a dry run. */
  readonly encryptedAssertion?: string;
  // What history keeps of a finished session, read alongside and never a reason to refuse a row.
  readonly createdAt?: Date;
  readonly persistChanges?: boolean;
  readonly recordedBy?: string;
  readonly lastError?: ErrorInfo;
  readonly closedAt?: Date;
  readonly closedBy?: "sweeper" | "producer";
  /** When the row was written finished (closed, expired, failed): the week of history it moves to. */
  readonly finishedAt?: Date;
}

/** The state change a sweeper makes to a claimed row. */
export type RowTransition =
  | { readonly to: "closed" }
  | { readonly to: "expired"; readonly error: ErrorInfo }
  | { readonly to: "failed"; readonly error: ErrorInfo }
  | { readonly to: "retry"; readonly at: Date; readonly error: ErrorInfo };

/** A transition for one claimed row, as the ledger writes it. */
export interface TransitionRequest {
  readonly row: SessionToClose;
  readonly transition: RowTransition;
}
