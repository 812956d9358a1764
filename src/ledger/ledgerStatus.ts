import { msPastLease, wasMadeDue } from "./liveness";
import { odata, type TableClient } from "@azure/data-tables";
import { isTerminal, type SessionToClose } from "../core/session";
import { decodeSessionToClose, COLUMNS_TO_CLOSE, type RawEntity } from "./entity";
import { historyTableName } from "./history";
import type { SessionLedger } from "./SessionLedger";
import { sweepsTableOf, type RecordedSweepCounts, type SweepsTable } from "./sweepsTable";
import { pagesIfTable } from "./tableClient";

/** The window of the status view's finished sessions and release latency. */
const STATUS_WINDOW_MS = 24 * 3_600_000;
/** The sweeps the status view lists. */
const STATUS_SWEEPS = 10;
const PAGE_SIZE = 1_000;

/**
 * The ledger at a glance (README "The status view"): what `workbook-session-sweeper status --json`
 * prints and `GET /api/status` answers. Every time is the storage service's, as the ledger keeps
 * it; ages are measured against the service's time now (`serviceNow`), never a host's clock.
 * Durations are milliseconds, times ISO-8601.
 */
export interface LedgerStatus {
  /** The live table (`SESSIONS_TABLE`). */
  table: string;
  /** The storage service's time the ages are measured against. */
  serviceNow: string;
  /** STALE_AFTER: the lease of sessions without one of their own. */
  staleAfterMs: number;
  live: {
    /** Rows in the live table that are `open` or `closing` (and decode). */
    total: number;
    /** By state: `closing` (claimed), `waitingRetry` (open, `nextAttemptAt` ahead), `open` (the other open rows). */
    byState: { open: number; closing: number; waitingRetry: number };
    /**
     * By what a sweep makes of them now: `alive` (open, a heartbeat within its lease), `stale` (past
     * its lease and claimed: a sweeper's claim runs, so no sweep takes it until the claim lapses),
     * `due` (a sweep would take it now: open and silent past its lease, or a claim that lapsed),
     * `cooldown` (open, silent past its lease, `nextAttemptAt` ahead: a Graph cooldown or back-off).
     * The four add up to `total`.
     */
    byIdle: { alive: number; stale: number; due: number; cooldown: number };
    /** The live session silent longest: its idle age (service time now − its last heartbeat). */
    oldest: { idleMs: number; lastActivityAt: string; status: "open" | "closing" } | null;
    /** Open rows whose next attempt is ahead, and the first of those attempts. */
    retries: { waiting: number; nextDueAt: string | null; nextDueInMs: number | null };
    /** Live rows that do not decode (the sweep marks them failed, `MalformedRow`). */
    malformed: number;
  };
  /** Sessions finished (`finishedAt`) within the last 24 h: history, and finished rows a move left in the live table. */
  finished: {
    since: string;
    total: number;
    byOutcome: { closed: number; expired: number; failed: number };
    /** Of the closed ones: by whom. */
    closedBy: { sweeper: number; producer: number };
    /** Finished rows by `lastErrorCode` and outcome (a closed row keeps the code of its last retry), most first. */
    byErrorCode: { code: string; outcome: "closed" | "expired" | "failed"; count: number }[];
  };
  /**
   * How long a dead session stayed open past its lease before its 204, for the sessions the
   * sweeper closed within the window: `finishedAt − (lastActivityAt + lease)`, all three as the
   * ledger keeps them in the service's time. Nearest-rank percentiles; null when there is none.
   * `closedBeforeLease` counts closes before the lease ran out (close requests, `--older-than`),
   * which are left out of the figures.
   */
  releaseLatency: { count: number; p50Ms: number | null; p95Ms: number | null; p99Ms: number | null; maxMs: number | null; closedBeforeLease: number };
  /** The last sweeps, newest first (`<SESSIONS_TABLE>Sweeps`). */
  sweeps: {
    trigger: string;
    dryRun: boolean;
    startedAt: string;
    finishedAt: string;
    durationMs: number;
    counts: RecordedSweepCounts | null;
    error: { code: string; message: string } | null;
  }[];
}

export interface LedgerStatusOptions {
  /** STALE_AFTER: the lease of rows that have none of their own (`leaseSeconds` 0). */
  staleAfterMs: number;
  /** @default the ledger's sweeps table */
  sweepsTable?: SweepsTable;
}

