/**
 * withWorkbookSession, the producer's whole session lifecycle in one call, against Azurite, the Graph
 * emulator and the authority: create → record → heartbeats → close → release; the work's error kept;
 * a close without its 204 handed to the sweeper; the sweeper taking the session mid-work; the ledger
 * out of reach for longer than the lease (HeartbeatLost); Graph saying the session is gone.
 */
import { randomBytes } from "node:crypto";
import { OnBehalfOfCredential } from "@azure/identity";
import { QueueClient } from "@azure/storage-queue";
import { expect, inject, it } from "vitest";
import {
  HeartbeatLostError,
  SessionProducer,
  withWorkbookSession,
  WorkbookRequestError,
  WorkbookSessionLostError,
  type WithWorkbookSessionOptions,
} from "../src/producer";
import { handleCloseRequest } from "../src/app/handleCloseRequest";
import { AssertionOpener } from "../src/core/assertionSealing";
import { parseCloseRequestMessage } from "../src/core/closeRequestMessage";
import { GRAPH_RESOURCE } from "../standins";
import { CLIENT_ID, HOME_TENANT, newUserId, silence, useCloudFixture, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { connectionStringThrough, sleep, tableEndpointOf, TcpProxy, waitFor } from "./support/reliability";

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

/** The signal's reason once it fires; a failure after `ms`, so a path that never aborts fails the test rather than hanging it. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`session.signal did not fire within ${ms} ms`)), ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve(signal.reason)), { once: true });
  });
}

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
  const timers = {
    set: (callback: () => void) => (held.push(callback), callback),
    clear: (handle: unknown) => {
      if (held.includes(handle as () => void)) held.splice(held.indexOf(handle as () => void), 1);
    },
  };
  const options = userOf(table, { timers });
  let id = "";
  let storageAfter = 0;
  const outcome = await withWorkbookSession(options, async (session) => {
    id = session.id;
    const row = (await table.services.ledger.get(session.key))!;
    await silence(table.producer.client, row, 10 * 60_000);
    expect(await table.services.newSweeper().run()).toMatchObject({ closed: 1 });
    expect(session.signal.aborted).toBe(false);
    // The held heartbeat (the first timer set; the lease's watch is the second) runs: the row is the sweeper's now.
    held.shift()!();
    await abortedWithin(session.signal, 15_000);
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

it("the ledger stops answering (connections held open, no answer) while the work runs: the signal fires with HeartbeatLostError when the last landed heartbeat's lease runs out, before the sweeper could take the session; the session is still closed on Graph, the release gives up and its fault goes to onCleanupError, and the row left open is finished by the sweeper", { timeout: 90_000 }, async () => {
  const table = await cloud.newTable();
  // The producer reaches the table service through a proxy the test stalls (every connection held
  // open, nothing answered: no error ever comes back): storage stops answering for this producer
  // only; the test reads the row directly.
  const direct = inject("storageConnectionString");
  const endpoint = tableEndpointOf(direct);
  const proxy = await new TcpProxy({ host: endpoint.hostname, port: Number(endpoint.port) }).start();
  try {
    const producer = SessionProducer.fromConnectionString(connectionStringThrough(direct, inject("azuriteAccountName"), inject("azuriteAccountKey"), proxy.port), table.tableName, {
      assertionPublicKey: cloud.assertionPublicKey,
      closeQueueName: table.config.storage.closeQueueName,
    });
    const cleanup: unknown[] = [];
    const leaseMs = 10_000;
    const ledgerRequestTimeoutMs = 2_000;
    const options = userOf(table, { producer, leaseMs, heartbeatMs: 500, ledgerRequestTimeoutMs, onCleanupError: (e) => cleanup.push(e) });
    let id = "";
    let cutAt = 0;
    let landedAt = 0;
    const outcome = await withWorkbookSession(options, async (session) => {
      id = session.id;
      // Storage goes away just after a heartbeat has landed: the lease is counted from that beat.
      const recorded = (await table.services.ledger.get(session.key))!;
      const updatedAt = async () => (await table.producer.client.getEntity<{ updatedAt: Date }>(recorded.partitionKey, recorded.rowKey)).updatedAt.getTime();
      const first = await updatedAt();
      for (let until = Date.now() + 10_000; (await updatedAt()) === first; ) {
        if (Date.now() > until) throw new Error("no heartbeat reached the row before the cut");
        await sleep(20);
      }
      proxy.stall();
      cutAt = Date.now();
      // The producer's time as it wrote the last landed heartbeat (before it was sent): its lease runs from no earlier.
      landedAt = await updatedAt();
      // Heartbeats go unanswered (each given up after ledgerRequestTimeoutMs); the signal fires once the lease has gone by.
      const reason = await abortedWithin(session.signal, 45_000);
      const lostAfterMs = Date.now() - cutAt;
      const firedPastLeaseMs = Date.now() - (landedAt + leaseMs);
      const refusedAt = cloud.emulator.requests.length;
      const refused = await session.request("/worksheets", { method: "GET" }).catch((e: unknown) => e);
      return { reason: reason as HeartbeatLostError, lostAfterMs, firedPastLeaseMs, refused, sentByRefused: cloud.emulator.requests.length - refusedAt };
    });
    expect(outcome.reason).toBeInstanceOf(HeartbeatLostError);
    expect(outcome.reason.code).toBe("HeartbeatLost");
    // The cause is the last heartbeat the ledger never answered, given up after ledgerRequestTimeoutMs; not the sweeper's claim.
    expect((outcome.reason.cause as Error).name).toBe("AbortError");
    // A second before the last landed heartbeat's lease ran out (by the producer's clock as it wrote it),
    // not when a failing heartbeat gave up: a sweeper could take the session only after that. Half a
    // second of slack for a loaded machine's late timer. Without the lease's own watch it never fired.
    expect(outcome.firedPastLeaseMs).toBeLessThanOrEqual(500);
    // Not at the first failed heartbeat (given up 2.5 s after the cut): only near the lease's end (less the
    // watch's second, the time between the last beat and the cut, and a loaded machine's slack).
    expect(outcome.lostAfterMs).toBeGreaterThanOrEqual(leaseMs - 3_000);
    // The work's own request after the signal is refused with the same reason; nothing reached Graph.
    expect(outcome.refused).toBe(outcome.reason);
    expect(outcome.sentByRefused).toBe(0);
    // Not taken by the sweeper, so the helper still closes it: Graph saw only its closeSession, answered 204.
    expect(requestsFor(id).map((r) => `${r.kind} ${r.status}`)).toEqual(["closeSession 204"]);
    expect(cloud.emulator.sessionState(id)).toBe("closed");
    // The release got no answer and was given up after ledgerRequestTimeoutMs: its fault went to onCleanupError, not to the caller.
    expect(cleanup).toHaveLength(1);
    expect((cleanup[0] as Error).name).toBe("AbortError");
    // The row stays open, no heartbeat written after the cut; the sweeper finishes it, finding it gone on Graph.
    const key = { tenantId: HOME_TENANT, userId: options.userId, sessionId: id };
    const left = (await table.services.ledger.get(key))!;
    expect(left.status).toBe("open");
    expect((await table.producer.client.getEntity<{ updatedAt: Date }>(left.partitionKey, left.rowKey)).updatedAt.getTime()).toBeLessThanOrEqual(cutAt);
    await silence(table.producer.client, left, 10 * 60_000);
    expect(await table.services.newSweeper().run()).toMatchObject({ expired: 1 });
    expect(await table.services.ledger.get(key)).toMatchObject({ status: "expired" });
    expect(requestsFor(id).map((r) => `${r.kind} ${r.status}`)).toEqual(["closeSession 204", "closeSession 404"]);
  } finally {
    await proxy.close();
  }
});

it("Graph answers refreshSession 404 (the session is gone): the signal fires with WorkbookSessionLostError, and nothing more is sent in the session but the cleanup's closeSession, whose 404 is handed to the sweeper", async () => {
  // A close queue of its own: the test reads it without taking other files' messages.
  const table = await cloud.newTable({ CLOSE_QUEUE: `wbs-gone-${randomBytes(6).toString("hex")}` });
  const refreshMs = 150;
  const cleanup: unknown[] = [];
  const options = userOf(table, { refreshSessionMs: refreshMs, onCleanupError: (e) => cleanup.push(e) });
  let id = "";
  const outcome = await withWorkbookSession(options, async (session) => {
    id = session.id;
    await waitFor(() => requestsFor(id).some((r) => r.kind === "refreshSession" && r.status === 204), 10_000, "a refreshSession answered 204");
    // From here Graph says the session is gone, to every request in it (as it answers an expired session).
    const gone = { error: { code: "notFound", message: "The session specified in the request does not exist or is invalid due to a transient error.", innerError: { code: "invalidSessionReCreatable" } } };
    cloud.emulator.addFault({ sessionId: id, action: { status: 404, body: gone } });
    const reason = await abortedWithin(session.signal, 15_000);
    const sentAtSignal = requestsFor(id).length;
    const refused = await session.request("/worksheets", { method: "GET" }).catch((e: unknown) => e);
    // Several refresh periods: a refresh timer still running would have sent again by now.
    await sleep(5 * refreshMs);
    return { reason: reason as WorkbookSessionLostError, refused, sentAtSignal, sentAfterSignal: requestsFor(id).length - sentAtSignal };
  });
  expect(outcome.reason).toBeInstanceOf(WorkbookSessionLostError);
  expect(outcome.reason.code).toBe("WorkbookSessionLost");
  expect(outcome.reason.cause).toBeInstanceOf(WorkbookRequestError);
  expect(outcome.reason.cause).toMatchObject({ status: 404, graphCode: "invalidSessionReCreatable" });
  expect(outcome.refused).toBe(outcome.reason);
  // While the work ran after the signal: no refresh, and the work's own request never left.
  expect(outcome.sentAfterSignal).toBe(0);
  const kinds = requestsFor(id).map((r) => `${r.kind} ${r.status}`);
  // Refreshes answered 204, then the one 404 (the last request before the signal) …
  expect(kinds.slice(0, outcome.sentAtSignal).filter((k) => k !== "refreshSession 204")).toEqual(["refreshSession 404"]);
  expect(kinds[outcome.sentAtSignal - 1]).toBe("refreshSession 404");
  // … and after it only the cleanup's closeSession (README step 5), which Graph answers 404 as well.
  expect(kinds.slice(outcome.sentAtSignal)).toEqual(["closeSession 404"]);
  // A close without its 204 is handed to the sweeper, not reported as a cleanup fault; the row stays open for it.
  expect(cleanup).toEqual([]);
  const key = { tenantId: HOME_TENANT, userId: options.userId, sessionId: id };
  expect(await table.services.ledger.get(key)).toMatchObject({ status: "open" });
  const queue = new QueueClient(inject("storageConnectionString"), table.config.storage.closeQueueName);
  const { receivedMessageItems } = await queue.receiveMessages({ numberOfMessages: 32 });
  const messages = receivedMessageItems.map((m) => parseCloseRequestMessage(m.messageText)).filter((m) => m.sessionId === id);
  expect(messages).toHaveLength(1);
  expect(messages[0]).toMatchObject({ userId: options.userId, requestedBy: "withWorkbookSession" });
  // The sweeper finds it gone too: expired, not closed.
  expect(await handleCloseRequest(table.services, messages[0]!)).toMatchObject({ result: "attempted", report: { result: "expired" } });
  expect(await table.services.ledger.get(key)).toMatchObject({ status: "expired" });
  await queue.delete();
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
