import { createPrivateKey, createPublicKey, randomBytes, randomUUID } from "node:crypto";
import type { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, beforeEach, inject } from "vitest";
import { AssertionSealer } from "../../src/core/assertionSealing";
import { loadConfig, SessionProducer, createSweeperServices, type SweeperConfig, type SweeperServices, type SessionRecord } from "../../src";
import { loadTestCertificate, startStandIns, type FakeAuthority, type GraphEmulator, type TestCertificate } from "../../standins";
import { uniqueTableName } from "./ledgerFixture";
import { registerSecrets } from "./secretScan";

export const HOME_TENANT = "11111111-1111-4111-8111-111111111111";
export const CLIENT_ID = "aaaaaaaa-0000-4000-8000-0000000000c1";

/** Azurite, the fake authority and the Graph emulator, wired together through settings alone. */
export interface CloudFixture {
  readonly certificate: TestCertificate;
  readonly authority: FakeAuthority;
  readonly emulator: GraphEmulator;
  readonly clientSecret: string;
  /**
   * The run's assertion key pair (raw X25519, base64url): the private key is the app's
   * ASSERTION_PRIVATE_KEY (registered with the secret scan), the public key what producers seal with.
   */
  readonly assertionKeys: { readonly privateKey: string; readonly publicKey: string };
  /** `assertionKeys.publicKey`: what a producer is given. */
  readonly assertionPublicKey: string;
  /** `assertion` sealed for `row` with the run's public key (or `publicKey`), as a producer stores it. */
  seal(assertion: string, row: { partitionKey: string; rowKey: string }, publicKey?: string): Promise<string>;
  /** App settings, as the Functions host would pass them. */
  settings(overrides?: Record<string, string | undefined>): Record<string, string | undefined>;
  /**
   * A fresh table and services over it. Its producer seals with the public key of the
   * ASSERTION_PRIVATE_KEY in `overrides` if there is one, else with the run's.
   */
  newTable(overrides?: Record<string, string | undefined>): Promise<TableFixture>;
  /** Other services (other settings, a request counter) over an existing table. */
  newTableServicesFor(
    table: TableFixture,
    overrides?: Record<string, string | undefined>,
    onStorageRequest?: (request: { method: string; url: string }) => void,
  ): Promise<SweeperServices>;
  close(): Promise<void>;
}

export interface TableFixture {
  readonly tableName: string;
  readonly config: SweeperConfig;
  readonly services: SweeperServices;
  readonly producer: SessionProducer;
  /** Opens a session on the emulator as `user` and records it, last active `idleMinutes` ago. */
  openSession(options: OpenSessionOptions): Promise<{ row: SessionRecord; sessionId: string; assertion: string }>;
}

export interface OpenSessionOptions {
  tenantId?: string;
  userId: string;
  workbook: string;
  idleMinutes?: number;
  persistChanges?: boolean;
  /** The assertion the producer records. Default: a fresh one for the user, valid 1 h. */
  assertion?: string;
  /** Record only; no session on the emulator (Graph never heard of it). */
  recordOnly?: boolean;
  /** The public key the producer seals the assertion with. Default: the table's (see newTable). */
  assertionPublicKey?: string;
}

/** The X25519 public key (raw, base64url) of a raw private key given as base64 or base64url. */
export function publicKeyOf(privateKey: string): string {
  const raw = Buffer.from(privateKey, "base64");
  // PKCS#8 wrapper of a raw X25519 private key (RFC 8410).
  const der = Buffer.concat([Buffer.from("302e020100300506032b656e04220420", "hex"), raw]);
  const jwk = createPublicKey(createPrivateKey({ key: der, format: "der", type: "pkcs8" })).export({ format: "jwk" });
  return jwk.x!;
}

