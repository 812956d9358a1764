/**
 * Reliability: authorization.
 *
 * - The HTTP sweep is registered with `authLevel: "function"` and POST only (the host answers
 *   anonymous calls with 401 before the handler runs), the status view GET only with the same level;
 *   the other functions are not HTTP-triggered.
 * - Nothing in the app closes a session for a user other than the row's own user: a row of user A
 *   carrying B's assertion (recorded, or its ciphertext copied from B's row), a row recorded under B
 *   naming A's session, a row pointing at another user's drive, a row whose columns disagree with
 *   its partition, a close request naming A with B's session, a sweep limited to one user: none of
 *   them leads Graph to accept a closeSession for A's session with anyone's token but A's.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { app } from "@azure/functions";
import { SessionNotFoundError, SessionProducer, type SweepSummary } from "../src";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { installAppSettings, silence, useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { importHandlers, type FunctionHandlers } from "./support/functionsHost";
import { invocation, postSweep, rawEntities } from "./support/reliability";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";

let cloud: CloudFixture;
let table: TableFixture;
let handlers: FunctionHandlers;
const registrations = {
  http: vi.spyOn(app, "http"),
  timer: vi.spyOn(app, "timer"),
  storageQueue: vi.spyOn(app, "storageQueue"),
};

const queueName = `authz-${Math.random().toString(36).slice(2, 10)}`;

useCloudFixture((started) => (cloud = started));
beforeAll(async () => {
  ({ table } = await installAppSettings(cloud, { CLOSE_QUEUE: queueName }));
  // The spies are in place before any function file registers itself.
  handlers = await importHandlers();
});
afterAll(() => {
  vi.restoreAllMocks();
});

describe("the HTTP sweep's registration", () => {
  it("is POST only, with authLevel function: anonymous callers get 401 from the host; the status view is GET only, with the same level", () => {
    // The two HTTP entry points, and no other.
    expect(registrations.http.mock.calls.map(([name]) => name).sort()).toEqual(["status", "sweep"]);
    const options = new Map(registrations.http.mock.calls.map(([name, o]) => [name, o]));
    expect(options.get("sweep")).toMatchObject({ authLevel: "function", methods: ["POST"], route: "sweep", handler: handlers.sweepHttp });
    expect(options.get("status")).toMatchObject({ authLevel: "function", methods: ["GET"], route: "status", handler: handlers.statusHttp });
    for (const o of options.values()) expect(o.authLevel).not.toBe("anonymous");
  });

  it("the timers and the queue function are not reachable over HTTP", () => {
    expect(registrations.timer.mock.calls.map(([name]) => name).sort()).toEqual(["purgeTimer", "sweepTimer"]);
    expect(registrations.storageQueue).toHaveBeenCalledTimes(1);
    const [name, options] = registrations.storageQueue.mock.calls[0]!;
    expect(name).toBe("closeRequest");
    // The queue's name as a plain value from CLOSE_QUEUE: the host need not resolve a %CLOSE_QUEUE% of its own.
    expect(options).toMatchObject({ queueName, connection: "AzureWebJobsStorage", handler: handlers.closeRequest });
  });
});

/** Graph accepted closeSession for `sessionId` (a 204) with the token of anyone but `owner`. */
function acceptedForOthers(sessionId: string, owner: string): unknown[] {
  return cloud.emulator.requests.filter((r) => r.sessionId === sessionId && r.status === 204 && r.userId !== owner.toLowerCase());
}

const assertionOf = (userId: string, tenantId = HOME_TENANT) => cloud.authority.issueUserAssertion({ tenantId, userId, audience: CLIENT_ID });

