/**
 * Edges the reliability suites found: values at the ends of their ranges (durations, Retry-After),
 * secrets inside URL settings, and rows the stale query cannot see. Each was a bug; each test holds
 * its fix.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig, ValidationError, type SweepSummary } from "../src";
import { handleCloseRequest } from "../src/app/handleCloseRequest";
import { parseSweepHttpBody } from "../src/app/sweepRequest";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { CLIENT_ID, HOME_TENANT, newUserId, startCloudFixture, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { invocation, postSweep, rawEntities } from "./support/reliability";

let cloud: CloudFixture;
let table: TableFixture;
let sweepHttp: typeof import("../functions/sweepHttp").sweepHttp;

beforeAll(async () => {
  cloud = await startCloudFixture();
  table = await cloud.newTable();
  Object.assign(process.env, cloud.settings({ SESSIONS_TABLE: table.tableName }));
  sweepHttp = (await import("../functions/sweepHttp")).sweepHttp;
});
afterAll(async () => {
  await cloud?.close();
});
beforeEach(() => {
  cloud.emulator.reset();
});

// olderThan is bounded: a cutoff must be a date, so an absurd value is a 400, not a fault.
describe("olderThan beyond the date range", () => {
  it.each([["1e13"], ["1.8e305"], ['"P99999999999W"'], ['"99999999999999"']])("olderThan %s is refused with 400, not a 503", async (value) => {
    const body = `{"olderThan": ${value}}`;
    expect(() => parseSweepHttpBody(body)).toThrow(ValidationError);
    const response = await sweepHttp(postSweep(body), invocation("sweep").context);
    expect(response.status).toBe(400);
  });

  it("every olderThan that validates gives a cutoff that is a date", () => {
    for (const value of [1e9, 1e12, 8.7e12, 1e300]) {
      let request;
      try {
        request = parseSweepHttpBody(JSON.stringify({ olderThan: value }));
      } catch {
        continue;
      }
      expect(Number.isFinite(new Date(Date.now() - request.olderThanMs!).getTime())).toBe(true);
    }
  });
});

// Retry-After is cut to an hour: a broken header must not park a row for centuries, nor past
// 9999-12-31, which Table Storage refuses.
describe("absurd Retry-After values", () => {
  it.each([["99999999999999999999"], ["999999999999"], ["Sat, 01 Jan 10000 00:00:00 GMT"]])(
    "Retry-After %s: a retry at a storable time, no storage fault",
    async (retryAfter) => {
      const own = await cloud.newTable({ CLAIM_LEASE: "2" });
      const { row, sessionId } = await own.openSession({ userId: newUserId(), workbook: "/drives/ra/items/x" });
      cloud.emulator.addFault({ sessionId, times: 1, action: { status: 429, headers: { "Retry-After": retryAfter } } });
      const summary = await own.services.newSweeper().run();
      expect(summary.error).toBeUndefined();
      expect(summary.retry).toBe(1);
      const after = (await own.services.ledger.get(row))!;
      expect(after.status).toBe("open");
      expect(after.nextAttemptAt!.getTime()).toBeLessThanOrEqual(Date.parse("9999-12-31T23:59:59Z"));
      // A cooldown of more than a day from one answer is not one Graph documents.
      expect(after.nextAttemptAt!.getTime()).toBeLessThanOrEqual(Date.now() + 86_400_000);
    },
  );
});

// A URL setting with credentials or a query is refused without quoting them.
describe("secrets inside URL settings", () => {
  it.each([
    ["GRAPH_BASE_URL", "https://operator:PASSWORD-SECRET-1@graph.example/v1.0", "PASSWORD-SECRET-1"],
    ["AZURE_AUTHORITY_HOST", "https://login.example/?sig=SAS-SECRET-2", "SAS-SECRET-2"],
    ["GRAPH_BASE_URL", "http://operator:PASSWORD-SECRET-3@graph.example/v1.0", "PASSWORD-SECRET-3"],
  ])("%s with credentials is refused without quoting them", (setting, value, secret) => {
    let error: unknown;
    try {
      loadConfig(cloud.settings({ [setting]: value }));
    } catch (e) {
      error = e;
    }
    expect((error as Error).message).toContain(setting);
    expect((error as Error).message).not.toContain(secret);
  });
});

// Rows the stale query cannot see (they do not decode) are found by the daily audit and marked
// failed (MalformedRow), so they show up for an operator instead of staying invisible.
describe("malformed rows the stale query cannot see", () => {
  it.each([
    ["status in capitals", { status: "OPEN" }],
    ["status not a string", { status: 1 }],
    ["heartbeatSeenAt missing", { heartbeatSeenAt: undefined }],
    ["a closing row without leaseUntil", { status: "closing", attempts: 1 }],
  ])("a row with %s is marked failed (MalformedRow) by the audit, and the sweep stays clean", async (_name, change) => {
    const { keys } = await writeRow(change);
    const summary: SweepSummary = await table.services.newSweeper().run();
    expect(summary.error).toBeUndefined();
    const audit = await table.services.ledger.auditMalformed();
    expect(audit.rows.map((r) => r.rowKey)).toContain(keys.rowKey);
    const stored = (await rawEntities(table.services.ledger)).find((e) => e.rowKey === keys.rowKey)!;
    expect(stored).toMatchObject({ status: "failed", lastErrorCode: "MalformedRow" });
    // Marked once: a second audit leaves finished rows alone.
    expect((await table.services.ledger.auditMalformed()).rows.map((r) => r.rowKey)).not.toContain(keys.rowKey);
  });
});

// Only the columns a sweeper reads decide whether it can close a session: a producer's bad value
// in another column does not keep the session open, the audit does not mark the row, and the
// producer's own heartbeat and release judge the row the same way (else a refused heartbeat would
// let a live session go stale).
describe("rows bad only in columns a sweeper does not read", () => {
  it.each([
    ["createdAt missing", { createdAt: undefined }],
    ["createdAt a string", { createdAt: "yesterday" }],
    ["persistChanges a string", { persistChanges: "yes" }],
    ["closedAt a string", { closedAt: "never" }],
    ["recordedBy a number", { recordedBy: 42 }],
  ])("%s: the dry run lists it, the sweep closes it, the audit leaves it alone", async (_name, change) => {
    const { keys, sessionId } = await writeRow(change);
    const dryRun = await table.services.newSweeper().run({ dryRun: true });
    expect(dryRun).toMatchObject({ malformed: 0, stale: 1 });
    expect((await table.services.ledger.auditMalformed()).rows).toEqual([]);
    const summary = await table.services.newSweeper().run();
    expect(summary).toMatchObject({ malformed: 0, closed: 1 });
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    const stored = (await rawEntities(table.services.ledger)).find((e) => e.rowKey === keys.rowKey)!;
    expect(stored).toMatchObject({ status: "closed", closedBy: "sweeper" });
    expect(stored?.assertion ?? "").toBe("");
  });

  it("a producer's heartbeat and release land on such a row: a live session is not closed", async () => {
    const { sessionId, userId, keys } = await writeRow({ createdAt: "yesterday", persistChanges: "yes" });
    const key = { tenantId: HOME_TENANT, userId, sessionId };
    const touched = await table.producer.touch(key);
    expect(touched.lastActivityAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(await table.services.newSweeper().run()).toMatchObject({ stale: 0, closed: 0 });
    expect(cloud.emulator.sessionState(sessionId)).toBe("open");
    await table.producer.release(key, { known: touched });
    const stored = (await rawEntities(table.services.ledger)).find((e) => e.rowKey === keys.rowKey)!;
    expect(stored).toMatchObject({ status: "closed", closedBy: "producer" });
    expect(stored?.assertion ?? "").toBe("");
  });

  it("a close request closes such a row too", async () => {
    const { sessionId, userId } = await writeRow({ createdAt: "yesterday", heartbeatSeenAt: new Date("9999-12-31T00:00:00Z") });
    const result = await handleCloseRequest(table.services, { tenantId: HOME_TENANT, userId, sessionId });
    expect(result).toMatchObject({ result: "attempted", report: { result: "closed" } });
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
  });
});

/** Writes a stale open row with a live Graph session behind it, `change` applied (undefined deletes a column). */
async function writeRow(change: Record<string, unknown>) {
  const userId = newUserId();
  const sessionId = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId, workbook: "/drives/gap/items/x" });
  const keys = { partitionKey: partitionKeyFor(HOME_TENANT, userId), rowKey: rowKeyFor(sessionId) };
  const past = new Date(Date.now() - 3_600_000);
  const entity: Record<string, unknown> = {
    ...keys,
    tenantId: HOME_TENANT,
    userId,
    sessionId,
    workbook: "/drives/gap/items/x",
    status: "open",
    attempts: 0,
    schemaVersion: 2,
    createdAt: past,
    // Silent for an hour by the service's clock (liveness.ts).
    heartbeatSeenAt: past,
    leaseSeconds: 0,
    assertion: await cloud.seal(cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID }), keys),
    ...change,
  };
  for (const [k, v] of Object.entries(entity)) if (v === undefined) delete entity[k];
  await table.services.ledger.client.createEntity(entity as typeof keys);
  return { keys, sessionId, userId };
}
