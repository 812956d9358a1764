/**
 * Proves the stand-ins of a secretless deployment against the real SDKs, over real TLS:
 *  - the authority's App Service managed-identity endpoint with @azure/identity's
 *    ManagedIdentityCredential (msal-node's ManagedIdentityApplication underneath);
 *  - the run's OAuth Azurite (globalSetup's `oauthStorage`) with @azure/data-tables and
 *    @azure/storage-queue given that credential and no account key;
 *  - federated identity credentials: OnBehalfOfCredential whose client assertion is the managed
 *    identity's token for api://AzureADTokenExchange, with no secret registered anywhere.
 *
 * msal-node keeps process-wide state (see the last describe): the first token request of the
 * process fixes the identity source (IDENTITY_ENDPOINT, IDENTITY_HEADER and the HTTP client) for
 * every later ManagedIdentityCredential, and all of them share one token cache. So this file uses
 * one authority's endpoint throughout, and a fresh identity wherever a test counts requests.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { TableClient } from "@azure/data-tables";
import { QueueClient } from "@azure/storage-queue";
import { ManagedIdentityCredential, OnBehalfOfCredential, type AccessToken, type TokenCredential } from "@azure/identity";
import { startAzurite, AzuriteStartError } from "../standins/azurite";
import { loadTestCertificate, type TestCertificate } from "../standins/certificate";
import { decodeJwt, startFakeAuthority, type FakeAuthority, type ManagedIdentity } from "../standins/fakeAuthority";
import { registerSecrets } from "./support/secretScan";
import { rejection } from "./support/rejection";

const TENANT = "11111111-1111-4111-8111-111111111111";
const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const APP_CLIENT_ID = "aaaaaaaa-0000-4000-8000-0000000000f1";
const ALICE = "0a11ce00-0000-4000-8000-00000000a11c";
const STORAGE_SCOPE = "https://storage.azure.com/.default";
const EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default";
const GRAPH_DEFAULT = "https://graph.microsoft.com/.default";
/** What msal-node and @azure/identity read to pick a managed-identity source. */
const MI_ENV = [
  "IDENTITY_ENDPOINT",
  "IDENTITY_HEADER",
  "IDENTITY_SERVER_THUMBPRINT",
  "MSI_ENDPOINT",
  "MSI_SECRET",
  "IMDS_ENDPOINT",
  "AZURE_FEDERATED_TOKEN_FILE",
] as const;

let certificate: TestCertificate;
let authority: FakeAuthority;
let systemMi: ManagedIdentity;
let userMi: ManagedIdentity;
const savedEnv: Partial<Record<(typeof MI_ENV)[number], string>> = {};
const storage = inject("oauthStorage");

beforeAll(async () => {
  certificate = loadTestCertificate(inject("testCertificateDir"));
  authority = await startFakeAuthority({ certificate });
  registerSecrets(authority.issuedTokens);
  registerSecrets([storage.accountKey]);
  // An app registration with no secret and no certificate: it trusts the user-assigned identity only.
  authority.registerClient({ clientId: APP_CLIENT_ID });
  systemMi = authority.registerManagedIdentity({ principal: "system", tenantId: TENANT });
  userMi = authority.registerManagedIdentity({ tenantId: TENANT });
  authority.trustManagedIdentity(APP_CLIENT_ID, userMi);

  const environment = authority.managedIdentityEnvironment();
  registerSecrets([environment.IDENTITY_HEADER]);
  for (const name of MI_ENV) {
    savedEnv[name] = process.env[name];
    delete process.env[name];
  }
  // ManagedIdentityCredential reads these when it is constructed (and msal-node once per process).
  Object.assign(process.env, environment);
});

afterAll(async () => {
  for (const name of MI_ENV) {
    if (savedEnv[name] === undefined) delete process.env[name];
    else process.env[name] = savedEnv[name];
  }
  await authority?.close();
});

beforeEach(() => authority.reset());

function claimsOf(token: string): Record<string, unknown> {
  const jwt = decodeJwt(token);
  if (!jwt) throw new Error("not a JWT");
  return jwt.payload;
}

/** A fresh user-assigned identity, so that msal-node's process-wide token cache has nothing for it. */
function freshIdentity(tenantId = TENANT): ManagedIdentity {
  return authority.registerManagedIdentity({ tenantId });
}

function uniqueName(prefix: string): string {
  return `${prefix}${randomUUID().replace(/-/g, "").slice(0, 16)}`;
}

