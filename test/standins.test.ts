/**
 * Proves the two https stand-ins (fake Entra authority, Graph workbook-session emulator) against the
 * real SDKs: @azure/identity's OnBehalfOfCredential (MSAL) and @microsoft/microsoft-graph-client.
 * No mocks: every call below crosses real TLS on 127.0.0.1.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { OnBehalfOfCredential, type AccessToken, type TokenCredential } from "@azure/identity";
import { Client, GraphError, ResponseType, RetryHandlerOptions } from "@microsoft/microsoft-graph-client";
import { TokenCredentialAuthenticationProvider } from "@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials";
import { loadTestCertificate, type TestCertificate } from "../standins/certificate";
import { startFakeAuthority, type FakeAuthority } from "../standins/fakeAuthority";
import { drawLatency, mulberry32, startGraphEmulator, type GraphEmulator, type LognormalLatency } from "../standins/graphEmulator";
import { rejection } from "./support/rejection";

const TENANT = "11111111-1111-4111-8111-111111111111";
const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const CLIENT_ID = "aaaaaaaa-0000-4000-8000-000000000001";
const CLIENT_SECRET = `secret-${Math.random().toString(36).slice(2)}`;
const CERT_CLIENT_ID = "aaaaaaaa-0000-4000-8000-000000000002";
const ALICE = "0a11ce00-0000-4000-8000-00000000a11c";
const BOB = "0b0b0000-0000-4000-8000-000000000b0b";
const GRAPH_DEFAULT = "https://graph.microsoft.com/.default";

let certificate: TestCertificate;
let authority: FakeAuthority;
let emulator: GraphEmulator;
let clientPemPath: string;
let strayPemPath: string;
let clientCertDir: string | undefined;
/** Every token, assertion and secret seen in this file: none may appear in any record. */
const secrets = new Set<string>([CLIENT_SECRET]);

const execFileAsync = promisify(execFile);

