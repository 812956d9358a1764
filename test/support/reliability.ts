/**
 * Helpers shared by the reliability suites (test/reliability.*.test.ts): reading raw ledger entities, checking that rows are consistent and
 * that nothing is `closed` without Graph's 204, and a TCP proxy that can cut storage off.
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import { expect } from "vitest";
import type { TableEntityResult } from "@azure/data-tables";
import type { SessionLedger } from "../../src/ledger/SessionLedger";
import { SESSION_STATUSES } from "../../src/core/session";
import type { RecordedRequest } from "../../standins/graphEmulator";

/** `SOAK=1`: larger random samples and more rounds (npm run test:soak). */
export const SOAK = Boolean(process.env.SOAK);

/** `ci` in a normal run, `soak` under SOAK=1. */
export function sampleSize(ci: number, soak: number): number {
  return SOAK ? soak : ci;
}

export { invocation, timerInfo, postSweep, type LogLine } from "./functionsHost";

export type RawEntity = TableEntityResult<Record<string, unknown>>;

/** Every entity of a ledger as stored (no decoding): the live table's, then its history's. */
export async function rawEntities(ledger: SessionLedger): Promise<RawEntity[]> {
  const all: RawEntity[] = [];
  for await (const entity of ledger.client.listEntities<Record<string, unknown>>()) all.push(entity);
  for await (const page of ledger.history.pages(1_000)) all.push(...(page as RawEntity[]));
  return all;
}

/** A user assertion sealed for the sweeper's public key (h1: key id, encapsulated key, ciphertext; base64url). */
const SEALED_ASSERTION = /^h1\.[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]+$/;

/**
 * What a well-formed row must look like in each state (README, "Row schema"): a row is never
 * half-written, whatever was cut off in the middle of a sweep.
 */
export function rowProblems(entity: RawEntity): string[] {
  const problems: string[] = [];
  const status = entity.status as string;
  const isDate = (v: unknown) => v instanceof Date && !Number.isNaN(v.getTime());
  if (!(SESSION_STATUSES as readonly string[]).includes(status)) problems.push(`status ${String(status)}`);
  if (typeof entity.attempts !== "number" || !Number.isInteger(entity.attempts) || entity.attempts < 0) problems.push("attempts");
  const finished = status === "closed" || status === "expired" || status === "failed";
  // A live row's heartbeat is its Timestamp and heartbeatSeenAt; history keeps it as lastActivityAt.
  const heartbeat = entity.heartbeatSeenAt !== undefined ? "heartbeatSeenAt" : "lastActivityAt";
  for (const column of ["createdAt", heartbeat]) if (!isDate(entity[column])) problems.push(`${column} not a date`);
  // A finished row carries when it finished (its week of history); a live row when it last changed.
  if (finished && !isDate(entity.finishedAt)) problems.push("finished row without finishedAt");
  if (!finished && !isDate(entity.updatedAt)) problems.push("updatedAt not a date");
  const assertion = entity.assertion;
  switch (status) {
    case "open":
      if (typeof assertion !== "string" || !SEALED_ASSERTION.test(assertion)) problems.push("open row without its sealed assertion");
      break;
    case "closing":
      if (!isDate(entity.leaseUntil)) problems.push("closing row without a lease");
      if (typeof assertion !== "string" || !SEALED_ASSERTION.test(assertion)) problems.push("closing row without its sealed assertion");
      break;
    case "closed":
      if (!isDate(entity.closedAt)) problems.push("closed row without closedAt");
      if (entity.closedBy !== "sweeper" && entity.closedBy !== "producer") problems.push("closed row without closedBy");
      if (assertion !== "" && assertion !== undefined) problems.push("closed row still holds an assertion");
      break;
    case "expired":
    case "failed":
      if (typeof entity.lastErrorCode !== "string" || entity.lastErrorCode === "") problems.push(`${status} row without lastErrorCode`);
      if (typeof entity.lastErrorMessage !== "string" || entity.lastErrorMessage === "") problems.push(`${status} row without lastErrorMessage`);
      if (assertion !== "" && assertion !== undefined) problems.push(`${status} row still holds an assertion`);
      break;
  }
  return problems;
}

/** Fails with every inconsistent row named. */
export function expectConsistentRows(entities: readonly RawEntity[]): void {
  const bad = entities.map((e) => ({ rowKey: e.rowKey, status: e.status, problems: rowProblems(e) })).filter((b) => b.problems.length > 0);
  expect(bad, "rows that are half-written or inconsistent").toEqual([]);
}

/**
 * A row is `closed` by the sweeper only with Graph's 204 in hand: every such row has a closeSession
 * request that the emulator itself answered with 204 (not a fault rule's answer).
 */
export function expectClosedOnlyWith204(entities: readonly RawEntity[], requests: readonly RecordedRequest[]): void {
  const answered204 = new Set(requests.filter((r) => r.kind === "closeSession" && r.status === 204 && r.fault === undefined).map((r) => r.sessionId));
  const unproven = entities
    .filter((e) => e.status === "closed" && e.closedBy === "sweeper" && !answered204.has(e.sessionId as string))
    .map((e) => e.rowKey);
  expect(unproven, "rows marked closed without a 204 from Graph").toEqual([]);
}

/** Polls until `condition` holds (or fails after `timeoutMs`). */
export async function waitFor(condition: () => boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A TCP proxy in front of a storage endpoint. `cut()` drops every open connection and refuses new
 * ones (each is reset as soon as it arrives: storage "stops answering"); `stall()` keeps every
 * connection open and passes nothing more either way (a half-open connection: no answer, no error);
 * `restore()` lets new connections through again. The listening port stays the same throughout.
 */
export class TcpProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private isCut = false;
  private isStalled = false;
  private readonly held = new Set<Socket>();
  port = 0;
  /** Connections refused while cut. */
  refused = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => this.accept(client));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  get cutOff(): boolean {
    return this.isCut;
  }

  cut(): void {
    this.isCut = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  stall(): void {
    this.isStalled = true;
    for (const socket of this.sockets) {
      socket.unpipe();
      socket.pause();
    }
  }

  restore(): void {
    this.isCut = false;
    this.isStalled = false;
  }

  async close(): Promise<void> {
    this.cut();
    for (const socket of this.held) socket.destroy();
    this.held.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    if (this.isCut) {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    if (this.isStalled) {
      // Accepted, never answered.
      this.refused++;
      client.pause();
      this.held.add(client);
      client.on("error", () => this.held.delete(client)).on("close", () => this.held.delete(client));
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

/** The Azurite table endpoint of a connection string. */
export function tableEndpointOf(connectionString: string): URL {
  const match = /TableEndpoint=([^;]+)/i.exec(connectionString);
  if (!match) throw new Error("no TableEndpoint in the connection string");
  return new URL(match[1]!);
}

/** The same storage account, its table endpoint reached through `proxyPort`. */
export function connectionStringThrough(connectionString: string, accountName: string, accountKey: string, proxyPort: number): string {
  const queue = /QueueEndpoint=([^;]+)/i.exec(connectionString)?.[1];
  return (
    `DefaultEndpointsProtocol=http;AccountName=${accountName};AccountKey=${accountKey};` +
    `TableEndpoint=http://127.0.0.1:${proxyPort}/${accountName};` +
    (queue ? `QueueEndpoint=${queue};` : "")
  );
}