/** A credential that hands out a fixed token (to present a token Storage must refuse). */
function fixedToken(token: AccessToken): TokenCredential {
  return { getToken: async () => token };
}

function oboWithManagedIdentity(mi: ManagedIdentity, opts: { clientId?: string; assertion?: string; authority?: FakeAuthority; getAssertion?: () => Promise<string> } = {}): OnBehalfOfCredential {
  const auth = opts.authority ?? authority;
  const clientId = opts.clientId ?? APP_CLIENT_ID;
  const managed = new ManagedIdentityCredential({ clientId: mi.clientId });
  // A variable, not a literal: the constructor's overloads do not list disableInstanceDiscovery.
  const options = {
    tenantId: TENANT,
    clientId,
    getAssertion: opts.getAssertion ?? (() => managed.getToken(EXCHANGE_SCOPE).then((t) => t.token)),
    userAssertionToken: opts.assertion ?? auth.issueUserAssertion({ tenantId: TENANT, userId: ALICE, audience: clientId }),
    authorityHost: auth.authorityHost,
    disableInstanceDiscovery: true,
    retryOptions: { maxRetries: 0 },
  };
  return new OnBehalfOfCredential(options);
}

// -------------------------------------------------------------------------------------------------

describe("the managed-identity endpoint (App Service, api-version 2019-08-01)", () => {
  it("answers App Service's shape: expires_on as a string of epoch seconds, resource as asked, client_id", async () => {
    const { IDENTITY_ENDPOINT, IDENTITY_HEADER } = authority.managedIdentityEnvironment();
    expect(IDENTITY_ENDPOINT).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/msi\/token$/);
    const url = `${IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=${encodeURIComponent("https://storage.azure.com/")}&client_id=${userMi.clientId}`;
    const response = await fetch(url, { headers: { "X-IDENTITY-HEADER": IDENTITY_HEADER } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["access_token", "client_id", "expires_on", "resource", "token_type"]);
    expect(body).toMatchObject({ resource: "https://storage.azure.com/", token_type: "Bearer", client_id: userMi.clientId });
    expect(body.expires_on).toMatch(/^\d{10}$/);
    const claims = claimsOf(body.access_token as string);
    expect(Number(body.expires_on)).toBe(claims.exp);
    expect(claims).toMatchObject({
      aud: "https://storage.azure.com/",
      iss: `https://sts.windows.net/${TENANT}/`,
      oid: userMi.objectId,
      sub: userMi.objectId,
      appid: userMi.clientId,
      tid: TENANT,
      ver: "1.0",
    });
    expect(authority.managedIdentityRequests).toEqual([
      expect.objectContaining({ seq: 1, method: "GET", apiVersion: "2019-08-01", headerOk: true, status: 200, tokenKind: "storage", identityClientId: userMi.clientId }),
    ]);
  });

  it("refuses a missing or wrong X-IDENTITY-HEADER with 401, an unknown identity with 400, as App Service does", async () => {
    const { IDENTITY_ENDPOINT, IDENTITY_HEADER } = authority.managedIdentityEnvironment();
    const query = `?api-version=2019-08-01&resource=${encodeURIComponent("https://storage.azure.com")}`;
    expect((await fetch(`${IDENTITY_ENDPOINT}${query}`)).status).toBe(401);
    expect((await fetch(`${IDENTITY_ENDPOINT}${query}`, { headers: { "X-IDENTITY-HEADER": "not-the-header" } })).status).toBe(401);
    const unknown = await fetch(`${IDENTITY_ENDPOINT}${query}&client_id=${randomUUID()}`, { headers: { "X-IDENTITY-HEADER": IDENTITY_HEADER } });
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toMatchObject({ statusCode: 400, message: "Unable to load the proper Managed Identity." });
    const oldApi = await fetch(`${IDENTITY_ENDPOINT}?api-version=2017-09-01&resource=https://storage.azure.com`, { headers: { "X-IDENTITY-HEADER": IDENTITY_HEADER } });
    expect(oldApi.status).toBe(400);
    expect(authority.managedIdentityRequests.map((r) => [r.headerOk, r.status])).toEqual([
      [false, 401],
      [false, 401],
      [true, 400],
      [true, 400],
    ]);
    expect(JSON.stringify(authority.managedIdentityRequests)).not.toContain(IDENTITY_HEADER);
  });
});

