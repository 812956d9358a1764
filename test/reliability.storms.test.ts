/**
 * Reliability: Graph storms. 429 storms with Retry-After (seconds and HTTP dates), 503/504 bursts,
 * connection resets, hangs past the request timeout, malformed and empty error bodies, a 200
 * instead of 204. Each has the outcome README ("Outcomes") defines; nothing is marked closed
 * without a 204; no request for a tenant or a session goes out before its Retry-After has passed;
 * each session gets at most one request per sweep; and attempts that keep ending in `retry` end
 * in `failed` after MAX_ATTEMPTS sweeps.
 */
import { describe, expect, it } from "vitest";
import { createSweeperServices, loadConfig, type SessionRecord, type SweepSummary } from "../src";
import { mapConcurrent } from "../src/utils/concurrency";
import type { FaultRule, RecordedRequest } from "../standins/graphEmulator";
import { useCloudFixture, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { expectClosedOnlyWith204, expectConsistentRows, rawEntities } from "./support/reliability";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const BACKOFF_FIRST_MS = 30_000;

let cloud: CloudFixture;

useCloudFixture((started) => (cloud = started));

interface Opened {
  row: SessionRecord;
  sessionId: string;
}

async function openMany(table: TableFixture, count: number, tenantId: string, prefix: string): Promise<Opened[]> {
  const users = Array.from({ length: Math.max(1, Math.ceil(count / 3)) }, () => newUserId());
  return mapConcurrent(Array.from({ length: count }, (_, i) => i), 8, (i) =>
    table.openSession({ tenantId, userId: users[i % users.length]!, workbook: `/drives/${prefix}/items/b${i}` }),
  );
}

const closesOf = (sessionId: string) => cloud.emulator.requests.filter((r) => r.kind === "closeSession" && r.sessionId === sessionId);

/**
 * A Retry-After answered at `r` holds back its tenant: no request of that tenant starts after the
 * answer and before the cooldown's end (`until`, measured from when the request arrived, which is
 * earlier than the sweeper's own measure).
 */
function expectNoRequestDuringCooldown(r: RecordedRequest, until: number): void {
  const early = cloud.emulator.requests.filter(
    (other) => other !== r && other.tenantId === r.tenantId && other.startedAt >= r.endedAt! && other.startedAt < until,
  );
  expect(early.map((e) => ({ seq: e.seq, startedAt: e.startedAt, until })), `requests of tenant ${r.tenantId} inside its cooldown`).toEqual([]);
}

/** Each session at most once per sweep, and the summary counts what Graph received. */
function expectOneRequestPerSession(summary: SweepSummary, requests: readonly RecordedRequest[]): void {
  const perSession = new Map<string, number>();
  for (const r of requests) perSession.set(r.sessionId!, (perSession.get(r.sessionId!) ?? 0) + 1);
  expect([...perSession.values()].every((n) => n === 1)).toBe(true);
  expect(summary.graphRequests).toBe(requests.length);
}

async function expectLedgerSound(table: TableFixture): Promise<void> {
  const entities = await rawEntities(table.services.ledger);
  expectConsistentRows(entities);
  expectClosedOnlyWith204(entities, cloud.emulator.requests);
}

/**
 * `nextAttemptAt` is written in the storage service's time, which a sweeper knows from the `Date`
 * header's whole seconds: up to a second (and a round trip) behind this host's clock here.
 */
const SERVICE_TIME_SLACK_MS = 1_100;

/**
 * Services over a table `offset.ms` later: "a later sweep", without waiting for back-offs. The
 * storage service's clock moves too (a host clock alone moving ahead changes nothing: liveness and
 * `nextAttemptAt` are judged by the service's time).
 */
function laterServices(table: TableFixture, offset: { ms: number }, overrides: Record<string, string> = {}) {
  const config = loadConfig(cloud.settings({ SESSIONS_TABLE: table.tableName, ...overrides }));
  const later = () => new Date(Date.now() + offset.ms);
  return createSweeperServices(config, { tokenMaxRetries: 0, clock: later, serviceTime: { calibrated: true, now: later } });
}

describe("429 storms", () => {
  // One request in flight at a time, so "after the 429 was answered" is exact: a request that was
  // already on its way when the 429 came back cannot be told apart from one sent too early.
  it("Retry-After in seconds: the tenant waits out every cooldown, its other sessions close after it, other tenants carry on", async () => {
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "1", SWEEP_TIME_BUDGET: "PT30S" });
    const throttled = await openMany(table, 8, OTHER_TENANT, "t");
    const calm = await openMany(table, 8, HOME_TENANT, "c");
    cloud.emulator.addFault({ tenantId: OTHER_TENANT, kind: "closeSession", times: 2, action: { status: 429, headers: { "Retry-After": "1" } } });

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ claimed: 16, closed: 14, retry: 2, failed: 0, expired: 0, deferred: 0, stoppedEarly: false });
    const storms = cloud.emulator.requests.filter((r) => r.status === 429);
    expect(storms).toHaveLength(2);
    for (const r of storms) {
      expectNoRequestDuringCooldown(r, r.startedAt + 1_000);
      // The throttled session itself waits for the cooldown: written back open, due at its end.
      const row = (await table.services.ledger.get(throttled.find((t) => t.sessionId === r.sessionId)!.row))!;
      expect(row).toMatchObject({ status: "open", attempts: 1, lastError: { code: "tooManyRequests" } });
      expect(row.nextAttemptAt!.getTime()).toBeGreaterThanOrEqual(r.startedAt + 1_000 - SERVICE_TIME_SLACK_MS);
      expect(row.nextAttemptAt!.getTime()).toBeLessThanOrEqual(r.endedAt! + 1_000 + 500);
      expect(cloud.emulator.sessionState(r.sessionId!)).toBe("open");
    }
    expectOneRequestPerSession(summary, cloud.emulator.requests);
    for (const { sessionId } of calm) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    await expectLedgerSound(table);

    // The next sweep: nothing for the throttled sessions before their nextAttemptAt; then they close.
    const due = new Map<string, number>();
    for (const r of storms) due.set(r.sessionId!, (await table.services.ledger.get(throttled.find((t) => t.sessionId === r.sessionId)!.row))!.nextAttemptAt!.getTime());
    while ([...due.keys()].some((id) => cloud.emulator.sessionState(id) === "open")) {
      const before = cloud.emulator.requests.length;
      await table.services.newSweeper().run();
      for (const r of cloud.emulator.requests.slice(before)) expect(r.startedAt).toBeGreaterThanOrEqual(due.get(r.sessionId!)!);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await expectLedgerSound(table);
  });

  it("Retry-After as an HTTP date: no request of the tenant before that date, and the row is due at it", async () => {
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "1", SWEEP_TIME_BUDGET: "PT30S" });
    const sessions = await openMany(table, 6, OTHER_TENANT, "date");
    const retryAfter = new Date(Date.now() + 2_500).toUTCString();
    const until = Date.parse(retryAfter);
    cloud.emulator.addFault({ sessionId: sessions[0]!.sessionId, times: 1, action: { status: 429, headers: { "Retry-After": retryAfter } } });

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ closed: 5, retry: 1, deferred: 0 });
    const [storm] = cloud.emulator.requests.filter((r) => r.status === 429);
    expect(storm).toBeDefined();
    expectNoRequestDuringCooldown(storm!, until);
    const row = (await table.services.ledger.get(sessions[0]!.row))!;
    expect(row).toMatchObject({ status: "open", lastError: { code: "tooManyRequests" } });
    expect(row.nextAttemptAt!.getTime()).toBeGreaterThanOrEqual(until - SERVICE_TIME_SLACK_MS);
    // Read against the answer's Date header (whole seconds, Graph's clock), the wait may come out up
    // to a second longer than by this host's clock, never shorter.
    expect(row.nextAttemptAt!.getTime()).toBeLessThanOrEqual(Math.max(until, row.updatedAt.getTime()) + 1_000);
    expectOneRequestPerSession(summary, cloud.emulator.requests);

    // Sweeps before the date send nothing for it; one after closes it.
    const early = await table.services.newSweeper().run();
    if (Date.now() < until - 100) expect(early).toMatchObject({ skipped: 1, claimed: 0, graphRequests: 0 });
    // Due at the row's nextAttemptAt (the service's time, here this machine's to the Date header's second).
    const due = Math.max(until, row.nextAttemptAt!.getTime() + SERVICE_TIME_SLACK_MS);
    while (Date.now() < due) await new Promise((resolve) => setTimeout(resolve, 50));
    const late = await table.services.newSweeper().run();
    expect(early.closed + late.closed).toBe(1);
    expect(closesOf(sessions[0]!.sessionId).every((r) => r === storm || r.startedAt >= until)).toBe(true);
    expect(cloud.emulator.sessionState(sessions[0]!.sessionId)).toBe("closed");
    await expectLedgerSound(table);
  });

  it("a cooldown that outlasts the sweep defers the tenant's untried rows, their attempts untouched", async () => {
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "1", SWEEP_TIME_BUDGET: "PT3S" });
    const sessions = await openMany(table, 5, OTHER_TENANT, "long");
    cloud.emulator.addFault({ tenantId: OTHER_TENANT, times: 1, action: { status: 503, headers: { "Retry-After": "120" } } });

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ retry: 1, deferred: 4, claimed: 1, closed: 0, graphRequests: 1 });
    const [storm] = cloud.emulator.requests;
    for (const { row, sessionId } of sessions) {
      const after = (await table.services.ledger.get(row))!;
      expect(after.status).toBe("open");
      expect(after.nextAttemptAt!.getTime()).toBeGreaterThanOrEqual(storm!.startedAt + 120_000 - SERVICE_TIME_SLACK_MS);
      expect(after.attempts).toBe(sessionId === storm!.sessionId ? 1 : 0);
    }
    await expectLedgerSound(table);
  });

  it("a budget that outlasts the sweep gives the unsent rows back as they were: a row at its last attempt does not fail for a request never sent", async () => {
    // Two requests a minute: the sweep's 3 s see two sent; the rest wait past the sweep's end.
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "4", EXCEL_BUDGET_REQUESTS: "2", EXCEL_BUDGET_WINDOW: "PT60S", SWEEP_TIME_BUDGET: "PT3S", MAX_ATTEMPTS: "5" });
    const sessions = await openMany(table, 6, OTHER_TENANT, "lastattempt");
    // Four attempts spent already (by sweepers that died holding their claims, say): the next is the last.
    for (const { row } of sessions) await table.services.ledger.client.updateEntity({ partitionKey: row.partitionKey, rowKey: row.rowKey, attempts: 4 }, "Merge");

    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ closed: 2, failed: 0, retry: 0, graphRequests: 2 });
    expect(summary.deferred + summary.skipped).toBe(4);
    const sent = new Set(cloud.emulator.requests.map((r) => r.sessionId));
    for (const { row, sessionId } of sessions) {
      const after = (await table.services.ledger.get(row))!;
      if (sent.has(sessionId)) {
        expect(after.status).toBe("closed");
        continue;
      }
      expect(after, "given back untried").toMatchObject({ status: "open", attempts: 4 });
      expect(after.lastError).toBeUndefined();
    }
    await expectLedgerSound(table);
  });

  it("a tenant over Graph's own budget gets 429s with Retry-After; each one is waited out", async () => {
    // The app believes it may send 40 a second; Graph allows this tenant 8.
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "1", EXCEL_BUDGET_REQUESTS: "40", EXCEL_BUDGET_WINDOW: "1", SWEEP_TIME_BUDGET: "PT30S" });
    cloud.emulator.configure({ tenantBudget: { requests: 8, windowMs: 1_000 }, latencyMs: 5 });
    await openMany(table, 30, OTHER_TENANT, "budget");

    const summary = await table.services.newSweeper().run();

    const throttled = cloud.emulator.requests.filter((r) => r.fault === "budget");
    expect(throttled.length).toBeGreaterThan(0);
    expect(summary.retry).toBe(throttled.length);
    expect(summary.closed + summary.retry + summary.deferred + summary.skipped).toBe(30);
    // Graph's Retry-After here is whole seconds from its own window: at least 1 s.
    for (const r of throttled) expectNoRequestDuringCooldown(r, r.startedAt + 1_000);
    expectOneRequestPerSession(summary, cloud.emulator.requests);
    await expectLedgerSound(table);
  });
});

