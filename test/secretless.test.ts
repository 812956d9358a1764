/**
 * Secretless: the app and a producer with no storage key, no client secret and no key that opens
 * assertions anywhere in their settings. Storage is the run's second Azurite, in OAuth mode over
 * https (the account key is the fixture's alone, for inspection); the Function app's managed
 * identity (the authority's stand-in for App Service's IDENTITY_ENDPOINT) gets the storage tokens
 * and the client assertion of the on-behalf-of exchange, which the app registration trusts as a
 * federated credential. ManagedIdentityCredential runs its real code: msal-node fixes the identity
 * endpoint for the whole process at its first request, so this file sets it once, before anything.
 */
import { randomUUID } from "node:crypto";
import { ManagedIdentityCredential } from "@azure/identity";
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { createSweeperServices, loadConfig, SessionProducer, type SweepSummary } from "../src";
import { handleCloseRequest } from "../src/app/handleCloseRequest";
import { parseCloseRequestMessage } from "../src/core/closeRequestMessage";
import type { StorageServiceUrls } from "../src/ledger/storageConnection";
import { createQueueClient } from "../src/ledger/storageConnection";
import { startStandIns, type StandIns } from "../standins";
import type { ManagedIdentity } from "../standins/fakeAuthority/managedIdentity";
import { loadTestCertificate } from "../standins/certificate";
import { HOME_TENANT, newUserId, silence } from "./support/cloudFixture";
import { uniqueTableName } from "./support/ledgerFixture";
import { registerSecrets } from "./support/secretScan";

/** The app registration of this file: it has no secret and no certificate at all. */
const APP_CLIENT_ID = "bbbbbbbb-0000-4000-8000-0000000000c2";

let standIns: StandIns;
let identity: ManagedIdentity;
let untrusted: ManagedIdentity;
const oauth = inject("oauthStorage");
const restoreEnv: Record<string, string | undefined> = {};

beforeAll(async () => {
  standIns = await startStandIns({ certificate: loadTestCertificate(inject("testCertificateDir")), storageConnectionString: oauth.connectionString, tenantId: HOME_TENANT });
  const { authority } = standIns;
  authority.registerClient({ clientId: APP_CLIENT_ID });
  identity = authority.registerManagedIdentity({ tenantId: HOME_TENANT });
  untrusted = authority.registerManagedIdentity({ tenantId: HOME_TENANT });
  authority.trustManagedIdentity(APP_CLIENT_ID, identity);
  const environment = authority.managedIdentityEnvironment();
  for (const [name, value] of Object.entries(environment)) {
    restoreEnv[name] = process.env[name];
    process.env[name] = value;
  }
  registerSecrets([environment.IDENTITY_HEADER, oauth.accountKey, standIns.assertionKeys.privateKey]);
});
afterAll(async () => {
  for (const [name, value] of Object.entries(restoreEnv)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  registerSecrets(standIns?.authority.issuedTokens ?? []);
  await standIns?.close();
});

/** The app's settings for a secretless deployment: identity-based storage, the managed identity's assertion, a private key only. */
function secretlessSettings(table: string, overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return standIns.settings({
    AzureWebJobsStorage: undefined,
    AzureWebJobsStorage__tableServiceUri: oauth.tableEndpoint,
    AzureWebJobsStorage__queueServiceUri: oauth.queueEndpoint,
    AzureWebJobsStorage__credential: "managedidentity",
    AzureWebJobsStorage__clientId: identity.clientId,
    AZURE_CLIENT_ID: APP_CLIENT_ID,
    AZURE_CLIENT_SECRET: undefined,
    AZURE_CLIENT_ASSERTION_IDENTITY: identity.clientId,
    SESSIONS_TABLE: table,
    ...overrides,
  });
}

/** What a producing service holds: the services' URLs, its own managed identity, the sweeper's public key. */
function producerFor(table: string): SessionProducer {
  const connection: StorageServiceUrls = {
    tableServiceUrl: oauth.tableEndpoint,
    queueServiceUrl: oauth.queueEndpoint,
    credential: new ManagedIdentityCredential({ clientId: identity.clientId }),
  };
  return SessionProducer.fromConnection(connection, table, { assertionPublicKey: standIns.assertionKeys.publicKey });
}

async function openAndRecord(producer: SessionProducer, stale: boolean) {
  const userId = newUserId();
  const workbook = `/drives/secretless/items/${randomUUID()}`;
  const sessionId = standIns.emulator.openSession({ tenantId: HOME_TENANT, userId, workbook, persistChanges: true });
  const userAssertion = standIns.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: APP_CLIENT_ID });
  const row = await producer.record({ tenantId: HOME_TENANT, userId, sessionId, workbook, recordedBy: "secretless-test", userAssertion });
  if (stale) await silence(producer.client, row, 10 * 60_000);
  return { key: { tenantId: HOME_TENANT, userId, sessionId }, row, sessionId };
}