describe("ManagedIdentityCredential against the endpoint", () => {
  it("gets a storage token for the system-assigned identity (no client id) and for a user-assigned one", async () => {
    const system = await new ManagedIdentityCredential().getToken(STORAGE_SCOPE);
    expect(claimsOf(system.token)).toMatchObject({ aud: "https://storage.azure.com", oid: systemMi.objectId, appid: systemMi.clientId, iss: `https://sts.windows.net/${TENANT}/` });
    // msal-node turns expires_on into a lifetime and back: a second may tick between the two.
    expect(Math.abs(system.expiresOnTimestamp - (claimsOf(system.token).exp as number) * 1000)).toBeLessThanOrEqual(1_000);

    const user = await new ManagedIdentityCredential({ clientId: userMi.clientId }).getToken(STORAGE_SCOPE);
    expect(claimsOf(user.token)).toMatchObject({ oid: userMi.objectId, sub: userMi.objectId, appid: userMi.clientId });

    expect(authority.managedIdentityRequests.map((r) => [r.requestedId, r.resource, r.apiVersion, r.status])).toEqual([
      [undefined, "https://storage.azure.com", "2019-08-01", 200],
      [{ kind: "client_id", value: userMi.clientId }, "https://storage.azure.com", "2019-08-01", 200],
    ]);
  });

  it("throws for a client id that is not assigned to the app", async () => {
    const error = await rejection(new ManagedIdentityCredential({ clientId: randomUUID() }).getToken(STORAGE_SCOPE));
    expect(error.name).toBe("CredentialUnavailableError");
    expect(error.message).toContain("Unable to load the proper Managed Identity.");
    expect(authority.managedIdentityRequests).toEqual([expect.objectContaining({ status: 400 })]);
  });
});

