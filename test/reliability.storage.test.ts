/**
 * Reliability: storage faults. Table storage stops answering in the middle of a sweep (a TCP proxy
 * between the app and the run's Azurite is cut: open connections are reset, new ones refused).
 * The sweep ends with a clear `summary.error` and a summary; no row is half-written (every row
 * decodes and its columns agree with its status); and once storage is back, the next sweep
 * converges: rows left `closing` are reclaimed after CLAIM_LEASE and every stale session ends
 * `closed` or `expired`, with a row marked `closed` only where Graph answered 204.
 *
 * The table SDK retries a refused connection three times (about 3.5-7 s) before a call fails, so
 * each cut lasts that long; the tests run concurrently to keep the file short.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { Sweeper, type SweeperServices, type SweepSummary } from "../src";
import { groupBy, mapConcurrent } from "../src/utils/concurrency";
import { HOME_TENANT, newUserId, startCloudFixture, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import {
  connectionStringThrough,
  expectClosedOnlyWith204,
  expectConsistentRows,
  invocation,
  postSweep,
  rawEntities,
  sleep,
  SOAK,
  tableEndpointOf,
  TcpProxy,
  timerInfo,
  waitFor,
} from "./support/reliability";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
// Tenant leases last half of it: 2 s, so that a loaded machine's late renewal does not lapse one.
const LEASE = { CLAIM_LEASE: "4" };

let cloud: CloudFixture;
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  cloud = await startCloudFixture();
  // Every Graph call a little slow, so a sweep is still closing sessions when storage goes away.
  cloud.emulator.configure({ latencyMs: 20 });
});
afterAll(async () => {
  for (const proxy of proxies) await proxy.close();
  await cloud?.close();
});

/** A proxy in front of the run's Azurite table endpoint, and the app's connection string through it. */
async function storageProxy(): Promise<{ proxy: TcpProxy; connectionString: string }> {
  const direct = inject("storageConnectionString");
  const endpoint = tableEndpointOf(direct);
  const proxy = await new TcpProxy({ host: endpoint.hostname, port: Number(endpoint.port) }).start();
  proxies.push(proxy);
  return { proxy, connectionString: connectionStringThrough(direct, inject("azuriteAccountName"), inject("azuriteAccountKey"), proxy.port) };
}

async function openStale(table: TableFixture, count: number, users: number): Promise<Set<string>> {
  const people = Array.from({ length: users }, (_, i) => ({ userId: newUserId(), tenantId: i % 2 ? OTHER_TENANT : HOME_TENANT }));
  const opened = await mapConcurrent(Array.from({ length: count }, (_, i) => i), 16, (i) =>
    table.openSession({ ...people[i % users]!, workbook: `/drives/st/items/b${i}` }),
  );
  return new Set(opened.map((o) => o.sessionId));
}

const answered = (ids: Set<string>) => cloud.emulator.requests.filter((r) => r.kind === "closeSession" && r.status !== 0 && ids.has(r.sessionId!)).length;

function expectClearFault(summary: SweepSummary): void {
  expect(summary.error, "the sweep names the storage fault").toBeDefined();
  expect(summary.error!.code).toMatch(/^\S+$/);
  expect(summary.error!.message.length).toBeGreaterThan(0);
  expect(summary.error!.message).not.toContain("\n");
  expect(summary.stoppedEarly).toBe(true);
  expect(typeof summary.durationMs).toBe("number");
}

/** Read directly (not through the proxy): every row decodes and is consistent; nothing closed without a 204. */
async function expectNoHalfWrittenRow(table: TableFixture, ids: Set<string>): Promise<void> {
  const entities = (await rawEntities(table.services.ledger)).filter((e) => ids.has(e.sessionId as string));
  expect(new Set(entities.map((e) => e.sessionId)).size, "no row lost").toBe(ids.size);
  // A move to history cut off between its steps leaves the finished live row and its history copy,
  // the same outcome twice: the next sweep deletes the live one.
  const twice = [...groupBy(entities, (e) => e.sessionId as string).values()].filter((copies) => copies.length > 1);
  for (const copies of twice) {
    expect(copies, "a session is in one place, or finished in both on its way to history").toHaveLength(2);
    expect(new Set(copies.map((e) => `${String(e.status)}/${String(e.lastErrorCode)}/${String(e.closedBy)}`)).size).toBe(1);
  }
  expectConsistentRows(entities);
  expectClosedOnlyWith204(entities, cloud.emulator.requests);
  for await (const page of table.services.ledger.listAll()) expect(page.malformed).toEqual([]);
}

/** Waits until no row of `ids` is under a live claim. */
async function waitForLeases(table: TableFixture, ids: Set<string>): Promise<void> {
  const entities = (await rawEntities(table.services.ledger)).filter((e) => ids.has(e.sessionId as string));
  const latest = Math.max(0, ...entities.filter((e) => e.status === "closing").map((e) => (e.leaseUntil as Date).getTime()));
  while (Date.now() <= latest) await sleep(50);
}