describe("faults with no cooldown", () => {
  it("503/504 bursts, a reset and a hang past the timeout are retried later with back-off; the rest close", async () => {
    const table = await cloud.newTable({ GRAPH_REQUEST_TIMEOUT: "0.5", SWEEP_CONCURRENCY: "4" });
    const sessions = await openMany(table, 12, HOME_TENANT, "burst");
    const plan: [number, FaultRule["action"], string][] = [
      [0, { status: 503 }, "serviceUnavailable"],
      [1, { status: 503 }, "serviceUnavailable"],
      [2, { status: 504 }, "gatewayTimeout"],
      [3, { status: 504 }, "gatewayTimeout"],
      [4, "reset", "NetworkError"],
      [5, "hang", "GraphRequestTimeout"],
    ];
    for (const [i, action] of plan) cloud.emulator.addFault({ sessionId: sessions[i]!.sessionId, times: 1, action });

    const started = Date.now();
    const summary = await table.services.newSweeper().run();

    // The hang ends at the request timeout, not later.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(summary).toMatchObject({ claimed: 12, closed: 6, retry: 6, failed: 0, expired: 0, graphRequests: 12 });
    for (const [i, , code] of plan) {
      const { row, sessionId } = sessions[i]!;
      const after = (await table.services.ledger.get(row))!;
      const [request] = closesOf(sessionId);
      expect(after).toMatchObject({ status: "open", attempts: 1, lastError: { code } });
      // Back-off: 30 s for a first attempt, counted from when the answer (or the failure) came.
      expect(after.nextAttemptAt!.getTime()).toBeGreaterThanOrEqual(request!.startedAt + BACKOFF_FIRST_MS - SERVICE_TIME_SLACK_MS);
      expect(after.nextAttemptAt!.getTime()).toBeLessThanOrEqual(Date.now() + BACKOFF_FIRST_MS);
      // Graph never closed it: no row may claim otherwise.
      expect(cloud.emulator.sessionState(sessionId)).toBe("open");
    }
    expect(closesOf(sessions[5]!.sessionId)[0]).toMatchObject({ fault: "hang", status: 0 });
    expect(closesOf(sessions[4]!.sessionId)[0]).toMatchObject({ fault: "reset", status: 0 });
    expectOneRequestPerSession(summary, cloud.emulator.requests);
    await expectLedgerSound(table);

    // A sweep after the back-off (a clock an hour ahead) closes them all.
    const later = await laterServices(table, { ms: 3_600_000 }, { GRAPH_REQUEST_TIMEOUT: "0.5" }).newSweeper().run();
    expect(later).toMatchObject({ claimed: 6, closed: 6 });
    for (const { sessionId } of sessions) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    expect(cloud.emulator.stats().maxConcurrentPerSession).toBe(1);
    await expectLedgerSound(table);
  });
});

