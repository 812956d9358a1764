import { odata, type TableClient } from "@azure/data-tables";
import { Codes } from "../core/codes";
import { EVERY_COLUMN, TO_CLOSE, TO_CLOSE_WITHOUT_ASSERTION, type RowShape } from "./entity";
import { type ClaimResult, type LedgerPage, type MalformedRow, type SessionRecord, type WriteResult } from "./models";
import { isTerminal, TERMINAL_STATUSES, type RowTransition, type SessionKey, type SessionStatus, type SessionToClose, type TransitionRequest } from "../core/session";
import { readRow } from "./rows";
import { createLedgerTableClient, pagesWithTable, type LedgerClientOptions } from "./tableClient";
import { errorColumns, MAX_TRANSACTION_OPERATIONS, mergeIfUnchanged, PARALLEL_TRANSACTIONS, patchFor, writeConditionally, type ConditionalWrite } from "./transitions";
import type { ErrorInfo } from "../core/errors";

/**
 * Rows per query page. Table Storage allows 1,000, but the Tables SDK makes ~20 KB of short-lived
 * objects per row it reads, all at once for a page, and that burst is what sets a scan's peak
 * memory (a 1,000-row page: ~155 MB for a 100,000-row dry run; 500: ~120 MB). A sweep gains nothing
 * from the bigger page: it reads the next page as soon as it has claimed this one's rows, and a
 * tenant's Excel budget closes 150 sessions a second, so 500 rows are seconds of work.
 */
export const DEFAULT_PAGE_SIZE = 500;

export interface SessionLedgerOptions extends LedgerClientOptions {
  /** The clock for timestamps and thresholds. @default the system clock */
  clock?: () => Date;
  /** Rows per query page (Table Storage caps a page at 1,000). @default DEFAULT_PAGE_SIZE (500) */
  pageSize?: number;
}

export interface ListStaleOptions {
  /** "Now" for the threshold and for claim leases. @default the ledger's clock */
  now?: Date;
  /** Only this user's sessions (Entra object id). */
  userId?: string;
  /** Rows per page. @default the ledger's pageSize */
  pageSize?: number;
  /** Leave the encrypted assertion (the largest column) out: for a dry run, which needs no token. */
  withoutAssertion?: boolean;
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

  constructor(client: TableClient, options: SessionLedgerOptions = {}) {
    this.client = client;
    this.clock = options.clock ?? (() => new Date());
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
  }

  static fromConnectionString(connectionString: string, tableName: string, options: SessionLedgerOptions = {}): SessionLedger {
    return new SessionLedger(createLedgerTableClient(connectionString, tableName, options), options);
  }

  /**
   * Creates the table if it does not exist yet. Not needed before use: the first query on a missing
   * table creates it.
   */
  async ensureTable(): Promise<void> {
    await this.client.createTable();
  }

  /** Every column of one row; undefined when there is none. A malformed row throws MalformedRowError. */
  get(key: SessionKey): Promise<SessionRecord | undefined> {
    return readRow(this.client, key, EVERY_COLUMN);
  }

  /**
   * What a sweeper needs of one row to close its session, read and judged as the stale query
   * reads it; undefined when there is no such row. A malformed row throws MalformedRowError.
   */
  getToClose(key: SessionKey): Promise<SessionToClose | undefined> {
    return readRow(this.client, key, TO_CLOSE);
  }

  /**
   * Sessions to close, a page at a time, filtered by the table service: `open` rows whose last
   * activity is older than `olderThanMs`, and `closing` rows whose claim lease has run out (their
   * sweeper died). Rows that fail to decode come back in `malformed`, never as an exception.
   * Rows with a future `nextAttemptAt` are included: the caller decides (and counts) what to skip.
   * Only the columns to close are read (`SessionToClose`).
   */
  async *listStale(olderThanMs: number, options: ListStaleOptions = {}): AsyncIterableIterator<LedgerPage<SessionToClose>> {
    const now = options.now ?? this.clock();
    const cutoff = new Date(now.getTime() - olderThanMs);
    const filter =
      options.userId === undefined
        ? odata`(status eq ${"open"} and lastActivityAt lt ${cutoff}) or (status eq ${"closing"} and leaseUntil lt ${now})`
        : odata`userId eq ${options.userId} and ((status eq ${"open"} and lastActivityAt lt ${cutoff}) or (status eq ${"closing"} and leaseUntil lt ${now}))`;
    yield* this.query(options.withoutAssertion ? TO_CLOSE_WITHOUT_ASSERTION : TO_CLOSE, { filter, pageSize: options.pageSize ?? this.pageSize });
  }

  /** Every row, every column, a page at a time (for operators and the demo). */
  async *listAll(options: { pageSize?: number } = {}): AsyncIterableIterator<LedgerPage> {
    yield* this.query(EVERY_COLUMN, { pageSize: options.pageSize ?? this.pageSize });
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
    const now = options.now ?? this.clock();
    const leaseUntil = new Date(now.getTime() + options.leaseMs);
    const claims = rows.map((row) => ({ status: "closing" as const, leaseUntil, attempts: row.attempts + 1, updatedAt: now }));
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
    const now = this.clock();
    return writeConditionally(
      this.client,
      claims.map(({ claimed, original }) => ({
        action: "merge",
        patch: {
          partitionKey: claimed.partitionKey,
          rowKey: claimed.rowKey,
          status: original.status,
          attempts: original.attempts,
          leaseUntil: original.leaseUntil ?? now,
          updatedAt: now,
          ...(options.nextAttemptAt && { nextAttemptAt: options.nextAttemptAt }),
        },
        etag: claimed.etag,
      })),
    );
  }

