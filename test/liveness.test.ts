/**
 * Liveness by the storage service's clock (src/ledger/liveness.ts): producers and sweepers whose
 * clocks are ten minutes off close no live session and delay no dead one, each session is judged by
 * its own lease, and a row of another schema version is named, never silently skipped.
 */
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Codes, SessionProducer, createSweeperServices, loadConfig, type SweeperServices } from "../src";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { openAndRecord, producerWithClock, silence, useCloudFixture, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";

let cloud: CloudFixture;
useCloudFixture((started) => (cloud = started));

const MINUTE = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function skewedServices(table: TableFixture, skewMs: number, onStorageRequest?: (request: { method: string; url: string }) => void): SweeperServices {
  const config = loadConfig(cloud.settings({ SESSIONS_TABLE: table.tableName }));
  return createSweeperServices(config, { tokenMaxRetries: 0, clock: () => new Date(Date.now() + skewMs), ...(onStorageRequest && { onStorageRequest }) });
}

function skewedProducer(table: TableFixture, skewMs: number): SessionProducer {
  return producerWithClock(cloud, table.tableName, () => new Date(Date.now() + skewMs));
}

function record(producer: SessionProducer, workbook: string, leaseMs?: number) {
  return openAndRecord(cloud, producer, { workbook, recordedBy: "test", leaseMs });
}

describe("liveness by the service's clock", () => {
  it("producers and sweepers ten minutes slow or fast close no live session, and close each dead one within its lease and a sweep", async () => {
    const table = await cloud.newTable();
    const lease = 10_000;
    const producers = [skewedProducer(table, -10 * MINUTE), skewedProducer(table, 10 * MINUTE)];
    const sweepers = [skewedServices(table, -10 * MINUTE), skewedServices(table, 10 * MINUTE)];
    const sessions = await Promise.all(Array.from({ length: 8 }, (_, i) => record(producers[i % 2]!, `/drives/skew/items/s${i}`, lease)));

    // Heartbeats every second (a tenth of the lease) while both sweepers sweep: nothing is closed.
    const beatUntil = Date.now() + 6_000;
    let lastBeat = Date.now();
    const beating = (async () => {
      while (Date.now() < beatUntil) {
        await Promise.all(sessions.map(({ row }, i) => producers[i % 2]!.touch(row)));
        lastBeat = Date.now();
        await sleep(1_000);
      }
    })();
    while (Date.now() < beatUntil) {
      for (const services of sweepers) expect((await services.newSweeper().run()).claimed).toBe(0);
      await sleep(500);
    }
    await beating;
    for (const { sessionId } of sessions) expect(cloud.emulator.sessionState(sessionId)).toBe("open");

    // The producers stop: every session is closed once its lease has run out, by the next sweep.
    const sweepEveryMs = 1_000;
    let closedAt: number | undefined;
    while (closedAt === undefined && Date.now() - lastBeat < lease + 10 * sweepEveryMs) {
      for (const services of sweepers) await services.newSweeper().run();
      if (sessions.every(({ sessionId }) => cloud.emulator.sessionState(sessionId) === "closed")) closedAt = Date.now();
      else await sleep(sweepEveryMs);
    }
    expect(closedAt, "every dead session closed").toBeDefined();
    // The lease, one sweep interval, and the service's Date header's whole second.
    expect(closedAt! - lastBeat).toBeLessThanOrEqual(lease + sweepEveryMs + 2_500);
    expect(closedAt! - lastBeat).toBeGreaterThanOrEqual(lease - 1_000);
    const finished = await Promise.all(sessions.map(({ row }) => table.services.ledger.get(row)));
    expect(finished.map((r) => r?.status)).toEqual(sessions.map(() => "closed"));
  });

  it("a process's first sweep, before it has heard the service's time: one query when idle, and no dead session missed or live one taken whatever its clock", async () => {
    const table = await cloud.newTable();
    const producer = skewedProducer(table, 0);
    await record(producer, "/drives/first/items/alive", 10 * MINUTE);
    const idleRequests: string[] = [];
    const idle = await skewedServices(table, 0, (request) => idleRequests.push(request.method)).newSweeper().run();
    expect(idle.stale).toBe(0);
    expect(idleRequests, "an idle sweep in a fresh process is one query").toEqual(["GET"]);

    // Recorded by a producer ten minutes fast: nothing it writes may hold the session back.
    const dead = await record(skewedProducer(table, 10 * MINUTE), "/drives/first/items/dead", 10_000);
    await silence(producer.client, dead.row, 30_000);
    for (const skewMs of [-10 * MINUTE, 10 * MINUTE, 0]) {
      const requests: string[] = [];
      const summary = await skewedServices(table, skewMs, (request) => requests.push(request.method)).newSweeper().run({ dryRun: true });
      expect(summary.stale, `a sweeper ${skewMs / MINUTE} min off finds exactly the dead session on its first sweep`).toBe(1);
      // A host clock that lags asks again with the service's time; one on time or ahead asks once.
      expect(requests).toEqual(skewMs < 0 ? ["GET", "GET"] : ["GET"]);
    }
  });

  it("judges each session by its own lease: a 15 s lease and a 10 min lease in one table", async () => {
    const table = await cloud.newTable();
    const producer = skewedProducer(table, 0);
    const short = await record(producer, "/drives/lease/items/short", 15_000);
    const long = await record(producer, "/drives/lease/items/long", 10 * MINUTE);
    expect((await table.services.ledger.get(short.row))).toMatchObject({ leaseMs: 15_000 });

    // Silent for 20 s: past the short lease only.
    await silence(producer.client, short.row, 20_000);
    await silence(producer.client, long.row, 20_000);
    const first = await table.services.newSweeper().run();
    expect(first).toMatchObject({ closed: 1, scanned: 1 });
    expect(cloud.emulator.sessionState(short.sessionId)).toBe("closed");
    expect(cloud.emulator.sessionState(long.sessionId)).toBe("open");

    // Silent for 9 min: still within its lease. For 11 min: past it.
    await silence(producer.client, long.row, 9 * MINUTE);
    expect((await table.services.newSweeper().run()).closed).toBe(0);
    await silence(producer.client, long.row, 11 * MINUTE);
    expect((await table.services.newSweeper().run()).closed).toBe(1);
    expect(cloud.emulator.sessionState(long.sessionId)).toBe("closed");

    // An operator's olderThan overrides every lease.
    const third = await record(producer, "/drives/lease/items/third", 10 * MINUTE);
    await silence(producer.client, third.row, 2 * MINUTE);
    expect((await table.services.newSweeper().run({ olderThanMs: MINUTE })).closed).toBe(1);
  });

  it("refuses a lease outside 10 s to 24 h", async () => {
    const table = await cloud.newTable();
    const producer = skewedProducer(table, 0);
    for (const leaseMs of [5_000, 25 * 60 * MINUTE, 1_500]) {
      await expect(record(producer, "/drives/lease/items/bad", leaseMs)).rejects.toMatchObject({ code: Codes.InvalidInput, problems: [expect.objectContaining({ field: "leaseMs" })] });
    }
  });
});

describe("a row of schema version 1", () => {
  it("is named UnsupportedSchemaVersion by the sweep, never closed nor silently skipped", async () => {
    const table = await cloud.newTable();
    const userId = newUserId();
    const sessionId = `v1-${randomUUID()}`;
    const keys = { partitionKey: partitionKeyFor(HOME_TENANT, userId), rowKey: rowKeyFor(sessionId) };
    const past = new Date(Date.now() - 60 * MINUTE);
    // As a producer of version 1 wrote it: liveness by its own clock (lastActivityAt).
    await table.services.ledger.client.createEntity({
      ...keys,
      schemaVersion: 1,
      tenantId: HOME_TENANT,
      userId,
      sessionId,
      workbook: "/drives/v1/items/old",
      persistChanges: true,
      createdAt: past,
      lastActivityAt: past,
      updatedAt: past,
      status: "open",
      attempts: 0,
      recordedBy: "old-producer",
    });
    const summary = await table.services.newSweeper().run();
    expect(summary).toMatchObject({ scanned: 1, malformed: 1, closed: 0, graphRequests: 0 });
    const stored = await table.services.ledger.history.storedEntity(keys);
    expect(stored).toMatchObject({ status: "failed", lastErrorCode: Codes.UnsupportedSchemaVersion });
    expect(String(stored!.lastErrorMessage)).toMatch(/schemaVersion is 1/);
  });
});