it("a producer records, touches and releases, a sweep and a close request close, all through managed identity: no key, secret or connection string anywhere", async () => {
  const table = uniqueTableName();
  const settings = secretlessSettings(table);
  const given = Object.entries(settings).filter(([, value]) => value !== undefined);
  // Nothing secret is configured: no storage key or connection string, no client secret, no shared key.
  for (const [name, value] of given) {
    expect(name).not.toMatch(/SECRET|CERTIFICATE|ENCRYPTION_KEY|^AzureWebJobsStorage$/);
    expect(value).not.toContain(oauth.accountKey);
  }
  const config = loadConfig(settings);
  expect(config.storage.connection).toMatchObject({ kind: "identity", credential: { kind: "managedIdentity", clientId: identity.clientId } });
  expect(config.auth.clientCredential).toEqual({ kind: "managedIdentity", clientId: identity.clientId, audience: "api://AzureADTokenExchange" });

  const producer = producerFor(table);
  const dead = [await openAndRecord(producer, true), await openAndRecord(producer, true)];
  const alive = await openAndRecord(producer, false);
  await producer.touch(alive.key, { known: alive.row });
  const finished = await openAndRecord(producer, false);
  await producer.release(finished.key);
  const requested = await openAndRecord(producer, false);
  await producer.requestClose(requested.key, { requestedBy: "secretless-test" });

  const services = createSweeperServices(config, { tokenMaxRetries: 0 });
  // The close request, as the queue trigger would get it: read from the queue through the identity too.
  const queue = createQueueClient({ tableServiceUrl: oauth.tableEndpoint, queueServiceUrl: oauth.queueEndpoint, credential: new ManagedIdentityCredential({ clientId: identity.clientId }) }, config.storage.closeQueueName);
  const received = await queue.receiveMessages({ numberOfMessages: 1 });
  expect(received.receivedMessageItems).toHaveLength(1);
  const handled = await handleCloseRequest(services, parseCloseRequestMessage(received.receivedMessageItems[0]!.messageText));
  expect(handled).toMatchObject({ result: "attempted", report: { result: "closed" } });

  const summary: SweepSummary = await services.newSweeper().run();
  expect(summary).toMatchObject({ closed: 2, failed: 0, paused: 0, retry: 0 });
  expect(summary.error).toBeUndefined();
  for (const { sessionId } of dead) expect(standIns.emulator.sessionState(sessionId)).toBe("closed");
  expect(standIns.emulator.sessionState(requested.sessionId)).toBe("closed");
  expect(standIns.emulator.sessionState(alive.sessionId), "the live session is left open").toBe("open");
  expect((await services.ledger.get(alive.key))?.status).toBe("open");

  // Every token exchange proved the app with the managed identity's assertion, and the identity
  // endpoint gave storage tokens and exchange tokens.
  const exchanges = standIns.authority.tokenRequests.filter((r) => r.clientId === APP_CLIENT_ID);
  expect(exchanges.length).toBeGreaterThan(0);
  expect(exchanges.every((r) => r.clientAuth === "federated" && r.status === 200)).toBe(true);
  const resources = new Set(standIns.authority.managedIdentityRequests.map((r) => r.resource));
  expect([...resources].some((r) => r?.startsWith("https://storage.azure.com") === true)).toBe(true);
  expect(resources.has("api://AzureADTokenExchange")).toBe(true);
});

it("an identity the app registration does not trust, or one not assigned to the app, pauses sends: a fault of the app, not of the sessions", async () => {
  const table = uniqueTableName();
  const producer = producerFor(table);
  const rows = [await openAndRecord(producer, true), await openAndRecord(producer, true)];
  const before = standIns.emulator.requests.length;

  for (const [which, clientId, code] of [
    ["not trusted by the app registration", untrusted.clientId, "FederatedCredentialRejected"],
    ["not assigned to the app", randomUUID(), "ManagedIdentityUnavailable"],
  ] as const) {
    const services = createSweeperServices(loadConfig(secretlessSettings(table, { AZURE_CLIENT_ASSERTION_IDENTITY: clientId })), { tokenMaxRetries: 0 });
    const summary = await services.newSweeper().run();
    expect(summary.error?.code, which).toBe(code);
    expect(summary, which).toMatchObject({ closed: 0, failed: 0, retry: 0 });
    expect(summary.paused, which).toBeGreaterThan(0);
    for (const { key } of rows) expect(await services.ledger.get(key), which).toMatchObject({ status: "open", attempts: 0 });
  }
  expect(standIns.emulator.requests.length, "nothing was sent to Graph").toBe(before);

  // Fixed, the next sweep closes them.
  const fixed = await createSweeperServices(loadConfig(secretlessSettings(table)), { tokenMaxRetries: 0 }).newSweeper().run();
  expect(fixed).toMatchObject({ closed: 2 });
});

it("a storage identity that is not the app's: the sweep ends with a clear fault and changes nothing", async () => {
  const table = uniqueTableName();
  const producer = producerFor(table);
  const row = await openAndRecord(producer, true);
  const services = createSweeperServices(loadConfig(secretlessSettings(table, { AzureWebJobsStorage__clientId: randomUUID() })), { tokenMaxRetries: 0 });
  const summary = await services.newSweeper().run();
  expect(summary.error).toBeDefined();
  expect(summary.error!.message).not.toMatch(/\n/);
  expect(summary.error!.code).toBe("StorageCredentialUnavailable");
  expect(summary).toMatchObject({ scanned: 0, claimed: 0, graphRequests: 0 });
  const good = createSweeperServices(loadConfig(secretlessSettings(table)), { tokenMaxRetries: 0 });
  expect(await good.ledger.get(row.key)).toMatchObject({ status: "open", attempts: 0 });
});