/** After the next sweep: every session closed or expired, in the ledger and on Graph. */
async function expectConverged(table: TableFixture, ids: Set<string>, summary: SweepSummary): Promise<void> {
  expect(summary.error).toBeUndefined();
  const entities = (await rawEntities(table.services.ledger)).filter((e) => ids.has(e.sessionId as string));
  // Every session in exactly one place, once: in history.
  expect(entities).toHaveLength(ids.size);
  const unfinished = entities.filter((e) => e.status !== "closed" && e.status !== "expired").map((e) => `${String(e.status)} ${String(e.lastErrorCode)}: ${String(e.lastErrorMessage)}`);
  // The next sweep's summary says why, if it left any (leasedElsewhere, stoppedEarly, an error).
  expect(unfinished, JSON.stringify(summary)).toEqual([]);
  for (const e of entities) {
    // A close whose 204 was lost with storage is found gone on the retry: expired, never closed.
    if (e.status === "expired") expect(e.lastErrorCode).toBe("GoneAfterInterruptedClose");
    expect(cloud.emulator.sessionState(e.sessionId as string)).toBe("closed");
  }
  expectConsistentRows(entities);
  expectClosedOnlyWith204(entities, cloud.emulator.requests);
}

describe.concurrent("storage stops answering in the middle of a sweep", { timeout: 90_000 }, () => {
  it("while sessions are being closed: a clear error, no half-written row, and the next sweep converges", async () => {
    const table = await cloud.newTable();
    const ids = await openStale(table, 90, 15);
    const { proxy, connectionString } = await storageProxy();
    const services = await cloud.newTableServicesFor(table, { AzureWebJobsStorage: connectionString, SWEEP_CONCURRENCY: "4", ...LEASE });

    const running = services.newSweeper().run();
    const cutAfter = SOAK ? 1 + Math.floor(Math.random() * 85) : 30;
    await waitFor(() => answered(ids) >= cutAfter, 15_000, `${cutAfter} closes answered`);
    proxy.cut();
    const summary = await running;

    expectClearFault(summary);
    expect(summary.scanned).toBe(90);
    expect(proxy.refused).toBeGreaterThan(0);
    await expectNoHalfWrittenRow(table, ids);
    const stuck = (await rawEntities(table.services.ledger)).filter((e) => ids.has(e.sessionId as string) && e.status === "closing");
    expect(stuck.length, "some outcomes could not be written").toBeGreaterThan(0);

    proxy.restore();
    await waitForLeases(table, ids);
    const left = (await rawEntities(table.services.ledger)).filter((e) => ids.has(e.sessionId as string) && (e.status === "closing" || e.status === "open"));
    const next = await services.newSweeper().run();
    // Rows left `closing` by the cut are taken over once their lease has run out.
    expect(next.claimed, JSON.stringify(next)).toBe(left.length);
    await expectConverged(table, ids, next);
  });

  it("while pages are being read: the sweep stops, claimed rows stay claimed under their lease, and the next sweep converges", async () => {
    const table = await cloud.newTable();
    const ids = await openStale(table, 60, 12);
    const { proxy, connectionString } = await storageProxy();
    const services = await cloud.newTableServicesFor(table, { AzureWebJobsStorage: connectionString, ...LEASE });
    const { sweep, graph } = services.config;
    // Small pages, so the sweep is still reading when storage goes away.
    const paged = (s: SweeperServices) =>
      new Sweeper(s.closeDependencies(), { staleAfterMs: sweep.staleAfterMs, timeBudgetMs: sweep.timeBudgetMs, concurrency: 2, tenantBudget: graph.tenantBudget, pageSize: 5 });

    const running = paged(services).run();
    const cutAfter = SOAK ? 1 + Math.floor(Math.random() * 50) : 8;
    await waitFor(() => answered(ids) >= cutAfter, 15_000, `${cutAfter} closes answered`);
    proxy.cut();
    const summary = await running;

    expectClearFault(summary);
    expect(summary.scanned).toBeLessThan(60);
    await expectNoHalfWrittenRow(table, ids);

    proxy.restore();
    await waitForLeases(table, ids);
    const next = await paged(services).run();
    await expectConverged(table, ids, next);
  });

  it("before the sweep starts: the timer invocation fails with a warning line, the HTTP sweep answers 503 with the summary", async () => {
    const table = await cloud.newTable();
    const ids = await openStale(table, 6, 3);
    const { proxy, connectionString } = await storageProxy();
    Object.assign(process.env, cloud.settings({ AzureWebJobsStorage: connectionString, SESSIONS_TABLE: table.tableName, ...LEASE }));
    const { sweepTimer } = await import("../functions/sweepTimer");
    const { sweepHttp } = await import("../functions/sweepHttp");
    const before = await rawEntities(table.services.ledger);

    proxy.cut();
    const timerRun = invocation("sweepTimer");
    const httpRun = invocation("sweep");
    const [timerError, response] = await Promise.all([
      sweepTimer(timerInfo(), timerRun.context).then(
        () => undefined,
        (e: unknown) => e,
      ),
      sweepHttp(postSweep("{}"), httpRun.context),
    ]);

    expect(timerError).toBeInstanceOf(Error);
    expect((timerError as Error).message).toMatch(/^Sweep ended by a fault: \S+$/);
    const warning = timerRun.lines.find((l) => l.level === "warning" && l.event === "Sweep ended by a fault");
    expect(warning?.details).toMatchObject({ trigger: "timer", scanned: 0, claimed: 0, error: { code: expect.any(String), message: expect.any(String) } });
    expect(response.status).toBe(503);
    expectClearFault(response.jsonBody as SweepSummary);
    expect(response.jsonBody).toMatchObject({ scanned: 0, claimed: 0, graphRequests: 0 });
    // Nothing was sent and nothing changed.
    expect(answered(ids)).toBe(0);
    const after = await rawEntities(table.services.ledger);
    expect(after.map((e) => e.etag).sort()).toEqual(before.map((e) => e.etag).sort());

    proxy.restore();
    const again = await sweepHttp(postSweep("{}"), invocation("sweep").context);
    expect(again.status).toBe(200);
    await expectConverged(table, ids, again.jsonBody as SweepSummary);
  });
});
