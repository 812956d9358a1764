/**
 * The data every contender gets: the same users, tenants, workbooks and mix of rows, seeded into a
 * fresh table per run. Rows are valid ledger rows as SessionProducer writes them (decodeEntity
 * reads them back), assertion sealed with AssertionSealer for the run's public key and bound to its
 * row, and written fast: transactions of up to 100 rows of one partition (one user), each
 * transaction's rows sealed just before it is sent, so sealing (CPU here) overlaps the writes.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { TableClient, type TransactionAction } from "@azure/data-tables";
import { AssertionSealer } from "../src/core/assertionSealing";
import { Codes } from "../src/core/codes";
import { historyTableName, type HistoryEntity } from "../src/ledger/history";
import { END_OF_TIME } from "../src/ledger/liveness";
import { SCHEMA_VERSION, type SessionEntity } from "../src/ledger/entity";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { isLoopbackEmulator } from "../src/ledger/storageConnection";
import { chunk, groupBy, mapConcurrent } from "../src/utils/concurrency";
import type { BenchEnvironment } from "./environment";
import type { BenchOptions } from "./options";

export type RowKind = "stale" | "fresh" | "closed";

export interface BenchUser {
  readonly index: number;
  readonly tenantId: string;
  readonly userId: string;
}

export interface PlannedRow {
  readonly user: number;
  readonly kind: RowKind;
  /** `/drives/{drive}/items/{item}`: one drive per user, `workbooksPerUser` items. */
  readonly workbook: string;
}

export interface DatasetPlan {
  readonly tenants: readonly string[];
  readonly users: readonly BenchUser[];
  /** Stale rows first (in the order they were planned), then fresh, then closed. */
  readonly rows: readonly PlannedRow[];
  readonly counts: Record<RowKind, number>;
}

/** What a seeded row was, to check its final state against. */
export interface SeededRow {
  readonly kind: RowKind;
  readonly partitionKey: string;
  readonly rowKey: string;
  readonly tenantId: string;
  readonly sessionId: string;
  /** The workbook as the emulator keys it (per tenant). */
  readonly workbook: string;
  /** The ETag right after seeding: a row left alone still has it. */
  readonly etag: string;
}

export interface SeededTable {
  readonly tableName: string;
  readonly rows: readonly SeededRow[];
  readonly seedMs: number;
}

export const STALE_IDLE_MS = 60 * 60_000;

export function planDataset(options: Pick<BenchOptions, "stale" | "fresh" | "users" | "tenants" | "workbooksPerUser">): DatasetPlan {
  const tenants = Array.from({ length: options.tenants }, () => randomUUID());
  const users = Array.from({ length: options.users }, (_, index) => ({ index, tenantId: tenants[index % tenants.length]!, userId: randomUUID() }));
  const rows: PlannedRow[] = [];
  const add = (kind: RowKind, count: number) => {
    for (let i = 0; i < count; i++) {
      const user = i % users.length;
      const ordinal = Math.floor(i / users.length);
      rows.push({ user, kind, workbook: `/drives/b!u${user}/items/wb${ordinal % options.workbooksPerUser}` });
    }
  };
  const fresh = Math.ceil(options.fresh / 2);
  add("stale", options.stale);
  add("fresh", fresh);
  add("closed", options.fresh - fresh);
  return { tenants, users, rows, counts: { stale: options.stale, fresh, closed: options.fresh - fresh } };
}

/** Stale sessions per tenant and per workbook: what the Graph floor is made of. */
export function staleLoad(plan: DatasetPlan): { perTenant: Map<string, number>; maxPerWorkbook: number } {
  const perTenant = new Map<string, number>();
  const perWorkbook = new Map<string, number>();
  for (const row of plan.rows) {
    if (row.kind !== "stale") continue;
    const tenant = plan.users[row.user]!.tenantId;
    perTenant.set(tenant, (perTenant.get(tenant) ?? 0) + 1);
    const key = `${tenant}|${row.workbook}`;
    perWorkbook.set(key, (perWorkbook.get(key) ?? 0) + 1);
  }
  return { perTenant, maxPerWorkbook: Math.max(0, ...perWorkbook.values()) };
}