describe("only the row's own user", () => {
  it("a sweep never acts on A's session with B's token, whatever B's row or A's row says", async () => {
    const alice = newUserId();
    const bob = newUserId();
    const mallory = newUserId();
    // A's sessions, on her own drive and on a shared drive.
    const own = await table.openSession({ userId: alice, workbook: "/me/drive/items/alice-book" });
    const shared = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId: alice, workbook: "/drives/team/items/shared" });
    const bobs = await table.openSession({ userId: bob, workbook: "/drives/team/items/bob" });
    const aliceAgain = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId: alice, workbook: "/drives/team/items/again" });
    const past = () => producerAt(-10);

    // 1. A row of A's carrying B's assertion, recorded through the producer.
    const withBobsAssertion = await past().record({ tenantId: HOME_TENANT, userId: alice, sessionId: shared, workbook: "/drives/team/items/shared", recordedBy: "t", userAssertion: assertionOf(bob) });
    // 2. A row recorded under B (with B's own assertion) naming A's session on the shared drive.
    const bobNamesAlices = await past().record({ tenantId: HOME_TENANT, userId: bob, sessionId: aliceAgain, workbook: "/drives/team/items/again", recordedBy: "t", userAssertion: assertionOf(bob) });
    // 3. A row of B's pointing at A's drive (/users/{A}/…) with A's session id.
    const bobOnAlicesDrive = await past().record({ tenantId: HOME_TENANT, userId: bob, sessionId: own.sessionId, workbook: `/users/${alice}/drive/items/alice-book`, recordedBy: "t", userAssertion: assertionOf(bob) });
    // 4. Mallory copies B's encrypted assertion into a row of A's.
    const copied = await table.openSession({ userId: alice, workbook: "/drives/team/items/copied", recordOnly: true });
    await table.services.ledger.client.updateEntity({ partitionKey: copied.row.partitionKey, rowKey: copied.row.rowKey, assertion: bobs.row.encryptedAssertion }, "Merge");
    // 5. A row in A's partition whose columns name B (and B's assertion, encrypted for this row).
    const forged = {
      partitionKey: partitionKeyFor(HOME_TENANT, alice),
      rowKey: rowKeyFor(own.sessionId + "-forged"),
      tenantId: HOME_TENANT,
      userId: bob,
      sessionId: own.sessionId + "-forged",
      workbook: "/me/drive/items/alice-book",
      status: "open",
      attempts: 0,
      schemaVersion: 2,
      createdAt: new Date(Date.now() - 600_000),
      heartbeatSeenAt: new Date(Date.now() - 600_000),
      leaseSeconds: 0,
    };
    await table.services.ledger.client.createEntity(forged);
    // 6. A user of another tenant with the same object id as A.
    const twin = await table.openSession({ tenantId: OTHER_TENANT, userId: alice, workbook: "/drives/t2/items/twin", assertion: assertionOf(alice, HOME_TENANT) });
    // 7. An assertion for mallory recorded on a row of hers that names A's session.
    const mallorys = await past().record({ tenantId: HOME_TENANT, userId: mallory, sessionId: aliceAgain, workbook: "/drives/team/items/again", recordedBy: "t", userAssertion: assertionOf(mallory) });

    const summary = await table.services.newSweeper().run();

    const rows = new Map((await rawEntities(table.services.ledger)).map((e) => [`${e.partitionKey}|${e.rowKey}`, e]));
    const final = (r: { partitionKey: string; rowKey: string }) => rows.get(`${r.partitionKey}|${r.rowKey}`)!;
    expect(final(withBobsAssertion)).toMatchObject({ status: "failed", lastErrorCode: "AssertionUserMismatch" });
    expect(final(copied.row)).toMatchObject({ status: "failed", lastErrorCode: "AssertionUnreadable" });
    expect(final(forged)).toMatchObject({ status: "failed", lastErrorCode: "MalformedRow" });
    expect(final(twin.row)).toMatchObject({ status: "failed", lastErrorCode: "AssertionUserMismatch" });
    // B's and Mallory's own tokens reach Graph for A's sessions and are refused there.
    expect(final(bobNamesAlices)).toMatchObject({ status: "failed", lastErrorCode: "invalidSessionAuthentication" });
    expect(final(mallorys)).toMatchObject({ status: "failed", lastErrorCode: "invalidSessionAuthentication" });
    expect(final(bobOnAlicesDrive)).toMatchObject({ status: "failed", lastErrorCode: "accessDenied" });
    // A's own row of her own session closes it, with her token.
    expect(final(own.row)).toMatchObject({ status: "closed" });
    expect(final(bobs.row)).toMatchObject({ status: "closed" });

    // Graph's view: every closeSession Graph accepted was made with the session owner's token.
    for (const sessionId of [own.sessionId, shared, aliceAgain]) expect(acceptedForOthers(sessionId, alice)).toEqual([]);
    expect(cloud.emulator.sessionState(shared)).toBe("open");
    expect(cloud.emulator.sessionState(aliceAgain)).toBe("open");
    for (const r of cloud.emulator.requests.filter((q) => q.status === 204)) {
      const owner = [own, bobs].find((o) => o.sessionId === r.sessionId);
      expect(owner, "a 204 for a session the test did not expect to close").toBeDefined();
      expect(r.userId).toBe(owner!.row.userId);
    }
    // No token was even requested for the refused rows' foreign assertions.
    expect(cloud.authority.tokenRequests.every((t) => [alice, bob, mallory].includes(t.userId ?? ""))).toBe(true);
    expect(summary.closed).toBe(2);
  });

  it("a close request names the user whose partition is searched: A's ids with B's session find nothing", async () => {
    const alice = newUserId();
    const bob = newUserId();
    const bobs = await table.openSession({ userId: bob, workbook: "/drives/q/items/bob", idleMinutes: 0 });
    const error = await handlers.closeRequest({ tenantId: HOME_TENANT, userId: alice, sessionId: bobs.sessionId }, invocation("closeRequest").context).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionNotFoundError);
    expect(cloud.emulator.requests).toHaveLength(0);
    expect(cloud.authority.tokenRequests).toHaveLength(0);
    // The right message closes it with B's token.
    await handlers.closeRequest({ tenantId: HOME_TENANT, userId: bob, sessionId: bobs.sessionId }, invocation("closeRequest").context);
    expect(cloud.emulator.requests).toEqual([expect.objectContaining({ sessionId: bobs.sessionId, status: 204, userId: bob })]);
  });

  it("an HTTP sweep limited to one user touches no one else's session", async () => {
    const alice = newUserId();
    const bob = newUserId();
    const a = await table.openSession({ userId: alice, workbook: "/drives/h/items/a" });
    const b = await table.openSession({ userId: bob, workbook: "/drives/h/items/b" });
    const response = await handlers.sweepHttp(postSweep(JSON.stringify({ userId: alice.toUpperCase() })), invocation("sweep").context);
    expect(response.status).toBe(200);
    expect(response.jsonBody as SweepSummary).toMatchObject({ closed: 1, scanned: 1 });
    expect(cloud.emulator.sessionState(a.sessionId)).toBe("closed");
    expect(cloud.emulator.sessionState(b.sessionId)).toBe("open");
    expect(cloud.emulator.requests.every((r) => r.userId === alice)).toBe(true);
    expect(cloud.authority.tokenRequests.every((t) => t.userId === alice)).toBe(true);
  });
});

/** A producer whose clock is `minutes` away from now (negative: in the past). */
/** A producer whose sessions have been silent for `minutes` (by the service's clock) once recorded. */
function producerAt(minutes: number): Pick<SessionProducer, "record"> {
  const producer = SessionProducer.fromConnectionString(cloud.settings().AzureWebJobsStorage!, table.tableName, { assertionPublicKey: cloud.assertionPublicKey });
  return {
    async record(input) {
      const row = await producer.record(input);
      if (minutes >= 0) return row;
      await silence(producer.client, row, -minutes * 60_000);
      return (await table.services.ledger.get(row))!;
    },
  };
}
