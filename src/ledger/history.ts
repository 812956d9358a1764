import type { TableClient, TableServiceClient } from "@azure/data-tables";
import { formatWorkbookLocation } from "../core/workbookLocation";
import { isTerminal, type SessionToClose } from "../core/session";
import type { SessionKey } from "../core/session";
import { SCHEMA_VERSION, type RowShape, type SessionEntity } from "./entity";
import { lastHeartbeat } from "./liveness";
import { readRow } from "./rows";
import { withTable } from "./tableClient";
import { writeConditionally, type ConditionalWrite, type RowPatch } from "./transitions";
import { groupBy } from "../utils/concurrency";

/**
 * Finished sessions leave the live table for a history table of the ISO week they finished in:
 * `<SESSIONS_TABLE>History<YYYY>W<WW>`, e.g. `WorkbookSessionsHistory2026W49`. A sweep's query
 * then reads only what is alive, however long the history is kept, and history is dropped a whole
 * week at a time (Azure's table design guide: "high-volume delete" by table).
 */
export const HISTORY_TABLE_INFIX = "History";
/** What the week adds to the live table's name: `History2026W49`. */
export const HISTORY_NAME_SUFFIX_LENGTH = HISTORY_TABLE_INFIX.length + "2026W49".length;

const WEEK_MS = 7 * 86_400_000;
/** How long a listing of the history tables serves point lookups (older weeks change only when purged). */
const LISTING_TTL_MS = 5 * 60_000;

/** The ISO-8601 week (Monday to Sunday, UTC) a time falls in. */
export function isoWeekOf(at: Date): { year: number; week: number } {
  const day = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()));
  // The week's Thursday decides its year.
  const dayOfWeek = day.getUTCDay() || 7;
  day.setUTCDate(day.getUTCDate() + 4 - dayOfWeek);
  const yearStart = Date.UTC(day.getUTCFullYear(), 0, 1);
  return { year: day.getUTCFullYear(), week: Math.ceil(((day.getTime() - yearStart) / 86_400_000 + 1) / 7) };
}

export function historyTableName(liveTable: string, finishedAt: Date): string {
  const { year, week } = isoWeekOf(finishedAt);
  return `${liveTable}${HISTORY_TABLE_INFIX}${year}W${String(week).padStart(2, "0")}`;
}

/** When the week a history table holds ends (the next Monday, 00:00 UTC); undefined for another table's name. */
export function historyWeekEnd(liveTable: string, tableName: string): Date | undefined {
  const match = new RegExp(`^${liveTable}${HISTORY_TABLE_INFIX}(\\d{4})W(\\d{2})$`).exec(tableName);
  if (!match) return undefined;
  const year = Number(match[1]);
  const week = Number(match[2]);
  // Monday of ISO week 1 is the Monday on or before January 4th.
  const jan4 = new Date(Date.UTC(year, 0, 4));
  const week1Monday = jan4.getTime() - ((jan4.getUTCDay() || 7) - 1) * 86_400_000;
  return new Date(week1Monday + week * 7 * 86_400_000);
}

/**
 * A finished session as history keeps it: what operators and the status view need, never the
 * assertion. Times are as the live row had them.
 */
export type HistoryEntity = Pick<
  SessionEntity,
  "partitionKey" | "rowKey" | "schemaVersion" | "tenantId" | "userId" | "sessionId" | "workbook" | "status" | "attempts" | "lastActivityAt"
> &
  Partial<Pick<SessionEntity, "createdAt" | "persistChanges" | "recordedBy" | "lastErrorCode" | "lastErrorMessage" | "closedAt" | "closedBy" | "leaseSeconds">> & {
    /** When the live row was written finished: the week whose table holds it. */
    finishedAt: Date;
  };


