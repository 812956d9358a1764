/**
 * One sender per tenant across processes (src/ledger/tenantLeases.ts): the timer, an HTTP sweep
 * and the CLI, each in a process of its own as they run when deployed, over one backlog; and queue
 * close requests arriving while a sweep holds their tenant.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { handleCloseRequest } from "../src/app/handleCloseRequest";
import { mapConcurrent } from "../src/utils/concurrency";
import { httpInput, queueInput, startFunctionsWorker, timerInput, type RunningWorker } from "../standins/functionsWorker";
import { HOME_TENANT, newUserId, startCloudFixture, type CloudFixture } from "./support/cloudFixture";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const launcher = join(__dirname, "..", "bin", "workbook-session-sweeper.js");

let cloud: CloudFixture;
const workers: RunningWorker[] = [];
beforeAll(async () => {
  cloud = await startCloudFixture();
});
beforeEach(() => {
  cloud.emulator.reset();
  cloud.authority.reset();
});
afterAll(async () => {
  await Promise.all(workers.map((worker) => worker.stop()));
  await cloud?.close();
});

function runCli(env: Record<string, string | undefined>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launcher, "sweep", "--json"], { env: env as NodeJS.ProcessEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

it("the timer, an HTTP sweep and the CLI at once, each its own process, over 600 sessions on 30 shared workbooks: one request per workbook at a time, each session closed once", { timeout: 120_000 }, async () => {
  const overrides = { SWEEP_CONCURRENCY: "4", CLAIM_LEASE: "PT10S" };
  const table = await cloud.newTable(overrides);
  cloud.emulator.configure({ latencyMs: 15 });
  const users = Array.from({ length: 40 }, (_, i) => ({ userId: newUserId(), tenantId: i % 2 ? OTHER_TENANT : HOME_TENANT }));
  const opened = await mapConcurrent(Array.from({ length: 600 }, (_, i) => i), 16, (i) =>
    table.openSession({ ...users[i % users.length]!, workbook: `/drives/shared/items/wb${i % 30}`, idleMinutes: 60 }),
  );
  const settings = cloud.settings({ SESSIONS_TABLE: table.tableName, ...overrides });
  const [timerHost, httpHost] = await Promise.all([startFunctionsWorker(settings), startFunctionsWorker(settings)]);
  workers.push(timerHost!, httpHost!);

  const [timer, http, cli] = await Promise.all([
    timerHost!.invoke("sweepTimer", timerInput()),
    httpHost!.invoke("sweep", httpInput("{}")),
    runCli({ PATH: process.env.PATH, NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS, ...settings }),
  ]);
  expect(timer.error).toBeUndefined();
  expect(http.error).toBeUndefined();
  expect(cli.code, cli.stderr).toBe(0);

  const stats = cloud.emulator.stats();
  expect(stats.maxConcurrentPerWorkbook, "two requests in flight for one workbook").toBeLessThanOrEqual(1);
  expect(stats.closesAfterClosed).toBe(0);
  const closes = cloud.emulator.requests.filter((r) => r.kind === "closeSession");
  expect(closes).toHaveLength(opened.length);
  for (const { sessionId } of opened) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
  // Each tenant was swept by whichever process took its lease; the others left it, and said so.
  const summaries = [JSON.parse(cli.stdout.trim().split("\n").at(-1)!) as { closed: number; leasedElsewhere: number }];
  expect(summaries[0]!.closed + summaries[0]!.leasedElsewhere).toBeGreaterThan(0);
  expect(await table.services.newSweeper().run()).toMatchObject({ stale: 0, claimed: 0 });
});

it("queue close requests for a tenant a sweep holds: handed to the sweep, none lost, none sent beside it", { timeout: 60_000 }, async () => {
  const table = await cloud.newTable({ SWEEP_CONCURRENCY: "2" });
  // Long enough that the sweep outlasts a close request's brief wait for the tenant's lease.
  cloud.emulator.configure({ latencyMs: 60 });
  const users = Array.from({ length: 6 }, () => newUserId());
  const stale = await mapConcurrent(Array.from({ length: 120 }, (_, i) => i), 8, (i) =>
    table.openSession({ userId: users[i % users.length]!, workbook: `/drives/q/items/wb${i % 6}`, idleMinutes: 60 }),
  );
  // In use, so no sweep would take them: only a close request asks for them.
  const asked = await mapConcurrent(Array.from({ length: 12 }, (_, i) => i), 8, (i) =>
    table.openSession({ userId: users[i % users.length]!, workbook: `/drives/q/items/wb${i % 6}`, idleMinutes: 0 }),
  );

  const sweeping = table.services.newSweeper().run();
  // Once the sweep holds the tenant (its first closes are answered), the requests come in.
  while (cloud.emulator.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  const results = await Promise.all(asked.map(({ row }) => handleCloseRequest(table.services, { tenantId: row.tenantId, userId: row.userId, sessionId: row.sessionId })));
  const summary = await sweeping;
  expect(summary.closed).toBe(stale.length);
  // Each request either got the tenant once the sweep let it go (and closed its session) or handed its row over.
  const handedOff = results.filter((r) => r.result === "handedOff").length;
  expect(handedOff, "the sweep held the tenant past the requests' wait").toBeGreaterThan(0);
  for (const r of results) if (r.result !== "handedOff") expect(r).toMatchObject({ result: "attempted", report: { result: "closed" } });
  expect(cloud.emulator.stats().maxConcurrentPerWorkbook).toBeLessThanOrEqual(1);

  // The holder's next sweep closes what was handed to it.
  const next = await table.services.newSweeper().run();
  expect(next.closed).toBe(handedOff);
  for (const { sessionId } of [...stale, ...asked]) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
  expect(cloud.emulator.requests.filter((r) => r.kind === "closeSession")).toHaveLength(stale.length + asked.length);
  expect(cloud.emulator.stats().maxConcurrentPerWorkbook).toBeLessThanOrEqual(1);
});

it("two processes, each running sweeps and queue close requests for four tenants: Graph's rules hold across them, every session closed once", { timeout: 120_000 }, async () => {
  const overrides = { SWEEP_CONCURRENCY: "8", CLAIM_LEASE: "PT10S", EXCEL_BUDGET_REQUESTS: "40", EXCEL_BUDGET_WINDOW: "PT2S" };
  const table = await cloud.newTable(overrides);
  // Graph's per-tenant budget, enforced: a second sender beside a tenant's holder would overrun it.
  cloud.emulator.configure({ latencyMs: 20, tenantBudget: { requests: 40, windowMs: 2_000 } });
  const tenants = [HOME_TENANT, OTHER_TENANT, "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"];
  const users = Array.from({ length: 16 }, (_, i) => ({ userId: newUserId(), tenantId: tenants[i % tenants.length]! }));
  const stale = await mapConcurrent(Array.from({ length: 160 }, (_, i) => i), 16, (i) =>
    table.openSession({ ...users[i % users.length]!, workbook: `/drives/two/items/wb${i % 12}`, idleMinutes: 60 }),
  );
  const requested = await mapConcurrent(Array.from({ length: 24 }, (_, i) => i), 16, (i) =>
    table.openSession({ ...users[i % users.length]!, workbook: `/drives/two/items/wb${i % 12}`, idleMinutes: 0 }),
  );
  const settings = cloud.settings({ SESSIONS_TABLE: table.tableName, ...overrides });
  const processes = await Promise.all([startFunctionsWorker(settings), startFunctionsWorker(settings)]);
  workers.push(...processes);

  // Each process: a sweep, and half the close requests, one after another as its queue delivers them, then a second sweep.
  const runs = processes.map(async (worker, p) => {
    const outcomes = [await worker.invoke("sweepTimer", timerInput())];
    for (const [i, { row }] of requested.entries()) {
      if (i % 2 !== p) continue;
      const message = JSON.stringify({ tenantId: row.tenantId, userId: row.userId, sessionId: row.sessionId });
      outcomes.push(await worker.invoke("closeRequest", queueInput(message, `m${i}`)));
    }
    outcomes.push(await worker.invoke("sweepTimer", timerInput()));
    return outcomes;
  });
  for (const outcome of (await Promise.all(runs)).flat()) expect(outcome.error).toBeUndefined();
  // What was handed over to a holder that has finished since: the next sweep, wherever it runs.
  await table.services.newSweeper().run();

  const stats = cloud.emulator.stats();
  expect(stats.maxConcurrentPerWorkbook, "two requests in flight for one workbook").toBeLessThanOrEqual(1);
  expect(stats.closesAfterClosed).toBe(0);
  const closes = cloud.emulator.requests.filter((r) => r.kind === "closeSession");
  expect(closes.filter((r) => r.status === 429), "a tenant's budget overrun by two senders").toEqual([]);
  for (const { sessionId } of [...stale, ...requested]) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
  expect(closes).toHaveLength(stale.length + requested.length);
});

it("two sweeps in two processes share the app's Excel budget: each keeps its tenants' share of it", { timeout: 60_000 }, async () => {
  // The app's budget binds (40 a second for 4 tenants that may each send 100); the tenant's lease
  // lasts 1.5 s, so each sweep counts the tenants held every 0.5 s.
  const overrides = { CLAIM_LEASE: "PT3S", EXCEL_BUDGET_REQUESTS: "100", EXCEL_BUDGET_WINDOW: "PT1S", EXCEL_APP_BUDGET_REQUESTS: "40", EXCEL_APP_BUDGET_WINDOW: "PT1S" };
  const appBudget = { requests: 40, windowMs: 1_000 };
  const table = await cloud.newTable(overrides);
  cloud.emulator.configure({ latencyMs: { kind: "lognormal", medianMs: 20, p99Ms: 60 }, appBudget });
  const tenants = [HOME_TENANT, OTHER_TENANT, "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"];
  const users = Array.from({ length: 16 }, (_, i) => ({ userId: newUserId(), tenantId: tenants[i % 4]! }));
  const open = (tenantSet: string[]) =>
    mapConcurrent(
      users.filter((u) => tenantSet.includes(u.tenantId)).flatMap((u) => Array.from({ length: 12 }, (_, i) => ({ ...u, workbook: `/me/drive/items/share-${i % 4}` }))),
      16,
      (p) => table.openSession(p),
    );
  // The first sweep meets only the first two tenants' rows; the second, started once the first
  // holds them, takes the other two. Each sends in a process of its own as far as the budget goes:
  // its own pacer, its own leases.
  const first = await open(tenants.slice(0, 2));
  const a = await cloud.newTableServicesFor(table, overrides);
  const b = await cloud.newTableServicesFor(table, overrides);
  const sweepA = a.newSweeper().run();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const second = await open(tenants.slice(2));
  const bStarted = Date.now();
  const [summaryA, summaryB] = await Promise.all([sweepA, b.newSweeper().run()]);

  // Until the first sweep counts the second's tenants, the two may overrun the app's window: a
  // 429 then is a retry (with Graph's cooldown), never a session's fate, and only in that moment.
  // (A row whose tenant lease lapsed on a loaded machine before its request went is given back
  // untried, leasedElsewhere: the sweeps that follow close it.)
  expect(summaryA.failed + summaryB.failed).toBe(0);
  const all = [...first, ...second];
  for (let round = 0; round < 6 && all.some(({ sessionId }) => cloud.emulator.sessionState(sessionId) === "open"); round++) {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await a.newSweeper().run()).failed).toBe(0);
  }
  expect(all.filter(({ sessionId }) => cloud.emulator.sessionState(sessionId) !== "closed"), "every session closed in the end").toEqual([]);
  expect(summaryA.closed, "the first sweep closed its tenants' sessions").toBeGreaterThan(0);
  expect(summaryB.closed, "the second sweep closed the others'").toBeGreaterThan(0);
  // Once the first sweep has counted the second's tenants (its next renewal, 0.5 s; a second's
  // margin for a loaded machine's late timers), the two together keep the app's budget: each sends
  // its half. Without the count each would send all 40.
  const settled = bStarted + 1_000;
  const sends = cloud.emulator.requests.filter((r) => r.kind === "closeSession" && r.startedAt >= settled).map((r) => r.startedAt).sort((x, y) => x - y);
  let most = 0;
  for (let i = 0, j = 0; i < sends.length; i++) {
    while (sends[i]! - sends[j]! >= appBudget.windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  expect(sends.length, "enough sends after both held their tenants to measure").toBeGreaterThan(appBudget.requests);
  expect(most).toBeLessThanOrEqual(appBudget.requests);
  // Graph's window still holds what both sent before the count for a window after it: a 429 then
  // comes from sends made before it (CI saw them at 1.28-1.39 s), so 429s are judged a window later.
  const cleared = settled + appBudget.windowMs;
  expect(cloud.emulator.requests.filter((r) => r.status === 429 && r.startedAt >= cleared).map((r) => `${r.startedAt - bStarted} ms ${r.fault}`), "429s a window after both sweeps counted each other").toEqual([]);
});