describe("the OAuth Azurite with the real storage SDKs and no account key", () => {
  it("listens on https, path-style, and still takes the account key for seeding", async () => {
    expect(storage.tableEndpoint).toBe(`${new URL(storage.tableEndpoint).origin}/${storage.accountName}`);
    expect(storage.tableEndpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+\//);
    expect(storage.queueEndpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+\//);
    expect(storage.connectionString).toContain("DefaultEndpointsProtocol=https;");
    const seeding = TableClient.fromConnectionString(storage.connectionString, uniqueName("seed"));
    await seeding.createTable();
    await seeding.deleteTable();
    // No credential at all: refused.
    const anonymous = await fetch(`${storage.tableEndpoint}/Tables`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json;odata=nometadata" },
      body: JSON.stringify({ TableName: uniqueName("anon") }),
    });
    expect(anonymous.status).toBe(403);
  });

  it("creates, writes and reads a table and a queue with a ManagedIdentityCredential", async () => {
    const credential = new ManagedIdentityCredential({ clientId: freshIdentity().clientId });
    const tableName = uniqueName("mi");
    const table = new TableClient(storage.tableEndpoint, tableName, credential);
    await table.createTable();
    await table.upsertEntity({ partitionKey: "p", rowKey: "r", note: "written with a bearer token" });
    expect(await table.getEntity<{ note: string }>("p", "r")).toMatchObject({ note: "written with a bearer token" });

    const queue = new QueueClient(`${storage.queueEndpoint}/${uniqueName("mi")}`, credential);
    await queue.create();
    await queue.sendMessage("close me");
    const { receivedMessageItems } = await queue.receiveMessages();
    expect(receivedMessageItems.map((m) => m.messageText)).toEqual(["close me"]);

    // One storage token served every request (cached by msal-node, shared by both clients).
    expect(authority.managedIdentityRequests.map((r) => [r.tokenKind, r.status])).toEqual([["storage", 200]]);
    await table.deleteTable();
    await queue.delete();
  });

  it("refuses a token from another issuer (the exchange token) or for another audience (Key Vault) with 403", async () => {
    const credential = new ManagedIdentityCredential({ clientId: userMi.clientId });
    const exchange = await credential.getToken(EXCHANGE_SCOPE);
    const vault = await credential.getToken("https://vault.azure.net/.default");
    expect(claimsOf(vault.token)).toMatchObject({ aud: "https://vault.azure.net", iss: `https://sts.windows.net/${TENANT}/` });
    for (const [token, detail] of [
      [exchange, "Invalid token issuer."],
      [vault, "Invalid token audience."],
    ] as const) {
      const tableError = await rejection(new TableClient(storage.tableEndpoint, uniqueName("wrong"), fixedToken(token)).createTable());
      expect(tableError.statusCode).toBe(403);
      // Azurite's Table errors for authentication are XML, which data-tables leaves in the message.
      expect(tableError.message).toContain(`<AuthenticationErrorDetail>${detail}</AuthenticationErrorDetail>`);
      const queueError = await rejection(new QueueClient(`${storage.queueEndpoint}/${uniqueName("wrong")}`, fixedToken(token)).create());
      expect(queueError.statusCode).toBe(403);
      expect(queueError.code).toBe("AuthenticationFailed");
      expect((queueError as { details?: { authenticationErrorDetail?: string } }).details?.authenticationErrorDetail).toBe(detail);
    }
  });

  it("refuses an expired storage token with 403", async () => {
    const shortLived = await startFakeAuthority({ certificate, managedIdentityTokenLifetimeSec: -600 });
    try {
      registerSecrets(shortLived.issuedTokens);
      const mi = shortLived.registerManagedIdentity({ principal: "system", tenantId: TENANT });
      const { IDENTITY_ENDPOINT, IDENTITY_HEADER } = shortLived.managedIdentityEnvironment();
      const answer = (await (
        await fetch(`${IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=https://storage.azure.com`, { headers: { "X-IDENTITY-HEADER": IDENTITY_HEADER } })
      ).json()) as { access_token: string; expires_on: string };
      expect(claimsOf(answer.access_token).oid).toBe(mi.objectId);
      const error = await rejection(
        new QueueClient(`${storage.queueEndpoint}/${uniqueName("expired")}`, fixedToken({ token: answer.access_token, expiresOnTimestamp: Date.now() + 3_600_000 })).create(),
      );
      expect(error.statusCode).toBe(403);
    } finally {
      await shortLived.close();
    }
  });
});

describe("on-behalf-of with the managed identity as the client's federated credential", () => {
  it("gets a Graph token for the user with no secret registered anywhere", async () => {
    const mi = freshIdentity();
    authority.trustManagedIdentity(APP_CLIENT_ID, mi);
    const token = await oboWithManagedIdentity(mi).getToken(GRAPH_DEFAULT);
    expect(authority.verifyGraphToken(token.token)).toMatchObject({ ok: true, claims: { appid: APP_CLIENT_ID, oid: ALICE, tid: TENANT } });
    expect(authority.tokenRequests).toEqual([expect.objectContaining({ clientId: APP_CLIENT_ID, userId: ALICE, clientAuth: "federated", status: 200 })]);
    expect(authority.managedIdentityRequests.map((r) => [r.tokenKind, r.identityClientId, r.status])).toEqual([["exchange", mi.clientId, 200]]);

    // The assertion, from msal-node's cache now: what the federated credential matched.
    const exchange = await new ManagedIdentityCredential({ clientId: mi.clientId }).getToken(EXCHANGE_SCOPE);
    expect(authority.managedIdentityRequests).toHaveLength(1);
    expect(claimsOf(exchange.token)).toMatchObject({
      iss: `${authority.authorityHost}/${TENANT}/v2.0`,
      sub: mi.objectId,
      aud: "api://AzureADTokenExchange",
      tid: TENANT,
    });
  });

  it("an identity the registration does not trust: AADSTS700213 (subject), another tenant's AADSTS700211 (issuer)", async () => {
    const stranger = freshIdentity();
    const subject = await rejection(oboWithManagedIdentity(stranger).getToken(GRAPH_DEFAULT));
    expect(subject.message).toContain("AADSTS700213");
    expect(subject.message).toContain(stranger.objectId);
    const foreign = freshIdentity(OTHER_TENANT);
    const issuer = await rejection(oboWithManagedIdentity(foreign).getToken(GRAPH_DEFAULT));
    expect(issuer.message).toContain("AADSTS700211");
    expect(authority.tokenRequests.map((r) => [r.clientAuth, r.status, r.error, r.oauthError])).toEqual([
      ["federated", 401, "AADSTS700213", "invalid_client"],
      ["federated", 401, "AADSTS700211", "invalid_client"],
    ]);
  });

  it("a credential for another audience is AADSTS700212; a storage token as the assertion is AADSTS700211", async () => {
    const mi = freshIdentity();
    const clientId = randomUUID();
    authority.registerClient({
      clientId,
      federatedCredentials: [{ issuer: `${authority.authorityHost}/${TENANT}/v2.0`, subject: mi.objectId, audience: "api://SomethingElse" }],
    });
    const audience = await rejection(oboWithManagedIdentity(mi, { clientId }).getToken(GRAPH_DEFAULT));
    expect(audience.message).toContain("AADSTS700212");

    const managed = new ManagedIdentityCredential({ clientId: userMi.clientId });
    const storageAsAssertion = await rejection(
      oboWithManagedIdentity(userMi, { getAssertion: () => managed.getToken(STORAGE_SCOPE).then((t) => t.token) }).getToken(GRAPH_DEFAULT),
    );
    expect(storageAsAssertion.message).toContain("AADSTS700211");
  });

  it("an expired exchange token is AADSTS700024", async () => {
    const shortLived = await startFakeAuthority({ certificate, managedIdentityTokenLifetimeSec: -600 });
    try {
      registerSecrets(shortLived.issuedTokens);
      shortLived.registerClient({ clientId: APP_CLIENT_ID });
      const mi = shortLived.registerManagedIdentity({ tenantId: TENANT });
      shortLived.trustManagedIdentity(APP_CLIENT_ID, mi);
      const { IDENTITY_ENDPOINT, IDENTITY_HEADER } = shortLived.managedIdentityEnvironment();
      // msal-node's identity source belongs to the other authority for this process: fetch directly.
      const getAssertion = async () => {
        const url = `${IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=api://AzureADTokenExchange&client_id=${mi.clientId}`;
        return ((await (await fetch(url, { headers: { "X-IDENTITY-HEADER": IDENTITY_HEADER } })).json()) as { access_token: string }).access_token;
      };
      const error = await rejection(oboWithManagedIdentity(mi, { authority: shortLived, getAssertion }).getToken(GRAPH_DEFAULT));
      expect(error.message).toContain("AADSTS700024");
    } finally {
      await shortLived.close();
    }
  });

  it("a registration without a secret refuses one (AADSTS7000215)", async () => {
    const options = {
      tenantId: TENANT,
      clientId: APP_CLIENT_ID,
      clientSecret: "cs-a-secret-nobody-registered",
      userAssertionToken: authority.issueUserAssertion({ tenantId: TENANT, userId: ALICE, audience: APP_CLIENT_ID }),
      authorityHost: authority.authorityHost,
      disableInstanceDiscovery: true,
      retryOptions: { maxRetries: 0 },
    };
    const credential = new OnBehalfOfCredential(options);
    expect((await rejection(credential.getToken(GRAPH_DEFAULT))).message).toContain("AADSTS7000215");
    expect(authority.tokenRequests[0]).toMatchObject({ clientAuth: "secret", status: 401, oauthError: "invalid_client" });
  });
});

describe("msal-node's process-wide managed-identity state", () => {
  it("credentials share one token cache: a second credential for the same identity and resource asks nothing", async () => {
    const mi = freshIdentity();
    await new ManagedIdentityCredential({ clientId: mi.clientId }).getToken(STORAGE_SCOPE);
    await new ManagedIdentityCredential({ clientId: mi.clientId }).getToken(STORAGE_SCOPE);
    expect(authority.managedIdentityRequests).toHaveLength(1);
  });

  it("the first source found stays: a later IDENTITY_ENDPOINT / IDENTITY_HEADER is ignored", async () => {
    const environment = authority.managedIdentityEnvironment();
    await new ManagedIdentityCredential({ clientId: userMi.clientId }).getToken(STORAGE_SCOPE); // the source exists by now
    const mi = freshIdentity();
    process.env.IDENTITY_ENDPOINT = "https://127.0.0.1:9/msi/token";
    process.env.IDENTITY_HEADER = "a-header-nobody-issued";
    try {
      await new ManagedIdentityCredential({ clientId: mi.clientId }).getToken(STORAGE_SCOPE);
    } finally {
      Object.assign(process.env, environment);
    }
    expect(authority.managedIdentityRequests.at(-1)).toMatchObject({ headerOk: true, status: 200, identityClientId: mi.clientId });
  });
});

describe("startAzurite({ oauth })", () => {
  it("refuses OAuth without a certificate (Azurite takes bearer tokens over https only)", async () => {
    await expect(startAzurite({ oauth: true })).rejects.toBeInstanceOf(AzuriteStartError);
  });
});
