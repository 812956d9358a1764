/**
 * The floors a sweep cannot beat, measured or computed in the same run:
 * - Graph: max over tenants of requests ÷ the budget's rate, and max over workbooks of sessions × L
 *   (one request at a time per workbook);
 * - Table: the time to make the same row writes (per stale row a claim, an outcome, its history row
 *   and the live row's delete: ledger v2 moves every finished session) as entity-group transactions
 *   of up to 100 rows, with no Graph call in between.
 */
import { odata, type TableClient, type TableEntityResult, type TransactionAction } from "@azure/data-tables";
import { OnBehalfOfCredential } from "@azure/identity";
import { AssertionOpener } from "../src/core/assertionSealing";
import { historyTableName } from "../src/ledger/history";
import { createLedgerTableClient } from "../src/ledger/tableClient";
import { chunk, groupBy, mapConcurrent } from "../src/utils/concurrency";
import type { Contender } from "./contenders/types";
import { staleLoad, tableClientFor, type DatasetPlan, type SeededTable } from "./dataset";
import type { BenchEnvironment } from "./environment";
import type { TenantBudget } from "./options";

export interface GraphFloor {
  /** max over tenants of stale sessions × windowMs ÷ requests; 0 without a budget. */
  budgetMs: number;
  /** max over workbooks of stale sessions × latency. */
  workbookMs: number;
  floorMs: number;
}

export function graphFloor(plan: DatasetPlan, budget: TenantBudget | null, latencyMs: number): GraphFloor {
  const load = staleLoad(plan);
  const budgetMs = budget ? Math.max(0, ...[...load.perTenant.values()].map((n) => (n * budget.windowMs) / budget.requests)) : 0;
  const workbookMs = load.maxPerWorkbook * latencyMs;
  return { budgetMs, workbookMs, floorMs: Math.max(budgetMs, workbookMs) };
}

export interface TableFloor {
  /** Row writes made: a claim, an outcome, a history row and a delete per stale row. */
  rowWrites: number;
  transactions: number;
  /** Time of the writes alone. */
  floorMs: number;
  /** The filtered scan that found the rows (not part of the floor, for reference). */
  scanMs: number;
}

/** On a table seeded with the stale rows: scan them, then claim all, close all and move all to history, in transactions. */
export async function measureTableFloor(env: BenchEnvironment, seeded: SeededTable, parallel = 8): Promise<TableFloor> {
  const client = tableClientFor(env.connectionString, seeded.tableName);
  const scanStarted = performance.now();
  const rows: { partitionKey: string; rowKey: string; etag: string }[] = [];
  const cutoff = new Date(Date.now() - 15 * 60_000);
  const filter = odata`status eq ${"open"} and (Timestamp lt ${cutoff} or heartbeatSeenAt lt ${cutoff})`;
  for await (const page of client.listEntities<Record<string, unknown>>({ queryOptions: { filter } }).byPage({ maxPageSize: 1_000 })) {
    for (const e of page) rows.push({ partitionKey: e.partitionKey!, rowKey: e.rowKey!, etag: e.etag });
  }
  const scanMs = performance.now() - scanStarted;

  const chunks = [...groupBy(rows, (r) => r.partitionKey).values()].flatMap((group) => chunk(group, 100));
  let transactions = 0;
  const started = performance.now();
  const now = new Date();
  const transact = (target: TableClient, actions: (items: typeof rows) => TransactionAction[], after?: (items: typeof rows, etags: (string | undefined)[]) => void) =>
    mapConcurrent(chunks, parallel, async (items) => {
      const response = await target.submitTransaction(actions(items));
      transactions++;
      after?.(items, response.subResponses.map((r) => r.etag));
    });
  const keepEtags = (items: typeof rows, etags: (string | undefined)[]) => items.forEach((r, i) => (r.etag = etags[i] ?? r.etag));
  for (const patch of [
    { status: "closing", leaseUntil: new Date(now.getTime() + 5 * 60_000), attempts: 1, updatedAt: now },
    { status: "closed", closedAt: now, closedBy: "sweeper", finishedAt: now, assertion: "", updatedAt: now },
  ]) {
    await transact(client, (items) => items.map((r) => ["update", { partitionKey: r.partitionKey, rowKey: r.rowKey, ...patch }, "Merge", { etag: r.etag }]), keepEtags);
  }
  const history = tableClientFor(env.connectionString, historyTableName(seeded.tableName, now));
  await history.createTable();
  await transact(history, (items) => items.map((r) => ["upsert", { partitionKey: r.partitionKey, rowKey: r.rowKey, status: "closed", closedAt: now, closedBy: "sweeper", finishedAt: now }, "Replace"]));
  await transact(client, (items) => items.map((r) => ["delete", { partitionKey: r.partitionKey, rowKey: r.rowKey }]));
  return { rowWrites: rows.length * 4, transactions, floorMs: performance.now() - started, scanMs };
}

/**
 * The Graph round trips alone, as fast as this machine's stand-ins answer them: one token per user
 * (fetched first, not timed), then every stale session's closeSession with plain fetch, each
 * workbook's one at a time and up to `parallel` workbooks at once. No ledger, no SDK middleware.
 * Not one of the floors (those assume Graph costs only its latency); it shows what the
 * https stand-ins and the client's TLS cost on this machine.
 */
export const graphRoundTrips: Contender = async ({ settings, parallel = 128 }) => {
  const client = createLedgerTableClient(settings.AzureWebJobsStorage!, settings.SESSIONS_TABLE!);
  const opener = new AssertionOpener({ privateKeys: [settings.ASSERTION_PRIVATE_KEY!] });
  const rows: TableEntityResult<Record<string, unknown>>[] = [];
  for await (const row of client.listEntities<Record<string, unknown>>({ queryOptions: { filter: odata`status eq ${"open"}` } })) rows.push(row);
  const users = [...groupBy(rows, (r) => r.partitionKey!).values()];
  const tokens = new Map<string, string>();
  const tokenStarted = performance.now();
  await mapConcurrent(users, 16, async ([first]) => {
    const credentialOptions = {
      tenantId: String(first!.tenantId),
      clientId: settings.AZURE_CLIENT_ID!,
      clientSecret: settings.AZURE_CLIENT_SECRET!,
      userAssertionToken: await opener.open(String(first!.assertion), { partitionKey: first!.partitionKey!, rowKey: first!.rowKey! }),
      authorityHost: settings.AZURE_AUTHORITY_HOST!,
      disableInstanceDiscovery: true,
    };
    tokens.set(first!.partitionKey!, (await new OnBehalfOfCredential(credentialOptions).getToken(settings.GRAPH_SCOPE!)).token);
  });
  const tokenMs = performance.now() - tokenStarted;
  const workbooks = [...groupBy(rows, (r) => `${String(r.tenantId)}|${String(r.workbook)}`).values()];
  let closed = 0;
  const started = performance.now();
  await mapConcurrent(workbooks, parallel, async (sessions) => {
    for (const row of sessions) {
      const response = await fetch(`${settings.GRAPH_BASE_URL}${String(row.workbook)}/workbook/closeSession`, {
        method: "POST",
        headers: { authorization: `Bearer ${tokens.get(row.partitionKey!)}`, "workbook-session-id": String(row.sessionId) },
      });
      await response.arrayBuffer();
      if (response.status === 204) closed++;
    }
  });
  const closeMs = performance.now() - started;
  return { attempted: rows.length, closed, errors: rows.length - closed, timings: { closeMs, tokenMs, parallel } };
};
