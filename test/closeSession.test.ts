import { retryAfterTime } from "../src/core/graphAnswer";
import { beforeEach, describe, expect, it } from "vitest";
import { ClientSecretCredential } from "@azure/identity";
import { AppFaultError, Codes, type SessionRecord, type WorkbookLocation } from "../src";
import { WorkbookSessionCloser } from "../src/graph/WorkbookSessionCloser";
import { closeRecordedSession } from "../src/sweep/closeRecordedSession";
import { useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { GRAPH_RESOURCE } from "../standins/fakeAuthority";
import { LocalHttpsServer } from "../standins/localHttpsServer";

let cloud: CloudFixture;
let table: TableFixture;

useCloudFixture((started) => (cloud = started));
beforeEach(async () => {
  table = await cloud.newTable();
});

const close = (row: SessionRecord) => closeRecordedSession(row, table.services.closeDependencies());
const closeRequests = () => cloud.emulator.requests.filter((r) => r.kind === "closeSession");

describe("closing one recorded session", () => {
  const user = newUserId();
  it.each([
    ["/me/drive/items/01ME", "me"],
    [`/users/${user}/drive/items/01USER`, "users"],
    ["/drives/b!drive-Id_1/items/01DRIVE!23", "drives"],
    ["/sites/contoso.sharepoint.com,2c712604-1370-44e7-a1f5-426573fda80a,2d2244c3/drive/items/01SITE", "sites"],
  ])("closes %s and marks the row closed after exactly one request with the header", async (workbook) => {
    const { row, sessionId } = await table.openSession({ userId: user, workbook });
    const report = await close(row);

    expect(report).toMatchObject({ result: "closed", recorded: true, sent: true });
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    const requests = closeRequests();
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ method: "POST", sessionId, status: 204, tokenKind: "delegated", userId: user });
    expect(requests[0]!.path).toMatch(/\/v1\.0\/.+\/workbook\/closeSession$/);
    const after = await table.services.ledger.get(row);
    expect(after).toMatchObject({ status: "closed", closedBy: "sweeper", attempts: 1 });
    expect(after?.encryptedAssertion).toBeUndefined();
  });

  it("marks a session Graph already expired as expired", async () => {
    const { row, sessionId } = await table.openSession({ userId: newUserId(), workbook: "/drives/d1/items/i1" });
    cloud.emulator.expireSession(sessionId);
    const report = await close(row);
    expect(report).toMatchObject({ result: "expired", outcome: { status: 404, code: "invalidSessionReCreatable" } });
    expect(await table.services.ledger.get(row)).toMatchObject({ status: "expired", lastError: { code: "invalidSessionReCreatable" } });
  });

  it("marks a session on a workbook Graph does not know as expired (itemNotFound), without retrying", async () => {
    const { row } = await table.openSession({ userId: newUserId(), workbook: "/drives/d1/items/never-seen", recordOnly: true });
    const report = await close(row);
    expect(report).toMatchObject({ result: "expired", outcome: { status: 404, code: "itemNotFound" } });
    expect(closeRequests()).toHaveLength(1);
  });

  it("does not close another user's session: 403 ends failed and the session stays open", async () => {
    const owner = newUserId();
    const sessionId = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId: owner, workbook: "/drives/shared/items/book" });
    const intruder = newUserId();
    const past = table.producer;
    const row = await past.record({
      tenantId: HOME_TENANT,
      userId: intruder,
      sessionId,
      workbook: "/drives/shared/items/book",
      recordedBy: "test",
      userAssertion: cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId: intruder, audience: CLIENT_ID }),
    });
    const report = await close(row);
    expect(report).toMatchObject({ result: "failed", outcome: { status: 403 } });
    expect(cloud.emulator.sessionState(sessionId)).toBe("open");
  });

  it("fails, without a retry, when the token is an application token", async () => {
    const sessionId = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId: newUserId(), workbook: "/drives/d/items/app" });
    const appCredential = new ClientSecretCredential(HOME_TENANT, CLIENT_ID, cloud.clientSecret, {
      authorityHost: cloud.authority.authorityHost,
      disableInstanceDiscovery: true,
      retryOptions: { maxRetries: 0 },
    });
    const closer = new WorkbookSessionCloser({ baseUrl: cloud.emulator.baseUrl });
    const attempt = await closer.close({
      workbook: { kind: "drive", driveId: "d", itemId: "app" },
      sessionId,
      credential: appCredential,
      scope: `${GRAPH_RESOURCE}/.default`,
      attempts: 1,
    });
    expect(attempt).toMatchObject({ sent: true, outcome: { kind: "failed", status: 403, code: "accessDenied" } });
    expect(closeRequests()).toHaveLength(1);
    expect(closeRequests()[0]!.tokenKind).toBe("app");
  });
});

