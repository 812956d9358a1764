import { odata, type TableClient } from "@azure/data-tables";
import { Codes } from "../core/codes";
import { EVERY_COLUMN, SCHEMA_VERSION, TO_CLOSE, UNSUPPORTED_SCHEMA, TO_CLOSE_WITHOUT_ASSERTION, type RawEntity, type RowShape } from "./entity";
import { type ClaimResult, type LedgerPage, type MalformedRow, type SessionRecord, type WriteResult } from "./models";
import { isTerminal, TERMINAL_STATUSES, type RowTransition, type SessionKey, type SessionStatus, type SessionToClose, type TransitionRequest } from "../core/session";
import { readRow } from "./rows";
import { LedgerHistory } from "./history";
import { LEASES_TABLE_SUFFIX, TenantLeases } from "./tenantLeases";
import { isStale, MADE_DUE, openStaleFilter } from "./liveness";
import { ServiceClock } from "./serviceClock";
import type { StorageConnection } from "./storageConnection";
import { createLedgerServiceClient, createLedgerTableClient, pagesWithTable, type LedgerClientOptions } from "./tableClient";
import { errorColumns, MAX_TRANSACTION_OPERATIONS, mergeIfUnchanged, PARALLEL_TRANSACTIONS, patchFor, rowAfter, writeConditionally } from "./transitions";
import type { ErrorInfo } from "../core/errors";

/**
 * Rows per query page. Table Storage allows 1,000, but the Tables SDK makes ~20 KB of short-lived
 * objects per row it reads, all at once for a page, and that burst is what sets a scan's peak
 * memory (a 1,000-row page: ~155 MB for a 100,000-row dry run; 500: ~120 MB). A sweep gains nothing
 * from the bigger page: it reads the next page as soon as it has claimed this one's rows, and a
 * tenant's Excel budget closes 150 sessions a second, so 500 rows are seconds of work.
 */
export const DEFAULT_PAGE_SIZE = 500;

/** The storage service's time (ServiceClock); a test may stand in for it. */
export interface ServiceTime {
  /** Whether the time has been learned from the service yet. */
  readonly calibrated: boolean;
  /** The earliest the service's time can be now. */
  now(): Date;
  /** The latest it can be now. @default `now()` */
  latest?(): Date;
}

export interface SessionLedgerOptions extends Omit<LedgerClientOptions, "serviceClock"> {
  /**
   * The storage service's time, by which liveness is judged.
   * @default learned from the service's answers (`Date` headers), carried forward by `clock`
   */
  serviceTime?: ServiceTime;
  /** The clock for timestamps and thresholds. @default the system clock */
  clock?: () => Date;
  /** Rows per query page (Table Storage caps a page at 1,000). @default DEFAULT_PAGE_SIZE (500) */
  pageSize?: number;
}

export interface ListStaleOptions {
  /** The service's time now, for the leases. @default the ledger's ServiceTime */
  now?: Date;
  /** Close sessions silent this long, whatever their own lease (an operator's manual sweep). @default each row's lease */
  olderThanMs?: number;
  /** Only this user's sessions (Entra object id). */
  userId?: string;
  /** Rows per page. @default the ledger's pageSize */
  pageSize?: number;
  /** Leave the encrypted assertion (the largest column) out: for a dry run, which needs no token. */
  withoutAssertion?: boolean;
}

/** Rows of another schema version, to be named (UnsupportedSchemaVersion) rather than never seen. */
const OTHER_VERSION = odata`schemaVersion lt ${SCHEMA_VERSION}`;

/**
 * How far this host's clock may lag the service's before a query filtered by it is asked again:
 * within it, a row that went stale in that last moment waits for the next sweep.
 */
const PROVISIONAL_LAG_MS = 2_000;

/** Finished rows left in the live table by a move to history cut short. */
const FINISHED = odata`status eq ${"closed"} or status eq ${"expired"} or status eq ${"failed"}`;

