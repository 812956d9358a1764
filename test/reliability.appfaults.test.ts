/**
 * Reliability: the app's own faults pause, they do not fail rows (issue 15). A wrong client
 * secret, a GRAPH_SCOPE Graph does not have, a client id or tenant the authority does not know,
 * the app disabled in a tenant, an authority out of reach: none of them is a fact about a session.
 * A sweep under such a fault sends nothing for the scope at fault (the whole app, or one tenant),
 * marks no row, spends no attempt, gives every row of that scope back as it was, and names the
 * cause in its summary (`error.code`, `pauses`), so that the invocation fails with that code. Once
 * the settings are fixed, the next sweep closes every session. A fault about one user still ends
 * only that user's row, as before.
 */
import { createServer } from "node:net";
import { randomUUID } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { AppFaultError, type SessionRecord, type SweepSummary } from "../src";
import { Codes } from "../src/core/codes";
import { mapConcurrent } from "../src/utils/concurrency";
import { installAppSettings, useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { importHandlers, invocation, postSweep, timerInfo, type FunctionHandlers } from "./support/functionsHost";
import { expectClosedOnlyWith204, expectConsistentRows, rawEntities, type RawEntity } from "./support/reliability";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const TENANTS = [HOME_TENANT, OTHER_TENANT] as const;

let cloud: CloudFixture;
useCloudFixture((started) => (cloud = started));

interface Opened {
  tenantId: string;
  sessionId: string;
  row: SessionRecord;
}

/** Ten stale sessions, five in each tenant, over three users per tenant. */
async function openTen(table: TableFixture): Promise<Opened[]> {
  const users = new Map(TENANTS.map((t) => [t, [newUserId(), newUserId(), newUserId()]]));
  return mapConcurrent(
    Array.from({ length: 10 }, (_, i) => i),
    8,
    async (i) => {
      const tenantId = TENANTS[i % 2]!;
      const userId = users.get(tenantId)![i % 3]!;
      const { row, sessionId } = await table.openSession({ tenantId, userId, workbook: `/drives/af/items/w${i}` });
      return { tenantId, sessionId, row };
    },
  );
}

const key = (e: { partitionKey?: string; rowKey?: string }) => `${e.partitionKey}\u0000${e.rowKey}`;

/** The columns a pause must leave as they were: state, attempts, schedule, last reason. */
function stateOf(e: RawEntity): Record<string, unknown> {
  return {
    status: e.status,
    attempts: e.attempts,
    nextAttemptAt: e.nextAttemptAt instanceof Date ? e.nextAttemptAt.getTime() : e.nextAttemptAt,
    lastErrorCode: e.lastErrorCode,
    lastErrorMessage: e.lastErrorMessage,
    assertion: e.assertion,
  };
}

async function states(table: TableFixture): Promise<Map<string, Record<string, unknown>>> {
  return new Map((await rawEntities(table.services.ledger)).map((e) => [key(e), stateOf(e)]));
}

function expectIdentities(summary: SweepSummary): void {
  expect(summary.scanned).toBe(summary.malformed + summary.moved + summary.claimed + summary.lostRaces + summary.skipped + summary.deferred + summary.paused);
  expect(summary.claimed).toBe(summary.closed + summary.expired + summary.retry + summary.failed);
}

const closeRequests = () => cloud.emulator.requests.filter((r) => r.kind === "closeSession");

/** A https URL on which nothing listens. */
async function unreachableAuthority(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `https://127.0.0.1:${port}`;
}

interface FaultCase {
  name: string;
  code: string;
  /** The tenants whose sends pause. */
  paused: readonly string[];
  scope: "app" | "tenant";
  /** The broken settings (the fixed sweep uses the table's own), or a fault the authority answers until reset. */
  settings?: () => Promise<Record<string, string>>;
  inject?: () => void;
}

const FAULTS: FaultCase[] = [
  {
    name: "a wrong client secret (AADSTS7000215)",
    code: Codes.ClientCredentialRejected,
    scope: "app",
    paused: TENANTS,
    settings: async () => ({ AZURE_CLIENT_SECRET: "not-the-secret-of-this-app" }),
  },
  {
    name: "a GRAPH_SCOPE Graph does not have (AADSTS70011)",
    code: Codes.InvalidGraphScope,
    scope: "app",
    paused: TENANTS,
    settings: async () => ({ GRAPH_SCOPE: "https://graph.microsoft.com/Files.ReadWrite.Everything" }),
  },
  {
    name: "an AZURE_CLIENT_ID the authority does not know (AADSTS700016)",
    code: Codes.ClientNotInTenant,
    scope: "tenant",
    paused: TENANTS,
    settings: async () => ({ AZURE_CLIENT_ID: randomUUID() }),
  },
  {
    name: "a tenant the authority does not know (AADSTS90002)",
    code: Codes.TenantNotFound,
    scope: "tenant",
    paused: [OTHER_TENANT],
    inject: () => cloud.authority.failNext({ error: "AADSTS90002", tenantId: OTHER_TENANT, count: 1_000 }),
  },
  {
    name: "the app disabled in a tenant (AADSTS7000112)",
    code: Codes.ClientDisabled,
    scope: "tenant",
    paused: [OTHER_TENANT],
    inject: () => cloud.authority.failNext({ error: "AADSTS7000112", tenantId: OTHER_TENANT, count: 1_000 }),
  },
  {
    name: "an authority that cannot be reached",
    code: Codes.AuthorityUnreachable,
    scope: "app",
    paused: TENANTS,
    settings: async () => ({ AZURE_AUTHORITY_HOST: await unreachableAuthority() }),
  },
];

describe.each(FAULTS)("$name", (fault) => {
  it("pauses its scope: nothing sent or marked for it, no attempt spent, the cause named; fixed, the next sweep closes everything", async () => {
    const table = await cloud.newTable();
    const opened = await openTen(table);
    const before = await states(table);
    fault.inject?.();
    const broken = fault.settings ? await cloud.newTableServicesFor(table, await fault.settings()) : table.services;

    const summary = await broken.newSweeper().run();

    const pausedRows = opened.filter((o) => fault.paused.includes(o.tenantId));
    const otherRows = opened.filter((o) => !fault.paused.includes(o.tenantId));
    expectIdentities(summary);
    expect(summary).toMatchObject({ failed: 0, expired: 0, retry: 0, paused: pausedRows.length, closed: otherRows.length, scanned: 10 });
    expect(summary.error?.code).toBe(fault.code);
    expect(summary.error?.message).not.toMatch(/Trace ID|Correlation ID/);
    const expectedPauses =
      fault.scope === "app"
        ? [{ scope: "app", code: fault.code }]
        : fault.paused.map((tenantId) => ({ scope: "tenant", tenantId, code: fault.code }));
    expect(summary.pauses).toEqual(expect.arrayContaining(expectedPauses.map((p) => expect.objectContaining(p))));
    expect(summary.pauses).toHaveLength(expectedPauses.length);

    // Graph heard nothing for the paused scope; the other tenant's sessions closed.
    const sent = closeRequests();
    expect(sent.filter((r) => fault.paused.includes(r.tenantId!))).toEqual([]);
    for (const o of otherRows) expect(cloud.emulator.sessionState(o.sessionId)).toBe("closed");
    for (const o of pausedRows) expect(cloud.emulator.sessionState(o.sessionId)).toBe("open");

    // The paused rows are as they were before the sweep: open, attempts unspent, no reason, no schedule.
    const after = await states(table);
    for (const o of pausedRows) expect(after.get(key(o.row)), o.sessionId.slice(0, 24)).toEqual(before.get(key(o.row)));
    expect([...after.values()].filter((s) => s.status === "failed")).toEqual([]);
    expectConsistentRows(await rawEntities(table.services.ledger));

    // Fixed: the next sweep closes every session left.
    cloud.authority.reset();
    const fixed = await table.services.newSweeper().run();
    expectIdentities(fixed);
    expect(fixed).toMatchObject({ closed: pausedRows.length, paused: 0, failed: 0 });
    expect(fixed.error).toBeUndefined();
    for (const o of opened) expect(cloud.emulator.sessionState(o.sessionId)).toBe("closed");
    const entities = await rawEntities(table.services.ledger);
    expect(entities.map((e) => e.status)).toEqual(Array(10).fill("closed"));
    // One attempt each: the paused sweep spent none.
    expect(entities.map((e) => e.attempts)).toEqual(Array(10).fill(1));
    expectClosedOnlyWith204(entities, cloud.emulator.requests);
  });
});

describe("faults about one user", () => {
  it("an expired assertion (AADSTS500133) still ends only that row; the others close, nothing pauses", async () => {
    const table = await cloud.newTable();
    const opened = await openTen(table);
    const userId = newUserId();
    const assertion = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID, lifetimeSec: -600 });
    const outlived = await table.openSession({ userId, workbook: "/drives/af/items/outlived", assertion });

    const summary = await table.services.newSweeper().run();

    expectIdentities(summary);
    expect(summary).toMatchObject({ closed: 10, expired: 1, failed: 0, paused: 0 });
    expect(summary.error).toBeUndefined();
    expect(summary.pauses).toBeUndefined();
    expect(await table.services.ledger.get(outlived.row)).toMatchObject({ status: "expired", lastError: { code: "AADSTS500133" } });
    for (const o of opened) expect(cloud.emulator.sessionState(o.sessionId)).toBe("closed");
  });

  it("consent missing for one user (AADSTS65001) ends that row failed, not the sweep", async () => {
    const table = await cloud.newTable();
    const opened = await openTen(table);
    const userId = newUserId();
    const lone = await table.openSession({ userId, workbook: "/drives/af/items/no-consent" });
    cloud.authority.failNext({ error: "AADSTS65001", userId });

    const summary = await table.services.newSweeper().run();

    expectIdentities(summary);
    expect(summary).toMatchObject({ closed: 10, failed: 1, paused: 0 });
    expect(summary.error).toBeUndefined();
    expect(await table.services.ledger.get(lone.row)).toMatchObject({ status: "failed", lastError: { code: "AADSTS65001" } });
    for (const o of opened) expect(cloud.emulator.sessionState(o.sessionId)).toBe("closed");
  });
});

