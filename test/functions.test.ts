/**
 * The function handlers, invoked as the host invokes them: real InvocationContext and HttpRequest
 * objects from @azure/functions, against Azurite and the https stand-ins, settings from the
 * environment exactly as the host passes app settings.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { QueueClient } from "@azure/storage-queue";
import { HttpRequest } from "@azure/functions";
import { SessionNotFoundError, ValidationError, type LedgerStatus, type SweepSummary } from "../src";
import { installAppSettings, useCloudFixture, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { importHandlers, type FunctionHandlers, invocation, postSweep, timerInfo } from "./support/functionsHost";

let cloud: CloudFixture;
let table: TableFixture;
let handlers: FunctionHandlers;
/** The fifth function, `GET /api/status`. */
let statusHttp: typeof import("../functions/status").statusHttp;
let settings: Record<string, string | undefined>;
const queueName = `close-${Math.random().toString(36).slice(2, 10)}`;

useCloudFixture((started) => (cloud = started));
beforeAll(async () => {
  ({ table, settings } = await installAppSettings(cloud, { CLOSE_QUEUE: queueName }));
  handlers = await importHandlers();
  ({ statusHttp } = await import("../functions/status"));
});

describe("timer trigger", () => {
  it("sweeps, logs one summary line, and says when the run is past due", async () => {
    const user = newUserId();
    const stale = await table.openSession({ userId: user, workbook: "/drives/d/items/t1" });
    const live = await table.openSession({ userId: user, workbook: "/drives/d/items/t2", idleMinutes: 0 });
    const { context, lines } = invocation("sweepTimer");

    await handlers.sweepTimer(timerInfo(true), context);

    expect(cloud.emulator.sessionState(stale.sessionId)).toBe("closed");
    expect(cloud.emulator.sessionState(live.sessionId)).toBe("open");
    expect(lines.filter((l) => l.level === "warning" && l.event.includes("past due"))).toHaveLength(1);
    const summaries = lines.filter((l) => l.event === "Sweep finished");
    expect(summaries).toHaveLength(1);
    expect(summaries[0]!.details).toMatchObject({ trigger: "timer", closed: 1, scanned: 1 });
    expect(lines.length).toBe(2);
  });
});

describe("purge timer", () => {
  it("drops history past retention, and marks and moves rows the sweep cannot see", async () => {
    const released = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/p1", idleMinutes: 0 });
    await table.producer.release(released.row);
    const broken = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/p2", idleMinutes: 0 });
    await table.services.ledger.client.updateEntity({ partitionKey: broken.row.partitionKey, rowKey: broken.row.rowKey, status: "OPEN" }, "Merge");
    const { context, lines } = invocation("purgeTimer");
    await handlers.purgeTimer(timerInfo(false), context);
    expect(lines.find((l) => l.event === "Malformed ledger rows marked failed")?.level).toBe("warning");
    expect(lines.at(-1)?.details).toMatchObject({ malformed: 1 });
    expect(await table.services.ledger.history.storedEntity(broken.row)).toMatchObject({ status: "failed", lastErrorCode: "MalformedRow" });
    // The released row is recent: kept until TERMINAL_RETENTION has passed.
    expect((await table.services.ledger.get(released.row))?.status).toBe("closed");
  });
});