function withFinishedAt(row: SessionToClose & { finishedAt?: Date }): SessionToClose & { finishedAt: Date } {
  // A finished row written before finishedAt existed moves by the time it was found.
  return { ...row, finishedAt: row.finishedAt ?? new Date() };
}

/**
 * The sweeper's side of the session ledger: finds stale sessions, claims them, records outcomes.
 * Every change of state is conditional on the ETag the row was read with, so a producer's
 * heartbeat or another sweeper that got there first always wins, and this side sees it as a
 * lost race rather than an error.
 */
export class SessionLedger {
  readonly client: TableClient;
  private readonly clock: () => Date;
  /** Rows per query page. */
  readonly pageSize: number;
  /**
   * How this ledger writes many rows at once: at most `rowsPerTransaction` rows of one partition in
   * a transaction (Table Storage's limit), `transactionsInParallel` transactions at a time. A
   * caller that claims ahead sizes its claims by these.
   */
  readonly writeBatching = { rowsPerTransaction: MAX_TRANSACTION_OPERATIONS, transactionsInParallel: PARALLEL_TRANSACTIONS } as const;

  /** Where finished sessions go: a table per ISO week (`<table>History<YYYY>W<WW>`). */
  readonly history: LedgerHistory;

  /** The storage service's time. */
  readonly serviceTime: ServiceTime;

  /** One sender per tenant: the tenants' leases, in `<table>Leases`. */
  readonly tenantLeases: TenantLeases;

  constructor(client: TableClient, history: LedgerHistory, options: SessionLedgerOptions = {}) {
    this.client = client;
    this.history = history;
    this.clock = options.clock ?? (() => new Date());
    this.serviceTime = options.serviceTime ?? new ServiceClock(this.clock);
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    this.tenantLeases = new TenantLeases(history.siblingTable(LEASES_TABLE_SUFFIX), {
      serviceNow: () => this.serviceNow(),
      serviceLatest: () => this.serviceTime.latest?.() ?? this.serviceNow(),
    });
  }

  /** The ledger in the account `connection` reaches: a connection string, or service URLs and a credential. */
  static fromConnection(connection: StorageConnection, tableName: string, options: SessionLedgerOptions = {}): SessionLedger {
    const serviceClock = options.serviceTime ? undefined : new ServiceClock(options.clock);
    // Every table's answers carry the service's Date (history, leases): one clock learns from all.
    const clientOptions = { ...options, ...(serviceClock && { serviceClock }) };
    const client = createLedgerTableClient(connection, tableName, clientOptions);
    const history = new LedgerHistory(client, {
      service: createLedgerServiceClient(connection, options),
      client: (name) => createLedgerTableClient(connection, name, clientOptions),
    });
    return new SessionLedger(client, history, { ...options, ...(serviceClock && { serviceTime: serviceClock }) });
  }

  /** `fromConnection` with a connection string. */
  static fromConnectionString(connectionString: string, tableName: string, options: SessionLedgerOptions = {}): SessionLedger {
    return SessionLedger.fromConnection(connectionString, tableName, options);
  }

  /**
   * The storage service's time now, as far as this process has learned it. Every time the ledger
   * writes (claims, outcomes, `nextAttemptAt`) is in it, so sweepers whose clocks disagree read
   * each other's rows alike; compare a row's times with this, never with the host's clock.
   */
  serviceNow(): Date {
    return this.serviceTime.now();
  }

  /** A time on this host's clock (a back-off worked out by the Graph client, say) in the service's. */
  toServiceTime(local: Date): Date {
    return new Date(local.getTime() + this.serviceNow().getTime() - this.clock().getTime());
  }

  private inServiceTime(transition: RowTransition): RowTransition {
    return transition.to === "retry" ? { ...transition, at: this.toServiceTime(transition.at) } : transition;
  }

  /**
   * Creates the table if it does not exist yet. Not needed before use: the first query on a missing
   * table creates it.
   */
  async ensureTable(): Promise<void> {
    await this.client.createTable();
  }