/** The stand-ins on the run's one Azurite (globalSetup's), their secrets registered with the secret scan. */
export async function startCloudFixture(): Promise<CloudFixture> {
  const standIns = await startStandIns({
    certificate: loadTestCertificate(inject("testCertificateDir")),
    storageConnectionString: inject("storageConnectionString"),
    tenantId: HOME_TENANT,
    clientId: CLIENT_ID,
  });
  const { certificate, authority, emulator, clientSecret, assertionKeys, storageConnectionString: connectionString } = standIns;
  registerSecrets(authority.issuedTokens);
  // The private key in both spellings the app accepts; the public key is not secret.
  registerSecrets([clientSecret, assertionKeys.privateKey, Buffer.from(assertionKeys.privateKey, "base64url").toString("base64")]);
  const settings = (overrides: Record<string, string | undefined> = {}) => standIns.settings(overrides);

  return {
    certificate,
    authority,
    emulator,
    clientSecret,
    assertionKeys,
    assertionPublicKey: assertionKeys.publicKey,
    seal: (assertion, row, publicKey = assertionKeys.publicKey) => AssertionSealer.fromPublicKey(publicKey).seal(assertion, row),
    settings,
    async newTable(overrides = {}) {
      const tableName = uniqueTableName();
      const config = loadConfig(settings({ SESSIONS_TABLE: tableName, ...overrides }));
      const services = createSweeperServices(config, { tokenMaxRetries: 0 });
      await services.ledger.ensureTable();
      // loadConfig accepted the key, so it is a well-formed private key.
      const tablePublicKey = overrides.ASSERTION_PRIVATE_KEY ? publicKeyOf(overrides.ASSERTION_PRIVATE_KEY.trim()) : assertionKeys.publicKey;
      const producer = SessionProducer.fromConnectionString(connectionString, tableName, { assertionPublicKey: tablePublicKey, closeQueueName: config.storage.closeQueueName });
      return {
        tableName,
        config,
        services,
        producer,
        async openSession(options) {
          const tenantId = options.tenantId ?? HOME_TENANT;
          const sessionId = options.recordOnly
            ? `cluster=PS2&session=15.${randomBytes(120).toString("base64")}`
            : emulator.openSession({ tenantId, userId: options.userId, workbook: options.workbook, persistChanges: options.persistChanges ?? true });
          const assertion = options.assertion ?? authority.issueUserAssertion({ tenantId, userId: options.userId, audience: CLIENT_ID });
          const idleMs = (options.idleMinutes ?? 10) * 60_000;
          const past = SessionProducer.fromConnectionString(connectionString, tableName, {
            assertionPublicKey: options.assertionPublicKey ?? tablePublicKey,
            clock: () => new Date(Date.now() - idleMs),
          });
          let row = await past.record({
            tenantId,
            userId: options.userId,
            sessionId,
            workbook: options.workbook,
            persistChanges: options.persistChanges ?? true,
            recordedBy: "test",
            userAssertion: assertion,
          });
          if (idleMs > 0) {
            // Silent for idleMs by the service's clock: as a sweeper's write leaves a row whose last
            // heartbeat was that long ago (liveness.ts). A producer's clock cannot make a row stale.
            await silence(past.client, row, idleMs);
            row = (await services.ledger.get(row))!;
          }
          return { row, sessionId, assertion };
        },
      };
    },
    async newTableServicesFor(table, overrides = {}, onStorageRequest) {
      const config = loadConfig(settings({ SESSIONS_TABLE: table.tableName, ...overrides }));
      return createSweeperServices(config, { tokenMaxRetries: 0, ...(onStorageRequest && { onStorageRequest }) });
    },
    async close() {
      await standIns.close();
    },
  };
}

/**
 * The stand-ins for one test file: started before its tests (then `started` is called with them),
 * reset before each test, closed after the file. Hooks a file registers later run after these.
 */
export function useCloudFixture(started: (cloud: CloudFixture) => void, options: { resetAuthority?: boolean } = {}): void {
  let cloud: CloudFixture | undefined;
  beforeAll(async () => {
    cloud = await startCloudFixture();
    started(cloud);
  });
  afterAll(async () => {
    await cloud?.close();
  });
  beforeEach(() => {
    cloud!.emulator.reset();
    if (options.resetAuthority ?? true) cloud!.authority.reset();
  });
}

/**
 * A fresh table whose settings become this process's environment, as the Functions host passes app
 * settings: the files under functions/ read them when they are imported, which must come after.
 */
export async function installAppSettings(
  cloud: CloudFixture,
  overrides: Record<string, string | undefined> = {},
): Promise<{ table: TableFixture; settings: Record<string, string | undefined> }> {
  const table = await cloud.newTable(overrides);
  const settings = cloud.settings({ SESSIONS_TABLE: table.tableName, ...overrides });
  Object.assign(process.env, settings);
  return { table, settings };
}

export function newUserId(): string {
  return randomUUID();
}

/**
 * Makes a recorded row silent for `ms` by the service's clock, as a sweeper's write leaves a row
 * whose last heartbeat was that long ago (src/ledger/liveness.ts): a producer's clock cannot make a
 * row stale, so tests age rows this way.
 */
export async function silence(client: TableClient, row: { partitionKey: string; rowKey: string }, ms: number): Promise<void> {
  await client.updateEntity({ partitionKey: row.partitionKey, rowKey: row.rowKey, heartbeatSeenAt: new Date(Date.now() - ms) }, "Merge");
}

/** A producer of `tableName` that seals with the run's public key and whose clock is `clock`. */
export function producerWithClock(cloud: CloudFixture, tableName: string, clock: () => Date): SessionProducer {
  return SessionProducer.fromConnectionString(cloud.settings().AzureWebJobsStorage!, tableName, {
    assertionPublicKey: cloud.assertionPublicKey,
    clock,
  });
}

export interface OpenAndRecordOptions {
  /** Default: a new user. */
  userId?: string;
  workbook: string;
  recordedBy: string;
  /** The row's own lease. Default: none (STALE_AFTER's applies). */
  leaseMs?: number;
}

/**
 * Opens a session on the emulator as a user of the home tenant and records it through `producer`,
 * with a fresh assertion for the user.
 */
export async function openAndRecord(
  cloud: CloudFixture,
  producer: SessionProducer,
  options: OpenAndRecordOptions,
): Promise<{ row: SessionRecord; sessionId: string }> {
  const { userId = newUserId(), workbook, recordedBy, leaseMs } = options;
  const sessionId = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId, workbook });
  const row = await producer.record({
    tenantId: HOME_TENANT,
    userId,
    sessionId,
    workbook,
    recordedBy,
    userAssertion: cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID }),
    ...(leaseMs !== undefined && { leaseMs }),
  });
  return { row, sessionId };
}
