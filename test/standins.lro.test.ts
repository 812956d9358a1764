/**
 * The Graph emulator's long-running createSession (`Prefer: respond-async`), as Graph documents it
 * (workbook-createsession, workbookoperation-get, workbook-best-practice): 202 with a Location, polls
 * of the workbookOperation, the session info at its resourceLocation. Real https on 127.0.0.1, with
 * tokens the fake authority issues through the real OnBehalfOfCredential.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { OnBehalfOfCredential } from "@azure/identity";
import { Client, ResponseType, RetryHandlerOptions } from "@microsoft/microsoft-graph-client";
import { loadTestCertificate } from "../standins/certificate";
import { startFakeAuthority, type FakeAuthority } from "../standins/fakeAuthority";
import { startGraphEmulator, type GraphEmulator } from "../standins/graphEmulator";

const TENANT = "11111111-1111-4111-8111-111111111111";
const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const CLIENT_ID = "aaaaaaaa-0000-4000-8000-000000000001";
const CLIENT_SECRET = `secret-${Math.random().toString(36).slice(2)}`;
const ALICE = "0a11ce00-0000-4000-8000-00000000a11c";
const BOB = "0b0b0000-0000-4000-8000-000000000b0b";
const CAROL = "0ca20100-0000-4000-8000-0000000ca201";
const GRAPH_DEFAULT = "https://graph.microsoft.com/.default";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let authority: FakeAuthority;
let emulator: GraphEmulator;
/** Delegated Graph tokens (Files.ReadWrite) of Alice and Bob (TENANT) and Carol (OTHER_TENANT). */
const tokens: Record<string, string> = {};

async function delegatedToken(userId: string, tenantId: string): Promise<string> {
  const options = {
    tenantId,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    userAssertionToken: authority.issueUserAssertion({ tenantId, userId, audience: CLIENT_ID }),
    authorityHost: authority.authorityHost,
    disableInstanceDiscovery: true,
  };
  const credential = new OnBehalfOfCredential(options);
  return (await credential.getToken(GRAPH_DEFAULT)).token;
}