describe("HTTP manual sweep", () => {
  it("answers 200 with the summary as JSON", async () => {
    const stale = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/h1" });
    const { context } = invocation("sweep");
    const response = await handlers.sweepHttp(postSweep(JSON.stringify({ dryRun: true, olderThan: "PT5M", limit: 10 })), context);
    expect(response.status).toBe(200);
    const summary = response.jsonBody as SweepSummary;
    expect(summary).toMatchObject({ dryRun: true, stale: 1, closed: 0 });
    expect(summary.candidates?.[0]?.sessionIdPrefix).toBe(stale.sessionId.slice(0, 24));
    expect(cloud.emulator.requests).toHaveLength(0);

    const real = await handlers.sweepHttp(postSweep(JSON.stringify({ userId: stale.row.userId })), invocation("sweep").context);
    expect(real).toMatchObject({ status: 200, jsonBody: { closed: 1 } });
  });

  it("treats an empty body as a default sweep", async () => {
    const response = await handlers.sweepHttp(postSweep(undefined, {}), invocation("sweep").context);
    expect(response.status).toBe(200);
  });

  it.each([
    ["an unknown field", JSON.stringify({ dryRun: true, force: true }), /unknown field "force"/],
    ["a wrong type", JSON.stringify({ dryRun: "yes" }), /dryRun must be true or false/],
    ["a bad duration", JSON.stringify({ olderThan: "ten minutes" }), /olderThan must be an ISO-8601 duration/],
    ["a zero duration", JSON.stringify({ olderThan: "PT0S" }), /at least one second/],
    ["a bad user", JSON.stringify({ userId: "alice@contoso.com" }), /userId must be/],
    ["a bad limit", JSON.stringify({ limit: -3 }), /limit must be a whole number/],
    ["a fractional limit", JSON.stringify({ limit: 2.5 }), /limit must be a whole number/],
    ["not JSON", "dryRun=true", /not JSON/],
    ["a JSON array", "[1,2]", /must be a JSON object/],
    ["JSON null", "null", /must be a JSON object/],
    ["an oversize body", JSON.stringify({ dryRun: true, pad: "x".repeat(10_000) }), /larger than 4096 bytes/],
  ])("answers 400 with the reasons for %s", async (_name, body, reason) => {
    const { context } = invocation("sweep");
    const response = await handlers.sweepHttp(postSweep(body), context);
    expect(response.status).toBe(400);
    const error = (response.jsonBody as { error: { code: string; problems: string[] } }).error;
    expect(error.code).toBe("InvalidInput");
    expect(error.problems.join("; ")).toMatch(reason);
    expect(cloud.emulator.requests).toHaveLength(0);
  });

  it("lists every problem at once", async () => {
    const response = await handlers.sweepHttp(postSweep(JSON.stringify({ dryRun: 1, limit: "ten", extra: 1 })), invocation("sweep").context);
    expect((response.jsonBody as { error: { problems: string[] } }).error.problems).toHaveLength(3);
  });
});

