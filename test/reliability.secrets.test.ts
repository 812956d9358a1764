/**
 * Reliability: secrets. User assertions are stored encrypted and wiped once a row is finished; no
 * token, assertion, client secret, encryption key or storage key appears in a stored entity, in
 * what Graph received, in a sweep summary, an error message or a log line. (Every test file's
 * captured output is also scanned by test/support/secretScan.ts; this file adds the storage account
 * key to what that scan looks for, and scans the stored entities and the emulator's log itself.)
 */
import { inspect } from "node:util";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { ConfigurationError, loadConfig, SessionNotFoundError, ValidationError, type SweepSummary } from "../src";
import { AssertionCipher } from "../src/core/AssertionCipher";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { installAppSettings, useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { importHandlers, type FunctionHandlers } from "./support/functionsHost";
import { invocation, postSweep, rawEntities, timerInfo, type LogLine, type RawEntity } from "./support/reliability";
import { capturedText, registerSecrets } from "./support/secretScan";

let cloud: CloudFixture;
let table: TableFixture;
let handlers: FunctionHandlers;
const tables: TableFixture[] = [];
const queueName = `secrets-${Math.random().toString(36).slice(2, 10)}`;

/** Everything the app printed, returned or stored during this file, to be scanned at the end. */
const outputs: string[] = [];
const record = (...values: unknown[]) => outputs.push(...values.map((v) => (typeof v === "string" ? v : inspect(v, { depth: 10 }))));

// The authority keeps its records across this file's tests, as the checks below expect.
useCloudFixture((started) => (cloud = started), { resetAuthority: false });
beforeAll(async () => {
  registerSecrets([inject("azuriteAccountKey")]);
  ({ table } = await installAppSettings(cloud, { CLOSE_QUEUE: queueName, MAX_ATTEMPTS: "1" }));
  tables.push(table);
  handlers = await importHandlers();
});


/** Every secret of this run: issued JWTs (assertions and Graph tokens), the client secret, the keys. */
function secrets(): string[] {
  const key = cloud.assertionKey;
  return [
    ...cloud.authority.issuedTokens,
    cloud.clientSecret,
    key.toString("base64"),
    key.toString("base64url"),
    key.toString("hex"),
    inject("azuriteAccountKey"),
  ];
}

/** Secrets (or a JWT's signature, which identifies it alone) found in `text`. */
function leaksIn(text: string): string[] {
  const found: string[] = [];
  for (const secret of secrets()) {
    if (text.includes(secret)) found.push(`${secret.slice(0, 6)}… (${secret.length} chars)`);
    const signature = secret.split(".")[2];
    if (signature && signature.length >= 16 && text.includes(signature)) found.push(`signature of ${secret.slice(0, 6)}…`);
    // A JWT's payload names its user and its unique id: no part of a token is stored or printed.
    const payload = secret.split(".")[1];
    if (payload && payload.length >= 16 && text.includes(payload)) found.push(`payload of ${secret.slice(0, 6)}…`);
  }
  return found;
}

function entityText(entities: readonly RawEntity[]): string {
  return entities.map((e) => JSON.stringify(e, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v))).join("\n");
}

function summaryOf(lines: LogLine[]): unknown {
  return lines.find((l) => l.event === "Sweep finished" || l.event === "Sweep ended by a fault")?.details;
}