beforeAll(async () => {
  const certificate = loadTestCertificate(inject("testCertificateDir"));
  authority = await startFakeAuthority({ certificate });
  authority.registerClient({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  emulator = await startGraphEmulator({ certificate, authority });
  tokens[ALICE] = await delegatedToken(ALICE, TENANT);
  tokens[BOB] = await delegatedToken(BOB, TENANT);
  tokens[CAROL] = await delegatedToken(CAROL, OTHER_TENANT);
});

afterAll(async () => {
  await emulator?.close();
  await authority?.close();
});

beforeEach(() => {
  emulator.reset();
});

interface Call {
  status: number;
  headers: Headers;
  text: string;
  json: <T = Record<string, unknown>>() => T;
}

async function call(url: string, opts: { user?: string; method?: string; prefer?: string; body?: unknown; sessionId?: string } = {}): Promise<Call> {
  const headers: Record<string, string> = {};
  if (opts.user !== undefined) headers.authorization = `Bearer ${tokens[opts.user]}`;
  if (opts.prefer !== undefined) headers.prefer = opts.prefer;
  if (opts.sessionId !== undefined) headers["workbook-session-id"] = opts.sessionId;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(url.startsWith("https://") ? url : `${emulator.baseUrl}${url}`, {
    method: opts.method ?? (opts.body !== undefined ? "POST" : "GET"),
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: <T>() => JSON.parse(text) as T };
}

const createSession = (workbook: string, user: string, prefer?: string, persistChanges = true) =>
  call(`${workbook}/workbook/createSession`, { user, body: { persistChanges }, ...(prefer !== undefined ? { prefer } : {}) });

const errorOf = (c: Call) => {
  const e = c.json<{ error: { code: string; innerError: { code?: string; "request-id": string } } }>().error;
  return { code: e.code, innerCode: e.innerError.code, requestId: e.innerError["request-id"] };
};

describe("Graph emulator: long-running createSession (Prefer: respond-async)", () => {
  it("answers 201 without the Prefer header, and to respond-async when not configured (Graph 'may' answer 202)", async () => {
    const plain = await createSession("/me/drive/items/S1", ALICE, "respond-async");
    expect(plain.status).toBe(201);
    expect(emulator.sessionState(plain.json<{ id: string }>().id)).toBe("open");

    emulator.configure({ createSessionAsync: {} });
    const without = await createSession("/me/drive/items/S2", ALICE);
    expect(without.status).toBe(201);
    expect(without.json()).toMatchObject({ persistChanges: true });
    expect(emulator.requests.map((r) => [r.kind, r.status, r.respondAsync, r.operationId])).toEqual([
      ["createSession", 201, true, undefined],
      ["createSession", 201, undefined, undefined],
    ]);
  });

  it("202 with Location, running polls, then succeeded with resourceLocation; the session opens then", async () => {
    emulator.configure({ createSessionAsync: { pollsUntilDone: 2 } });
    const accepted = await createSession("/me/drive/items/L1", ALICE, "respond-async, wait=5");
    expect(accepted.status).toBe(202);
    expect(accepted.text).toBe("{}");
    expect(accepted.headers.get("content-type")).toMatch(/^application\/json/);
    expect(accepted.headers.get("request-id")).toBeTruthy();
    const location = accepted.headers.get("location")!;
    const operationId = location.split("/").at(-1)!;
    expect(operationId).toMatch(UUID);
    expect(location).toBe(`${emulator.baseUrl}/me/drive/items/L1/workbook/operations/${operationId}`);

    // Nothing is open on the workbook until the operation has succeeded.
    expect((await call("/me/drive/items/L1/workbook/refreshSession", { user: ALICE, method: "POST", sessionId: "x" })).status).toBe(404);

    const polls: Record<string, unknown>[] = [];
    for (let i = 0; i < 3; i++) {
      const poll = await call(location, { user: ALICE });
      expect(poll.status).toBe(200);
      polls.push(poll.json());
    }
    expect(polls.slice(0, 2)).toEqual([
      { id: operationId, status: "running" },
      { id: operationId, status: "running" },
    ]);
    const done = polls[2] as { id: string; status: string; resourceLocation: string };
    expect(Object.keys(done).sort()).toEqual(["id", "resourceLocation", "status"]);
    expect(done).toMatchObject({ id: operationId, status: "succeeded" });
    const prefix = `${emulator.baseUrl}/me/drive/items/L1/workbook/sessionInfoResource(key='${operationId}')?sessionId=`;
    expect(done.resourceLocation.startsWith(prefix)).toBe(true);

    const info = await call(done.resourceLocation, { user: ALICE });
    expect(info.status).toBe(200);
    const session = info.json<{ id: string; persistChanges: boolean }>();
    expect(session).toMatchObject({ persistChanges: true });
    expect(Buffer.from(done.resourceLocation.slice(prefix.length), "base64").toString("utf8")).toBe(session.id);
    expect(emulator.sessionState(session.id)).toBe("open");
    // The key alone finds it (the concepts page's shorter form).
    expect((await call(done.resourceLocation.split("?")[0]!, { user: ALICE })).json()).toMatchObject({ id: session.id });

    // Later polls repeat the final answer and open nothing more.
    expect((await call(location, { user: ALICE })).json()).toEqual(done);

    const closed = await call("/me/drive/items/L1/workbook/closeSession", { user: ALICE, method: "POST", sessionId: session.id });
    expect(closed.status).toBe(204);
    expect(emulator.sessionState(session.id)).toBe("closed");

    expect(emulator.requests.map((r) => [r.kind, r.method, r.status])).toEqual([
      ["createSession", "POST", 202],
      ["refreshSession", "POST", 404],
      ["sessionOperation", "GET", 200],
      ["sessionOperation", "GET", 200],
      ["sessionOperation", "GET", 200],
      ["sessionInfoResource", "GET", 200],
      ["sessionInfoResource", "GET", 200],
      ["sessionOperation", "GET", 200],
      ["closeSession", "POST", 204],
    ]);
    expect(emulator.requests[0]).toMatchObject({ respondAsync: true, operationId, workbookKey: `/users/${ALICE}/drive/items/L1`, userId: ALICE });
    for (const r of emulator.requests.filter((r) => r.kind.startsWith("session"))) expect(r.operationId).toBe(operationId);
    expect(emulator.stats()).toMatchObject({ nonCloseRequests: 8, closesAfterClosed: 0 });
  });

  it("works through the real Graph client: notStarted first, Location and resourceLocation used as given", async () => {
    emulator.configure({ createSessionAsync: { pollsUntilDone: 2, notStartedPolls: 1 } });
    const client = Client.init({
      authProvider: (done) => done(null, tokens[ALICE]!),
      baseUrl: `${emulator.origin}/`,
      defaultVersion: "v1.0",
      customHosts: new Set(["127.0.0.1"]),
    });
    const workbook = `/drives/b!drive-x/items/G1`;
    const accepted = (await client
      .api(`${workbook}/workbook/createSession`)
      .header("Prefer", "respond-async")
      .responseType(ResponseType.RAW)
      .middlewareOptions([new RetryHandlerOptions(0, 0)])
      .post({ persistChanges: false })) as Response;
    expect(accepted.status).toBe(202);
    const location = accepted.headers.get("location")!;
    expect(location.startsWith(`${emulator.baseUrl}/drives/b!drive-x/items/G1/workbook/operations/`)).toBe(true);
    const statuses: string[] = [];
    let resourceLocation = "";
    for (let i = 0; i < 5 && !resourceLocation; i++) {
      const op = (await client.api(location).get()) as { status: string; resourceLocation?: string };
      statuses.push(op.status);
      resourceLocation = op.resourceLocation ?? "";
    }
    expect(statuses).toEqual(["notStarted", "running", "succeeded"]);
    const info = (await client.api(resourceLocation).get()) as { id: string; persistChanges: boolean };
    expect(info.persistChanges).toBe(false);
    expect(emulator.sessionState(info.id)).toBe("open");
    expect(emulator.requests.at(-1)).toMatchObject({ kind: "sessionInfoResource", status: 200, workbookKey: "/drives/b!drive-x/items/G1" });
  });

  it("a failed operation: running, then failed with Graph's documented error; no session, no result", async () => {
    emulator.configure({ createSessionAsync: { pollsUntilDone: 1, outcome: "failed" } });
    const accepted = await createSession("/drives/d/items/F1", ALICE, "respond-async");
    const location = accepted.headers.get("location")!;
    const operationId = location.split("/").at(-1)!;
    expect((await call(location, { user: ALICE })).json()).toEqual({ id: operationId, status: "running" });
    const failed = (await call(location, { user: ALICE })).json();
    expect(failed).toEqual({
      id: operationId,
      status: "failed",
      error: {
        code: "internalServerError",
        message: "An internal server error occurred while processing the request.",
        innerError: {
          code: "internalServerErrorUncategorized",
          message: "An unspecified error has occurred.",
          innerError: { code: "GenericFileOpenError", message: "The workbook cannot be opened." },
        },
      },
    });
    expect((await call(location, { user: ALICE })).json()).toEqual(failed);
    const result = await call(`/drives/d/items/F1/workbook/sessionInfoResource(key='${operationId}')`, { user: ALICE });
    expect(result.status).toBe(404);
    expect(errorOf(result).code).toBe("itemNotFound");
    // Never opened: a close on the workbook is itemNotFound, not a session error.
    const close = await call("/drives/d/items/F1/workbook/closeSession", { user: ALICE, method: "POST", sessionId: "x" });
    expect([close.status, errorOf(close).code]).toEqual([404, "itemNotFound"]);

    // A configured error, an empty 202 body, and an operation done at its first poll.
    emulator.configure({ createSessionAsync: { pollsUntilDone: 0, outcome: "failed", error: { code: "serviceUnavailable", message: "Try later." }, emptyAcceptedBody: true } });
    const bare = await createSession("/drives/d/items/F2", ALICE, "respond-async");
    expect([bare.status, bare.text, bare.headers.get("content-length"), bare.headers.get("content-type")]).toEqual([202, "", "0", null]);
    expect((await call(bare.headers.get("location")!, { user: ALICE })).json()).toMatchObject({ status: "failed", error: { code: "serviceUnavailable", message: "Try later." } });
  });

  it("only the user who started it sees the operation and its result; unknown ids are itemNotFound", async () => {
    emulator.configure({ createSessionAsync: { pollsUntilDone: 1 } });
    const shared = "/drives/shared/items/A1";
    const location = (await createSession(shared, ALICE, "respond-async")).headers.get("location")!;
    const operationId = location.split("/").at(-1)!;

    // Bob, same tenant, same workbook: 403 as for another user's session; the poll does not count.
    const bobs = await call(location, { user: BOB });
    expect(bobs.status).toBe(403);
    expect(errorOf(bobs)).toMatchObject({ code: "accessDenied", innerCode: "invalidSessionAuthentication", requestId: bobs.headers.get("request-id") });
    // Carol, another tenant: the workbook's operations are not hers at all.
    expect((await call(location, { user: CAROL })).status).toBe(404);
    // Bob through his own drive (/me is his): another workbook.
    expect((await call(`/me/drive/items/A1/workbook/operations/${operationId}`, { user: BOB })).status).toBe(404);
    // Alice through another workbook, or with no token, or with the wrong method.
    expect((await call(`/drives/shared/items/OTHER/workbook/operations/${operationId}`, { user: ALICE })).status).toBe(404);
    expect((await call(location)).status).toBe(401);
    expect((await call(location, { user: ALICE, method: "POST" })).status).toBe(405);

    const unknown = await call(`${shared}/workbook/operations/00000000-0000-4000-8000-000000000000`, { user: ALICE });
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get("content-type")).toMatch(/^application\/json/);
    expect(errorOf(unknown)).toMatchObject({ code: "itemNotFound", requestId: unknown.headers.get("request-id") });
    expect((await call(`${shared}/workbook/sessionInfoResource(key='${operationId}')`, { user: ALICE })).status).toBe(404); // not done yet

    expect((await call(location, { user: ALICE })).json()).toMatchObject({ status: "running" });
    const done = (await call(location, { user: ALICE })).json<{ status: string; resourceLocation: string }>();
    expect(done.status).toBe("succeeded");
    expect((await call(done.resourceLocation, { user: BOB })).status).toBe(403);
    expect((await call(done.resourceLocation, { user: CAROL })).status).toBe(404);
    expect((await call(done.resourceLocation, { user: ALICE })).status).toBe(200);
    expect(emulator.requests.filter((r) => r.kind === "sessionOperation").map((r) => [r.userId, r.status])).toEqual([
      [BOB, 403],
      [CAROL, 404],
      [BOB, 404],
      [ALICE, 404],
      [undefined, 401],
      [ALICE, 405],
      [ALICE, 404],
      [ALICE, 200],
      [ALICE, 200],
    ]);
  });

  it("faults: a 504 on createSession then a 202; a faulted poll does not advance the operation", async () => {
    emulator.configure({ createSessionAsync: { pollsUntilDone: 1 } });
    emulator.addFault({ kind: "createSession", times: 1, action: { status: 504 } });
    const timedOut = await createSession("/me/drive/items/R1", ALICE, "respond-async");
    expect([timedOut.status, errorOf(timedOut).code]).toEqual([504, "gatewayTimeout"]);
    const accepted = await createSession("/me/drive/items/R1", ALICE, "respond-async");
    expect(accepted.status).toBe(202);
    const location = accepted.headers.get("location")!;

    emulator.addFault({ kind: "sessionOperation", times: 1, action: { status: 503 } });
    expect((await call(location, { user: ALICE })).status).toBe(503);
    expect((await call(location, { user: ALICE })).json()).toMatchObject({ status: "running" });
    expect((await call(location, { user: ALICE })).json()).toMatchObject({ status: "succeeded" });
    expect(emulator.requests.map((r) => [r.kind, r.status, r.fault])).toEqual([
      ["createSession", 504, "status"],
      ["createSession", 202, undefined],
      ["sessionOperation", 503, "status"],
      ["sessionOperation", 200, undefined],
      ["sessionOperation", 200, undefined],
    ]);
  });

  it("configure checks the plan; reset() forgets it and every operation", async () => {
    expect(() => emulator.configure({ createSessionAsync: { pollsUntilDone: -1 } })).toThrow(RangeError);
    expect(() => emulator.configure({ createSessionAsync: { pollsUntilDone: 1.5 } })).toThrow(RangeError);
    emulator.configure({ createSessionAsync: { pollsUntilDone: 3 } });
    const location = (await createSession("/me/drive/items/Z1", ALICE, "respond-async")).headers.get("location")!;
    // Each operation keeps the plan of its 202.
    emulator.configure({ createSessionAsync: { pollsUntilDone: 0 } });
    expect((await call(location, { user: ALICE })).json()).toMatchObject({ status: "running" });
    emulator.configure({ createSessionAsync: null });
    expect((await createSession("/me/drive/items/Z2", ALICE, "respond-async")).status).toBe(201);

    emulator.configure({ createSessionAsync: {} });
    emulator.reset();
    expect((await call(location, { user: ALICE })).status).toBe(404);
    expect((await createSession("/me/drive/items/Z3", ALICE, "respond-async")).status).toBe(201);
  });
});