/** The history row of a finished live row, as read (its `finishedAt` set by the write that finished it). */
export function historyEntityOf(row: SessionToClose & { readonly finishedAt: Date }): HistoryEntity {
  return {
    partitionKey: row.partitionKey,
    rowKey: row.rowKey,
    schemaVersion: SCHEMA_VERSION,
    tenantId: row.tenantId,
    userId: row.userId,
    sessionId: row.sessionId,
    workbook: formatWorkbookLocation(row.workbook),
    status: row.status,
    attempts: row.attempts,
    lastActivityAt: row.lastActivityAt,
    finishedAt: row.finishedAt,
    ...(row.createdAt && { createdAt: row.createdAt }),
    ...(row.persistChanges !== undefined && { persistChanges: row.persistChanges }),
    ...(row.recordedBy && { recordedBy: row.recordedBy }),
    ...(row.lastError && { lastErrorCode: row.lastError.code, lastErrorMessage: row.lastError.message }),
    ...(row.closedAt && { closedAt: row.closedAt }),
    ...(row.closedBy && { closedBy: row.closedBy }),
    // The session's own lease: how long past it a dead session stayed open is the status view's release latency.
    ...(row.leaseMs !== undefined && { leaseSeconds: row.leaseMs / 1_000 }),
  };
}

/**
 * Moves finished rows from the live table to history, in idempotent steps, each safe to repeat
 * after a crash: (1) the live row was already written finished (the outcome, counted once, by
 * whoever finished it); (2) its history row is written whole (an upsert: writing it again writes
 * the same); (3) the live row is deleted (a row already gone is fine). A crash after (1) or (2)
 * leaves a finished row in the live table, which the next sweep or the daily maintenance finds and
 * moves: a session ends in exactly one place, once.
 */
export class LedgerHistory {
  private readonly clients = new Map<string, TableClient>();
  /** The history tables as last listed, for point lookups; see `lookupOrder`. */
  private listed: { names: string[]; at: number } | undefined;

  constructor(
    private readonly live: TableClient,
    private readonly tables: { readonly service: TableServiceClient; readonly client: (tableName: string) => TableClient },
  ) {}

  /** Moves finished rows (each with its `finishedAt`); returns how many live rows it removed. */
  async move(rows: readonly (SessionToClose & { readonly finishedAt: Date })[], abortSignal?: AbortSignal): Promise<number> {
    return this.relocate(
      rows.filter((row) => isTerminal(row.status)).map((row) => ({ table: historyTableName(this.live.tableName, row.finishedAt), entity: { ...historyEntityOf(row) } })),
      abortSignal,
    );
  }

  /** A session's history row in `shape`, newest week first; undefined when there is none. */
  async find<Row>(key: SessionKey, shape: RowShape<Row>, abortSignal?: AbortSignal): Promise<Row | undefined> {
    // readRow answers undefined for a week's table not made yet, or purged since it was listed.
    for (const name of await this.lookupOrder(new Date(), abortSignal)) {
      const row = await readRow(this.client(name), key, shape, abortSignal);
      if (row !== undefined) return row;
    }
    return undefined;
  }

  /** A row of history exactly as stored (no decoding), newest week first; undefined when there is none. */
  async storedEntity(keys: { partitionKey: string; rowKey: string }): Promise<Record<string, unknown> | undefined> {
    for (const name of await this.lookupOrder()) {
      try {
        return await this.client(name).getEntity<Record<string, unknown>>(keys.partitionKey, keys.rowKey);
      } catch (error) {
        if ((error as { statusCode?: number }).statusCode !== 404) throw error;
      }
    }
    return undefined;
  }

  /**
   * Moves finished rows copied as they are stored (less the assertion; with `lastActivityAt`, the
   * last heartbeat, where the row has none): rows that do not decode, and rows a move cut short
   * left behind, whose columns a sweep's query did not all read. The week is their `finishedAt`,
   * or `now` where that is missing.
   */
  async moveAsStored(rows: readonly { partitionKey: string; rowKey: string }[], now: Date): Promise<number> {
    const entries: { table: string; entity: RowPatch }[] = [];
    for (const key of rows) {
      let stored: Record<string, unknown>;
      try {
        stored = await this.live.getEntity<Record<string, unknown>>(key.partitionKey, key.rowKey);
      } catch (error) {
        if ((error as { statusCode?: number }).statusCode === 404) continue;
        throw error;
      }
      const { etag: _etag, timestamp, "odata.metadata": _metadata, assertion: _assertion, ...columns } = stored;
      const finishedAt = columns.finishedAt instanceof Date ? columns.finishedAt : now;
      // History keeps the last heartbeat as lastActivityAt; the live row's Timestamp is not copied.
      const heartbeat = typeof timestamp === "string" ? lastHeartbeat(new Date(timestamp), columns.heartbeatSeenAt instanceof Date ? columns.heartbeatSeenAt : undefined) : undefined;
      const lastActivityAt = columns.lastActivityAt ?? heartbeat;
      entries.push({
        table: historyTableName(this.live.tableName, finishedAt),
        entity: { ...columns, ...(lastActivityAt !== undefined && { lastActivityAt }), finishedAt, partitionKey: key.partitionKey, rowKey: key.rowKey },
      });
    }
    return this.relocate(entries);
  }

