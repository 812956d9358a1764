import type { ErrorInfo } from "../core/errors";
import type { SessionToClose } from "../core/session";

/** One ledger row, every column decoded and validated (producers, operators, the demo). */
export interface SessionRecord extends SessionToClose {
  readonly persistChanges: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastError?: ErrorInfo;
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
