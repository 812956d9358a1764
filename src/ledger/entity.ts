import type { TableEntityResult } from "@azure/data-tables";
import { isGuid, partitionKeyFor, rowKeyFor } from "../core/keys";
import { parseWorkbookLocation, type WorkbookLocation } from "../core/workbookLocation";
import { type MalformedRow, type SessionRecord } from "./models";
import { MAX_SESSION_ID_LENGTH, SESSION_STATUSES, type SessionStatus, type SessionToClose } from "../core/session";
import { describeProblem, ValidationError } from "../core/errors";
import { lastHeartbeat, MAX_LEASE_MS, MIN_LEASE_MS } from "./liveness";

/** The row as stored: the documented schema (README, "Recording sessions"). */
export interface SessionEntity {
  partitionKey: string;
  rowKey: string;
  schemaVersion: number;
  tenantId: string;
  userId: string;
  sessionId: string;
  workbook: string;
  persistChanges: boolean;
  createdAt: Date;
  /** The producer's heartbeats set it to the end of time; a sweeper's writes, to the last heartbeat (see liveness.ts). */
  heartbeatSeenAt: Date;
  /** The producer's lease in seconds; 0 for the sweeper's STALE_AFTER. */
  leaseSeconds: number;
  /** History rows only: the last heartbeat, in the service's time. */
  lastActivityAt?: Date;
  updatedAt: Date;
  status: SessionStatus;
  attempts: number;
  nextAttemptAt?: Date;
  leaseUntil?: Date;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  closedAt?: Date;
  closedBy?: string;
  recordedBy: string;
  assertion?: string;
}

/** Version 2: liveness by the service's clock (heartbeatSeenAt, leaseSeconds); history tables. */
export const SCHEMA_VERSION = 2;
const MAX_ERROR_MESSAGE_LENGTH = 1_000;

/** A row as the Tables SDK returns it. */
export type RawEntity = TableEntityResult<Record<string, unknown>>;

export type Decoded<Row> = { ok: true; row: Row } | { ok: false; malformed: MalformedRow };

/**
 * The columns a sweeper reads of a row to close its session (`SessionToClose`), for `$select`.
 * PartitionKey and RowKey come with any selection; so does the ETag. `assertion` is added where a
 * token is needed.
 */
export const COLUMNS_TO_CLOSE: readonly string[] = [
  "PartitionKey", "RowKey", "Timestamp", "schemaVersion", "tenantId", "userId", "sessionId", "workbook", "heartbeatSeenAt", "leaseSeconds",
  "status", "attempts", "nextAttemptAt", "leaseUntil",
  // What history keeps; read leniently: a bad value here never refuses a row.
  ...["createdAt", "persistChanges", "recordedBy", "lastErrorCode", "lastErrorMessage", "closedAt", "closedBy", "finishedAt", "lastActivityAt"],
];

/** How a row is read: the columns asked for (every one when absent) and how they are decoded. */
export interface RowShape<Row> {
  readonly select?: readonly string[];
  readonly decode: (entity: RawEntity) => Decoded<Row>;
}

/** Every column: producers, operators, the demo. */
export const EVERY_COLUMN: RowShape<SessionRecord> = { decode: decodeEntity };
/** What a sweeper, a close request and a producer's touch and release read and judge a row by. */
export const TO_CLOSE: RowShape<SessionToClose> = { select: [...COLUMNS_TO_CLOSE, "assertion"], decode: decodeSessionToClose };
/** The same without the assertion (the largest column): a dry run and the audit need no token. */
export const TO_CLOSE_WITHOUT_ASSERTION: RowShape<SessionToClose> = { select: COLUMNS_TO_CLOSE, decode: decodeSessionToClose };

/**
 * Decodes what a sweeper needs of a row to close its session. Rows are written by other services,
 * so nothing is taken on trust: a row whose keys do not match its own tenant, user and session id
 * is refused too, so a row cannot make the sweeper act for a user other than the one whose
 * partition it is in. Columns a sweeper does not read cannot make a row malformed here.
 */
export function decodeSessionToClose(entity: RawEntity): Decoded<SessionToClose> {
  const problems: string[] = [];
  const row = readColumnsToClose(entity, problems);
  return row ? { ok: true, row } : malformed(entity, problems);
}

