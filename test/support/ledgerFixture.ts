import { randomBytes, randomUUID } from "node:crypto";
import { inject } from "vitest";
import { SessionLedger, SessionProducer } from "../../src";
import { createLedgerTableClient } from "../../src/ledger/tableClient";
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
  assertionKey: Buffer;
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
  const assertionKey = randomBytes(32);
  const options = { clock: () => clock.now, onRequest: (r: { method: string; url: string }) => storageRequests.push(r), assertionKey };
  const ledger = SessionLedger.fromConnectionString(connectionString, tableName, options);
  await ledger.ensureTable();
  const producer = SessionProducer.fromConnectionString(connectionString, tableName, options);
  return { tableName, connectionString, client: createLedgerTableClient(connectionString, tableName), ledger, producer, clock, storageRequests, assertionKey };
}

export function newUser(): { tenantId: string; userId: string } {
  return { tenantId: randomUUID(), userId: randomUUID() };
}

/** A session id shaped like Graph's: long, with `/`, `+`, `=` and `&` in it. */
export function graphLikeSessionId(): string {
  return `cluster=PS2&session=15.${randomBytes(180).toString("base64")}&usid=${randomUUID()}`;
}