describe("odd answers", () => {
  const cases: { name: string; action: FaultRule["action"]; status: string; code: string | RegExp; cooldown?: boolean }[] = [
    { name: "500 with an HTML body", action: { status: 500, headers: { "content-type": "text/html" }, body: "<html><body>Oops</body></html>" }, status: "open", code: "Http500" },
    { name: "502 with an empty body", action: { status: 502, body: "" }, status: "open", code: "Http502" },
    { name: "503 with broken JSON", action: { status: 503, headers: { "content-type": "application/json" }, body: '{"error": {"code": ' }, status: "open", code: "Http503" },
    { name: "429 with an unreadable Retry-After", action: { status: 429, headers: { "Retry-After": "soon" }, body: "" }, status: "open", code: "Http429" },
    { name: "409 with invalidSessionAccessConflict", action: { status: 409, body: { error: { code: "conflict", message: "busy", innerError: { code: "invalidSessionAccessConflict" } } } }, status: "open", code: "invalidSessionAccessConflict" },
    { name: "400 with an empty body", action: { status: 400, body: "" }, status: "failed", code: "Http400" },
    { name: "401 with codes of the wrong type", action: { status: 401, body: { error: { code: 401, message: { text: "x" } } } }, status: "failed", code: "Http401" },
    { name: "403 whose error is a string", action: { status: 403, body: { error: "denied" } }, status: "failed", code: "Http403" },
    { name: "418 with no body", action: { status: 418 }, status: "failed", code: /.+/ },
    { name: "404 that is not JSON", action: { status: 404, body: "Not Found" }, status: "expired", code: "Http404" },
    { name: "200 with a body instead of 204", action: { status: 200, body: { value: "closed, probably" } }, status: "open", code: "Unexpected200" },
    { name: "202 with no body", action: { status: 202 }, status: "open", code: "Unexpected202" },
  ];

  it("each has its defined outcome, and only a real 204 ever closes a row", async () => {
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "4" });
    const sessions = await openMany(table, cases.length, HOME_TENANT, "odd");
    cases.forEach((c, i) => cloud.emulator.addFault({ sessionId: sessions[i]!.sessionId, times: 1, action: c.action }));

    const summary = await table.services.newSweeper().run();

    expect(summary.closed).toBe(0);
    expect(summary.graphRequests).toBe(cases.length);
    for (const [i, c] of cases.entries()) {
      const after = (await table.services.ledger.get(sessions[i]!.row))!;
      expect({ case: c.name, status: after.status }).toEqual({ case: c.name, status: c.status });
      expect(after.lastError?.code, c.name).toMatch(c.code instanceof RegExp ? c.code : new RegExp(`^${c.code}$`));
      expect(after.lastError?.message.length, c.name).toBeGreaterThan(0);
      if (c.status === "open") {
        // No Retry-After that could be read: back-off, and the tenant was not paused.
        expect(after.nextAttemptAt!.getTime() - after.updatedAt.getTime(), c.name).toBeGreaterThanOrEqual(BACKOFF_FIRST_MS - 1_000);
      }
    }
    await expectLedgerSound(table);

    // A later sweep finds the sessions still open on Graph (a 200 is not proof) and closes the retried ones.
    const later = await laterServices(table, { ms: 3_600_000 }).newSweeper().run();
    const retried = cases.filter((c) => c.status === "open").length;
    expect(later).toMatchObject({ claimed: retried, closed: retried });
    await expectLedgerSound(table);
  });
});