describe("cooldowns", () => {
  it("an HTTP-date Retry-After is read against the answer's own Date (Graph's clock), not this host's", () => {
    const now = new Date("2026-12-01T12:00:00.500Z");
    // Graph's clock an hour ahead of this host's: the wait is still the 30 s between its two dates.
    const ahead = retryAfterTime("Tue, 01 Dec 2026 13:00:30 GMT", now, "Tue, 01 Dec 2026 13:00:00 GMT");
    expect(ahead!.getTime() - now.getTime()).toBe(30_000);
    // Without a Date header, the host's clock is all there is.
    expect(retryAfterTime("Tue, 01 Dec 2026 12:00:30 GMT", now)!.getTime() - now.getTime()).toBe(29_500);
    // Seconds need no clock; a date before the answer's means now.
    expect(retryAfterTime("7", now, "Tue, 01 Dec 2026 09:00:00 GMT")!.getTime() - now.getTime()).toBe(7_000);
    expect(retryAfterTime("Tue, 01 Dec 2026 12:59:00 GMT", now, "Tue, 01 Dec 2026 13:00:00 GMT")!.getTime()).toBe(now.getTime());
  });


  it.each([
    ["seconds", () => "2", 2_000],
    ["an HTTP date", () => new Date(Date.now() + 3_000).toUTCString(), 3_000],
  ])("429 with Retry-After as %s schedules the retry for then and sends nothing more", async (_form, retryAfter, expectedMs) => {
    const { row, sessionId } = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/busy" });
    cloud.emulator.addFault({ sessionId, times: 1, action: { status: 429, headers: { "Retry-After": retryAfter() } } });
    const before = Date.now();
    const report = await close(row);
    expect(report).toMatchObject({ result: "retry", outcome: { status: 429, cooldown: true } });
    if (report.result === "lostRace" || report.result === "heldBack") throw new Error("unexpected");
    const retryAt = (report.outcome as { retryAt: Date }).retryAt.getTime();
    // HTTP dates have whole seconds: allow for the rounding down of the date.
    expect(retryAt).toBeGreaterThanOrEqual(before + expectedMs - 1_000);
    expect(retryAt).toBeLessThanOrEqual(Date.now() + expectedMs + 50);
    expect(closeRequests()).toHaveLength(1);
    const after = await table.services.ledger.get(row);
    expect(after).toMatchObject({ status: "open", attempts: 1, lastError: { code: "tooManyRequests" } });
    // Written in the storage service's time, which the sweeper knows to the Date header's whole second.
    expect(after!.nextAttemptAt!.getTime()).toBeLessThanOrEqual(retryAt);
    expect(after!.nextAttemptAt!.getTime()).toBeGreaterThanOrEqual(retryAt - 1_100);
    expect(cloud.emulator.sessionState(sessionId)).toBe("open");
  });

  it("a long cooldown comes back at once as a retry instead of holding the call", async () => {
    const { row } = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/slow" });
    cloud.emulator.addFault({ workbook: "/drives/d/items/slow", times: 1, action: { status: 503, headers: { "Retry-After": "315" } } });
    const started = Date.now();
    const report = await close(row);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(report).toMatchObject({ result: "retry", outcome: { status: 503, cooldown: true } });
    expect((report as { outcome: { retryAt: Date } }).outcome.retryAt.getTime()).toBeGreaterThan(started + 314_000);
  });

  it("gives up with failed and the last reason once the attempts run out", async () => {
    const busy = await cloud.newTable({ MAX_ATTEMPTS: "2" });
    const { row } = await busy.openSession({ userId: newUserId(), workbook: "/drives/d/items/cap" });
    cloud.emulator.addFault({ workbook: "/drives/d/items/cap", action: { status: 504 } });
    const first = await closeRecordedSession(row, busy.services.closeDependencies());
    expect(first.result).toBe("retry");
    const second = await closeRecordedSession((await busy.services.ledger.get(row))!, busy.services.closeDependencies());
    expect(second).toMatchObject({ result: "retry", transition: { to: "failed" } });
    expect(await busy.services.ledger.get(row)).toMatchObject({ status: "failed", attempts: 2, lastError: { code: "gatewayTimeout" } });
  });
});

