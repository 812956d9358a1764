import { describe, expect, it } from "vitest";
import { type SessionRecord } from "../src";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { mapConcurrent } from "../src/utils/concurrency";
import { useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
let cloud: CloudFixture;

useCloudFixture((started) => (cloud = started));

async function statuses(table: TableFixture): Promise<Map<string, SessionRecord>> {
  const rows = new Map<string, SessionRecord>();
  for await (const page of table.services.ledger.listAll()) for (const row of page.rows) rows.set(row.sessionId, row);
  return rows;
}

describe("sweep", () => {
  it("closes 500 stale sessions of 24 users: one request at a time per workbook, each tenant within its budget", async () => {
    const budget = { requests: 200, windowMs: 2_000 };
    const table = await cloud.newTable({ EXCEL_BUDGET_REQUESTS: String(budget.requests), EXCEL_BUDGET_WINDOW: "2", SWEEP_CONCURRENCY: "32" });
    cloud.emulator.configure({ latencyMs: 5, tenantBudget: budget });
    const users = Array.from({ length: 24 }, (_, i) => ({ userId: newUserId(), tenantId: i % 2 ? OTHER_TENANT : HOME_TENANT }));
    // Each user has own workbooks, and every user also works in one shared workbook of their tenant.
    const plan = Array.from({ length: 500 }, (_, i) => {
      const user = users[i % users.length]!;
      const workbook = i % 5 === 0 ? `/drives/shared-${user.tenantId.slice(0, 4)}/items/team-book` : `/me/drive/items/book-${i % 3}`;
      return { ...user, workbook };
    });
    const fresh = await mapConcurrent(users.slice(0, 4), 4, (u) => table.openSession({ ...u, workbook: "/me/drive/items/live", idleMinutes: 0 }));
    const opened = await mapConcurrent(plan, 16, (p) => table.openSession(p));

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ scanned: 500, stale: 500, claimed: 500, closed: 500, lostRaces: 0, retry: 0, failed: 0, expired: 0, stoppedEarly: false });
    const rows = await statuses(table);
    for (const { sessionId } of opened) {
      expect(rows.get(sessionId)?.status).toBe("closed");
      expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    }
    for (const { sessionId } of fresh) expect(rows.get(sessionId)?.status).toBe("open");
    const stats = cloud.emulator.stats();
    expect(stats.maxConcurrentPerWorkbook).toBe(1);
    expect(stats.closesAfterClosed).toBe(0);
    for (const tenant of [HOME_TENANT, OTHER_TENANT]) expect(stats.maxTenantRequestsInWindow(tenant, budget.windowMs)).toBeLessThanOrEqual(budget.requests);
    expect(cloud.emulator.requests.filter((r) => r.status === 429)).toHaveLength(0);
    expect(cloud.emulator.requests).toHaveLength(500);
    // One token exchange per user, not per session.
    expect(cloud.authority.tokenRequests.filter((r) => r.status === 200)).toHaveLength(24);
  });

  it("keeps the app's budget across tenants at Graph-like latency, each tenant an equal share, none throttled", async () => {
    const tenantBudget = { requests: 30, windowMs: 1_000 };
    const appBudget = { requests: 40, windowMs: 1_000 };
    const table = await cloud.newTable({ EXCEL_BUDGET_REQUESTS: "30", EXCEL_BUDGET_WINDOW: "PT1S", EXCEL_APP_BUDGET_REQUESTS: "40", EXCEL_APP_BUDGET_WINDOW: "PT1S" });
    cloud.emulator.configure({ latencyMs: { kind: "lognormal", medianMs: 20, p99Ms: 80 }, tenantBudget, appBudget });
    const tenants = [HOME_TENANT, OTHER_TENANT, "33333333-3333-4333-8333-333333333333"];
    const users = Array.from({ length: 18 }, (_, i) => ({ userId: newUserId(), tenantId: tenants[i % 3]! }));
    const opened = await mapConcurrent(
      Array.from({ length: 90 }, (_, i) => ({ ...users[i % users.length]!, workbook: `/me/drive/items/book-${i % 5}` })),
      16,
      (p) => table.openSession(p),
    );

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ claimed: 90, closed: 90, retry: 0 });
    const rows = await statuses(table);
    for (const { sessionId } of opened) expect(rows.get(sessionId)?.status).toBe("closed");
    expect(cloud.emulator.requests.filter((r) => r.status === 429)).toHaveLength(0);
    const stats = cloud.emulator.stats();
    expect(stats.maxAppRequestsInWindow(CLIENT_ID, appBudget.windowMs)).toBeLessThanOrEqual(appBudget.requests);
    for (const tenant of tenants) expect(stats.maxTenantRequestsInWindow(tenant, tenantBudget.windowMs)).toBeLessThanOrEqual(tenantBudget.requests);
    expect(stats.maxConcurrentPerWorkbook).toBe(1);
    // The app's first window, 40 requests, shared by three tenants with work: 13 or so each, not one tenant's 30.
    const first = [...cloud.emulator.requests].sort((a, b) => a.startedAt - b.startedAt).slice(0, appBudget.requests);
    for (const tenant of tenants) expect(first.filter((r) => r.tenantId === tenant).length).toBeGreaterThanOrEqual(8);
  });

  it("dry run lists what would be closed and sends and writes nothing", async () => {
    const table = await cloud.newTable();
    const opened = await mapConcurrent(Array.from({ length: 12 }, () => newUserId()), 4, (userId) => table.openSession({ userId, workbook: "/drives/d/items/x" }));
    const before = await statuses(table);

    const summary = await table.services.newSweeper().run({ dryRun: true });

    expect(summary).toMatchObject({ dryRun: true, scanned: 12, stale: 12, claimed: 0, closed: 0 });
    expect(summary.candidates).toHaveLength(12);
    expect(summary.candidates![0]).toMatchObject({ workbook: "/drives/d/items/x", tenantId: HOME_TENANT });
    expect(cloud.emulator.requests).toHaveLength(0);
    expect(cloud.authority.tokenRequests).toHaveLength(0);
    const after = await statuses(table);
    for (const { sessionId } of opened) expect(after.get(sessionId)!.etag).toBe(before.get(sessionId)!.etag);
  });

  it("stops taking rows when the time budget runs out and leaves no row closing", async () => {
    const table = await cloud.newTable({ SWEEP_TIME_BUDGET: "1", SWEEP_CONCURRENCY: "2" });
    cloud.emulator.configure({ latencyMs: 150 });
    const opened = await mapConcurrent(Array.from({ length: 40 }, (_, i) => i), 8, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/d/items/b${i}` }));

    const summary = await table.services.newSweeper().run();

    expect(summary.stoppedEarly).toBe(true);
    expect(summary.closed).toBeGreaterThan(0);
    expect(summary.closed).toBeLessThan(40);
    expect(summary.claimed).toBe(summary.closed);
    expect(summary.skipped).toBe(40 - summary.claimed);
    const rows = await statuses(table);
    const counts = { open: 0, closed: 0, other: 0 };
    for (const { sessionId } of opened) {
      const status = rows.get(sessionId)!.status;
      if (status === "open") counts.open++;
      else if (status === "closed") counts.closed++;
      else counts.other++;
    }
    expect(counts).toEqual({ open: 40 - summary.closed, closed: summary.closed, other: 0 });
    // The next run finishes the job.
    cloud.emulator.configure({ latencyMs: 0 });
    const next = await (await cloud.newTableServicesFor(table, { SWEEP_TIME_BUDGET: "PT1M" })).newSweeper().run();
    expect(next.closed).toBe(40 - summary.closed);
  });

  it("an abort (an operator's Ctrl-C) gives untried rows back and finishes the ones under way", async () => {
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "2" });
    cloud.emulator.configure({ latencyMs: 200 });
    const opened = await mapConcurrent(Array.from({ length: 20 }, (_, i) => i), 8, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/d/items/a${i}` }));
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 500);
    const summary = await table.services.newSweeper().run({}, { abortSignal: abort.signal });
    expect(summary.stoppedEarly).toBe(true);
    expect(summary.closed).toBeGreaterThan(0);
    expect(summary.closed + summary.skipped).toBe(20);
    const rows = await statuses(table);
    const byStatus = opened.map(({ sessionId }) => rows.get(sessionId)!);
    expect(byStatus.filter((r) => r.status === "closing")).toEqual([]);
    expect(byStatus.filter((r) => r.status === "open").every((r) => r.attempts === 0)).toBe(true);
    expect(byStatus.filter((r) => r.status === "closed")).toHaveLength(summary.closed);
  });

  it("a Retry-After holds back its tenant only, and the wait is written to the rows it outlasts", async () => {
    // One in flight, so the 429 is back before that tenant could send again (with more in flight,
    // requests already under way when the 429 arrives go through, as they would against Graph).
    const table = await cloud.newTable({ SWEEP_TIME_BUDGET: "PT5S", SWEEP_CONCURRENCY: "1" });
    const throttled = await mapConcurrent(Array.from({ length: 6 }, (_, i) => i), 3, (i) => table.openSession({ tenantId: OTHER_TENANT, userId: newUserId(), workbook: `/drives/t/items/b${i}` }));
    const calm = await mapConcurrent(Array.from({ length: 6 }, (_, i) => i), 3, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/c/items/b${i}` }));
    cloud.emulator.addFault({ tenantId: OTHER_TENANT, times: 1, action: { status: 429, headers: { "Retry-After": "600" } } });

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ closed: 6, retry: 1, deferred: 5, stoppedEarly: false });
    expect(cloud.emulator.requests.filter((r) => r.tenantId === OTHER_TENANT)).toHaveLength(1);
    const rows = await statuses(table);
    for (const { sessionId } of calm) expect(rows.get(sessionId)!.status).toBe("closed");
    for (const { sessionId } of throttled) {
      const row = rows.get(sessionId)!;
      expect(row.status).toBe("open");
      expect(row.nextAttemptAt!.getTime()).toBeGreaterThan(Date.now() + 590_000);
    }
    // The next sweep respects the cooldown: nothing is sent for that tenant.
    cloud.emulator.reset();
    const next = await table.services.newSweeper().run();
    expect(next).toMatchObject({ skipped: 6, claimed: 0 });
    expect(cloud.emulator.requests).toHaveLength(0);
  });

  it("skips rows not yet due, honours limit and user, and finishes rows a dead sweeper left closing", async () => {
    const table = await cloud.newTable();
    const alice = newUserId();
    const a = await mapConcurrent([1, 2, 3], 3, (i) => table.openSession({ userId: alice, workbook: `/drives/a/items/${i}` }));
    const b = await table.openSession({ userId: newUserId(), workbook: "/drives/b/items/1" });
    const later = await table.openSession({ userId: newUserId(), workbook: "/drives/later/items/1" });
    await table.services.ledger.scheduleRetry(later.row, new Date(Date.now() + 60_000), { code: "test", message: "later" });
    // A sweeper claimed this one with an already-expired lease and died.
    const orphan = await table.openSession({ userId: newUserId(), workbook: "/drives/orphan/items/1" });
    await table.services.ledger.claim(orphan.row, { leaseMs: -1_000 });

    const mine = await table.services.newSweeper().run({ userId: alice, limit: 2 });
    expect(mine).toMatchObject({ stale: 2, closed: 2, skipped: 1 });

    const rest = await table.services.newSweeper().run();
    expect(rest).toMatchObject({ closed: 3, skipped: 1 });
    const rows = await statuses(table);
    expect([...a, b, orphan].map((s) => rows.get(s.sessionId)!.status)).toEqual(["closed", "closed", "closed", "closed", "closed"]);
    expect(rows.get(orphan.sessionId)!.attempts).toBe(2);
    expect(rows.get(later.sessionId)!.status).toBe("open");
  });

  it("marks malformed rows failed with the reason, sends nothing for them, and carries on", async () => {
    const table = await cloud.newTable();
    const good = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/good" });
    const userId = newUserId();
    const past = new Date(Date.now() - 3_600_000);
    await table.services.ledger.client.createEntity({
      partitionKey: partitionKeyFor(HOME_TENANT, userId),
      rowKey: rowKeyFor("evil"),
      tenantId: HOME_TENANT,
      userId,
      sessionId: "evil",
      workbook: "/drives/d/items/..%2F..%2Fme%2Fmessages",
      status: "open",
      attempts: 0,
      schemaVersion: 2,
      createdAt: past,
      heartbeatSeenAt: past,
      leaseSeconds: 0,
    });
    const summary = await table.services.newSweeper().run();
    expect(summary).toMatchObject({ scanned: 2, closed: 1, malformed: 1 });
    expect(cloud.emulator.requests.map((r) => r.sessionId)).toEqual([good.sessionId]);
    const evil = await table.services.ledger.history.storedEntity({ partitionKey: partitionKeyFor(HOME_TENANT, userId), rowKey: rowKeyFor("evil") });
    expect(evil).toMatchObject({ status: "failed", lastErrorCode: "MalformedRow" });
  });

  it("costs one storage query and no Graph call when nothing is stale", async () => {
    const requests: string[] = [];
    const table = await cloud.newTable();
    await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/live", idleMinutes: 0 });
    const services = await cloud.newTableServicesFor(table, {}, (r) => requests.push(`${r.method} ${r.url}`));
    const summary = await services.newSweeper().run();
    expect(summary).toMatchObject({ scanned: 0, stale: 0 });
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatch(/^GET /);
    expect(cloud.emulator.requests).toHaveLength(0);
    expect(cloud.authority.tokenRequests).toHaveLength(0);
  });
});