/** A finished row, as far as the status view reads it. */
interface FinishedRow {
  status: "closed" | "expired" | "failed";
  closedBy?: string;
  lastErrorCode?: string;
  finishedAt: Date;
  lastActivityAt?: Date;
  leaseMs?: number;
}

/** The history columns the status view reads (with `$select`). */
const HISTORY_COLUMNS = ["PartitionKey", "RowKey", "status", "closedBy", "lastErrorCode", "finishedAt", "lastActivityAt", "leaseSeconds"];

/**
 * Reads the ledger and works out its status: the live table (the columns to close, never the
 * assertion), the history tables of the last 24 h (this week's and, when the window reaches into
 * it, last week's) and the last sweeps. Reads only: a table that does not exist is empty, and
 * nothing is created.
 */
export async function readLedgerStatus(ledger: SessionLedger, options: LedgerStatusOptions): Promise<LedgerStatus> {
  const live: SessionToClose[] = [];
  let malformed = 0;
  for await (const page of pages(ledger.client, { select: [...COLUMNS_TO_CLOSE] })) {
    for (const entity of page) {
      const decoded = decodeSessionToClose(entity);
      if (decoded.ok) live.push(decoded.row);
      else malformed++;
    }
  }
  // The service's time as the live table's answer brought it (ServiceClock).
  const now = ledger.serviceNow();
  const since = new Date(now.getTime() - STATUS_WINDOW_MS);

  const finished = new Map<string, FinishedRow>();
  for (const row of live) {
    if (!isTerminal(row.status) || !row.finishedAt || row.finishedAt.getTime() < since.getTime()) continue;
    finished.set(`${row.partitionKey}/${row.rowKey}`, {
      status: row.status as FinishedRow["status"],
      finishedAt: row.finishedAt,
      lastActivityAt: row.lastActivityAt,
      ...(row.closedBy && { closedBy: row.closedBy }),
      ...(row.lastError && { lastErrorCode: row.lastError.code }),
      ...(row.leaseMs !== undefined && { leaseMs: row.leaseMs }),
    });
  }
  const liveTable = ledger.client.tableName;
  const weeks = [...new Set([historyTableName(liveTable, now), historyTableName(liveTable, since)])];
  for (const name of weeks) {
    const client = ledger.history.siblingTable(name.slice(liveTable.length));
    for await (const page of pages(client, { select: HISTORY_COLUMNS, filter: odata`finishedAt ge ${since}` })) {
      for (const entity of page) {
        const row = historyRow(entity);
        // A row both in history and still in the live table (a move cut short) counts once.
        if (row) finished.set(`${entity.partitionKey}/${entity.rowKey}`, row);
      }
    }
  }
  const sweeps = await (options.sweepsTable ?? sweepsTableOf(ledger)).recent(STATUS_SWEEPS);

  return {
    table: liveTable,
    serviceNow: now.toISOString(),
    staleAfterMs: options.staleAfterMs,
    live: liveFigures(live.filter((row) => !isTerminal(row.status)), now, options.staleAfterMs, malformed),
    finished: finishedFigures([...finished.values()], since),
    releaseLatency: releaseLatency([...finished.values()], options.staleAfterMs),
    sweeps: sweeps.map((sweep) => ({
      trigger: sweep.trigger,
      dryRun: sweep.dryRun,
      startedAt: sweep.startedAt.toISOString(),
      finishedAt: sweep.finishedAt.toISOString(),
      durationMs: sweep.durationMs,
      counts: sweep.counts ?? null,
      error: sweep.error ? { code: sweep.error.code, message: sweep.error.message } : null,
    })),
  };
}

/** A table's rows, a page at a time; nothing when the table does not exist. */
function pages(client: TableClient, query: { select: string[]; filter?: string }): AsyncIterableIterator<RawEntity[]> {
  return pagesIfTable(client.listEntities<Record<string, unknown>>({ queryOptions: query }).byPage({ maxPageSize: PAGE_SIZE }));
}

/** A history row, read leniently (the columns history keeps; a row without an outcome or a `finishedAt` is left out). */
function historyRow(entity: RawEntity): FinishedRow | undefined {
  const { status, finishedAt, lastActivityAt, closedBy, lastErrorCode, leaseSeconds } = entity;
  if ((status !== "closed" && status !== "expired" && status !== "failed") || !(finishedAt instanceof Date)) return undefined;
  return {
    status,
    finishedAt,
    ...(lastActivityAt instanceof Date && { lastActivityAt }),
    ...(typeof closedBy === "string" && { closedBy }),
    ...(typeof lastErrorCode === "string" && lastErrorCode.length > 0 && { lastErrorCode }),
    ...(typeof leaseSeconds === "number" && leaseSeconds > 0 && { leaseMs: leaseSeconds * 1_000 }),
  };
}