/** Decodes every column of a row (the columns to close, and the producer's and the outcome's). */
export function decodeEntity(entity: RawEntity): Decoded<SessionRecord> {
  const problems: string[] = [];
  const toClose = readColumnsToClose(entity, problems);
  const read = columnReader(entity, problems);
  const persistChanges = entity.persistChanges ?? true;
  if (typeof persistChanges !== "boolean") problems.push("persistChanges is not a boolean");
  const createdAt = read.date("createdAt");
  const updatedAt = read.date("updatedAt", true) ?? toClose?.lastActivityAt;
  const closedAt = read.date("closedAt", true);
  const lastErrorCode = optionalString(entity.lastErrorCode);
  const closedBy = entity.closedBy === "sweeper" || entity.closedBy === "producer" ? entity.closedBy : undefined;
  if (!toClose || problems.length > 0) return malformed(entity, problems);
  return {
    ok: true,
    row: {
      ...toClose,
      persistChanges: persistChanges as boolean,
      createdAt: createdAt!,
      updatedAt: updatedAt!,
      ...(lastErrorCode && { lastError: { code: lastErrorCode, message: optionalString(entity.lastErrorMessage) ?? "" } }),
      ...(closedAt && { closedAt }),
      ...(closedBy && { closedBy }),
      recordedBy: optionalString(entity.recordedBy) ?? "unknown",
    },
  };
}

/** The columns to close, or undefined after adding to `problems` what is wrong with them. */
function readColumnsToClose(entity: RawEntity, problems: string[]): SessionToClose | undefined {
  const problemsBefore = problems.length;
  const read = columnReader(entity, problems);
  const tenantId = read.str("tenantId");
  const userId = read.str("userId");
  const sessionId = read.str("sessionId", MAX_SESSION_ID_LENGTH);
  if (tenantId !== undefined && !isGuid(tenantId)) problems.push("tenantId is not a GUID");
  if (userId !== undefined && !isGuid(userId)) problems.push("userId is not a GUID");

  let workbook: WorkbookLocation | undefined;
  try {
    workbook = parseWorkbookLocation(entity.workbook);
  } catch (error) {
    problems.push(...(error instanceof ValidationError ? error.problems.map(describeProblem) : ["workbook is invalid"]));
  }

  const status = entity.status as SessionStatus;
  if (!SESSION_STATUSES.includes(status)) problems.push(`status ${JSON.stringify(entity.status)} is not one of ${SESSION_STATUSES.join(", ")}`);
  const attempts = entity.attempts ?? 0;
  if (typeof attempts !== "number" || !Number.isInteger(attempts) || attempts < 0) problems.push("attempts is not a whole number");

  // Live rows: the last heartbeat by the service's clock. History rows keep it as a column.
  const heartbeatSeenAt = read.date("heartbeatSeenAt", true);
  const writtenAt = serviceTimestamp(entity);
  const lastActivityAt = heartbeatSeenAt !== undefined && writtenAt ? lastHeartbeat(writtenAt, heartbeatSeenAt) : read.date("lastActivityAt");
  const schemaVersion = entity.schemaVersion;
  if (schemaVersion !== SCHEMA_VERSION) {
    problems.push(`${UNSUPPORTED_SCHEMA} ${JSON.stringify(schemaVersion ?? null)}: written by a producer older than schema version ${SCHEMA_VERSION}; upgrade it`);
  }
  const leaseSeconds = entity.leaseSeconds ?? 0;
  if (typeof leaseSeconds !== "number" || !Number.isInteger(leaseSeconds) || (leaseSeconds !== 0 && (leaseSeconds * 1_000 < MIN_LEASE_MS || leaseSeconds * 1_000 > MAX_LEASE_MS))) {
    problems.push(`leaseSeconds is not 0 or a whole number of seconds from ${MIN_LEASE_MS / 1_000} to ${MAX_LEASE_MS / 1_000}`);
  }
  const nextAttemptAt = read.date("nextAttemptAt", true);
  const leaseUntil = read.date("leaseUntil", true);
  // A claim always sets a lease; a `closing` row without one would never be taken over.
  if (status === "closing" && !leaseUntil && !problems.some((p) => p.startsWith("leaseUntil"))) problems.push("a closing row has no leaseUntil");

  if (tenantId && userId && entity.partitionKey !== partitionKeyFor(tenantId, userId)) {
    problems.push("PartitionKey does not match tenantId and userId");
  }
  if (sessionId && entity.rowKey !== rowKeyFor(sessionId)) problems.push("RowKey does not match sessionId");
  const assertion = optionalString(entity.assertion);
  const history = historyColumns(entity);

  if (problems.length > problemsBefore || !tenantId || !userId || !sessionId || !workbook || !lastActivityAt) return undefined;
  return {
    partitionKey: entity.partitionKey!,
    rowKey: entity.rowKey!,
    etag: entity.etag,
    tenantId: tenantId.toLowerCase(),
    userId: userId.toLowerCase(),
    sessionId,
    workbook,
    lastActivityAt,
    ...(typeof leaseSeconds === "number" && leaseSeconds > 0 && { leaseMs: leaseSeconds * 1_000 }),
    status,
    attempts: attempts as number,
    ...(nextAttemptAt && { nextAttemptAt }),
    ...(leaseUntil && { leaseUntil }),
    ...(assertion && { encryptedAssertion: assertion }),
    ...history,
  };
}