  /** Every column of one row; undefined when there is none. A malformed row throws MalformedRowError. */
  async get(key: SessionKey): Promise<SessionRecord | undefined> {
    return (await readRow(this.client, key, EVERY_COLUMN)) ?? this.history.find(key, EVERY_COLUMN);
  }

  /**
   * What a sweeper needs of one row to close its session, read and judged as the stale query
   * reads it; undefined when there is no such row. A malformed row throws MalformedRowError.
   */
  async getToClose(key: SessionKey): Promise<SessionToClose | undefined> {
    return (await readRow(this.client, key, TO_CLOSE)) ?? this.history.find(key, TO_CLOSE);
  }

  /**
   * Sessions to close, a page at a time, filtered by the table service and judged by the service's
   * clock (README "Liveness"): `open` rows whose last heartbeat is older than their lease (rows
   * without a lease of their own: `defaultLeaseMs`, the sweeper's STALE_AFTER; `olderThanMs`
   * overrides every lease), and `closing` rows whose claim lease has run out (their sweeper died).
   * Rows that fail to decode come back in `malformed`, never as an exception. Rows with a future
   * `nextAttemptAt` are included: the caller decides (and counts) what to skip. Finished rows still
   * in the live table (a move to history cut short by a crash) are included too, for the caller to
   * `moveFinished`. Only the columns to close are read (`SessionToClose`).
   */
  async *listStale(defaultLeaseMs: number, options: ListStaleOptions = {}): AsyncIterableIterator<LedgerPage<SessionToClose>> {
    const leases = { defaultLeaseMs, ...(options.olderThanMs !== undefined && { olderThanMs: options.olderThanMs }) };
    // Before its first answer this process knows no service time: the query is filtered by this
    // host's clock, and its first answer brings the service's. A host clock that runs ahead only
    // returns rows early (each is judged by the service's time below); one that lags would hide
    // rows that are due, so then the query is asked again, before anything is yielded.
    const provisional = options.now === undefined && !this.serviceTime.calibrated;
    let filterNow = options.now ?? this.serviceNow();
    for (let attempt = 0; ; attempt++) {
      const open = `(${odata`status eq ${"open"}`} and ${openStaleFilter(filterNow, leases)})`;
      const closing = odata`(status eq ${"closing"} and leaseUntil lt ${filterNow})`;
      const due = `${open} or ${closing} or ${FINISHED} or ${OTHER_VERSION}`;
      const filter = options.userId === undefined ? due : `${odata`userId eq ${options.userId}`} and (${due})`;
      let judgeNow: Date | undefined;
      for await (const page of this.query(options.withoutAssertion ? TO_CLOSE_WITHOUT_ASSERTION : TO_CLOSE, { filter, pageSize: options.pageSize ?? this.pageSize })) {
        if (judgeNow === undefined) {
          judgeNow = provisional ? this.serviceNow() : filterNow;
          if (provisional && attempt === 0 && judgeNow.getTime() - filterNow.getTime() > PROVISIONAL_LAG_MS) break;
        }
        const now = judgeNow;
        // A lease bucket returns some rows before their own lease has run out: they wait for a later sweep.
        const rows = page.rows.filter(
          (row) => isTerminal(row.status) || (row.status === "open" ? isStale(row, now, leases) : !row.leaseUntil || row.leaseUntil.getTime() < now.getTime()),
        );
        yield { rows, malformed: page.malformed };
      }
      // (An answer with no page at all still brought the service's time.)
      const serviceNow = judgeNow ?? this.serviceNow();
      if (!provisional || attempt > 0 || serviceNow.getTime() - filterNow.getTime() <= PROVISIONAL_LAG_MS) return;
      filterNow = serviceNow;
    }
  }

  /** Every session, every column, a page at a time: the live table's, then history's (for operators and the demo). */
  async *listAll(options: { pageSize?: number } = {}): AsyncIterableIterator<LedgerPage> {
    yield* this.query(EVERY_COLUMN, { pageSize: options.pageSize ?? this.pageSize });
    yield* this.listHistory(options);
  }