describe("the functions under a wrong client secret", () => {
  let table: TableFixture;
  let handlers: FunctionHandlers;

  beforeAll(async () => {
    ({ table } = await installAppSettings(cloud, { AZURE_CLIENT_SECRET: "not-the-secret-of-this-app" }));
    handlers = await importHandlers();
  });

  it("a queue close request throws with the code and leaves the row open, its attempts unchanged; fixed, it closes", async () => {
    const { row, sessionId } = await table.openSession({ userId: newUserId(), workbook: "/drives/af/items/queued", idleMinutes: 0 });
    const before = await table.services.ledger.get(row);
    const { context, lines } = invocation("closeRequest", { triggerMetadata: { dequeueCount: 1, id: "m-af" } });

    const error = await handlers.closeRequest({ tenantId: row.tenantId, userId: row.userId, sessionId }, context).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(AppFaultError);
    expect(error).toMatchObject({ code: Codes.ClientCredentialRejected, scope: "app" });
    expect(lines.find((l) => l.level === "error")?.details).toMatchObject({ code: Codes.ClientCredentialRejected, messageId: "m-af" });
    const after = await table.services.ledger.get(row);
    expect(after).toMatchObject({ status: "open", attempts: before!.attempts });
    expect(after?.lastError).toBeUndefined();
    expect(after?.nextAttemptAt).toBeUndefined();
    expect(closeRequests()).toEqual([]);

    // The retried message, once the secret is fixed, closes it.
    const fixed = await cloud.newTableServicesFor(table);
    const { handleCloseRequest } = await import("../src/app/handleCloseRequest");
    const result = await handleCloseRequest(fixed, { tenantId: row.tenantId, userId: row.userId, sessionId });
    expect(result).toMatchObject({ result: "attempted", report: { result: "closed" } });
    expect((await fixed.ledger.get(row))?.attempts).toBe(before!.attempts + 1);
  });

  it("the timer invocation fails with the code; the HTTP sweep answers 503 with it", async () => {
    const opened = await openTen(table);
    const { context, lines } = invocation("sweepTimer");
    const error = await handlers.sweepTimer(timerInfo(false), context).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AppFaultError);
    expect(error).toMatchObject({ code: Codes.ClientCredentialRejected });
    const line = lines.find((l) => l.event === "Sweep ended by a fault");
    expect(line?.details).toMatchObject({ trigger: "timer", paused: 10, failed: 0, error: { code: Codes.ClientCredentialRejected } });

    const response = await handlers.sweepHttp(postSweep("{}"), invocation("sweep").context);
    expect(response.status).toBe(503);
    expect(response.jsonBody).toMatchObject({ paused: 10, failed: 0, error: { code: Codes.ClientCredentialRejected } });
    expect(closeRequests()).toEqual([]);
    for (const o of opened) expect((await table.services.ledger.get(o.row))).toMatchObject({ status: "open", attempts: 0 });
  });
});
