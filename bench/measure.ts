import { SessionLedger } from "../src/ledger/SessionLedger";
/**
 * What the bench reads back after a run: every row's final state against what it should be, and
 * the Graph requests the emulator and the authority saw.
 */
import type { RecordedRequest } from "../standins/graphEmulator";
import type { BenchEnvironment } from "./environment";
import { tableClientFor, type SeededRow, type SeededTable } from "./dataset";
import type { TenantBudget } from "./options";

export interface Correctness {
  /** Rows checked (every seeded row). */
  checked: number;
  /** Rows not in the state they should be in. */
  wrongRows: number;
  /** Up to 10 of them, with what was wrong. */
  examples: string[];
  /** Stale rows closed in the ledger and on Graph. */
  closed: number;
}

/**
 * Every seeded row must be as it should: a stale row the contender was to handle is `closed` and
 * its Graph session closed; every other row (fresh, producer-closed, and stale rows outside
 * naive's prefix) untouched (same ETag) and, if open, its Graph session still open. `read`:
 * `scan` (the default) lists the live table and all of history; `point` reads each seeded row by
 * its keys (a few rows over a long history).
 */
export async function verifyRows(
  env: BenchEnvironment,
  seeded: SeededTable,
  attemptedKeys?: readonly string[],
  options: { read?: "scan" | "point" } = {},
): Promise<Correctness> {
  const client = tableClientFor(env.connectionString, seeded.tableName);
  const actual = new Map<string, Record<string, unknown> & { etag: string }>();
  // Finished sessions have moved to history; where a contender leaves them in the live table, they stay there.
  const history = SessionLedger.fromConnectionString(env.connectionString, seeded.tableName).history;
  if (options.read === "point") {
    // A few rows over a long history: each read where it is, the live table first, then history newest week first.
    for (const row of seeded.rows) {
      const key = `${row.partitionKey}/${row.rowKey}`;
      try {
        actual.set(key, await client.getEntity<Record<string, unknown>>(row.partitionKey, row.rowKey));
      } catch (error) {
        if ((error as { statusCode?: number }).statusCode !== 404) throw error;
        const stored = await history.storedEntity(row);
        if (stored) actual.set(key, stored as Record<string, unknown> & { etag: string });
      }
    }
  } else {
    for await (const entity of client.listEntities<Record<string, unknown>>()) actual.set(`${entity.partitionKey}/${entity.rowKey}`, entity);
    for await (const page of history.pages(1_000)) {
      for (const entity of page) actual.set(`${entity.partitionKey}/${entity.rowKey}`, entity as Record<string, unknown> & { etag: string });
    }
  }
  const attempted = attemptedKeys ? new Set(attemptedKeys) : undefined;
  const result: Correctness = { checked: 0, wrongRows: 0, examples: [], closed: 0 };
  for (const row of seeded.rows) {
    result.checked++;
    const key = `${row.partitionKey}/${row.rowKey}`;
    const problem = problemOf(env, row, actual.get(key), row.kind === "stale" && (!attempted || attempted.has(key)));
    if (problem === undefined) {
      if (row.kind === "stale" && actual.get(key)?.status === "closed") result.closed++;
      continue;
    }
    result.wrongRows++;
    if (result.examples.length < 10) result.examples.push(`${row.kind} row ${key.slice(0, 24)}…: ${problem}`);
  }
  return result;
}

function problemOf(env: BenchEnvironment, row: SeededRow, entity: (Record<string, unknown> & { etag: string }) | undefined, mustClose: boolean): string | undefined {
  if (!entity) return "row is gone";
  const graph = env.emulator.sessionState(row.sessionId);
  if (mustClose) {
    if (entity.status !== "closed") return `status ${String(entity.status)}, expected closed${entity.lastErrorCode ? ` (${String(entity.lastErrorCode)}: ${String(entity.lastErrorMessage ?? "").slice(0, 160)})` : ""}`;
    if (graph !== "closed") return `row closed but the Graph session is ${graph}`;
    return undefined;
  }
  if (entity.etag !== row.etag) return `was written (status ${String(entity.status)}), expected untouched`;
  // A session its producer closed has no Graph session behind it; any other must still be open.
  if (row.kind !== "closed" && graph !== "open") return `Graph session is ${graph}, expected open`;
  return undefined;
}

export interface GraphFigures {
  /** closeSession requests that reached the emulator (429s included). */
  requests: number;
  throttled: number;
  /** Answers other than 204 and 429. */
  otherErrors: number;
  /** Token requests the authority answered. */
  tokenRequests: number;
  maxConcurrentPerWorkbook: number;
  /**
   * Requests that reached a workbook before the emulator had finished answering the one before on
   * it, and by how much at most. The emulator counts a request in flight until its answer's
   * 'finish' event, which under load can run a few ms after the client already has the answer and
   * sent the next one: an overlap of a few ms is that; one of about the latency is a real overlap.
   */
  workbookOverlaps: { count: number; maxOverlapMs: number };
  /**
   * Graph requests in flight on average (at the emulator, from the first arrival to the last
   * answer): Little's law, rate × time per request. What the contender's concurrency really was.
   */
  meanInFlight: number;
  /** Mean time from a request's arrival to its answer at the emulator (ms): the latency plus the emulator's own work. */
  meanServiceMs: number;
  /** Per tenant: accepted requests, and how busy its budget was kept (null: the budget never filled a window). */
  perTenant: Record<
    string,
    {
      accepted: number;
      throttled: number;
      maxInWindow: number | null;
      budgetUtilization: number | null;
      /** Accepted requests per second of the run, from its first Graph request. */
      acceptedPerSecond: number[];
    }
  >;
}