export function tableClientFor(connectionString: string, tableName: string): TableClient {
  return TableClient.fromConnectionString(connectionString, tableName, { allowInsecureConnection: isLoopbackEmulator(connectionString) });
}

/**
 * A fresh table with the plan's rows: stale and fresh rows get a session opened on the Graph
 * emulator (as their producer's createSession did), closed rows were closed and released by their
 * producer. Assertions are the users' own, issued by the fake authority.
 */
export async function seedTable(env: BenchEnvironment, plan: DatasetPlan, tableName: string, options: { kinds?: readonly RowKind[] } = {}): Promise<SeededTable> {
  const started = performance.now();
  const client = tableClientFor(env.connectionString, tableName);
  await client.createTable();
  const sealer = AssertionSealer.fromPublicKey(env.assertionKeys.publicKey);
  const assertions = new Map<number, string>();
  const assertionOf = (user: BenchUser) => {
    let assertion = assertions.get(user.index);
    if (!assertion) assertions.set(user.index, (assertion = env.authority.issueUserAssertion({ tenantId: user.tenantId, userId: user.userId, audience: env.clientId, lifetimeSec: 6 * 3_600 })));
    return assertion;
  };
  const now = Date.now();
  const entities: { table: string; entity: SessionEntity | HistoryEntity; seeded: Omit<SeededRow, "etag"> }[] = [];
  // The assertion each live row is sealed with, as its transaction is sent.
  const toSeal = new Map<SessionEntity | HistoryEntity, string>();
  for (const row of plan.rows) {
    if (options.kinds && !options.kinds.includes(row.kind)) continue;
    const user = plan.users[row.user]!;
    const sessionId =
      row.kind === "closed"
        ? graphLikeSessionId()
        : env.emulator.openSession({ tenantId: user.tenantId, userId: user.userId, workbook: row.workbook });
    const keys = { partitionKey: partitionKeyFor(user.tenantId, user.userId), rowKey: rowKeyFor(sessionId) };
    const lastActivityAt = new Date(row.kind === "fresh" ? now : now - STALE_IDLE_MS);
    const createdAt = new Date(lastActivityAt.getTime() - 10 * 60_000);
    const common = { ...keys, schemaVersion: SCHEMA_VERSION, tenantId: user.tenantId, userId: user.userId, sessionId, workbook: row.workbook, persistChanges: true, createdAt, recordedBy: "bench" };
    const seeded = { kind: row.kind, ...keys, tenantId: user.tenantId, sessionId, workbook: row.workbook };
    if (row.kind === "closed") {
      // Released by its producer, which moved it to history (SessionProducer.release): the live table holds none.
      const entity: HistoryEntity = { ...common, status: "closed", attempts: 0, lastActivityAt, finishedAt: lastActivityAt, closedAt: lastActivityAt, closedBy: "producer" };
      entities.push({ table: historyTableName(tableName, lastActivityAt), entity, seeded });
      continue;
    }
    const entity: SessionEntity = {
      ...common,
      // Liveness by the service's clock (src/ledger/liveness.ts): a stale row silent since lastActivityAt.
      heartbeatSeenAt: row.kind === "fresh" ? END_OF_TIME : lastActivityAt,
      leaseSeconds: 0,
      updatedAt: lastActivityAt,
      status: "open",
      attempts: 0,
      assertion: "",
    };
    toSeal.set(entity, assertionOf(user));
    entities.push({ table: tableName, entity, seeded });
  }
  const etags = new Array<string>(entities.length);
  for (const [table, group] of groupBy(entities.map((e, index) => ({ ...e, index })), (e) => e.table)) {
    const target = table === tableName ? client : tableClientFor(env.connectionString, table);
    if (target !== client) await target.createTable();
    const written = await insertAll(target, group.map((e) => e.entity), (entity) => sealInto(sealer, entity, toSeal.get(entity)));
    group.forEach((e, i) => (etags[e.index] = written[i]!));
  }
  return {
    tableName,
    rows: entities.map((e, i) => ({ ...e.seeded, etag: etags[i]! })),
    seedMs: performance.now() - started,
  };
}