  /** Every finished session in history, oldest week first, a page at a time. */
  async *listHistory(options: { pageSize?: number } = {}): AsyncIterableIterator<LedgerPage> {
    for await (const page of this.history.pages(options.pageSize ?? this.pageSize)) {
      const result: LedgerPage = { rows: [], malformed: [] };
      for (const entity of page) {
        const decoded = EVERY_COLUMN.decode(entity as RawEntity);
        if (decoded.ok) result.rows.push(decoded.row);
        else result.malformed.push(decoded.malformed);
      }
      yield result;
    }
  }

  private async *query<Row extends SessionToClose>(shape: RowShape<Row>, options: { filter?: string; pageSize: number }): AsyncIterableIterator<LedgerPage<Row>> {
    const queryOptions = { ...(options.filter !== undefined && { filter: options.filter }), ...(shape.select && { select: [...shape.select] }) };
    const pages = pagesWithTable(this.client, () => this.client.listEntities<Record<string, unknown>>({ queryOptions }).byPage({ maxPageSize: options.pageSize }));
    for await (const page of pages) {
      const result: LedgerPage<Row> = { rows: [], malformed: [] };
      for (const entity of page) {
        const decoded = shape.decode(entity);
        if (decoded.ok) result.rows.push(decoded.row);
        else result.malformed.push(decoded.malformed);
      }
      yield result;
    }
  }

  /**
   * Moves a row to `closing` under a lease, if it is unchanged since it was read. A row that a
   * producer touched or another sweeper claimed in the meantime is `{ claimed: false }`.
   */
  async claim<Row extends SessionToClose>(row: Row, options: { leaseMs: number; now?: Date }): Promise<ClaimResult<Row>> {
    const [result] = await this.claimMany([row], options);
    return result!;
  }

  /**
   * Claims many rows at once: a transaction per partition and 100 rows, each row conditional on
   * its ETag (a chunk with a changed row falls back to single claims). Results in input order.
   */
  async claimMany<Row extends SessionToClose>(rows: readonly Row[], options: { leaseMs: number; now?: Date }): Promise<ClaimResult<Row>[]> {
    const now = options.now ?? this.serviceNow();
    // The claim's lease is in the service's time, so another sweeper's clock cannot cut it short.
    const leaseUntil = new Date(this.serviceNow().getTime() + options.leaseMs);
    const claims = rows.map((row) => ({ status: "closing" as const, leaseUntil, attempts: row.attempts + 1, updatedAt: now, heartbeatSeenAt: row.lastActivityAt }));
    const results = await writeConditionally(
      this.client,
      rows.map((row, i) => ({ action: "merge", patch: { partitionKey: row.partitionKey, rowKey: row.rowKey, ...claims[i]! }, etag: row.etag })),
    );
    return results.map((result, i) =>
      result.written ? { claimed: true, row: { ...rows[i]!, ...claims[i]!, etag: result.etag } } : { claimed: false, reason: result.reason },
    );
  }

  /**
   * Gives claimed rows back untried, as they were before the claim (status, lease, attempts), and
   * optionally not to be tried before `nextAttemptAt` (a Graph cooldown that outlasts the sweep).
   */
  releaseClaims(claims: readonly { claimed: SessionToClose; original: SessionToClose }[], options: { nextAttemptAt?: Date } = {}): Promise<WriteResult[]> {
    const now = this.serviceNow();
    return writeConditionally(
      this.client,
      claims.map(({ claimed, original }) => ({
        action: "merge",
        patch: {
          partitionKey: claimed.partitionKey,
          rowKey: claimed.rowKey,
          status: original.status,
          attempts: original.attempts,
          leaseUntil: original.leaseUntil ?? this.serviceNow(),
          updatedAt: now,
          heartbeatSeenAt: original.lastActivityAt,
          ...(options.nextAttemptAt && { nextAttemptAt: this.toServiceTime(options.nextAttemptAt) }),
        },
        etag: claimed.etag,
      })),
    );
  }

  /** Closed (Graph answered 204): written, then moved to history. */
  markClosed(row: SessionToClose): Promise<WriteResult> {
    return this.finish(row, { to: "closed" });
  }

