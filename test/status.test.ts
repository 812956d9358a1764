/**
 * The status view (README "The status view"): `workbook-session-sweeper status` (text and `--json`)
 * and `GET /api/status`, against Azurite and the https stand-ins. A ledger seeded with a known mix
 * of live rows, history rows and sweep records; every figure is held to what the test works out
 * from the rows it wrote. Release latency follows the service's times, whatever a producer's clock
 * wrote; every sweep leaves its record, and one that cannot be written fails nothing.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TableClient } from "@azure/data-tables";
import { HttpRequest } from "@azure/functions";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { LedgerStatus } from "../src";
import type { CliIo } from "../src/cli";
import { bar, BAR_CHARACTER, formatDuration } from "../src/cli/status";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { historyTableName } from "../src/ledger/history";
import { END_OF_TIME } from "../src/ledger/liveness";
import { SweepsTable, sweepsTableOf, SWEEPS_TABLE_SUFFIX, type RecordedSweep } from "../src/ledger/sweepsTable";
import { createLedgerTableClient, isTableNotFound } from "../src/ledger/tableClient";
import { runLoggedSweep } from "../src/app/runSweep";
import { useCloudFixture, silence, openAndRecord, producerWithClock, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { runCli } from "./support/cli";
import { invocation } from "./support/functionsHost";
import { uniqueTableName } from "./support/ledgerFixture";
import { captureLog } from "./support/secretScan";
import type { Run } from "./support/exec";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** STALE_AFTER's default: the lease of rows without one of their own. */
const STALE_AFTER_MS = 2 * MINUTE;

let cloud: CloudFixture;
let workDir: string;
let connectionString: string;

useCloudFixture((started) => (cloud = started));
beforeAll(() => {
  connectionString = inject("storageConnectionString");
  workDir = mkdtempSync(join(tmpdir(), "wss-status-"));
});
afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** Only what the status needs: no AZURE_* or ASSERTION_* setting anywhere. */
function storageOnly(tableName: string): Record<string, string> {
  return { AzureWebJobsStorage: connectionString, SESSIONS_TABLE: tableName };
}

/** The CLI in process, in this file's working directory unless a test gives another. */
function cli(argv: string[], io: Partial<CliIo> & { env: CliIo["env"] }): Promise<Run> {
  return runCli(argv, { cwd: workDir, ...io });
}

async function statusJson(tableName: string): Promise<LedgerStatus> {
  const run = await cli(["status", "--json"], { env: storageOnly(tableName) });
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  expect(run.stdout.trimEnd().split("\n")).toHaveLength(1);
  return JSON.parse(run.stdout) as LedgerStatus;
}

function client(tableName: string): TableClient {
  return createLedgerTableClient(connectionString, tableName);
}

/** A live row (schema version 2) as a producer and a sweeper leave it, with the columns the test sets. */
type Entity = { partitionKey: string; rowKey: string; workbook: string } & Record<string, unknown>;

function liveEntity(name: string, columns: Record<string, unknown>): Entity {
  const userId = newUserId();
  const sessionId = `session-${name}-${randomBytes(6).toString("hex")}`;
  return {
    partitionKey: partitionKeyFor(HOME_TENANT, userId),
    rowKey: rowKeyFor(sessionId),
    schemaVersion: 2,
    tenantId: HOME_TENANT,
    userId,
    sessionId,
    workbook: `/drives/d/items/${name}`,
    persistChanges: true,
    createdAt: new Date(Date.now() - 2 * HOUR),
    updatedAt: new Date(),
    heartbeatSeenAt: END_OF_TIME,
    leaseSeconds: 0,
    status: "open",
    attempts: 0,
    recordedBy: "test",
    assertion: "",
    ...columns,
  };
}

/** A history row as the sweeper or a producer leaves it (no assertion, `lastActivityAt` the last heartbeat). */
function historyEntity(name: string, columns: { status: string; finishedAt: Date; lastActivityAt: Date } & Record<string, unknown>): Entity {
  const { assertion: _assertion, heartbeatSeenAt: _heartbeat, updatedAt: _updated, leaseSeconds: _lease, ...live } = liveEntity(name, {});
  return { ...live, ...columns };
}