describe("delegated tokens", () => {
  it("an expired assertion (AADSTS500133) ends expired with that reason and sends nothing to Graph", async () => {
    const userId = newUserId();
    const assertion = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID, lifetimeSec: -600 });
    const { row } = await table.openSession({ userId, workbook: "/drives/d/items/old", assertion });
    const report = await close(row);
    expect(report).toMatchObject({ result: "expired", sent: false, outcome: { code: "AADSTS500133" } });
    expect(closeRequests()).toHaveLength(0);
    expect(await table.services.ledger.get(row)).toMatchObject({ status: "expired", lastError: { code: "AADSTS500133" } });
  });

  it("an invalid client secret is the app's fault: AppFaultError with the cause, the row given back as it was", async () => {
    const wrong = await cloud.newTable({ AZURE_CLIENT_SECRET: "not-the-secret-at-all" });
    const { row } = await wrong.openSession({ userId: newUserId(), workbook: "/drives/d/items/x" });
    const error = await closeRecordedSession(row, wrong.services.closeDependencies()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AppFaultError);
    expect(error).toMatchObject({ code: Codes.ClientCredentialRejected, scope: "app" });
    expect((error as Error).message).toContain("AADSTS7000215");
    expect(closeRequests()).toHaveLength(0);
    const after = await wrong.services.ledger.get(row);
    expect(after).toMatchObject({ status: "open", attempts: row.attempts });
    expect(after?.lastError).toBeUndefined();
  });

  it("reuses one credential per user: two sessions, one token request", async () => {
    const userId = newUserId();
    const a = await table.openSession({ userId, workbook: "/drives/d/items/a" });
    const b = await table.openSession({ userId, workbook: "/drives/d/items/b" });
    const deps = table.services.closeDependencies();
    expect((await closeRecordedSession(a.row, deps)).result).toBe("closed");
    expect((await closeRecordedSession(b.row, deps)).result).toBe("closed");
    expect(cloud.authority.tokenRequests.filter((r) => r.userId === userId && r.status === 200)).toHaveLength(1);
  });

  it("refuses a tenant that is not allowed", async () => {
    const strict = await cloud.newTable({ AZURE_ADDITIONALLY_ALLOWED_TENANTS: "" });
    const { row } = await strict.openSession({ tenantId: "33333333-3333-4333-8333-333333333333", userId: newUserId(), workbook: "/drives/d/items/t" });
    const report = await closeRecordedSession(row, strict.services.closeDependencies());
    expect(report).toMatchObject({ result: "failed", sent: false, outcome: { code: "TenantNotAllowed" } });
  });

  it("a row whose assertion was copied from another user's row does not decrypt: failed, nothing sent", async () => {
    const victim = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/v" });
    const thief = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/v2" });
    await table.services.ledger.client.updateEntity(
      { partitionKey: thief.row.partitionKey, rowKey: thief.row.rowKey, assertion: victim.row.encryptedAssertion },
      "Merge",
    );
    const report = await close((await table.services.ledger.get(thief.row))!);
    expect(report).toMatchObject({ result: "failed", sent: false, outcome: { code: "AssertionUnreadable" } });
    expect(closeRequests()).toHaveLength(0);
  });
});

