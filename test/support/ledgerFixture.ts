import { randomBytes, randomUUID } from "node:crypto";
import { inject } from "vitest";
import { SessionLedger, SessionProducer, type SessionToClose } from "../../src";
import { partitionKeyFor, rowKeyFor } from "../../src/core/keys";
import { createLedgerTableClient } from "../../src/ledger/tableClient";
import { newAssertionKeyPair } from "../../standins";
import type { TableClient } from "@azure/data-tables";

/** A table name of its own for each test, so test files run in parallel against one Azurite. */
export function uniqueTableName(prefix = "t"): string {
  return `${prefix}${randomBytes(6).toString("hex")}`;
}

export interface LedgerFixture {
  tableName: string;
  connectionString: string;
  client: TableClient;
  ledger: SessionLedger;
  producer: SessionProducer;
  /** A clock the test moves by hand. */
  clock: { now: Date; advance(ms: number): void };
  storageRequests: { method: string; url: string }[];
  /** The key pair the producer seals assertions with (its public key; raw X25519, base64url). */
  assertionKeys: { privateKey: string; publicKey: string };
  /**
   * Makes a row silent for `ms` by the service's clock, as a sweeper's write leaves a row whose last
   * heartbeat was that long ago; returns it as read again. (Rows written after a clock.advance are
   * stamped with the service's real time, so they would look that much older.)
   */
  silence(key: { tenantId: string; userId: string; sessionId: string }, ms: number): Promise<SessionToClose>;
}

/** A fresh table on the run's Azurite with a ledger and a producer sharing a hand-moved clock. */
export async function createLedgerFixture(start = new Date("2026-11-23T12:00:00Z")): Promise<LedgerFixture> {
  const connectionString = inject("storageConnectionString");
  const tableName = uniqueTableName();
  const clock = {
    now: start,
    advance(ms: number) {
      this.now = new Date(this.now.getTime() + ms);
    },
  };
  const storageRequests: { method: string; url: string }[] = [];
  const assertionKeys = newAssertionKeyPair();
  // The service's time moves with the hand-moved clock from the real time of now: rows the service
  // stamps now grow old as the test advances the clock.
  const realStart = Date.now();
  const serviceTime = { calibrated: true, now: () => new Date(realStart + (clock.now.getTime() - start.getTime())) };
  const options = { clock: () => clock.now, serviceTime, onRequest: (r: { method: string; url: string }) => storageRequests.push(r) };
  const ledger = SessionLedger.fromConnectionString(connectionString, tableName, options);
  await ledger.ensureTable();
  const producer = SessionProducer.fromConnectionString(connectionString, tableName, { ...options, assertionPublicKey: assertionKeys.publicKey });
  const client = createLedgerTableClient(connectionString, tableName);
  const silence = async (key: { tenantId: string; userId: string; sessionId: string }, ms: number) => {
    const { partitionKey, rowKey } = { partitionKey: partitionKeyFor(key.tenantId, key.userId), rowKey: rowKeyFor(key.sessionId) };
    await client.updateEntity({ partitionKey, rowKey, heartbeatSeenAt: new Date(serviceTime.now().getTime() - ms) }, "Merge");
    return (await ledger.getToClose(key))!;
  };
  return { tableName, connectionString, client, ledger, producer, clock, storageRequests, assertionKeys, silence };
}

export function newUser(): { tenantId: string; userId: string } {
  return { tenantId: randomUUID(), userId: randomUUID() };
}

/** A session id shaped like Graph's: long, with `/`, `+`, `=` and `&` in it. */
export function graphLikeSessionId(): string {
  return `cluster=PS2&session=15.${randomBytes(180).toString("base64")}&usid=${randomUUID()}`;
}