  /** Expired (Graph says the session is gone): written, then moved to history. */
  markExpired(row: SessionToClose, error: ErrorInfo): Promise<WriteResult> {
    return this.finish(row, { to: "expired", error });
  }

  /** Failed (it cannot be closed): written, then moved to history. */
  markFailed(row: SessionToClose, error: ErrorInfo): Promise<WriteResult> {
    return this.finish(row, { to: "failed", error });
  }

  private async finish(row: SessionToClose, transition: RowTransition): Promise<WriteResult> {
    const now = this.serviceNow();
    const result = await this.applyTransition(row, transition, now);
    if (result.written) await this.moveFinished([rowAfter(row, transition, now)]);
    return result;
  }

  /**
   * Hands an `open` row to the sweeper that holds its tenant (a close request that may not send
   * beside it): the row is made silent since the epoch, so it is stale under any lease and due now,
   * for that sweeper's next sweep. Conditional on the row's ETag; a producer's heartbeat after it
   * takes it back, as a heartbeat always does.
   */
  markDue(row: SessionToClose): Promise<WriteResult> {
    const patch = { partitionKey: row.partitionKey, rowKey: row.rowKey, heartbeatSeenAt: MADE_DUE, nextAttemptAt: this.serviceNow(), updatedAt: this.serviceNow() };
    return mergeIfUnchanged(this.client, patch, row.etag);
  }

  /** Back to `open`, not to be tried before `at`. */
  scheduleRetry(row: SessionToClose, at: Date, error: ErrorInfo): Promise<WriteResult> {
    return this.applyTransition(row, { to: "retry", at, error });
  }

  /** One transition of a claimed row, conditional on its ETag. */
  applyTransition(row: SessionToClose, transition: RowTransition, now = this.serviceNow()): Promise<WriteResult> {
    return mergeIfUnchanged(this.client, patchFor(row, this.inServiceTime(transition), now), row.etag);
  }

  /**
   * Many transitions at once: a transaction per partition and 100 rows, falling back to single
   * writes in a chunk where one row changed. Results are in the order of `requests`.
   */
  applyTransitions(requests: readonly TransitionRequest[], now = this.serviceNow()): Promise<WriteResult[]> {
    return writeConditionally(
      this.client,
      requests.map(({ row, transition }) => ({ action: "merge", patch: patchFor(row, this.inServiceTime(transition), now), etag: row.etag })),
    );
  }

  /**
   * Writes transitions on the claimed rows' ETags (batched by partition), then moves the rows it
   * finished to history. Returns, per item, whether our transition (or our `closed`) landed.
   */
  async recordTransitions(requests: readonly TransitionRequest[]): Promise<boolean[]> {
    const { recorded, finished } = await this.writeOutcomes(requests);
    // Then the finished ones leave the live table; a crash before this leaves them for the next sweep.
    await this.moveFinished(finished);
    return recorded;
  }

  /**
   * Step (1) of a move to history alone: writes transitions on the claimed rows' ETags (batched by
   * partition) and returns the rows it finished, for the caller to `moveFinished` when it suits
   * (a sweep moves a user's rows together). Where a row changed meanwhile (its producer released
   * it, or our lease ran out and another sweeper took it), the row is read again: a finished row is
   * left as it is; a 204 we received is still the truth about the session, so `closed` is written
   * over a row that is not finished. Anything else is left to whoever holds it. `recorded` says,
   * per item, whether our transition (or our `closed`) landed.
   */
  async writeOutcomes(requests: readonly TransitionRequest[]): Promise<{ recorded: boolean[]; finished: SessionToClose[] }> {
    const now = this.serviceNow();
    const results = await this.applyTransitions(requests, now);
    const finished: SessionToClose[] = [];
    const recorded = await Promise.all(
      results.map(async (result, i) => {
        const { row, transition } = requests[i]!;
        if (result.written) {
          if (transition.to !== "retry") finished.push(rowAfter(row, transition, now));
          return true;
        }
        if (result.reason === "gone" || transition.to !== "closed") return false;
        const current = await readRow(this.client, row, TO_CLOSE);
        if (!current || isTerminal(current.status)) return false;
        const closedAt = this.serviceNow();
        if (!(await this.applyTransition(current, { to: "closed" }, closedAt)).written) return false;
        finished.push(rowAfter(current, { to: "closed" }, closedAt));
        return true;
      }),
    );
    return { recorded, finished };
  }