  /**
   * Steps (2) and (3) of a move: each history row written whole into its week's table (the week's
   * first row creates it), then the live rows deleted. Finished rows are never written again
   * (release and record leave them alone), so the deletes need no ETag. Returns how many live rows
   * it removed.
   */
  private async relocate(entries: readonly { table: string; entity: RowPatch }[], abortSignal?: AbortSignal): Promise<number> {
    if (entries.length === 0) return 0;
    const copied: (typeof entries)[number][] = [];
    for (const [name, group] of groupBy(entries, (entry) => entry.table)) {
      const client = this.client(name);
      const results = await withTable(client, () => writeConditionally(client, group.map(({ entity }): ConditionalWrite => ({ action: "upsert", patch: entity })), { abortSignal }));
      // A live row is deleted only once its history row is written: one that was not stays,
      // finished, in the live table for the next sweep to move (never lost between the two).
      copied.push(...group.filter((_, i) => results[i]!.written));
    }
    if (copied.length === 0) return 0;
    const deleted = await writeConditionally(
      this.live,
      copied.map(({ entity }): ConditionalWrite => ({ action: "delete", patch: { partitionKey: entity.partitionKey, rowKey: entity.rowKey } })),
      { abortSignal },
    );
    return deleted.filter((result) => result.written).length;
  }

  /** Every history row, table by table (oldest week first), a page at a time. */
  async *pages(pageSize: number): AsyncIterableIterator<Record<string, unknown>[]> {
    for (const name of await this.tableNames()) {
      for await (const page of this.client(name).listEntities<Record<string, unknown>>().byPage({ maxPageSize: pageSize })) yield page;
    }
  }

  /**
   * Where a point lookup looks, newest first: this week's and last week's tables (where a session
   * that finished lately is, whether or not they existed at the last listing), then the older tables
   * as listed at most LISTING_TTL_MS ago. A producer's touch or release of a session that has left
   * the live table then costs a read or two, not a listing of every table on each call.
   */
  private async lookupOrder(now = new Date(), abortSignal?: AbortSignal): Promise<string[]> {
    if (!this.listed || now.getTime() - this.listed.at > LISTING_TTL_MS) this.listed = { names: await this.tableNames(abortSignal), at: now.getTime() };
    const recent = [historyTableName(this.live.tableName, now), historyTableName(this.live.tableName, new Date(now.getTime() - WEEK_MS))];
    return [...recent, ...[...this.listed.names].reverse().filter((name) => !recent.includes(name))];
  }

  /** The history tables, oldest week first. */
  async tableNames(abortSignal?: AbortSignal): Promise<string[]> {
    const prefix = `${this.live.tableName}${HISTORY_TABLE_INFIX}`;
    const names: string[] = [];
    const service = this.tables.service;
    // Table names compare as strings: everything from the prefix to the prefix followed by '{' (after 'z').
    for await (const table of service.listTables({ queryOptions: { filter: `TableName ge '${prefix}' and TableName lt '${prefix}{'` }, ...(abortSignal && { abortSignal }) })) {
      if (table.name && historyWeekEnd(this.live.tableName, table.name)) names.push(table.name);
    }
    return names.sort();
  }

  /** Drops every history table whose week ended before `cutoff`: a whole week at a time. */
  async purge(cutoff: Date): Promise<string[]> {
    const dropped: string[] = [];
    for (const name of await this.tableNames()) {
      const end = historyWeekEnd(this.live.tableName, name)!;
      if (end.getTime() > cutoff.getTime()) continue;
      await this.client(name).deleteTable();
      this.clients.delete(name);
      this.listed = undefined;
      dropped.push(name);
    }
    return dropped;
  }

  /** A table of the ledger's own beside the live one, `<live table><suffix>`, on the same account and options. */
  siblingTable(suffix: string): TableClient {
    return this.tables.client(`${this.live.tableName}${suffix}`);
  }

  private client(name: string): TableClient {
    let client = this.clients.get(name);
    if (!client) this.clients.set(name, (client = this.tables.client(name)));
    return client;
  }
}
