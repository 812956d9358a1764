/**
 * withWorkbookSession, the producer's whole session lifecycle in one call, against Azurite, the Graph
 * emulator and the authority: create → record → heartbeats → close → release; the work's error kept;
 * a close without its 204 handed to the sweeper; the sweeper taking the session mid-work.
 */
import { OnBehalfOfCredential } from "@azure/identity";
import { QueueClient } from "@azure/storage-queue";
import { expect, inject, it } from "vitest";
import { withWorkbookSession, WorkbookSessionLostError, type WithWorkbookSessionOptions } from "../src/producer";
import { handleCloseRequest } from "../src/app/handleCloseRequest";
import { AssertionOpener } from "../src/core/assertionSealing";
import { parseCloseRequestMessage } from "../src/core/closeRequestMessage";
import { GRAPH_RESOURCE } from "../standins";
import { CLIENT_ID, HOME_TENANT, newUserId, silence, useCloudFixture, type CloudFixture, type TableFixture } from "./support/cloudFixture";

let cloud: CloudFixture;
useCloudFixture((started) => (cloud = started));

/** What a producing service has: the user's assertion, and its own on-behalf-of credential for Graph. */
function userOf(table: TableFixture, overrides: Partial<WithWorkbookSessionOptions> = {}): WithWorkbookSessionOptions {
  const userId = newUserId();
  const userAssertion = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID });
  // The options as a variable: the constructor's overloads refuse disableInstanceDiscovery in a literal.
  const obo = {
    tenantId: HOME_TENANT,
    clientId: CLIENT_ID,
    clientSecret: cloud.clientSecret,
    userAssertionToken: userAssertion,
    authorityHost: cloud.authority.authorityHost,
    disableInstanceDiscovery: true,
  };
  return {
    producer: table.producer,
    token: new OnBehalfOfCredential(obo),
    graphScope: `${GRAPH_RESOURCE}/Files.ReadWrite`,
    graphBaseUrl: cloud.emulator.baseUrl,
    tenantId: HOME_TENANT,
    userId,
    workbook: `/drives/lifecycle/items/${userId.slice(0, 8)}`,
    userAssertion,
    recordedBy: "lifecycle-test",
    leaseMs: 10_000,
    heartbeatMs: 200,
    ...overrides,
  };
}

const requestsFor = (sessionId: string) => cloud.emulator.requests.filter((r) => r.sessionId === sessionId);

it("creates, records, heartbeats while the work runs, closes and releases; the work's result is returned", async () => {
  const table = await cloud.newTable();
  const options = userOf(table);
  let seen: { id: string; status?: string; beats: number } | undefined;
  const result = await withWorkbookSession(options, async (session) => {
    const first = await table.services.ledger.get(session.key);
    await new Promise((resolve) => setTimeout(resolve, 700));
    const later = (await table.producer.client.getEntity<{ updatedAt: Date }>(first!.partitionKey, first!.rowKey)).updatedAt;
    // The work's own call in the session: the helper sends the session's id with it.
    const refreshed = await session.request("/refreshSession", { method: "POST" });
    expect(refreshed.status).toBe(204);
    seen = { id: session.id, status: first?.status, beats: later > first!.lastActivityAt ? 1 : 0 };
    return 42;
  });
  expect(result).toBe(42);
  expect(seen).toMatchObject({ status: "open", beats: 1 });
  const kinds = requestsFor(seen!.id).map((r) => `${r.kind} ${r.status}`);
  expect(kinds).toEqual(["refreshSession 204", "closeSession 204"]);
  expect(cloud.emulator.requests.filter((r) => r.kind === "createSession" && r.userId === options.userId).map((r) => r.status)).toEqual([201]);
  expect(cloud.emulator.sessionState(seen!.id)).toBe("closed");
  expect(await table.services.ledger.get({ tenantId: HOME_TENANT, userId: options.userId, sessionId: seen!.id })).toMatchObject({ status: "closed" });
});

it("a heartbeat passes on a fresher assertion when userAssertion gives one: the row then holds it, sealed", async () => {
  const table = await cloud.newTable();
  const options = userOf(table);
  const fresher = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId: options.userId, audience: CLIENT_ID });
  let current = options.userAssertion as string;
  const opener = new AssertionOpener({ privateKeys: [cloud.assertionKeys.privateKey] });
  const stored = await withWorkbookSession({ ...options, userAssertion: () => current }, async (session) => {
    current = fresher;
    await new Promise((resolve) => setTimeout(resolve, 600));
    const { partitionKey, rowKey } = (await table.services.ledger.get(session.key))!;
    const row = await table.producer.client.getEntity<{ assertion: string }>(partitionKey, rowKey);
    return opener.open(row.assertion, { partitionKey, rowKey });
  });
  expect(stored).toBe(fresher);
});

it("when the work throws, the session is still closed and released, and the work's own error is what the caller gets", async () => {
  const table = await cloud.newTable();
  const failure = new Error("the work failed");
  let id = "";
  const error = await withWorkbookSession(userOf(table), async (session) => {
    id = session.id;
    throw failure;
  }).catch((e: unknown) => e);
  expect(error).toBe(failure);
  expect(cloud.emulator.sessionState(id)).toBe("closed");
  expect((await table.services.ledger.get({ tenantId: HOME_TENANT, userId: requestsFor(id)[0]!.userId!, sessionId: id }))?.status).toBe("closed");
});