  /**
   * Moves finished rows (written `closed`, `expired` or `failed`, with their `finishedAt`) to
   * history; others are left alone. Returns how many left the live table.
   */
  moveFinished(rows: readonly SessionToClose[]): Promise<number> {
    return this.history.move(rows.filter((row): row is SessionToClose & { finishedAt: Date } => isTerminal(row.status)).map(withFinishedAt));
  }

  /**
   * A row the sweeper cannot decode cannot be closed: it is marked `failed` with what was wrong,
   * so operators see it and it is not read again by every sweep. Conditional like every write.
   */
  async markMalformed(rows: readonly MalformedRow[]): Promise<WriteResult[]> {
    const now = this.serviceNow();
    const results = await writeConditionally(
      this.client,
      rows.map((row) => ({
        action: "merge",
        patch: {
          partitionKey: row.partitionKey,
          rowKey: row.rowKey,
          status: "failed",
          updatedAt: now,
          finishedAt: now,
          assertion: "",
          // A row of another schema version gets its own code: the fix is to upgrade its producer.
          ...errorColumns({ code: row.problems.some((p) => p.startsWith(UNSUPPORTED_SCHEMA)) ? Codes.UnsupportedSchemaVersion : Codes.MalformedRow, message: row.problems.join("; ") }),
        },
        etag: row.etag,
      })),
    );
    await this.history.moveAsStored(rows.filter((_, i) => results[i]!.written), now);
    return results;
  }

  /**
   * Reads the whole table for rows the stale query cannot see because they do not decode (a status
   * in other letters, a missing last activity, a `closing` row without a lease) and are not
   * finished, and marks them `failed` (MalformedRow) with what was wrong, so they show up for an
   * operator. Malformed means what it means to a sweep: the columns to close do not decode (a bad
   * column a sweeper never reads does not stop it closing the session, so it is not marked here
   * either). Finished rows still in the live table are moved to history. A scan of the live table:
   * the daily maintenance runs it, not every sweep.
   */
  async auditMalformed(): Promise<{ scanned: number; marked: number; moved: number; rows: MalformedRow[] }> {
    let scanned = 0;
    let marked = 0;
    const rows: MalformedRow[] = [];
    let moved = 0;
    for await (const page of this.query(TO_CLOSE_WITHOUT_ASSERTION, { pageSize: this.pageSize })) {
      scanned += page.rows.length + page.malformed.length;
      // What a move to history cut short left behind, copied as stored.
      moved += await this.history.moveAsStored(page.rows.filter((row) => isTerminal(row.status)), this.serviceNow());
      const finishedMalformed = page.malformed.filter((row) => TERMINAL_STATUSES.includes(row.storedStatus as SessionStatus));
      moved += await this.history.moveAsStored(finishedMalformed, this.serviceNow());
      const unfinished = page.malformed.filter((row) => !TERMINAL_STATUSES.includes(row.storedStatus as SessionStatus));
      if (unfinished.length === 0) continue;
      rows.push(...unfinished);
      marked += (await this.markMalformed(unfinished)).filter((r) => r.written).length;
    }
    return { scanned, marked, moved, rows };
  }

  /**
   * Drops the history tables whose week ended more than `retentionMs` ago: history goes a whole
   * table at a time, never row by row.
   */
  async purgeHistory(retentionMs: number, options: { now?: Date } = {}): Promise<{ droppedTables: string[] }> {
    const cutoff = new Date((options.now ?? this.clock()).getTime() - retentionMs);
    return { droppedTables: await this.history.purge(cutoff) };
  }

}