async function makeClientCertificate(dir: string, name: string): Promise<{ combinedPath: string; certPem: string }> {
  const keyPath = join(dir, `${name}.key.pem`);
  const certPath = join(dir, `${name}.cert.pem`);
  await execFileAsync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${name}`,
    "-keyout", keyPath, "-out", certPath,
  ]);
  const certPem = readFileSync(certPath, "utf8");
  const combinedPath = join(dir, `${name}.pem`);
  writeFileSync(combinedPath, `${readFileSync(keyPath, "utf8")}\n${certPem}`);
  return { combinedPath, certPem };
}

beforeAll(async () => {
  certificate = loadTestCertificate(inject("testCertificateDir"));
  const dir = mkdtempSync(join(tmpdir(), "wss-client-cert-"));
  clientCertDir = dir;
  const [auth, registered, stray] = await Promise.all([
    startFakeAuthority({ certificate }),
    makeClientCertificate(dir, "client"),
    makeClientCertificate(dir, "stray"),
  ]);
  authority = auth;
  clientPemPath = registered.combinedPath;
  strayPemPath = stray.combinedPath;
  authority.registerClient({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  authority.registerClient({ clientId: CERT_CLIENT_ID, certificatePem: registered.certPem });
  emulator = await startGraphEmulator({ certificate, authority });
});

afterAll(async () => {
  await emulator?.close();
  await authority?.close();
  if (clientCertDir) rmSync(clientCertDir, { recursive: true, force: true });
});

beforeEach(() => {
  authority.reset();
  emulator.reset();
});

function assertionFor(userId: string, opts: { tenantId?: string; audience?: string; lifetimeSec?: number } = {}): string {
  const token = authority.issueUserAssertion({
    tenantId: opts.tenantId ?? TENANT,
    userId,
    audience: opts.audience ?? CLIENT_ID,
    ...(opts.lifetimeSec !== undefined ? { lifetimeSec: opts.lifetimeSec } : {}),
  });
  secrets.add(token);
  return token;
}

function oboCredential(
  userId: string,
  opts: { clientSecret?: string; certificatePath?: string; clientId?: string; assertion?: string; tenantId?: string } = {},
): OnBehalfOfCredential {
  const common = {
    tenantId: opts.tenantId ?? TENANT,
    clientId: opts.clientId ?? CLIENT_ID,
    userAssertionToken: opts.assertion ?? assertionFor(userId),
    authorityHost: authority.authorityHost,
    disableInstanceDiscovery: true,
    retryOptions: { maxRetries: 0 },
  };
  return opts.certificatePath
    ? new OnBehalfOfCredential({ ...common, certificatePath: opts.certificatePath })
    : new OnBehalfOfCredential({ ...common, clientSecret: opts.clientSecret ?? CLIENT_SECRET });
}

/** Remembers every token the wrapped credential hands out, to check none is ever recorded. */
function remembering(credential: TokenCredential): TokenCredential {
  return {
    async getToken(scopes, options) {
      const token = await credential.getToken(scopes, options);
      if (token) secrets.add(token.token);
      return token;
    },
  };
}

function graphClient(credential: TokenCredential, scopes = [GRAPH_DEFAULT]): Client {
  return Client.initWithMiddleware({
    authProvider: new TokenCredentialAuthenticationProvider(remembering(credential), { scopes }),
    baseUrl: `${emulator.origin}/`,
    defaultVersion: "v1.0",
    customHosts: new Set(["127.0.0.1"]),
  });
}

async function closeRaw(client: Client, path: string, sessionId?: string, extra: Record<string, unknown> = {}): Promise<Response> {
  let request = client.api(path).responseType(ResponseType.RAW).middlewareOptions([new RetryHandlerOptions(0, 0)]);
  if (sessionId !== undefined) request = request.header("workbook-session-id", sessionId);
  if (Object.keys(extra).length > 0) request = request.options(extra);
  return (await request.post(undefined)) as Response;
}

async function errorOf(response: Response): Promise<{ code?: string; innerCode?: string; requestId?: string }> {
  const body = (await response.json()) as { error?: { code?: string; innerError?: { code?: string; "request-id"?: string } } };
  return { code: body.error?.code, innerCode: body.error?.innerError?.code, requestId: body.error?.innerError?.["request-id"] };
}

// -------------------------------------------------------------------------------------------------

describe("fake authority with the real OnBehalfOfCredential", () => {
  it("serves discovery with the issuer on its own origin and real signing keys", async () => {
    const config = (await (await fetch(`${authority.authorityHost}/${TENANT}/v2.0/.well-known/openid-configuration`)).json()) as Record<string, string>;
    expect(new URL(config.issuer!).origin).toBe(authority.authorityHost);
    expect(config.token_endpoint).toBe(`${authority.authorityHost}/${TENANT}/oauth2/v2.0/token`);
    expect(config.authorization_endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+\//);
    const jwks = (await (await fetch(config.jwks_uri!)).json()) as { keys: { kty: string; kid: string }[] };
    expect(jwks.keys[0]?.kty).toBe("RSA");
  });

  it("exchanges a user assertion for a Graph token that verifies; a .default token is not found in MSAL's cache", async () => {
    const credential = oboCredential(ALICE);
    const first = await credential.getToken(GRAPH_DEFAULT);
    secrets.add(first.token);
    const verified = authority.verifyGraphToken(first.token);
    expect(verified.ok).toBe(true);
    if (!verified.ok) return;
    expect(verified.claims).toMatchObject({ tid: TENANT, oid: ALICE, appid: CLIENT_ID, aud: "https://graph.microsoft.com" });
    expect(verified.claims.scp).toBe("Files.ReadWrite User.Read");
    expect(verified.claims.roles).toBeUndefined();

    const [request] = authority.tokenRequests;
    expect(request).toMatchObject({
      tenantId: TENANT,
      clientId: CLIENT_ID,
      userId: ALICE,
      grantType: "urn:ietf:params:oauth:grant-type:jwt-bearer",
      status: 200,
      clientAuth: "secret",
    });
    expect(request?.scope.split(" ")).toEqual(expect.arrayContaining([GRAPH_DEFAULT, "openid", "profile", "offline_access"]));
    // MSAL asked for nothing but the tenant's OIDC document (instance discovery is disabled).
    expect(authority.otherRequests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `GET /${TENANT}/v2.0/.well-known/openid-configuration`,
    ]);

    // Same credential, same scope: Entra answered the expanded permission list, MSAL filed the token
    // under it, and its lookup for ".default" misses: a second token request goes out.
    const second = await credential.getToken(GRAPH_DEFAULT);
    secrets.add(second.token);
    expect(authority.tokenRequests.filter((r) => r.userId === ALICE)).toHaveLength(2);
    expect(authority.otherRequests).toHaveLength(1);
  });

  it("with an explicit Graph scope the second getToken is served from MSAL's cache", async () => {
    const credential = oboCredential(ALICE);
    secrets.add((await credential.getToken("https://graph.microsoft.com/Files.ReadWrite")).token);
    secrets.add((await credential.getToken("https://graph.microsoft.com/Files.ReadWrite")).token);
    expect(authority.tokenRequests).toHaveLength(1);
  });

  it("an expired assertion fails with AADSTS500133 (invalid_grant, 400)", async () => {
    const credential = oboCredential(ALICE, { assertion: assertionFor(ALICE, { lifetimeSec: -600 }) });
    const error = await rejection(credential.getToken(GRAPH_DEFAULT));
    expect(error.name).toBe("AuthenticationRequiredError");
    expect(error.message).toContain("AADSTS500133");
    expect(authority.tokenRequests[0]).toMatchObject({ status: 400, error: "AADSTS500133", oauthError: "invalid_grant", userId: ALICE });
  });

  it("a wrong secret fails with AADSTS7000215 (invalid_client, 401); an unknown client with AADSTS700016", async () => {
    const wrong = await rejection(oboCredential(ALICE, { clientSecret: "not-the-secret" }).getToken(GRAPH_DEFAULT));
    expect(wrong.message).toContain("AADSTS7000215");
    expect(authority.tokenRequests[0]).toMatchObject({ status: 401, oauthError: "invalid_client" });
    const unknown = await rejection(
      oboCredential(ALICE, { clientId: "aaaaaaaa-0000-4000-8000-0000000000ff", assertion: assertionFor(ALICE, { audience: "aaaaaaaa-0000-4000-8000-0000000000ff" }) }).getToken(GRAPH_DEFAULT),
    );
    expect(unknown.message).toContain("AADSTS700016");
  });

  it("rejects an assertion for another audience or tenant with AADSTS50013", async () => {
    const otherAudience = await rejection(oboCredential(ALICE, { assertion: assertionFor(ALICE, { audience: "api://someone-else" }) }).getToken(GRAPH_DEFAULT));
    expect(otherAudience.message).toContain("AADSTS50013");
    const otherTenant = await rejection(oboCredential(ALICE, { assertion: assertionFor(ALICE, { tenantId: OTHER_TENANT }) }).getToken(GRAPH_DEFAULT));
    expect(otherTenant.message).toContain("AADSTS50013");
  });

  it("certificate client authentication works; an unregistered certificate fails with AADSTS700027", async () => {
    const token = await oboCredential(ALICE, { clientId: CERT_CLIENT_ID, certificatePath: clientPemPath, assertion: assertionFor(ALICE, { audience: CERT_CLIENT_ID }) }).getToken(GRAPH_DEFAULT);
    secrets.add(token.token);
    expect(authority.verifyGraphToken(token.token)).toMatchObject({ ok: true, claims: { appid: CERT_CLIENT_ID, oid: ALICE } });
    expect(authority.tokenRequests[0]).toMatchObject({ clientAuth: "certificate", status: 200 });
    const stray = await rejection(
      oboCredential(ALICE, { clientId: CERT_CLIENT_ID, certificatePath: strayPemPath, assertion: assertionFor(ALICE, { audience: CERT_CLIENT_ID }) }).getToken(GRAPH_DEFAULT),
    );
    expect(stray.message).toContain("AADSTS700027");
  });

  it("failNext answers the named errors, per user and in Entra's statuses", async () => {
    authority.failNext({ error: "AADSTS50173", userId: BOB });
    authority.failNext({ error: "AADSTS700082", userId: BOB });
    secrets.add((await oboCredential(ALICE).getToken(GRAPH_DEFAULT)).token); // not Bob: untouched
    expect((await rejection(oboCredential(BOB).getToken(GRAPH_DEFAULT))).message).toContain("AADSTS50173");
    expect((await rejection(oboCredential(BOB).getToken(GRAPH_DEFAULT))).message).toContain("AADSTS700082");
    secrets.add((await oboCredential(BOB).getToken(GRAPH_DEFAULT)).token);
    expect(authority.tokenRequests.map((r) => [r.userId, r.status, r.error])).toEqual([
      [ALICE, 200, undefined],
      [BOB, 400, "AADSTS50173"],
      [BOB, 400, "AADSTS700082"],
      [BOB, 200, undefined],
    ]);
  });

  it("AADSTS90033 is a 503 temporarily_unavailable; MSAL then throttles that credential without asking again", async () => {
    authority.failNext({ error: "AADSTS90033" });
    const credential = oboCredential(ALICE);
    const error = await rejection(credential.getToken(GRAPH_DEFAULT));
    expect(error.name).toBe("AuthenticationRequiredError");
    expect(error.message).toContain("AADSTS90033");
    expect(authority.tokenRequests[0]).toMatchObject({ status: 503, oauthError: "temporarily_unavailable" });
    // msal-common's ThrottlingUtils remembers a 429/5xx answer (60 s without Retry-After) for this
    // credential's app: the retry fails again at once, and the authority never sees it.
    const again = await rejection(credential.getToken(GRAPH_DEFAULT));
    expect(again.message).toContain("90033");
    expect(authority.tokenRequests).toHaveLength(1);
    // A new credential (new MSAL app) is not throttled.
    secrets.add((await oboCredential(ALICE).getToken(GRAPH_DEFAULT)).token);
    expect(authority.tokenRequests).toHaveLength(2);
  });

  it("setLatency delays token answers", async () => {
    authority.setLatency(150);
    const started = Date.now();
    secrets.add((await oboCredential(ALICE).getToken(GRAPH_DEFAULT)).token);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250); // discovery + token, 150 ms each
  });
});

// -------------------------------------------------------------------------------------------------

describe("Graph emulator with the real Graph client", () => {
  it("closes a session (204); a second close is 404 invalidSessionReCreatable and counted", async () => {
    const client = graphClient(oboCredential(ALICE));
    const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d1/items/i1" });
    expect(id.length).toBeGreaterThanOrEqual(200);
    for (const ch of ["/", "+", "=", "&"]) expect(id).toContain(ch);

    const first = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect(first.status).toBe(204);
    expect(emulator.sessionState(id)).toBe("closed");
    const second = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect(second.status).toBe(404);
    expect(second.headers.get("request-id")).toBeTruthy();
    const err = await errorOf(second);
    expect(err).toMatchObject({ code: "notFound", innerCode: "invalidSessionReCreatable", requestId: second.headers.get("request-id") });
    expect(emulator.stats()).toMatchObject({ closesAfterClosed: 1, nonCloseRequests: 0, maxConcurrentPerSession: 1 });
    expect(emulator.requests.map((r) => [r.kind, r.status, r.tokenKind, r.workbookKey, r.tenantId, r.userId])).toEqual([
      ["closeSession", 204, "delegated", "/drives/d1/items/i1", TENANT, ALICE],
      ["closeSession", 404, "delegated", "/drives/d1/items/i1", TENANT, ALICE],
    ]);
    expect(emulator.requests[0]?.sessionId).toBe(id);
    // The Graph client asks its credential for ".default" on every call, and MSAL misses its cache
    // each time (see the authority tests): one token request per Graph request.
    expect(authority.tokenRequests.filter((r) => r.userId === ALICE)).toHaveLength(2);
  });

  it("serves every URL form; /me and /users/{own id} are the same drive", async () => {
    const client = graphClient(oboCredential(ALICE));
    const forms = ["/me/drive/items/A1", `/users/${ALICE}/drive/items/A2`, "/drives/b!drive-x/items/A3", "/sites/contoso.example,1,2/drive/items/A4"];
    for (const workbook of forms) {
      const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook });
      const path = `${workbook.split("/").map(encodeURIComponent).join("/")}/workbook/closeSession`;
      expect((await closeRaw(client, path, id)).status, workbook).toBe(204);
      expect(emulator.sessionState(id)).toBe("closed");
    }
    const viaMe = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/me/drive/items/B1" });
    expect((await closeRaw(client, `/users/${ALICE}/drive/items/B1/workbook/closeSession`, viaMe)).status).toBe(204);
    expect(emulator.requests.at(-1)?.workbookKey).toBe(`/users/${ALICE}/drive/items/B1`);
    expect(emulator.requests[2]?.path).toBe("/v1.0/drives/b!drive-x/items/A3/workbook/closeSession");
  });

  it("creates and refreshes sessions; expiry by idle time and by expireSession", async () => {
    const client = graphClient(oboCredential(ALICE));
    const created = (await client.api("/me/drive/items/C1/workbook/createSession").post({ persistChanges: false })) as { id: string; persistChanges: boolean };
    expect(created.persistChanges).toBe(false);
    expect(emulator.sessionState(created.id)).toBe("open");
    expect((await client.api("/me/drive/items/C1/workbook/refreshSession").header("workbook-session-id", created.id).responseType(ResponseType.RAW).post(undefined) as Response).status).toBe(204);
    emulator.expireSession(created.id);
    expect(emulator.sessionState(created.id)).toBe("expired");
    const gone = await closeRaw(client, "/me/drive/items/C1/workbook/closeSession", created.id);
    expect(gone.status).toBe(404);
    expect((await errorOf(gone)).innerCode).toBe("invalidSessionReCreatable");

    emulator.configure({ idleMs: { persistent: 30, nonPersistent: 300 } });
    const persistent = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d/items/P", persistChanges: true });
    const viewOnly = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d/items/V", persistChanges: false });
    await new Promise((r) => setTimeout(r, 60));
    expect([emulator.sessionState(persistent), emulator.sessionState(viewOnly)]).toEqual(["expired", "open"]);
    await new Promise((r) => setTimeout(r, 260));
    expect(emulator.sessionState(viewOnly)).toBe("expired");
    expect(emulator.stats().nonCloseRequests).toBe(2);
  });

  it("answers the documented errors: unknown item, missing header, unknown path, wrong method", async () => {
    const client = graphClient(oboCredential(ALICE));
    const unknownItem = await closeRaw(client, "/drives/d1/items/never-opened/workbook/closeSession", "x");
    expect(unknownItem.status).toBe(404);
    expect(await errorOf(unknownItem)).toMatchObject({ code: "itemNotFound", innerCode: undefined });

    const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d1/items/i1" });
    const noHeader = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession");
    expect(noHeader.status).toBe(400);
    expect((await errorOf(noHeader)).code).toBe("invalidRequest");

    const unknownSession = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", "cluster=PS1&session=15.nope");
    expect(unknownSession.status).toBe(404);

    const other = await closeRaw(client, "/drives/d1/items/i1/workbook/worksheets", id);
    expect(other.status).toBe(400);
    expect((await errorOf(other)).code).toBe("invalidRequest");
    expect(emulator.requests.at(-1)?.kind).toBe("other");

    const pathAddressed = await closeRaw(client, "/me/drive/root:/Book.xlsx:/workbook/closeSession", id);
    expect(pathAddressed.status).toBe(403);

    const get = (await client.api("/drives/d1/items/i1/workbook/closeSession").header("workbook-session-id", id).responseType(ResponseType.RAW).middlewareOptions([new RetryHandlerOptions(0, 0)]).get()) as Response;
    expect(get.status).toBe(405);
    expect(emulator.sessionState(id)).toBe("open");
  });

  it("refuses other users' drives and sessions with 403, and app-only or missing tokens", async () => {
    const alice = graphClient(oboCredential(ALICE));
    const bobsDrive = await closeRaw(alice, `/users/${BOB}/drive/items/i1/workbook/closeSession`, "x");
    expect(bobsDrive.status).toBe(403);
    expect((await errorOf(bobsDrive)).code).toBe("accessDenied");

    const bobs = emulator.openSession({ tenantId: TENANT, userId: BOB, workbook: "/drives/shared/items/i1" });
    const notHers = await closeRaw(alice, "/drives/shared/items/i1/workbook/closeSession", bobs);
    expect(notHers.status).toBe(403);
    expect(await errorOf(notHers)).toMatchObject({ code: "accessDenied", innerCode: "invalidSessionAuthentication" });
    expect(emulator.sessionState(bobs)).toBe("open");

    const appOnly: TokenCredential = {
      async getToken(): Promise<AccessToken> {
        return { token: authority.issueAppOnlyToken({ tenantId: TENANT, clientId: CLIENT_ID }), expiresOnTimestamp: Date.now() + 3600_000 };
      },
    };
    const app = await closeRaw(graphClient(appOnly), "/drives/shared/items/i1/workbook/closeSession", bobs);
    expect(app.status).toBe(403);
    expect((await errorOf(app)).code).toBe("accessDenied");
    expect(emulator.requests.at(-1)?.tokenKind).toBe("app");
    expect(emulator.sessionState(bobs)).toBe("open");

    const anonymous = await fetch(`${emulator.baseUrl}/drives/shared/items/i1/workbook/closeSession`, { method: "POST", headers: { "workbook-session-id": bobs } });
    expect(anonymous.status).toBe(401);
    expect((await errorOf(anonymous)).code).toBe("InvalidAuthenticationToken");
    const forged = await fetch(`${emulator.baseUrl}/drives/shared/items/i1/workbook/closeSession`, {
      method: "POST",
      headers: { "workbook-session-id": bobs, authorization: "Bearer eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ4In0.AAAA" },
    });
    expect(forged.status).toBe(401);
    expect(emulator.requests.slice(-2).map((r) => r.tokenKind)).toEqual(["none", "invalid"]);
  });

  it("a 429 fault carries Retry-After in seconds or as an HTTP date; the Graph client honours it", async () => {
    const client = graphClient(oboCredential(ALICE));
    const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d1/items/i1" });
    emulator.addFault({ sessionId: id, times: 1, action: { status: 429, headers: { "Retry-After": "2" } } });
    const seconds = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect(seconds.status).toBe(429);
    expect(seconds.headers.get("retry-after")).toBe("2");
    expect((await errorOf(seconds)).code).toBe("tooManyRequests");

    const date = new Date(Date.now() + 3000).toUTCString();
    emulator.addFault({ kind: "closeSession", times: 1, action: { status: 429, headers: { "Retry-After": date } } });
    const dated = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect(dated.headers.get("retry-after")).toBe(date);
    expect(emulator.sessionState(id)).toBe("open");

    // One retry allowed: the client sleeps Retry-After (1 s), then the close succeeds.
    emulator.addFault({ workbook: "/drives/d1/items/i1", times: 1, action: { status: 429, headers: { "Retry-After": "1" } } });
    const started = Date.now();
    const retried = (await client.api("/drives/d1/items/i1/workbook/closeSession").header("workbook-session-id", id).responseType(ResponseType.RAW).middlewareOptions([new RetryHandlerOptions(0, 1)]).post(undefined)) as Response;
    expect(retried.status).toBe(204);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(emulator.requests.map((r) => [r.status, r.fault])).toEqual([
      [429, "status"],
      [429, "status"],
      [429, "status"],
      [204, undefined],
    ]);
  });

  it("enforces a per-tenant budget with 429 and Retry-After; stats see the window", async () => {
    const client = graphClient(oboCredential(ALICE));
    emulator.configure({ tenantBudget: { requests: 3, windowMs: 10_000 } });
    const ids = Array.from({ length: 5 }, (_, i) => emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: `/drives/d/items/b${i}` }));
    const statuses: number[] = [];
    for (const [i, id] of ids.entries()) {
      const response = await closeRaw(client, `/drives/d/items/b${i}/workbook/closeSession`, id);
      statuses.push(response.status);
      // Seconds until the oldest counted request leaves the window, rounded up.
      if (response.status === 429) expect(Number(response.headers.get("retry-after"))).toBeGreaterThanOrEqual(9);
    }
    expect(statuses).toEqual([204, 204, 204, 429, 429]);
    expect(emulator.requests.filter((r) => r.fault === "budget")).toHaveLength(2);
    expect(emulator.stats().maxTenantRequestsInWindow(TENANT, 10_000)).toBe(5);
    expect(emulator.stats().maxTenantRequestsInWindow(TENANT, 0)).toBe(0);
    expect(emulator.stats().maxTenantRequestsInWindow(OTHER_TENANT, 10_000)).toBe(0);
  });

  it("enforces the app-wide budget across tenants; a request refused by one budget is counted in neither", async () => {
    const alice = graphClient(oboCredential(ALICE));
    const bob = graphClient(oboCredential(BOB, { tenantId: OTHER_TENANT, assertion: assertionFor(BOB, { tenantId: OTHER_TENANT }) }));
    emulator.configure({ tenantBudget: { requests: 3, windowMs: 10_000 }, appBudget: { requests: 4, windowMs: 10_000 } });
    let n = 0;
    const close = async (client: Client, tenantId: string, userId: string): Promise<Response> => {
      const workbook = `/drives/d/items/app${n++}`;
      const id = emulator.openSession({ tenantId, userId, workbook });
      return closeRaw(client, `${workbook}/workbook/closeSession`, id);
    };
    const statuses: number[] = [];
    for (const [client, tenantId, userId] of [[alice, TENANT, ALICE], [alice, TENANT, ALICE], [bob, OTHER_TENANT, BOB], [bob, OTHER_TENANT, BOB]] as const) {
      statuses.push((await close(client, tenantId, userId)).status);
    }
    // Four in the app's window, two in each tenant's: the app budget refuses both tenants.
    for (const [client, tenantId, userId] of [[alice, TENANT, ALICE], [bob, OTHER_TENANT, BOB]] as const) {
      const refused = await close(client, tenantId, userId);
      statuses.push(refused.status);
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(9);
      expect((await errorOf(refused)).code).toBe("tooManyRequests");
    }
    expect(statuses).toEqual([204, 204, 204, 204, 429, 429]);
    expect(emulator.requests.map((r) => [r.tenantId, r.appId, r.fault])).toEqual([
      ...[TENANT, TENANT, OTHER_TENANT, OTHER_TENANT].map((t) => [t, CLIENT_ID, undefined]),
      [TENANT, CLIENT_ID, "appBudget"],
      [OTHER_TENANT, CLIENT_ID, "appBudget"],
    ]);

    // Giving appBudget empties the app's window only. Alice's third request passes her tenant's
    // budget (the one the app budget refused was not counted there); her fourth does not, and is
    // not counted in the app's window either, so Bob's request still fits in a budget of two.
    emulator.configure({ appBudget: { requests: 2, windowMs: 10_000 } });
    expect((await close(alice, TENANT, ALICE)).status).toBe(204);
    expect((await close(alice, TENANT, ALICE)).status).toBe(429);
    expect(emulator.requests.at(-1)?.fault).toBe("budget");
    expect((await close(bob, OTHER_TENANT, BOB)).status).toBe(204);

    const stats = emulator.stats();
    expect(stats.maxAppRequestsInWindow(CLIENT_ID, 10_000)).toBe(9); // every request, as recorded
    expect(stats.maxAppRequestsInWindow(CERT_CLIENT_ID, 10_000)).toBe(0);
    expect(stats.maxTenantRequestsInWindow(TENANT, 10_000)).toBe(5);
    emulator.reset();
    expect((await close(alice, TENANT, ALICE)).status).toBe(204); // reset() restores no budget
  });

  it("draws each request's latency from a log-normal, records it, and replays the same draws", async () => {
    const client = graphClient(oboCredential(ALICE));
    const spec: LognormalLatency = { kind: "lognormal", medianMs: 10, p99Ms: 40, maxMs: 60, seed: 42 };
    const random = mulberry32(42);
    const expected = Array.from({ length: 4 }, () => drawLatency(spec, random));
    const run = async (): Promise<{ latencyMs: number | undefined; waited: number }[]> => {
      const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d/items/lat" });
      const path = "/drives/d/items/lat/workbook/refreshSession";
      for (let i = 0; i < 3; i++) expect((await closeRaw(client, path, id)).status).toBe(204);
      emulator.addFault({ times: 1, action: { status: 503 } });
      expect((await closeRaw(client, path, id)).status).toBe(503);
      return emulator.requests.map((r) => ({ latencyMs: r.latencyMs, waited: (r.endedAt ?? 0) - r.startedAt }));
    };
    emulator.configure({ latencyMs: spec });
    const first = await run();
    expect(first.map((r) => r.latencyMs)).toEqual(expected);
    // A fault's answer waits the request's own draw; every answer waited about what was drawn.
    for (const r of first) expect(r.waited).toBeGreaterThanOrEqual(Math.floor(r.latencyMs!) - 1);

    emulator.reset();
    emulator.configure({ latencyMs: spec }); // the same configuration reseeds: the same draws
    expect((await run()).map((r) => r.latencyMs)).toEqual(expected);

    emulator.reset();
    emulator.configure({ latencyMs: 3 }); // a fixed latency, recorded as given
    expect((await run()).map((r) => r.latencyMs)).toEqual([3, 3, 3, 3]);
    expect(() => emulator.configure({ latencyMs: { kind: "lognormal", medianMs: 50, p99Ms: 10 } })).toThrow(RangeError);
  });

  it("odd answers: 500 HTML, empty 404 as JSON, 200 with a body instead of 204", async () => {
    const client = graphClient(oboCredential(ALICE));
    const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d1/items/i1" });
    emulator.addFault({ times: 1, action: { status: 500, headers: { "content-type": "text/html" }, body: "<html><body>Server Error</body></html>" } });
    emulator.addFault({ times: 1, action: { status: 404, headers: { "content-type": "application/json" }, body: "" } });
    emulator.addFault({ times: 1, action: { status: 200, body: { id, persistChanges: true } } });
    const html = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect([html.status, await html.text()]).toEqual([500, "<html><body>Server Error</body></html>"]);
    const empty = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect([empty.status, empty.headers.get("content-type"), await empty.text()]).toEqual([404, "application/json", ""]);
    const ok = await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ id, persistChanges: true });
    expect(emulator.sessionState(id)).toBe("open");
  });

  it("a reset fault drops the connection; a hang is ended by the caller's timeout", async () => {
    const client = graphClient(oboCredential(ALICE));
    const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d1/items/i1" });
    emulator.addFault({ sessionId: id, times: 1, action: "reset" });
    const reset = await rejection(closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id));
    expect(reset).toBeInstanceOf(GraphError);
    expect((reset as GraphError).statusCode).toBe(-1);

    emulator.addFault({ sessionId: id, times: 1, action: "hang" });
    const started = Date.now();
    const hang = await rejection(closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id, { signal: AbortSignal.timeout(200) }));
    expect((hang as GraphError).statusCode).toBe(-1);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(emulator.requests.map((r) => [r.fault, r.status])).toEqual([
      ["reset", 0],
      ["hang", 0],
    ]);
    expect((await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id)).status).toBe(204);
  });

  it("reports concurrency per workbook and per session", async () => {
    const client = graphClient(oboCredential(ALICE));
    await client.api("/me/drive/items/warm/workbook/createSession").post({ persistChanges: true }); // token fetched once
    emulator.reset();
    emulator.configure({ latencyMs: 200 });
    const a = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d/items/same" });
    const b = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d/items/same" });
    const c = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d/items/same" });
    const path = "/drives/d/items/same/workbook/closeSession";
    const statuses = await Promise.all([a, b, c, a].map(async (id) => (await closeRaw(client, path, id)).status));
    expect(statuses.sort()).toEqual([204, 204, 204, 404]);
    const stats = emulator.stats();
    expect(stats.maxConcurrentPerWorkbook).toBe(4);
    expect(stats.maxConcurrentPerSession).toBe(2);
    expect(stats.closesAfterClosed).toBe(0); // the duplicate close was sent before the first was answered
  });

  it("never records a token, assertion or secret", async () => {
    const client = graphClient(oboCredential(ALICE));
    const id = emulator.openSession({ tenantId: TENANT, userId: ALICE, workbook: "/drives/d1/items/i1" });
    await closeRaw(client, "/drives/d1/items/i1/workbook/closeSession", id);
    await rejection(oboCredential(ALICE, { clientSecret: "wrong" }).getToken(GRAPH_DEFAULT));
    const recorded = JSON.stringify([emulator.requests, authority.tokenRequests, authority.otherRequests]);
    expect(secrets.size).toBeGreaterThan(10);
    for (const secret of secrets) expect(recorded.includes(secret)).toBe(false);
    // Nor any token's header: every JWT the authority signs starts with {"typ":"JWT", (16 characters
    // no random session id will happen to contain; a loose /eyJ…/ pattern would now and then).
    expect(recorded).not.toContain(Buffer.from('{"typ":"JWT",').toString("base64url").slice(0, 16));
  });
});

// -------------------------------------------------------------------------------------------------

describe("drawLatency", () => {
  const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const draws = (spec: LognormalLatency, n = 20_000): number[] => {
    const random = mulberry32(spec.seed ?? 1);
    return Array.from({ length: n }, () => drawLatency(spec, random)).sort((a, b) => a - b);
  };

  it("has the median and p99 it is given", () => {
    for (const spec of [
      { kind: "lognormal", medianMs: 120, p99Ms: 900, seed: 1 },
      { kind: "lognormal", medianMs: 40, p99Ms: 60, seed: 2 },
    ] satisfies LognormalLatency[]) {
      const sorted = draws(spec);
      expect(Math.abs(quantile(sorted, 0.5) / spec.medianMs - 1)).toBeLessThan(0.03);
      expect(Math.abs(quantile(sorted, 0.99) / spec.p99Ms - 1)).toBeLessThan(0.08);
      expect(sorted[0]).toBeGreaterThan(0);
    }
  });

  it("clamps to [minMs, maxMs]; a fixed latency is returned as is and draws nothing", () => {
    const sorted = draws({ kind: "lognormal", medianMs: 100, p99Ms: 1_000, minMs: 50, maxMs: 400, seed: 3 });
    expect(sorted[0]).toBe(50);
    expect(sorted.at(-1)).toBe(400);
    // P(X < 50) = Φ(ln 0.5 / σ) ≈ 24%, P(X > 400) ≈ 8% for σ = ln 10 / 2.3263.
    expect(sorted.filter((ms) => ms === 50).length / sorted.length).toBeCloseTo(0.24, 1);
    expect(sorted.filter((ms) => ms === 400).length / sorted.length).toBeCloseTo(0.08, 1);
    expect(quantile(sorted, 0.5)).toBeCloseTo(100, -1);

    let calls = 0;
    expect(drawLatency(25, () => (calls++, 0.5))).toBe(25);
    expect(calls).toBe(0);
  });

  it("repeats its draws for a seed", () => {
    const spec: LognormalLatency = { kind: "lognormal", medianMs: 100, p99Ms: 500 };
    const a = mulberry32(9);
    const b = mulberry32(9);
    const c = mulberry32(10);
    const [x, y, z] = [a, b, c].map((r) => Array.from({ length: 5 }, () => drawLatency(spec, r)));
    expect(x).toEqual(y);
    expect(x).not.toEqual(z);
  });
});