describe("status of a ledger seeded with a known mix", () => {
  let tableName: string;
  let seededNow: number;
  const written = { sweeps: [] as RecordedSweep[], latest: "" };
  /** Each live row's last heartbeat as the service saw it (the earlier of Timestamp and heartbeatSeenAt). */
  const heartbeat = new Map<string, number>();
  const nextAttempt = new Map<string, number>();

  beforeAll(async () => {
    tableName = uniqueTableName();
    const live = client(tableName);
    await live.createTable();
    const now = (seededNow = Date.now());
    const ago = (ms: number) => new Date(now - ms);
    const ahead = (ms: number) => new Date(now + ms);
    // Live: three alive (one by its own 1 h lease, one waiting on a retry), one claimed, two due, one cooling down.
    const liveRows = [
      liveEntity("alive", {}),
      liveEntity("aliveOwnLease", { leaseSeconds: 3_600, heartbeatSeenAt: ago(30 * MINUTE) }),
      liveEntity("aliveWaiting", { nextAttemptAt: ahead(10 * MINUTE), attempts: 1, lastErrorCode: "Http503" }),
      liveEntity("claimed", { status: "closing", leaseUntil: ahead(5 * MINUTE), heartbeatSeenAt: ago(20 * MINUTE), attempts: 1 }),
      liveEntity("due", { heartbeatSeenAt: ago(10 * MINUTE) }),
      liveEntity("claimLapsed", { status: "closing", leaseUntil: ago(MINUTE), heartbeatSeenAt: ago(45 * MINUTE), attempts: 1 }),
      liveEntity("cooldown", { heartbeatSeenAt: ago(15 * MINUTE), nextAttemptAt: ahead(30 * MINUTE), attempts: 2, lastErrorCode: "tooManyRequests" }),
    ];
    const malformed = liveEntity("malformed", { attempts: "many", heartbeatSeenAt: ago(10 * MINUTE) });
    // Finished, and left in the live table by a move cut short: also in history, counted once.
    const leftBehind = liveEntity("leftBehind", { status: "closed", closedBy: "sweeper", closedAt: ago(HOUR), finishedAt: ago(HOUR), heartbeatSeenAt: ago(65 * MINUTE), attempts: 1 });
    for (const entity of [...liveRows, malformed, leftBehind]) await live.createEntity(entity);
    for (const entity of liveRows) {
      const stored = await live.getEntity<Record<string, unknown>>(entity.partitionKey, entity.rowKey);
      const timestamp = Date.parse(stored.timestamp as string);
      heartbeat.set(entity.workbook, Math.min(timestamp, (entity.heartbeatSeenAt as Date).getTime()));
      if (entity.nextAttemptAt instanceof Date) nextAttempt.set(entity.workbook, entity.nextAttemptAt.getTime());
    }

    const { assertion: _a, heartbeatSeenAt: _h, updatedAt: _u, leaseSeconds: _l, ...leftBehindHistory } = leftBehind;
    const history = [
      // Closed by the sweeper: 5 min past the default lease; 2 min past its own 1 h lease (kept as a row moved as stored keeps it); 10 min, after a retry; one before its lease ran out (a close request).
      historyEntity("h1", { status: "closed", closedBy: "sweeper", finishedAt: ago(2 * HOUR), lastActivityAt: ago(2 * HOUR + 7 * MINUTE) }),
      historyEntity("h2", { status: "closed", closedBy: "sweeper", finishedAt: ago(3 * HOUR), lastActivityAt: ago(3 * HOUR + 62 * MINUTE), leaseSeconds: 3_600 }),
      historyEntity("h3", { status: "closed", closedBy: "sweeper", finishedAt: ago(5 * HOUR), lastActivityAt: ago(5 * HOUR + 12 * MINUTE), lastErrorCode: "tooManyRequests", attempts: 2 }),
      historyEntity("h4", { status: "closed", closedBy: "sweeper", finishedAt: ago(4 * HOUR), lastActivityAt: ago(4 * HOUR + 30_000) }),
      historyEntity("h5", { status: "closed", closedBy: "producer", finishedAt: ago(HOUR), lastActivityAt: ago(HOUR + MINUTE) }),
      historyEntity("h6", { status: "expired", finishedAt: ago(6 * HOUR), lastActivityAt: ago(7 * HOUR), lastErrorCode: "itemNotFound" }),
      historyEntity("h7", { status: "expired", finishedAt: ago(7 * HOUR), lastActivityAt: ago(8 * HOUR), lastErrorCode: "AADSTS500133" }),
      historyEntity("h8", { status: "expired", finishedAt: ago(8 * HOUR), lastActivityAt: ago(9 * HOUR), lastErrorCode: "itemNotFound" }),
      historyEntity("h9", { status: "failed", finishedAt: ago(9 * HOUR), lastActivityAt: ago(10 * HOUR), lastErrorCode: "Http403" }),
      historyEntity("h10", { status: "failed", finishedAt: ago(23 * HOUR), lastActivityAt: ago(23 * HOUR + 5 * MINUTE), lastErrorCode: "MalformedRow" }),
      { ...leftBehindHistory, lastActivityAt: ago(65 * MINUTE) },
      // Older than 24 h: not counted.
      historyEntity("old1", { status: "closed", closedBy: "sweeper", finishedAt: ago(30 * HOUR), lastActivityAt: ago(31 * HOUR) }),
      historyEntity("old2", { status: "failed", finishedAt: ago(26 * HOUR), lastActivityAt: ago(27 * HOUR), lastErrorCode: "Http403" }),
    ];
    for (const entity of history) {
      const week = client(historyTableName(tableName, entity.finishedAt as Date));
      await week.createTable();
      await week.upsertEntity(entity, "Replace");
    }

    // Sweep records: one past the week they are kept, then two (the second dropped the first).
    const records = new SweepsTable(client(`${tableName}${SWEEPS_TABLE_SUFFIX}`));
    const counts = (closed: number) => ({
      scanned: closed + 2, stale: closed + 1, claimed: closed, lostRaces: 0, closed, expired: 0, retry: 1, failed: 0, malformed: 0,
      skipped: 1, deferred: 0, paused: 0, leasedElsewhere: 0, moved: 0, graphRequests: closed + 1, stoppedEarly: false,
    });
    const sweeps: RecordedSweep[] = [
      { trigger: "timer", dryRun: false, startedAt: ago(8 * 24 * HOUR), finishedAt: ago(8 * 24 * HOUR - 1_000), durationMs: 1_000, counts: counts(1) },
      { trigger: "timer", dryRun: false, startedAt: ago(10 * MINUTE), finishedAt: ago(10 * MINUTE - 1_234), durationMs: 1_234, counts: counts(3) },
      {
        trigger: "http",
        dryRun: true,
        startedAt: ago(5 * MINUTE),
        finishedAt: ago(5 * MINUTE - 2_500),
        durationMs: 2_500,
        counts: { ...counts(0), stoppedEarly: true },
        error: { code: "AuthorizationPermissionMismatch", message: "This request is not authorized to perform this operation." },
      },
    ];
    for (const sweep of sweeps) await records.record(sweep);
    written.sweeps = sweeps.slice(1).reverse();
  });

  /** What the status must say, worked out from the rows written and the service's time the status names. */
  function expected(status: LedgerStatus) {
    const now = Date.parse(status.serviceNow);
    expect(Math.abs(now - Date.now())).toBeLessThan(60_000);
    const oldest = heartbeat.get("/drives/d/items/claimLapsed")!;
    const nextDue = Math.min(...nextAttempt.values());
    const latencies = [7 - 2, 62 - 60, 12 - 2, 65 - 60 - 2].map((m) => m * MINUTE).sort((a, b) => a - b);
    return {
      table: tableName,
      serviceNow: status.serviceNow,
      staleAfterMs: STALE_AFTER_MS,
      live: {
        total: 7,
        byState: { open: 3, closing: 2, waitingRetry: 2 },
        byIdle: { alive: 3, stale: 1, due: 2, cooldown: 1 },
        oldest: { idleMs: now - oldest, lastActivityAt: new Date(oldest).toISOString(), status: "closing" },
        retries: { waiting: 2, nextDueAt: new Date(nextDue).toISOString(), nextDueInMs: nextDue - now },
        malformed: 1,
      },
      finished: {
        since: new Date(now - 24 * HOUR).toISOString(),
        total: 11,
        byOutcome: { closed: 6, expired: 3, failed: 2 },
        closedBy: { sweeper: 5, producer: 1 },
        byErrorCode: [
          { code: "itemNotFound", outcome: "expired", count: 2 },
          { code: "AADSTS500133", outcome: "expired", count: 1 },
          { code: "Http403", outcome: "failed", count: 1 },
          { code: "MalformedRow", outcome: "failed", count: 1 },
          { code: "tooManyRequests", outcome: "closed", count: 1 },
        ],
      },
      // Nearest rank of [2, 3, 5, 10] minutes.
      releaseLatency: { count: 4, p50Ms: latencies[1], p95Ms: latencies[3], p99Ms: latencies[3], maxMs: latencies[3], closedBeforeLease: 1 },
      sweeps: written.sweeps.map((s) => ({
        trigger: s.trigger,
        dryRun: s.dryRun,
        startedAt: s.startedAt.toISOString(),
        finishedAt: s.finishedAt.toISOString(),
        durationMs: s.durationMs,
        counts: s.counts,
        error: s.error ?? null,
      })),
    };
  }

  it("--json prints one JSON object whose every figure is the rows' own", async () => {
    const status = await statusJson(tableName);
    expect(status).toEqual(expected(status));
    expect(Date.parse(status.serviceNow)).toBeGreaterThanOrEqual(seededNow - 2_000);
  });

  it("the text view shows the same figures, the idle ages as a bar chart of characters", async () => {
    const run = await cli(["status"], { env: storageOnly(tableName) });
    expect(run.code).toBe(0);
    expect(run.stderr).toBe("");
    const serviceNow = /^Status of table (\S+) at (\S+) \(the storage service's time\)$/m.exec(run.stdout);
    expect(serviceNow?.[1]).toBe(tableName);
    const want = expected({ serviceNow: serviceNow![2]! } as LedgerStatus);
    const text = run.stdout;
    expect(text).toContain("Live sessions: 7 (open 3, closing 2, waiting on a retry 2)");
    const byIdle = want.live.byIdle;
    const max = Math.max(...Object.values(byIdle));
    for (const [bucket, count] of Object.entries(byIdle)) {
      const line = new RegExp(`^ {2}${bucket} +.+? +(${BAR_CHARACTER}*) +${count}$`, "m").exec(text);
      expect(line, bucket).not.toBeNull();
      expect(line![1]!.length, bucket).toBe(count === 0 ? 0 : Math.max(1, Math.round((count / max) * 30)));
      expect(bar(count, max).trimEnd()).toBe(line![1]);
    }
    expect(text).toContain(`idle ${formatDuration(want.live.oldest.idleMs)} (last heartbeat ${want.live.oldest.lastActivityAt}, closing)`);
    expect(text).toContain(`2 waiting; the next due ${want.live.retries.nextDueAt}`);
    expect(text).toMatch(/^ {2}malformed +1 row /m);
    expect(text).toContain("Finished in the last 24 h: 11 (closed 6: by the sweeper 5, by producers 1; expired 3; failed 2)");
    for (const { code, outcome, count } of want.finished.byErrorCode) expect(text).toMatch(new RegExp(`^ {2}${code} +${outcome} +${count}$`, "m"));
    expect(text).toContain(": 4 sessions\n  p50 3m 0s  p95 10m 0s  p99 10m 0s  max 10m 0s");
    expect(text).toContain("1 closed before the lease ran out");
    expect(text).toMatch(new RegExp(`^ {2}${want.sweeps[0]!.startedAt} +http \\(dry run\\) +2\\.5s +2 +0 +0 +1 +0 +1 +AuthorizationPermissionMismatch$`, "m"));
    expect(text).toMatch(new RegExp(`^ {2}${want.sweeps[1]!.startedAt} +timer +1\\.2s +5 +3 +0 +1 +0 +1$`, "m"));
    expect(text.indexOf(want.sweeps[0]!.startedAt)).toBeLessThan(text.indexOf(want.sweeps[1]!.startedAt));
  });

  it("GET /api/status answers 200 with the same JSON object, through the real HttpRequest and InvocationContext", async () => {
    // As the host passes app settings: the storage ones only, nothing of Entra ID or the keys.
    for (const name of Object.keys(process.env)) if (/^(AZURE_|ASSERTION_)/.test(name)) delete process.env[name];
    Object.assign(process.env, storageOnly(tableName));
    const { statusHttp } = await import("../functions/status");
    const { context, lines } = invocation("status");

    const response = await statusHttp(new HttpRequest({ method: "GET", url: "http://localhost:7071/api/status" }), context);
    const cliStatus = await statusJson(tableName);

    expect(response.status).toBe(200);
    expect(new Headers(response.headers as Record<string, string>).get("content-type")).toBe("application/json");
    const body = JSON.parse(JSON.stringify(response.jsonBody)) as LedgerStatus;
    expect(body).toEqual(expected(body));
    // The same object as the CLI's --json, but for the moment each measured its ages at.
    const shift = Date.parse(cliStatus.serviceNow) - Date.parse(body.serviceNow);
    expect(body).toEqual({
      ...cliStatus,
      serviceNow: body.serviceNow,
      finished: { ...cliStatus.finished, since: body.finished.since },
      live: {
        ...cliStatus.live,
        oldest: { ...cliStatus.live.oldest!, idleMs: cliStatus.live.oldest!.idleMs - shift },
        retries: { ...cliStatus.live.retries, nextDueInMs: cliStatus.live.retries.nextDueInMs! + shift },
      },
    });
    expect(lines).toEqual([]);
  });
});

describe("release latency", () => {
  it("follows the service's times the ledger keeps, not the clocks of the producers that wrote the rows", async () => {
    const table = await cloud.newTable();
    const idles = [10, 20, 30].map((m) => m * MINUTE);
    const skews = [3 * HOUR, -3 * HOUR, 3 * HOUR];
    for (const [i, idleMs] of idles.entries()) {
      // A producer whose clock is hours off: createdAt and updatedAt are its clock's.
      const producer = producerWithClock(cloud, table.tableName, () => new Date(Date.now() + skews[i]!));
      const { row } = await openAndRecord(cloud, producer, { workbook: `/drives/d/items/skewed${i}`, recordedBy: "skewed" });
      await silence(producer.client, row, idleMs);
    }
    const logger = { log: () => undefined, warn: (message: string, details: Record<string, unknown>) => captureLog(message, details) };
    const summary = await runLoggedSweep(table.services, {}, logger, "cli");
    expect(summary).toMatchObject({ scanned: 3, closed: 3 });

    const status = await statusJson(table.tableName);
    const rows = [];
    for await (const page of table.services.ledger.listHistory()) rows.push(...page.rows);
    expect(rows).toHaveLength(3);
    const latencies = rows.map((row) => row.finishedAt!.getTime() - (row.lastActivityAt.getTime() + STALE_AFTER_MS)).sort((a, b) => a - b);
    expect(status.releaseLatency).toEqual({ count: 3, p50Ms: latencies[1], p95Ms: latencies[2], p99Ms: latencies[2], maxMs: latencies[2], closedBeforeLease: 0 });
    // Each is its idle time past the lease, give or take the sweep's own seconds ...
    latencies.forEach((latency, i) => {
      expect(latency).toBeGreaterThanOrEqual(idles[i]! - STALE_AFTER_MS - 2_000);
      expect(latency).toBeLessThan(idles[i]! - STALE_AFTER_MS + 60_000);
    });
    // ... while the producers' own columns are hours away from the service's.
    for (const row of rows) expect(Math.abs(row.createdAt!.getTime() - row.lastActivityAt.getTime())).toBeGreaterThan(2 * HOUR);

    // The sweep left its record: the last sweep, with its counts.
    expect(status.sweeps[0]).toMatchObject({ trigger: "cli", dryRun: false, durationMs: summary.durationMs, error: null, counts: { scanned: 3, claimed: 3, closed: 3, graphRequests: 3, stoppedEarly: false } });
    expect(Date.parse(status.sweeps[0]!.finishedAt) - Date.parse(status.sweeps[0]!.startedAt)).toBe(summary.durationMs);
    expect(status.finished).toMatchObject({ total: 3, byOutcome: { closed: 3 }, closedBy: { sweeper: 3 } });
  });
});

describe("the sweep's record", () => {
  it("every logged sweep leaves one, newest first; one that cannot be written is a warning and the sweep goes on", async () => {
    const table = await cloud.newTable();
    const logged: { message: string; details: Record<string, unknown> }[] = [];
    const logger = {
      log: () => undefined,
      warn: (message: string, details: Record<string, unknown>) => {
        captureLog(message, details);
        logged.push({ message, details });
      },
    };
    await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/r1" });
    const first = await runLoggedSweep(table.services, { dryRun: true }, logger, "http");
    // The right account with a wrong key: the service refuses the record (403).
    const wrongKey = connectionString.replace(/AccountKey=[^;]+/, `AccountKey=${randomBytes(64).toString("base64")}`);
    const unwritable = new SweepsTable(createLedgerTableClient(wrongKey, `${table.tableName}${SWEEPS_TABLE_SUFFIX}`));
    const second = await runLoggedSweep(table.services, {}, logger, "cli", {}, { sweepsTable: unwritable });

    expect(first).toMatchObject({ dryRun: true, stale: 1, closed: 0 });
    expect(second).toMatchObject({ closed: 1 });
    expect(second.error).toBeUndefined();
    expect(logged).toEqual([{ message: "Sweep record not written; the sweep itself is unaffected", details: expect.objectContaining({ trigger: "cli", code: expect.any(String) }) }]);
    const third = await runLoggedSweep(table.services, {}, logger, "timer");
    expect(third).toMatchObject({ scanned: 0 });

    const status = await statusJson(table.tableName);
    // The dry run wrote nothing, its record included; the unwritable one is missing too.
    expect(status.sweeps.map((s) => [s.trigger, s.dryRun, s.counts?.stale, s.counts?.closed])).toEqual([["timer", false, 0, 0]]);
    expect(status.sweeps[0]!.durationMs).toBe(third.durationMs);
    // The records are the ledger's own, beside its tables.
    expect(await sweepsTableOf(table.services.ledger).recent()).toHaveLength(1);
  });
});

describe("the sweep records' retention", () => {
  it("each record's write drops the records of sweeps started more than 7 days before it; a missing table reads as none", async () => {
    const records = new SweepsTable(createLedgerTableClient(connectionString, `${uniqueTableName()}${SWEEPS_TABLE_SUFFIX}`));
    expect(await records.recent()).toEqual([]);
    const day = 86_400_000;
    const sweep = (startedAt: Date, trigger: string): RecordedSweep => ({ trigger, dryRun: false, startedAt, finishedAt: new Date(startedAt.getTime() + 1_000), durationMs: 1_000 });
    const now = Date.now();
    await records.record(sweep(new Date(now - 8 * day), "eight days ago"));
    await records.record(sweep(new Date(now - 6 * day), "six days ago"));
    expect((await records.recent()).map((r) => r.trigger)).toEqual(["six days ago", "eight days ago"]);
    await records.record(sweep(new Date(now), "now"));
    expect((await records.recent()).map((r) => r.trigger)).toEqual(["now", "six days ago"]);
  });
});

describe("settings", () => {
  it("with only the storage settings, status runs; with no storage setting it exits 2 naming it", async () => {
    const table: TableFixture = await cloud.newTable();
    await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/s1", idleMinutes: 0 });
    const env = storageOnly(table.tableName);
    expect(Object.keys(env).filter((name) => /^(AZURE_|ASSERTION_)/.test(name))).toEqual([]);

    const ok = await cli(["status"], { env });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("Live sessions: 1 (open 1, closing 0, waiting on a retry 0)");
    expect(ok.stdout).toContain("Last sweeps: none recorded");

    const missing = await cli(["status", "--json"], { env: { SESSIONS_TABLE: table.tableName } });
    expect(missing.code).toBe(2);
    expect(missing.stdout).toBe("");
    expect(missing.stderr).toContain("AzureWebJobsStorage is required but not set");
    expect(missing.stderr).toContain("no local.settings.json");

    const sweepFlag = await cli(["status", "--dry-run"], { env });
    expect(sweepFlag.code).toBe(2);
    expect(sweepFlag.stderr).toContain("the status command does not take --dry-run");
  });

  it("reads a ledger that does not exist yet as empty, and creates nothing", async () => {
    const tableName = uniqueTableName();
    const status = await statusJson(tableName);
    expect(status.live).toMatchObject({ total: 0, oldest: null, retries: { waiting: 0, nextDueAt: null, nextDueInMs: null }, malformed: 0 });
    expect(status.finished.total).toBe(0);
    expect(status.releaseLatency).toEqual({ count: 0, p50Ms: null, p95Ms: null, p99Ms: null, maxMs: null, closedBeforeLease: 0 });
    expect(status.sweeps).toEqual([]);
    const error = await client(tableName).getEntity("p", "r").catch((e: unknown) => e);
    expect(isTableNotFound(error)).toBe(true);
    const sweeps = await client(`${tableName}${SWEEPS_TABLE_SUFFIX}`).getEntity("p", "r").catch((e: unknown) => e);
    expect(isTableNotFound(sweeps)).toBe(true);
  });

  it("exits 1 naming the fault when storage refuses the read", async () => {
    const wrongKey = connectionString.replace(/AccountKey=[^;]+/, `AccountKey=${randomBytes(64).toString("base64")}`);
    const run = await cli(["status"], { env: { AzureWebJobsStorage: wrongKey, SESSIONS_TABLE: uniqueTableName() } });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/the ledger could not be read: \S+: /);
    expect(run.stderr).not.toContain(wrongKey);
  });
});