export function graphFigures(env: BenchEnvironment, budget: TenantBudget | null): GraphFigures {
  const requests = env.emulator.requests;
  const stats = env.emulator.stats();
  const byTenant = new Map<string, RecordedRequest[]>();
  for (const r of requests) {
    const tenant = r.tenantId ?? "?";
    let list = byTenant.get(tenant);
    if (!list) byTenant.set(tenant, (list = []));
    list.push(r);
  }
  const perTenant: GraphFigures["perTenant"] = {};
  const first = Math.min(...requests.map((r) => r.startedAt));
  for (const [tenant, list] of byTenant) {
    const accepted = list.filter((r) => r.status !== 429).map((r) => r.startedAt);
    const perSecond: number[] = [];
    for (const at of accepted) {
      const second = Math.floor((at - first) / 1000);
      while (perSecond.length <= second) perSecond.push(0);
      perSecond[second]!++;
    }
    perTenant[tenant] = {
      accepted: accepted.length,
      throttled: list.length - accepted.length,
      maxInWindow: budget ? stats.maxTenantRequestsInWindow(tenant, budget.windowMs) : null,
      budgetUtilization: budget ? budgetUtilization(accepted, budget) : null,
      acceptedPerSecond: perSecond,
    };
  }
  return {
    requests: requests.length,
    throttled: requests.filter((r) => r.status === 429).length,
    otherErrors: requests.filter((r) => r.status !== 204 && r.status !== 429).length,
    tokenRequests: env.authority.tokenRequests.filter((r) => r.status === 200).length,
    maxConcurrentPerWorkbook: stats.maxConcurrentPerWorkbook,
    workbookOverlaps: workbookOverlaps(requests),
    ...inFlight(requests),
    perTenant,
  };
}

/**
 * How full a tenant's budget was kept: the time average, from the end of its first window to its
 * last accepted request, of (accepted requests in the trailing window) ÷ (the budget's requests).
 * A sender that refills every slot the moment it frees scores 1; one that waits a margin m after
 * each window scores about W/(W+m); one that never fills the window scores its share. The first
 * window is left out (the window is filling), as is the tail after the last request (nothing left
 * to send). Null when the tenant's requests all fit in one window: the budget never bound.
 */
export function budgetUtilization(acceptedStarts: readonly number[], budget: TenantBudget): number | null {
  if (acceptedStarts.length === 0) return null;
  const times = [...acceptedStarts].sort((a, b) => a - b);
  const from = times[0]! + budget.windowMs;
  const to = times[times.length - 1]!;
  if (to <= from) return null;
  const step = Math.max(1, Math.min(10, (to - from) / 2_000));
  let lo = 0;
  let hi = 0;
  let sum = 0;
  let samples = 0;
  for (let t = from; t <= to; t += step) {
    while (hi < times.length && times[hi]! <= t) hi++;
    while (lo < hi && times[lo]! <= t - budget.windowMs) lo++;
    sum += Math.min(1, (hi - lo) / budget.requests);
    samples++;
  }
  return samples === 0 ? null : sum / samples;
}

function workbookOverlaps(requests: readonly RecordedRequest[]): { count: number; maxOverlapMs: number } {
  const byWorkbook = new Map<string, RecordedRequest[]>();
  for (const r of requests) {
    if (r.workbookKey === undefined) continue;
    const key = `${r.tenantId ?? "?"}|${r.workbookKey}`;
    let list = byWorkbook.get(key);
    if (!list) byWorkbook.set(key, (list = []));
    list.push(r);
  }
  let count = 0;
  let maxOverlapMs = 0;
  for (const list of byWorkbook.values()) {
    list.sort((a, b) => a.startedAt - b.startedAt || a.seq - b.seq);
    let busyUntil = -Infinity;
    for (const r of list) {
      if (r.startedAt < busyUntil) {
        count++;
        maxOverlapMs = Math.max(maxOverlapMs, busyUntil - r.startedAt);
      }
      busyUntil = Math.max(busyUntil, r.endedAt ?? Infinity);
    }
  }
  return { count, maxOverlapMs };
}

function inFlight(requests: readonly RecordedRequest[]): { meanInFlight: number; meanServiceMs: number } {
  const done = requests.filter((r) => r.endedAt !== undefined);
  if (done.length === 0) return { meanInFlight: 0, meanServiceMs: 0 };
  let busy = 0;
  let first = Infinity;
  let last = -Infinity;
  for (const r of done) {
    busy += r.endedAt! - r.startedAt;
    first = Math.min(first, r.startedAt);
    last = Math.max(last, r.endedAt!);
  }
  return { meanInFlight: busy / Math.max(1, last - first), meanServiceMs: busy / done.length };
}