/**
 * A table of `count` stale rows over `users` users, for the dry-run memory scan: valid rows with
 * sealed assertions, no Graph sessions behind them (a dry run sends nothing).
 */
export async function seedScanTable(env: BenchEnvironment, plan: DatasetPlan, tableName: string, count: number): Promise<{ seedMs: number }> {
  const started = performance.now();
  const client = tableClientFor(env.connectionString, tableName);
  await client.createTable();
  const sealer = AssertionSealer.fromPublicKey(env.assertionKeys.publicKey);
  const lastActivityAt = new Date(Date.now() - STALE_IDLE_MS);
  const createdAt = new Date(lastActivityAt.getTime() - 10 * 60_000);
  // One shared assertion text per user: the sealed value still differs per row (its ephemeral key and AAD).
  const assertions = plan.users.map((u) => env.authority.issueUserAssertion({ tenantId: u.tenantId, userId: u.userId, audience: env.clientId, lifetimeSec: 6 * 3_600 }));
  const assertionByPartition = new Map(plan.users.map((u) => [partitionKeyFor(u.tenantId, u.userId), assertions[u.index]!]));
  const batch = 20_000;
  for (let from = 0; from < count; from += batch) {
    const entities: SessionEntity[] = [];
    for (let i = from; i < Math.min(count, from + batch); i++) {
      const user = plan.users[i % plan.users.length]!;
      const sessionId = graphLikeSessionId();
      const keys = { partitionKey: partitionKeyFor(user.tenantId, user.userId), rowKey: rowKeyFor(sessionId) };
      entities.push({
        ...keys,
        schemaVersion: SCHEMA_VERSION,
        tenantId: user.tenantId,
        userId: user.userId,
        sessionId,
        workbook: `/drives/b!u${user.index}/items/wb${Math.floor(i / plan.users.length) % 5}`,
        persistChanges: true,
        createdAt,
        heartbeatSeenAt: lastActivityAt,
        leaseSeconds: 0,
        updatedAt: lastActivityAt,
        status: "open",
        attempts: 0,
        recordedBy: "bench",
        assertion: "",
      });
    }
    await insertAll(client, entities, (entity) => sealInto(sealer, entity, assertionByPartition.get(entity.partitionKey)));
  }
  return { seedMs: performance.now() - started };
}

/** How far back the history scenario's finished sessions go: a week, so two weekly tables (this week's and the last). */
export const HISTORY_SPAN_MS = 7 * 24 * 3_600_000;

export interface SeededHistory {
  /** The history tables written, oldest week first. */
  readonly tables: readonly string[];
  readonly rows: number;
  readonly seedMs: number;
}

/**
 * `count` finished sessions in the history of the ledger whose live table is `liveTable`, as the
 * app's move to history writes them (`HistoryEntity`, into `historyTableName(liveTable, finishedAt)`):
 * finished evenly over the last week, so in this ISO week's table and the last one's, spread over
 * the plan's users (one partition each), most closed by their producer, some by a sweeper, a few
 * expired or failed. No Graph session behind any of them: nothing reads them but a scan of history.
 */
