import type { WorkbookLocation } from "./location";

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

/** Why the last attempt did not close the session. Never carries a token or an assertion. */
export interface SessionError {
  code: string;
  message: string;
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
  readonly lastActivityAt: Date;
  readonly status: SessionStatus;
  /** Close attempts so far (a claim counts as one). */
  readonly attempts: number;
  /** Not to be tried before this time (a Graph cooldown or a retry back-off). */
  readonly nextAttemptAt?: Date;
  /** While `closing`: after this time the claim is considered abandoned. */
  readonly leaseUntil?: Date;
  /** The user's assertion, encrypted at rest; empty once the row is terminal. Not read by a dry run. */
  readonly encryptedAssertion?: string;
}

/** One ledger row, every column decoded and validated (producers, operators, the demo). */
export interface SessionRecord extends SessionToClose {
  readonly persistChanges: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastError?: SessionError;
  readonly closedAt?: Date;
  readonly closedBy?: "sweeper" | "producer";
  /** Which service recorded the session (free text, for operators). */
  readonly recordedBy: string;
}

/** A row that could not be decoded: what was wrong, and enough to address it. */
export interface MalformedRow {
  readonly partitionKey: string;
  readonly rowKey: string;
  readonly etag: string;
  /** The status column as stored, whatever it is. */
  readonly storedStatus: unknown;
  readonly problems: readonly string[];
}

/** One page of a ledger query: the rows that decode, and the ones that do not. */
export interface LedgerPage<Row extends SessionToClose = SessionRecord> {
  readonly rows: Row[];
  readonly malformed: MalformedRow[];
}

/** The state change a sweeper makes to a claimed row. */
export type RowTransition =
  | { readonly to: "closed" }
  | { readonly to: "expired"; readonly error: SessionError }
  | { readonly to: "failed"; readonly error: SessionError }
  | { readonly to: "retry"; readonly at: Date; readonly error: SessionError };

/**
 * What happened to one conditional write: written (with the row's new ETag), or not, because the
 * row `changed` since it was read (412) or is `gone` (404). Losing a race is an outcome, not an error.
 */
export type WriteResult =
  | { readonly written: true; readonly etag: string }
  | { readonly written: false; readonly reason: "changed" | "gone" };

export type ClaimResult<Row extends SessionToClose = SessionToClose> =
  | { readonly claimed: true; readonly row: Row }
  | { readonly claimed: false; readonly reason: "changed" | "gone" };