describe("assertions at rest", () => {
  it("are encrypted while a row is open and wiped once it is closed, expired or failed, whichever way it got there", async () => {
    const owner = newUserId();
    const closes = await table.openSession({ userId: owner, workbook: "/drives/s/items/closes" });
    const gone = await table.openSession({ userId: newUserId(), workbook: "/drives/s/items/gone" });
    cloud.emulator.expireSession(gone.sessionId);
    const outlived = await table.openSession({
      userId: newUserId(),
      workbook: "/drives/s/items/outlived",
      assertion: cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId: newUserId(), audience: CLIENT_ID, lifetimeSec: -600 }),
    });
    const expiredUser = newUserId();
    const expiredAssertion = await table.openSession({
      userId: expiredUser,
      workbook: "/drives/s/items/expired-assertion",
      assertion: cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId: expiredUser, audience: CLIENT_ID, lifetimeSec: -600 }),
    });
    const denied = await table.openSession({ userId: newUserId(), workbook: "/drives/s/items/denied" });
    cloud.emulator.addFault({ sessionId: denied.sessionId, action: { status: 403 } });
    // MAX_ATTEMPTS is 1 here: a retry ends failed at once.
    const capped = await table.openSession({ userId: newUserId(), workbook: "/drives/s/items/capped" });
    cloud.emulator.addFault({ sessionId: capped.sessionId, action: { status: 503 } });
    const released = await table.openSession({ userId: newUserId(), workbook: "/drives/s/items/released", idleMinutes: 0 });
    await table.producer.release(released.row);
    const live = await table.openSession({ userId: newUserId(), workbook: "/drives/s/items/live", idleMinutes: 0 });
    // A buggy producer's row that does not decode, with an (encrypted) assertion in it.
    const badUser = newUserId();
    const badKeys = { partitionKey: partitionKeyFor(HOME_TENANT, badUser), rowKey: rowKeyFor("bad-session") };
    const past = new Date(Date.now() - 3_600_000);
    await table.services.ledger.client.createEntity({
      ...badKeys,
      tenantId: HOME_TENANT,
      userId: badUser,
      sessionId: "bad-session",
      workbook: "/drives/s/items/..",
      status: "open",
      attempts: 0,
      schemaVersion: 2,
      createdAt: past,
      heartbeatSeenAt: past,
      leaseSeconds: 0,
      assertion: closes.row.encryptedAssertion,
    });

    const run = invocation("sweepTimer");
    await handlers.sweepTimer(timerInfo(), run.context);
    record(summaryOf(run.lines));

    const entities = await rawEntities(table.services.ledger);
    const byId = new Map(entities.map((e) => [e.sessionId as string, e]));
    const expected: [string, string, string?][] = [
      [closes.sessionId, "closed"],
      [gone.sessionId, "expired", "invalidSessionReCreatable"],
      [outlived.sessionId, "failed", "AssertionUserMismatch"],
      [expiredAssertion.sessionId, "expired", "AADSTS500133"],
      [denied.sessionId, "failed", "accessDenied"],
      [capped.sessionId, "failed", "serviceUnavailable"],
      [released.sessionId, "closed"],
      ["bad-session", "failed", "MalformedRow"],
    ];
    for (const [sessionId, status, code] of expected) {
      const entity = byId.get(sessionId)!;
      expect({ status: entity.status, code: entity.lastErrorCode }).toEqual({ status, code });
      // Wiped in the live table, left out of history.
      expect(entity.assertion ?? "", `${status} ${code ?? ""} row keeps no assertion`).toBe("");
    }
    // Rows still open keep theirs, encrypted and bound to the row.
    const open = byId.get(live.sessionId)!;
    expect(open.status).toBe("open");
    expect(open.assertion).toMatch(/^a1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(entities.filter((e) => !["open", "closing"].includes(e.status as string)).every((e) => (e.assertion ?? "") === "")).toBe(true);
  });

  it("rows waiting for a retry or deferred past a cooldown keep only the encrypted assertion", async () => {
    const own = await cloud.newTable({ SWEEP_CONCURRENCY: "1", SWEEP_TIME_BUDGET: "PT3S" });
    tables.push(own);
    const tenant = "44444444-4444-4444-8444-444444444444";
    const first = await own.openSession({ tenantId: tenant, userId: newUserId(), workbook: "/drives/r/items/a" });
    const second = await own.openSession({ tenantId: tenant, userId: newUserId(), workbook: "/drives/r/items/b" });
    cloud.emulator.addFault({ tenantId: tenant, times: 1, action: { status: 429, headers: { "Retry-After": "600" } } });
    const summary = await own.services.newSweeper().run();
    record(summary);
    expect(summary).toMatchObject({ retry: 1, deferred: 1 });
    for (const { row, assertion } of [first, second]) {
      const entity = await own.services.ledger.client.getEntity<Record<string, unknown>>(row.partitionKey, row.rowKey);
      expect(entity.status).toBe("open");
      expect(entity.assertion).toMatch(/^a1\./);
      expect(JSON.stringify(entity)).not.toContain(assertion);
    }
  });
});