function liveFigures(rows: readonly SessionToClose[], now: Date, staleAfterMs: number, malformed: number): LedgerStatus["live"] {
  const at = now.getTime();
  const byState = { open: 0, closing: 0, waitingRetry: 0 };
  const byIdle = { alive: 0, stale: 0, due: 0, cooldown: 0 };
  let oldest: SessionToClose | undefined;
  let nextDue: Date | undefined;
  let waiting = 0;
  for (const row of rows) {
    const ahead = row.nextAttemptAt !== undefined && row.nextAttemptAt.getTime() > at;
    if (row.status === "closing") {
      byState.closing++;
      // A claim whose lease ran out is taken over by the next sweep.
      if (row.leaseUntil && row.leaseUntil.getTime() > at) byIdle.stale++;
      else byIdle.due++;
    } else {
      if (ahead) {
        byState.waitingRetry++;
        waiting++;
        if (!nextDue || row.nextAttemptAt!.getTime() < nextDue.getTime()) nextDue = row.nextAttemptAt!;
      } else byState.open++;
      // Judged as the sweep judges it (liveness.ts): the last heartbeat, in the service's time, against its lease.
      if (msPastLease(row, now, staleAfterMs) < 0) byIdle.alive++;
      else if (ahead) byIdle.cooldown++;
      else byIdle.due++;
    }
    // A row a close request made due has no idle age of its own.
    if (!wasMadeDue(row.lastActivityAt) && (!oldest || row.lastActivityAt.getTime() < oldest.lastActivityAt.getTime())) oldest = row;
  }
  return {
    total: rows.length,
    byState,
    byIdle,
    oldest: oldest ? { idleMs: at - oldest.lastActivityAt.getTime(), lastActivityAt: oldest.lastActivityAt.toISOString(), status: oldest.status as "open" | "closing" } : null,
    retries: { waiting, nextDueAt: nextDue?.toISOString() ?? null, nextDueInMs: nextDue ? nextDue.getTime() - at : null },
    malformed,
  };
}

function finishedFigures(rows: readonly FinishedRow[], since: Date): LedgerStatus["finished"] {
  const byOutcome = { closed: 0, expired: 0, failed: 0 };
  const closedBy = { sweeper: 0, producer: 0 };
  const codes = new Map<string, { code: string; outcome: FinishedRow["status"]; count: number }>();
  for (const row of rows) {
    byOutcome[row.status]++;
    if (row.status === "closed" && (row.closedBy === "sweeper" || row.closedBy === "producer")) closedBy[row.closedBy]++;
    if (row.lastErrorCode) {
      const key = `${row.lastErrorCode}\u0000${row.status}`;
      const entry = codes.get(key) ?? { code: row.lastErrorCode, outcome: row.status, count: 0 };
      entry.count++;
      codes.set(key, entry);
    }
  }
  const byErrorCode = [...codes.values()].sort((a, b) => b.count - a.count || compare(a.code, b.code) || compare(a.outcome, b.outcome));
  return { since: since.toISOString(), total: rows.length, byOutcome, closedBy, byErrorCode };
}

/** `finishedAt − (lastActivityAt + lease)` of each session the sweeper closed: service times, all three. */
export function releaseLatencies(rows: readonly FinishedRow[], staleAfterMs: number): number[] {
  return rows
    // A row a close request made due carries no last heartbeat: it was asked for, not found dead.
    .filter((row) => row.status === "closed" && row.closedBy === "sweeper" && row.lastActivityAt !== undefined && !wasMadeDue(row.lastActivityAt))
    .map((row) => msPastLease({ lastActivityAt: row.lastActivityAt!, leaseMs: row.leaseMs }, row.finishedAt, staleAfterMs));
}

function releaseLatency(rows: readonly FinishedRow[], staleAfterMs: number): LedgerStatus["releaseLatency"] {
  const all = releaseLatencies(rows, staleAfterMs);
  const latencies = all.filter((ms) => ms >= 0).sort((a, b) => a - b);
  return {
    count: latencies.length,
    p50Ms: percentile(latencies, 50),
    p95Ms: percentile(latencies, 95),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1) ?? null,
    closedBeforeLease: all.length - latencies.length,
  };
}

/** The nearest-rank percentile of sorted values: the smallest value with at least p % of them at or below it. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