export async function seedHistory(env: BenchEnvironment, plan: DatasetPlan, liveTable: string, count: number, now = new Date()): Promise<SeededHistory> {
  const started = performance.now();
  const clients = new Map<string, TableClient>();
  const batch = 20_000;
  for (let from = 0; from < count; from += batch) {
    const byTable = new Map<string, HistoryEntity[]>();
    for (let i = from; i < Math.min(count, from + batch); i++) {
      const user = plan.users[i % plan.users.length]!;
      const sessionId = graphLikeSessionId();
      const finishedAt = new Date(now.getTime() - Math.floor(((i + 0.5) / count) * HISTORY_SPAN_MS));
      const lastActivityAt = new Date(finishedAt.getTime() - 20 * 60_000);
      const kind = i % 20;
      const status = kind === 18 ? "expired" : kind === 19 ? "failed" : "closed";
      const entity: HistoryEntity = {
        partitionKey: partitionKeyFor(user.tenantId, user.userId),
        rowKey: rowKeyFor(sessionId),
        schemaVersion: SCHEMA_VERSION,
        tenantId: user.tenantId,
        userId: user.userId,
        sessionId,
        workbook: `/drives/b!u${user.index}/items/wb${Math.floor(i / plan.users.length) % 5}`,
        status,
        attempts: status === "closed" && kind < 14 ? 0 : 1,
        lastActivityAt,
        finishedAt,
        createdAt: new Date(lastActivityAt.getTime() - 30 * 60_000),
        persistChanges: true,
        recordedBy: "bench",
        ...(status === "closed" && { closedAt: finishedAt, closedBy: kind < 14 ? "producer" : "sweeper" }),
        ...(status === "failed" && { lastErrorCode: Codes.AssertionUnreadable, lastErrorMessage: "The stored assertion could not be decrypted." }),
      };
      const table = historyTableName(liveTable, finishedAt);
      let rows = byTable.get(table);
      if (!rows) byTable.set(table, (rows = []));
      rows.push(entity);
    }
    for (const [table, rows] of byTable) {
      let client = clients.get(table);
      if (!client) {
        clients.set(table, (client = tableClientFor(env.connectionString, table)));
        await client.createTable();
      }
      await insertAll(client, rows);
    }
  }
  return { tables: [...clients.keys()].sort(), rows: count, seedMs: performance.now() - started };
}

/**
 * Seals `assertion` (if any) into the live row's `assertion` column, bound to the row, as
 * SessionProducer does. ~1 ms of CPU per value.
 */
async function sealInto(sealer: AssertionSealer, entity: SessionEntity | HistoryEntity, assertion: string | undefined): Promise<void> {
  if (assertion === undefined) return;
  (entity as SessionEntity).assertion = await sealer.seal(assertion, { partitionKey: entity.partitionKey, rowKey: entity.rowKey });
}

/**
 * Inserts in transactions of ≤ 100 rows of one partition, 8 at a time; returns each row's ETag.
 * `prepare` (sealing the assertion) runs on a transaction's rows, concurrently, just before it is
 * sent: one transaction's sealing overlaps the others' writes.
 */
async function insertAll<E extends SessionEntity | HistoryEntity>(client: TableClient, entities: readonly E[], prepare?: (entity: E) => Promise<void>): Promise<string[]> {
  const indexed = entities.map((entity, index) => ({ entity, index }));
  const chunks = [...groupBy(indexed, (e) => e.entity.partitionKey).values()].flatMap((group) => chunk(group, 100));
  const etags = new Array<string>(entities.length);
  await mapConcurrent(chunks, 8, async (items) => {
    if (prepare) await Promise.all(items.map(({ entity }) => prepare(entity)));
    const actions: TransactionAction[] = items.map(({ entity }) => ["create", entity as unknown as Record<string, unknown> & { partitionKey: string; rowKey: string }]);
    const response = await client.submitTransaction(actions);
    items.forEach(({ index }, position) => {
      etags[index] = response.subResponses[position]?.etag ?? "";
    });
  });
  return etags;
}

/** A session id shaped like Graph's (long, with `/`, `+`, `=`, `&`). */
function graphLikeSessionId(): string {
  return `cluster=PS2&session=15.BENCH.A1.E1.${randomBytes(120).toString("base64")}&usid=${randomUUID()}`;
}