describe("acting only for the row's own user", () => {
  it("refuses a row whose assertion belongs to another user, before any exchange or request", async () => {
    const owner = newUserId();
    const other = newUserId();
    const borrowed = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId: other, audience: CLIENT_ID });
    const { row, sessionId } = await table.openSession({ userId: owner, workbook: "/drives/d/items/own", assertion: borrowed });
    const report = await close(row);
    expect(report).toMatchObject({ result: "failed", sent: false, outcome: { code: "AssertionUserMismatch" } });
    expect(cloud.authority.tokenRequests).toHaveLength(0);
    expect(cloud.emulator.requests).toHaveLength(0);
    expect(cloud.emulator.sessionState(sessionId)).toBe("open");
  });

  it("refuses an assertion that is not a token at all", async () => {
    const { row } = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/opaque", assertion: "opaque-string" });
    expect(await close(row)).toMatchObject({ result: "failed", sent: false, outcome: { code: "AssertionUserMismatch" } });
  });
});

describe("a close interrupted by a dead sweeper", () => {
  it("is taken over after its lease; a session Graph no longer has is expired with a code that says so, never closed", async () => {
    const { row, sessionId } = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/crash" });
    // A sweeper claimed it, sent closeSession (Graph closed it), and died before writing the outcome.
    const claim = await table.services.ledger.claim(row, { leaseMs: -1 });
    expect(claim.claimed).toBe(true);
    cloud.emulator.expireSession(sessionId);
    const [orphan] = (await table.services.ledger.listStale(60_000).next()).value!.rows;
    const report = await close(orphan!);
    expect(report).toMatchObject({ result: "expired", outcome: { code: "GoneAfterInterruptedClose" } });
    expect(await table.services.ledger.get(row)).toMatchObject({ status: "expired", attempts: 2, lastError: { code: "GoneAfterInterruptedClose" } });
  });
});

describe("hostile locations", () => {
  const hostile: [string, WorkbookLocation][] = [
    ["dot segments", { kind: "drive", driveId: "d", itemId: "../../me/messages" }],
    ["a query", { kind: "drive", driveId: "d", itemId: "i?$select=x" }],
    ["a fragment", { kind: "me", itemId: "i#frag" }],
    ["an encoded slash", { kind: "drive", driveId: "d%2F..%2F..", itemId: "i" }],
    ["whitespace", { kind: "site", siteId: "s x", itemId: "i" }],
    ["another host", { kind: "user", userId: "//evil.example", itemId: "i" }],
    ["a backslash", { kind: "drive", driveId: "d\\..\\x", itemId: "i" }],
    ["userinfo", { kind: "drive", driveId: "a@evil.example:443", itemId: "i" }],
  ];

  it.each(hostile)("a location with %s is never sent", async (_name, workbook) => {
    const closer = new WorkbookSessionCloser({ baseUrl: cloud.emulator.baseUrl });
    const credential = { getToken: () => Promise.reject(new Error("must not be asked")) };
    const attempt = await closer.close({ workbook, sessionId: "s", credential, scope: "x", attempts: 1 });
    expect(attempt).toEqual({ sent: false, outcome: expect.objectContaining({ kind: "failed", code: "UnsafeLocation" }) });
    expect(cloud.emulator.requests).toHaveLength(0);
  });

  it("a session id with a line break or non-ASCII is never sent", async () => {
    const closer = new WorkbookSessionCloser({ baseUrl: cloud.emulator.baseUrl });
    const credential = { getToken: () => Promise.reject(new Error("must not be asked")) };
    for (const sessionId of ["a\r\nx-injected: 1", "ü-session", ""]) {
      const attempt = await closer.close({ workbook: { kind: "me", itemId: "i" }, sessionId, credential, scope: "x", attempts: 1 });
      expect(attempt.sent).toBe(false);
    }
    expect(cloud.emulator.requests).toHaveLength(0);
  });
});