/** The columns history keeps, where they are well formed; anything else is left out, not refused. */
function historyColumns(entity: RawEntity): Partial<SessionToClose> {
  const date = (value: unknown) => (value instanceof Date && !Number.isNaN(value.getTime()) ? value : undefined);
  const createdAt = date(entity.createdAt);
  const closedAt = date(entity.closedAt);
  const finishedAt = date(entity.finishedAt);
  const recordedBy = optionalString(entity.recordedBy);
  const lastErrorCode = optionalString(entity.lastErrorCode);
  return {
    ...(createdAt && { createdAt }),
    ...(typeof entity.persistChanges === "boolean" && { persistChanges: entity.persistChanges }),
    ...(recordedBy && { recordedBy }),
    ...(lastErrorCode && { lastError: { code: lastErrorCode, message: optionalString(entity.lastErrorMessage) ?? "" } }),
    ...(closedAt && { closedAt }),
    ...((entity.closedBy === "sweeper" || entity.closedBy === "producer") && { closedBy: entity.closedBy }),
    ...(finishedAt && { finishedAt }),
  };
}

/** The problem text that marks a row of another schema version (its code is UnsupportedSchemaVersion). */
export const UNSUPPORTED_SCHEMA = "schemaVersion is";

/**
 * The service's time of the row's last write: the `Timestamp` it was read with, or, for a row just
 * written, the time its new ETag names (`W/"datetime'…'"`, the time URL-encoded).
 */
function serviceTimestamp(entity: RawEntity): Date | undefined {
  const text = typeof entity.timestamp === "string" ? entity.timestamp : /datetime'([^']+)'/.exec(entity.etag ?? "")?.[1];
  if (!text) return undefined;
  const at = new Date(decodeURIComponent(text));
  return Number.isNaN(at.getTime()) ? undefined : at;
}

/** Reads typed columns, adding what is wrong with them to `problems`. */
function columnReader(entity: RawEntity, problems: string[]) {
  return {
    str(name: string, max = 1_000): string | undefined {
      const value = entity[name];
      if (typeof value !== "string" || value.length === 0) problems.push(`${name} is missing or not a string`);
      else if (value.length > max) problems.push(`${name} is longer than ${max} characters`);
      else return value;
      return undefined;
    },
    date(name: string, optional = false): Date | undefined {
      const value = entity[name];
      if (value === undefined || value === null) {
        if (!optional) problems.push(`${name} is missing`);
        return undefined;
      }
      if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
        problems.push(`${name} is not a date`);
        return undefined;
      }
      return value;
    },
  };
}

function malformed(entity: RawEntity, problems: string[]): { ok: false; malformed: MalformedRow } {
  return { ok: false, malformed: { partitionKey: entity.partitionKey ?? "", rowKey: entity.rowKey ?? "", etag: entity.etag, storedStatus: entity.status, problems } };
}

function optionalString(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

export function truncateMessage(message: string): string {
  return message.length > MAX_ERROR_MESSAGE_LENGTH ? `${message.slice(0, MAX_ERROR_MESSAGE_LENGTH - 1)}…` : message;
}