  markClosed(row: SessionToClose): Promise<WriteResult> {
    return this.applyTransition(row, { to: "closed" });
  }

  markExpired(row: SessionToClose, error: ErrorInfo): Promise<WriteResult> {
    return this.applyTransition(row, { to: "expired", error });
  }

  markFailed(row: SessionToClose, error: ErrorInfo): Promise<WriteResult> {
    return this.applyTransition(row, { to: "failed", error });
  }

  /** Back to `open`, not to be tried before `at`. */
  scheduleRetry(row: SessionToClose, at: Date, error: ErrorInfo): Promise<WriteResult> {
    return this.applyTransition(row, { to: "retry", at, error });
  }

  /** One transition of a claimed row, conditional on its ETag. */
  applyTransition(row: SessionToClose, transition: RowTransition): Promise<WriteResult> {
    return mergeIfUnchanged(this.client, patchFor(row, transition, this.clock()), row.etag);
  }

  /**
   * Many transitions at once: a transaction per partition and 100 rows, falling back to single
   * writes in a chunk where one row changed. Results are in the order of `requests`.
   */
  applyTransitions(requests: readonly TransitionRequest[]): Promise<WriteResult[]> {
    const now = this.clock();
    return writeConditionally(
      this.client,
      requests.map(({ row, transition }) => ({ action: "merge", patch: patchFor(row, transition, now), etag: row.etag })),
    );
  }

  /**
   * Writes transitions on the claimed rows' ETags (batched by partition). Where a row changed
   * meanwhile (its producer released it, or our lease ran out and another sweeper took it), the row
   * is read again: a finished row is left as it is; a 204 we received is still the truth about the
   * session, so `closed` is written over a row that is not finished. Anything else is left to
   * whoever holds it. Returns, per item, whether our transition (or our `closed`) landed.
   */
  async recordTransitions(requests: readonly TransitionRequest[]): Promise<boolean[]> {
    const results = await this.applyTransitions(requests);
    return Promise.all(
      results.map(async (result, i) => {
        if (result.written) return true;
        const { row, transition } = requests[i]!;
        if (result.reason === "gone" || transition.to !== "closed") return false;
        const current = await this.getToClose(row);
        if (!current || isTerminal(current.status)) return false;
        return (await this.markClosed(current)).written;
      }),
    );
  }

  /**
   * A row the sweeper cannot decode cannot be closed: it is marked `failed` with what was wrong,
   * so operators see it and it is not read again by every sweep. Conditional like every write.
   */
  markMalformed(rows: readonly MalformedRow[]): Promise<WriteResult[]> {
    const now = this.clock();
    return writeConditionally(
      this.client,
      rows.map((row) => ({
        action: "merge",
        patch: {
          partitionKey: row.partitionKey,
          rowKey: row.rowKey,
          status: "failed",
          updatedAt: now,
          assertion: "",
          ...errorColumns({ code: Codes.MalformedRow, message: row.problems.join("; ") }),
        },
        etag: row.etag,
      })),
    );
  }

  /**
   * Reads the whole table for rows the stale query cannot see because they do not decode (a status
   * in other letters, a missing last activity, a `closing` row without a lease) and are not
   * finished, and marks them `failed` (MalformedRow) with what was wrong, so they show up for an
   * operator. Malformed means what it means to a sweep: the columns to close do not decode (a bad
   * column a sweeper never reads does not stop it closing the session, so it is not marked here
   * either). A full scan: the purge timer runs it daily, not every sweep.
   */
  async auditMalformed(): Promise<{ scanned: number; marked: number; rows: MalformedRow[] }> {
    let scanned = 0;
    let marked = 0;
    const rows: MalformedRow[] = [];
    for await (const page of this.query(TO_CLOSE_WITHOUT_ASSERTION, { pageSize: this.pageSize })) {
      scanned += page.rows.length + page.malformed.length;
      const unfinished = page.malformed.filter((row) => !TERMINAL_STATUSES.includes(row.storedStatus as SessionStatus));
      if (unfinished.length === 0) continue;
      rows.push(...unfinished);
      marked += (await this.markMalformed(unfinished)).filter((r) => r.written).length;
    }
    return { scanned, marked, rows };
  }

  /**
   * Deletes `closed`, `expired` and `failed` rows last changed before `retentionMs` ago. Terminal
   * rows are never written again (release and record leave them as they are), so the deletes need
   * no ETag.
   */
  async purgeTerminal(retentionMs: number, options: { now?: Date } = {}): Promise<{ deleted: number }> {
    const cutoff = new Date((options.now ?? this.clock()).getTime() - retentionMs);
    const filter = odata`(status eq ${"closed"} or status eq ${"expired"} or status eq ${"failed"}) and updatedAt lt ${cutoff}`;
    const pages = pagesWithTable(this.client, () =>
      this.client.listEntities<Record<string, unknown>>({ queryOptions: { filter, select: ["PartitionKey", "RowKey"] } }).byPage({ maxPageSize: this.pageSize }),
    );
    let deleted = 0;
    for await (const page of pages) {
      const writes: ConditionalWrite[] = page.map((entity) => ({
        action: "delete",
        patch: { partitionKey: entity.partitionKey!, rowKey: entity.rowKey! },
      }));
      for (const result of await writeConditionally(this.client, writes)) if (result.written) deleted++;
    }
    return { deleted };
  }
}