it.each([
  ["a 503", { status: 503 }],
  ["a reset", "reset" as const],
  ["a timeout", "hang" as const],
])("a close that ends in %s is handed to the sweeper's close queue, and the sweeper closes it", async (_what, action) => {
  const table = await cloud.newTable();
  const options = userOf(table, { graphRequestTimeoutMs: 1_000 });
  cloud.emulator.addFault({ userId: options.userId, kind: "closeSession", times: 1, action });
  const cleanup: unknown[] = [];
  let id = "";
  await withWorkbookSession({ ...options, onCleanupError: (e) => cleanup.push(e) }, async (session) => {
    id = session.id;
  });
  expect(cleanup).toEqual([]);
  expect(cloud.emulator.sessionState(id)).toBe("open");
  const queue = new QueueClient(inject("storageConnectionString"), table.config.storage.closeQueueName);
  const { receivedMessageItems } = await queue.receiveMessages({ numberOfMessages: 32 });
  const message = receivedMessageItems.map((m) => parseCloseRequestMessage(m.messageText)).find((m) => m.sessionId === id);
  expect(message).toMatchObject({ userId: options.userId, requestedBy: "withWorkbookSession" });
  expect(await handleCloseRequest(table.services, message!)).toMatchObject({ result: "attempted", report: { result: "closed" } });
  expect(cloud.emulator.sessionState(id)).toBe("closed");
});

it("the sweeper takes the session while the work runs (its heartbeats held back): the signal fires, and nothing more is sent in the session", async () => {
  const table = await cloud.newTable();
  // Heartbeats held by the test, as a process paused by its host would hold them.
  const held: (() => void)[] = [];
  const timers = { set: (callback: () => void) => held.push(callback), clear: () => undefined };
  const options = userOf(table, { timers });
  let id = "";
  let storageAfter = 0;
  const outcome = await withWorkbookSession(options, async (session) => {
    id = session.id;
    const row = (await table.services.ledger.get(session.key))!;
    await silence(table.producer.client, row, 10 * 60_000);
    expect(await table.services.newSweeper().run()).toMatchObject({ closed: 1 });
    expect(session.signal.aborted).toBe(false);
    // The held heartbeat runs: the row is the sweeper's now.
    held.shift()!();
    await new Promise((resolve) => session.signal.addEventListener("abort", resolve, { once: true }));
    storageAfter = cloud.emulator.requests.length;
    const reason = session.signal.reason as WorkbookSessionLostError;
    const refused = await session.request("/refreshSession", { method: "POST" }).catch((e: unknown) => e);
    return { reason, refused };
  });
  expect(outcome.reason).toBeInstanceOf(WorkbookSessionLostError);
  expect(outcome.reason.code).toBe("WorkbookSessionLost");
  expect((outcome.reason.cause as { code?: string }).code).toBe("SessionNotOpen");
  expect(outcome.refused).toBe(outcome.reason);
  // After the signal: no request in the session, no close of the producer's own; the sweeper's 204 stands.
  expect(cloud.emulator.requests.length).toBe(storageAfter);
  expect(requestsFor(id).map((r) => `${r.kind} ${r.status}`)).toEqual(["closeSession 204"]);
  expect(held).toHaveLength(0);
  expect(await table.services.ledger.get({ tenantId: HOME_TENANT, userId: options.userId, sessionId: id })).toMatchObject({ status: "closed" });
});

it("createSession answered 504 is tried again; a session not recorded is closed at once rather than left", async () => {
  const table = await cloud.newTable();
  const options = userOf(table);
  cloud.emulator.addFault({ userId: options.userId, kind: "createSession", times: 1, action: { status: 504 } });
  const id = await withWorkbookSession(options, async (session) => session.id);
  expect(cloud.emulator.requests.filter((r) => r.kind === "createSession" && r.userId === options.userId).map((r) => r.status)).toEqual([504, 201]);
  expect(cloud.emulator.sessionState(id)).toBe("closed");

  // The ledger refuses the row (a bad recordedBy): the session it opened is closed, the error thrown.
  const refusedUser = userOf(table, { recordedBy: "" });
  const refused = await withWorkbookSession(refusedUser, async () => "never").catch((e: unknown) => e);
  expect(refused).toMatchObject({ code: "InvalidInput" });
  const closes = cloud.emulator.requests.filter((r) => r.kind === "closeSession" && r.userId === refusedUser.userId);
  expect(closes.map((r) => r.status)).toEqual([204]);
});

it.each([
  ["succeeds", "succeeded" as const],
  ["fails", "failed" as const],
])("createSession in Graph's long-running form: 202, the operation polled until it %s", async (_how, outcome) => {
  const table = await cloud.newTable();
  cloud.emulator.configure({ createSessionAsync: { pollsUntilDone: 2, outcome } });
  const options = userOf(table);
  const run = withWorkbookSession(options, async (session) => {
    expect(cloud.emulator.sessionState(session.id)).toBe("open");
    expect((await table.services.ledger.get(session.key))?.status).toBe("open");
    return session.id;
  });
  const kinds = () => cloud.emulator.requests.filter((r) => r.userId === options.userId && r.kind !== "closeSession").map((r) => `${r.kind} ${r.status}`);
  if (outcome === "failed") {
    const error = await run.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "WorkbookSessionNotCreated" });
    expect(kinds()).toEqual(["createSession 202", "sessionOperation 200", "sessionOperation 200", "sessionOperation 200"]);
    return;
  }
  const id = await run;
  expect(kinds()).toEqual(["createSession 202", "sessionOperation 200", "sessionOperation 200", "sessionOperation 200", "sessionInfoResource 200"]);
  expect(cloud.emulator.sessionState(id)).toBe("closed");
});