describe("queue close request", () => {
  it("closes the named session now, whatever its age, and a second message is a no-op", async () => {
    const { row, sessionId } = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/q1", idleMinutes: 0 });
    const message = { tenantId: row.tenantId, userId: row.userId, sessionId };
    const first = invocation("closeRequest");
    await handlers.closeRequest(message, first.context);
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    expect((await table.services.ledger.get(row))?.status).toBe("closed");
    expect(first.lines.at(-1)?.details).toMatchObject({ result: "closed", state: "closed" });

    const second = invocation("closeRequest");
    await handlers.closeRequest(message, second.context);
    expect(second.lines.at(-1)?.details).toMatchObject({ result: "alreadyFinished", status: "closed" });
    expect(cloud.emulator.requests.filter((r) => r.kind === "closeSession")).toHaveLength(1);
  });

  it("takes what SessionProducer.requestClose sends, as text or as Base64 text", async () => {
    const a = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/q2", idleMinutes: 0 });
    const messageId = await table.producer.requestClose(a.row, { requestedBy: "report-service" });
    expect(messageId).toBeTruthy();
    const queue = new QueueClient(settings.AzureWebJobsStorage!, queueName);
    const [received] = (await queue.receiveMessages({ numberOfMessages: 1 })).receivedMessageItems;
    expect(received).toBeDefined();
    await handlers.closeRequest(received!.messageText, invocation("closeRequest").context);
    expect(cloud.emulator.sessionState(a.sessionId)).toBe("closed");

    const b = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/q3", idleMinutes: 0 });
    const base64 = Buffer.from(JSON.stringify({ tenantId: HOME_TENANT, userId: b.row.userId, sessionId: b.sessionId })).toString("base64");
    await handlers.closeRequest(base64, invocation("closeRequest").context);
    expect(cloud.emulator.sessionState(b.sessionId)).toBe("closed");
  });

  it("reschedules a throttled close instead of failing the message", async () => {
    const { row, sessionId } = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/q4" });
    cloud.emulator.addFault({ sessionId, times: 1, action: { status: 429, headers: { "Retry-After": "120" } } });
    await handlers.closeRequest({ tenantId: row.tenantId, userId: row.userId, sessionId }, invocation("closeRequest").context);
    const after = await table.services.ledger.get(row);
    expect(after).toMatchObject({ status: "open", lastError: { code: "tooManyRequests" } });
    // A second message before the cooldown sends nothing.
    const again = invocation("closeRequest");
    await handlers.closeRequest({ tenantId: row.tenantId, userId: row.userId, sessionId }, again.context);
    expect(again.lines.at(-1)?.details).toMatchObject({ result: "scheduled" });
    expect(cloud.emulator.requests).toHaveLength(1);
  });

  it.each([
    ["not JSON", "close it please"],
    ["Base64 of not JSON", Buffer.from("close it").toString("base64")],
    ["a JSON array", "[1]"],
    ["missing fields", { sessionId: "x" }],
    ["wrong types", { tenantId: HOME_TENANT, userId: 42, sessionId: ["x"] }],
    ["extra fields", { tenantId: HOME_TENANT, userId: HOME_TENANT, sessionId: "x", force: true }],
    ["a huge message", "x".repeat(70_000)],
  ])("throws a clear error for %s, so the host retries and then poisons it", async (_name, message) => {
    const { context, lines } = invocation("closeRequest", { triggerMetadata: { dequeueCount: 1, id: "m-1" } });
    const error = await handlers.closeRequest(message, context).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).problems.length).toBeGreaterThan(0);
    const logged = lines.find((l) => l.level === "error");
    expect(logged?.details).toMatchObject({ problems: (error as ValidationError).problems, messageId: "m-1" });
    expect(cloud.emulator.requests).toHaveLength(0);
  });

  it("throws SessionNotFoundError for a session that was never recorded", async () => {
    const error = await handlers
      .closeRequest({ tenantId: HOME_TENANT, userId: newUserId(), sessionId: "unknown" }, invocation("closeRequest").context)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionNotFoundError);
  });
});

describe("HTTP status", () => {
  it("GET /api/status answers 200 with the ledger's status as JSON; the timer's sweep is the newest of its last sweeps", async () => {
    const user = newUserId();
    await table.openSession({ userId: user, workbook: "/drives/d/items/st1" });
    const live = await table.openSession({ userId: user, workbook: "/drives/d/items/st2", idleMinutes: 0 });
    const timer = invocation("sweepTimer");
    await handlers.sweepTimer(timerInfo(false), timer.context);
    const summary = timer.lines.find((l) => l.event === "Sweep finished")!.details as unknown as SweepSummary;

    const { context, lines } = invocation("status");
    const response = await statusHttp(new HttpRequest({ method: "GET", url: "http://localhost:7071/api/status" }), context);

    expect(response.status).toBe(200);
    expect(new Headers(response.headers as Record<string, string>).get("content-type")).toBe("application/json");
    const status = response.jsonBody as LedgerStatus;
    expect(status.table).toBe(table.tableName);
    expect(status.live.total).toBeGreaterThanOrEqual(1);
    expect(status.live.oldest).not.toBeNull();
    expect(status.sweeps.length).toBeLessThanOrEqual(10);
    expect(status.sweeps[0]).toMatchObject({
      trigger: "timer",
      dryRun: false,
      durationMs: summary.durationMs,
      counts: { scanned: summary.scanned, claimed: summary.claimed, closed: 1, failed: summary.failed, graphRequests: summary.graphRequests },
      error: null,
    });
    expect(cloud.emulator.sessionState(live.sessionId)).toBe("open");
    expect(lines).toEqual([]);
  });
});
