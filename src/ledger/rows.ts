import type { TableClient } from "@azure/data-tables";
import { ConcurrentUpdateError, MalformedRowError, SessionNotFoundError } from "../core/errors";
import { decodeSessionToClose, SCHEMA_VERSION, TO_CLOSE, type RawEntity, type RowShape } from "./entity";
import { partitionKeyFor, rowKeyFor } from "../core/keys";
import { formatWorkbookLocation } from "../core/workbookLocation";
import type { SessionKey, SessionToClose } from "../core/session";
import { storageStatus } from "./tableClient";
import { mergeIfUnchanged, type RowPatch } from "./transitions";

export function keysOf(key: SessionKey): { partitionKey: string; rowKey: string } {
  return { partitionKey: partitionKeyFor(key.tenantId, key.userId), rowKey: rowKeyFor(key.sessionId) };
}

/** Reads one row in `shape`; undefined when there is none. A malformed row throws MalformedRowError. */
export async function readRow<Row>(client: TableClient, key: SessionKey, shape: RowShape<Row>, abortSignal?: AbortSignal): Promise<Row | undefined> {
  const { partitionKey, rowKey } = keysOf(key);
  let entity;
  try {
    entity = await client.getEntity<Record<string, unknown>>(partitionKey, rowKey, {
      ...(shape.select && { queryOptions: { select: [...shape.select] } }),
      ...(abortSignal && { abortSignal }),
    });
  } catch (error) {
    if (storageStatus(error) === 404) return undefined;
    throw error;
  }
  const decoded = shape.decode(entity);
  if (!decoded.ok) throw new MalformedRowError(decoded.malformed.problems);
  return decoded.row;
}

/**
 * Read, decide, write conditionally; on a lost race read again and decide again. `decide` returns
 * the patch to write, or `undefined` when the row is already as wanted; it throws to refuse.
 * `known` is a row the caller already holds (with its ETag), which saves the first read. The row
 * is read and judged as a sweeper judges it: a producer's heartbeat or release must land on every
 * row a sweeper would close, whatever is in the columns a sweeper does not read.
 */
export async function updateWithRetry(
  client: TableClient,
  key: SessionKey,
  decide: (row: SessionToClose) => Omit<RowPatch, "partitionKey" | "rowKey"> | undefined,
  options: { known?: SessionToClose; maxAttempts?: number; abortSignal?: AbortSignal } = {},
): Promise<SessionToClose> {
  const maxAttempts = options.maxAttempts ?? 5;
  let row = options.known;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    row ??= await readRow(client, key, TO_CLOSE, options.abortSignal);
    if (!row) throw new SessionNotFoundError(key.sessionId);
    const columns = decide(row);
    if (!columns) return row;
    const result = await mergeIfUnchanged(client, { ...columns, partitionKey: row.partitionKey, rowKey: row.rowKey }, row.etag, options.abortSignal);
    if (result.written) return applyColumns(row, columns, result.etag);
    if (result.reason === "gone") throw new SessionNotFoundError(key.sessionId);
    row = undefined;
  }
  throw new ConcurrentUpdateError(maxAttempts);
}

/** The row as it is after a successful Merge of `columns`, without reading it back. */
function applyColumns(row: SessionToClose, columns: Record<string, unknown>, etag: string): SessionToClose {
  const decoded = decodeSessionToClose({
    tenantId: row.tenantId,
    userId: row.userId,
    sessionId: row.sessionId,
    workbook: formatWorkbookLocation(row.workbook),
    schemaVersion: SCHEMA_VERSION,
    lastActivityAt: row.lastActivityAt,
    leaseSeconds: (row.leaseMs ?? 0) / 1_000,
    status: row.status,
    attempts: row.attempts,
    nextAttemptAt: row.nextAttemptAt,
    leaseUntil: row.leaseUntil,
    assertion: row.encryptedAssertion,
    createdAt: row.createdAt,
    persistChanges: row.persistChanges,
    recordedBy: row.recordedBy,
    lastErrorCode: row.lastError?.code,
    lastErrorMessage: row.lastError?.message,
    closedAt: row.closedAt,
    closedBy: row.closedBy,
    finishedAt: row.finishedAt,
    ...columns,
    partitionKey: row.partitionKey,
    rowKey: row.rowKey,
    etag,
  } as RawEntity);
  if (!decoded.ok) throw new MalformedRowError(decoded.malformed.problems);
  return decoded.row;
}