describe("attempt caps", () => {
  it("sessions that keep ending in retry are failed after MAX_ATTEMPTS sweeps, with the last reason, one request per sweep", async () => {
    const maxAttempts = 3;
    const table = await cloud.newTable({ MAX_ATTEMPTS: String(maxAttempts), GRAPH_REQUEST_TIMEOUT: "0.5" });
    const plan: [FaultRule["action"], string][] = [
      [{ status: 503 }, "serviceUnavailable"],
      [{ status: 429, headers: { "Retry-After": "1" } }, "tooManyRequests"],
      [{ status: 200, body: { ok: true } }, "Unexpected200"],
      ["reset", "NetworkError"],
      ["hang", "GraphRequestTimeout"],
    ];
    // One tenant each, so a cooldown of one does not hold back the others.
    const sessions = await mapConcurrent(plan, 5, (_, i) =>
      table.openSession({ tenantId: `33333333-3333-4333-8333-33333333333${i}`, userId: newUserId(), workbook: `/drives/cap/items/b${i}` }),
    );
    plan.forEach(([action], i) => cloud.emulator.addFault({ sessionId: sessions[i]!.sessionId, action }));

    const offset = { ms: 0 };
    const services = laterServices(table, offset, { MAX_ATTEMPTS: String(maxAttempts), GRAPH_REQUEST_TIMEOUT: "0.5" });
    for (let sweep = 1; sweep <= maxAttempts + 1; sweep++) {
      const before = cloud.emulator.requests.length;
      const summary = await services.newSweeper().run();
      const sent = cloud.emulator.requests.slice(before);
      if (sweep <= maxAttempts) {
        expect(sent.map((r) => r.sessionId).sort()).toEqual(sessions.map((s) => s.sessionId).sort());
        expect(summary.graphRequests).toBe(plan.length);
        expect(summary[sweep < maxAttempts ? "retry" : "failed"]).toBe(plan.length);
      } else {
        expect(sent).toHaveLength(0);
        expect(summary.scanned).toBe(0);
      }
      for (const [i, [, code]] of plan.entries()) {
        const row = (await table.services.ledger.get(sessions[i]!.row))!;
        expect(row.attempts).toBe(Math.min(sweep, maxAttempts));
        expect(row.lastError?.code).toBe(code);
        expect(row.status).toBe(sweep < maxAttempts ? "open" : "failed");
        if (sweep >= maxAttempts) expect(row.lastError?.message).toMatch(/^Gave up after 3 attempts: /);
      }
      // The next sweep runs an hour later: every back-off and cooldown has passed.
      offset.ms += 3_600_000;
    }
    for (const { sessionId } of sessions) expect(cloud.emulator.sessionState(sessionId)).toBe("open");
    await expectLedgerSound(table);
  });
});