describe("on the wire", () => {
  const token = "eyJ0eXAiOiJKV1QifQ.wire-test-token.signature";
  const credential = { getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3_600_000 }) };
  const workbook: WorkbookLocation = { kind: "drive", driveId: "d", itemId: "i" };

  /** A server that records what reached it; the test says what it answers. */
  async function withServer(answer: (res: import("node:http").ServerResponse) => void, body: (origin: string, seen: { headers: Record<string, unknown>[] }) => Promise<void>) {
    const seen = { headers: [] as Record<string, unknown>[] };
    const server = new LocalHttpsServer(cloud.certificate, async (req, res) => {
      seen.headers.push(req.headers);
      req.resume();
      answer(res);
    });
    await server.listen();
    try {
      await body(server.origin, seen);
    } finally {
      await server.close();
    }
  }

  it("does not follow a redirect: the answer is reported and the token goes nowhere else", async () => {
    await withServer((res) => res.writeHead(204).end(), async (elsewhere, seenElsewhere) => {
      cloud.emulator.addFault({ action: { status: 307, headers: { location: `${elsewhere}/v1.0/drives/d/items/i/workbook/closeSession` } } });
      const closer = new WorkbookSessionCloser({ baseUrl: cloud.emulator.baseUrl });
      const attempt = await closer.close({ workbook, sessionId: "s", credential, scope: "x", attempts: 1 });
      expect(attempt).toMatchObject({ sent: true, outcome: { kind: "failed", status: 307 } });
      expect(closeRequests()).toHaveLength(1);
      expect(seenElsewhere.headers).toHaveLength(0);
    });
  });

  it("sends the session header and the bearer token, and nothing else of the caller's", async () => {
    await withServer((res) => res.writeHead(204, { "request-id": "r-1" }).end(), async (origin, seen) => {
      const closer = new WorkbookSessionCloser({ baseUrl: `${origin}/v1.0` });
      const attempt = await closer.close({ workbook, sessionId: "the-session", credential, scope: "x", attempts: 1 });
      expect(attempt).toEqual({ sent: true, outcome: { kind: "closed", status: 204, requestId: "r-1" } });
      expect(seen.headers).toHaveLength(1);
      expect(seen.headers[0]).toMatchObject({ authorization: `Bearer ${token}`, "workbook-session-id": "the-session" });
    });
  });

  it("an answer whose body stalls ends at the request timeout as a retry", async () => {
    await withServer((res) => {
      res.writeHead(503, { "content-type": "application/json" });
      res.write('{"error":{"code":');
    }, async (origin) => {
      const closer = new WorkbookSessionCloser({ baseUrl: `${origin}/v1.0`, requestTimeoutMs: 300 });
      const started = Date.now();
      const attempt = await closer.close({ workbook, sessionId: "s", credential, scope: "x", attempts: 1 });
      expect(attempt).toMatchObject({ sent: true, outcome: { kind: "retry", code: "GraphRequestTimeout", cooldown: false } });
      expect(Date.now() - started).toBeLessThan(5_000);
    });
  });

  it("keeps only the head of an oversized error body, and still reads its status", async () => {
    await withServer((res) => {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("x".repeat(2_000_000));
    }, async (origin) => {
      const closer = new WorkbookSessionCloser({ baseUrl: `${origin}/v1.0` });
      const attempt = await closer.close({ workbook, sessionId: "s", credential, scope: "x", attempts: 1 });
      expect(attempt).toMatchObject({ sent: true, outcome: { kind: "retry", status: 500, code: "Http500" } });
    });
  });
});
