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

/** One ledger row, decoded and validated. */
export interface SessionRecord {
  readonly partitionKey: string;
  readonly rowKey: string;
  /** The row's ETag when it was read: every change of state is conditional on it. */
  readonly etag: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly sessionId: string;
  readonly workbook: WorkbookLocation;
  readonly persistChanges: boolean;
  readonly createdAt: Date;
  readonly lastActivityAt: Date;
  readonly updatedAt: Date;
  readonly status: SessionStatus;
  /** Close attempts so far (a claim counts as one). */
  readonly attempts: number;
  /** Not to be tried before this time (a Graph cooldown or a retry back-off). */
  readonly nextAttemptAt?: Date;
  /** While `closing`: after this time the claim is considered abandoned. */
  readonly leaseUntil?: Date;
  readonly lastError?: SessionError;
  readonly closedAt?: Date;
  readonly closedBy?: "sweeper" | "producer";
  /** Which service recorded the session (free text, for operators). */
  readonly recordedBy: string;
  /** The user's assertion, encrypted at rest; empty once the row is terminal. */
  readonly encryptedAssertion?: string;
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

/** One page of a ledger query. */
export interface LedgerPage {
  readonly rows: SessionRecord[];
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

export type ClaimResult =
  | { readonly claimed: true; readonly row: SessionRecord }
  | { readonly claimed: false; readonly reason: "changed" | "gone" };