describe("nothing leaks", () => {
  it("through the HTTP and queue functions, their errors and their log lines", async () => {
    const a = await table.openSession({ userId: newUserId(), workbook: "/drives/l/items/http" });
    const http = invocation("sweep");
    const response = await handlers.sweepHttp(postSweep(JSON.stringify({ userId: a.row.userId })), http.context);
    record(response, http.lines);
    expect(response.status).toBe(200);
    expect((response.jsonBody as SweepSummary).closed).toBe(1);

    const dry = invocation("sweep");
    await table.openSession({ userId: newUserId(), workbook: "/drives/l/items/dry" });
    const dryResponse = await handlers.sweepHttp(postSweep(JSON.stringify({ dryRun: true })), dry.context);
    record(dryResponse, dry.lines);
    // A dry run shows a prefix of each session id, never a token.
    expect((dryResponse.jsonBody as SweepSummary).candidates?.length).toBeGreaterThan(0);

    const bad = invocation("sweep");
    record(await handlers.sweepHttp(postSweep(JSON.stringify({ userId: cloud.clientSecret, olderThan: cloud.assertionKey.toString("base64") })), bad.context), bad.lines);

    const queued = await table.openSession({ userId: newUserId(), workbook: "/drives/l/items/queue", idleMinutes: 0 });
    const q = invocation("closeRequest");
    await handlers.closeRequest({ tenantId: queued.row.tenantId, userId: queued.row.userId, sessionId: queued.sessionId, requestedBy: "svc" }, q.context);
    record(q.lines);
    expect(cloud.emulator.sessionState(queued.sessionId)).toBe("closed");

    // Refused messages: one carrying a token in a field; one about an unrecorded session.
    for (const message of [
      { tenantId: HOME_TENANT, userId: newUserId(), sessionId: "s", token: a.assertion },
      JSON.stringify({ tenantId: a.assertion, userId: HOME_TENANT, sessionId: "s" }),
      { tenantId: HOME_TENANT, userId: newUserId(), sessionId: a.assertion },
    ]) {
      const refused = invocation("closeRequest", { triggerMetadata: { id: "m", dequeueCount: 1 } });
      const error = await handlers.closeRequest(message, refused.context).catch((e: unknown) => e);
      expect(error instanceof ValidationError || error instanceof SessionNotFoundError).toBe(true);
      // The host logs an error's message and stack.
      record(refused.lines, (error as Error).message, (error as Error).stack);
    }
    const leaked = leaksIn(outputs.join("\n"));
    expect(leaked).toEqual([]);
  });

  it("through outcomes of every kind: the stored rows, Graph's log, the summaries", async () => {
    const user = newUserId();
    await table.openSession({ userId: user, workbook: "/drives/o/items/ok" });
    const wrong = await cloud.newTable({ AZURE_CLIENT_SECRET: `wrong-${cloud.clientSecret.slice(3)}` });
    tables.push(wrong);
    await wrong.openSession({ userId: newUserId(), workbook: "/drives/o/items/bad-secret" });
    const denied = await table.openSession({ userId: newUserId(), workbook: "/drives/o/items/401" });
    // A Graph error whose message quotes the request's own header names (never their values).
    cloud.emulator.addFault({ sessionId: denied.sessionId, action: { status: 401, body: { error: { code: "InvalidAuthenticationToken", message: "Authorization: Bearer <redacted>" } } } });
    cloud.authority.failNext({ error: "AADSTS90033", userId: user });

    const logged: unknown[] = [];
    const logger = { log: (m: string, d: Record<string, unknown>) => logged.push(m, d), warn: (m: string, d: Record<string, unknown>) => logged.push(m, d) };
    record(await table.services.newSweeper(logger).run(), await wrong.services.newSweeper(logger).run(), logged);

    for (const t of tables) record(entityText(await rawEntities(t.services.ledger)));
    record(JSON.stringify(cloud.emulator.requests));
    expect(leaksIn(outputs.join("\n"))).toEqual([]);
    // Tokens were really used: the check above had something to find.
    expect(cloud.authority.issuedTokens.size).toBeGreaterThan(5);
    expect(cloud.emulator.requests.some((r) => r.tokenKind === "delegated")).toBe(true);
  });

  it("the raw assertion text is in no stored entity: only its encryption, and no part of it", async () => {
    const all: RawEntity[] = [];
    for (const t of tables) all.push(...(await rawEntities(t.services.ledger)));
    expect(all.length).toBeGreaterThan(10);
    expect(leaksIn(entityText(all))).toEqual([]);
    for (const e of all) {
      if (typeof e.assertion === "string" && e.assertion !== "") {
        expect(e.assertion.startsWith("a1.")).toBe(true);
        // It is the encryption of an assertion the authority issued, bound to this very row
        // (a pattern check like /eyJ/ would also match random ciphertext now and then).
        const plain = new AssertionCipher(cloud.assertionKey).decrypt(e.assertion, { partitionKey: e.partitionKey!, rowKey: e.rowKey! });
        expect(cloud.authority.issuedTokens.has(plain)).toBe(true);
        expect(e.assertion).not.toContain(plain.split(".")[1]!);
      }
    }
  });

  it("start-up errors for bad settings do not repeat secret values", () => {
    const base = cloud.settings({ SESSIONS_TABLE: table.tableName });
    const attempts: Record<string, string | undefined>[] = [
      { ASSERTION_ENCRYPTION_KEY: `${cloud.assertionKey.toString("base64")}AAAA` },
      { ASSERTION_ENCRYPTION_KEY: cloud.clientSecret },
      { AZURE_CLIENT_CERTIFICATE_PATH: "/nowhere.pem" },
      { AzureWebJobsStorage: `AccountKey=${inject("azuriteAccountKey")}` },
      { AzureWebJobsStorage: inject("storageConnectionString").replace("http://", "ftp://"), SWEEP_SCHEDULE: "bad" },
    ];
    for (const overrides of attempts) {
      let error: unknown;
      try {
        loadConfig({ ...base, ...overrides });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ConfigurationError);
      record((error as Error).message, error);
    }
    expect(leaksIn(outputs.join("\n"))).toEqual([]);
  });

  it("the whole file's captured output holds no secret so far", () => {
    expect(leaksIn(capturedText())).toEqual([]);
  });
});
