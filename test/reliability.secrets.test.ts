/**
 * Reliability: secrets. User assertions are stored sealed with the sweeper's public key and wiped
 * once a row is finished; no token, assertion, client secret, private key or storage key appears in
 * a stored entity, in what Graph received, in a sweep summary, an error message or a log line. A
 * producer holds only the public key and cannot open what it sealed; rows sealed for a previous key
 * or in the retired shared-key format close only while the app is given the key that opens them. (Every test file's
 * captured output is also scanned by test/support/secretScan.ts; this file adds the storage account
 * key to what that scan looks for, and scans the stored entities and the emulator's log itself.)
 */
import { randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { ConfigurationError, loadConfig, SessionNotFoundError, SessionProducer, ValidationError, type SweepSummary } from "../src";
import { AssertionCipher } from "../src/core/AssertionCipher";
import { AssertionOpener, AssertionSealer } from "../src/core/assertionSealing";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { newAssertionKeyPair } from "../standins";
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


/** Private keys and legacy shared keys made by this file's tests, beside the run's private key. */
const extraKeys: Buffer[] = [];
function keepSecret(key: Buffer): Buffer {
  extraKeys.push(key);
  registerSecrets([key.toString("base64"), key.toString("base64url"), key.toString("hex")]);
  return key;
}
/** A fresh assertion key pair whose private key is a secret of this file. */
function newKeyPair(): { privateKey: string; publicKey: string } {
  const pair = newAssertionKeyPair();
  keepSecret(Buffer.from(pair.privateKey, "base64url"));
  return pair;
}

/** Every secret of this run: issued JWTs (assertions and Graph tokens), the client secret, the keys. */
function secrets(): string[] {
  const keys = [Buffer.from(cloud.assertionKeys.privateKey, "base64url"), ...extraKeys];
  return [
    ...cloud.authority.issuedTokens,
    cloud.clientSecret,
    ...keys.flatMap((key) => [key.toString("base64"), key.toString("base64url"), key.toString("hex")]),
    inject("azuriteAccountKey"),
  ];
}

/** An h1 value: version, key id, HPKE's encapsulated key, ciphertext; each part base64url. */
const SEALED = /^h1\.[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]+$/;
const keyIdOf = (sealed: unknown) => String(sealed).split(".")[1];

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
  it("are sealed while a row is open and wiped once it is closed, expired or failed, whichever way it got there", async () => {
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
    // Rows still open keep theirs, sealed for the app's public key and bound to the row.
    const open = byId.get(live.sessionId)!;
    expect(open.status).toBe("open");
    expect(open.assertion).toMatch(SEALED);
    expect(keyIdOf(open.assertion)).toBe(AssertionSealer.fromPublicKey(cloud.assertionPublicKey).keyId);
    expect(entities.filter((e) => !["open", "closing"].includes(e.status as string)).every((e) => (e.assertion ?? "") === "")).toBe(true);
  });

  it("rows waiting for a retry or deferred past a cooldown keep only the sealed assertion", async () => {
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
      expect(entity.assertion).toMatch(SEALED);
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
    record(await handlers.sweepHttp(postSweep(JSON.stringify({ userId: cloud.clientSecret, olderThan: cloud.assertionKeys.privateKey })), bad.context), bad.lines);

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

  it("the raw assertion text is in no stored entity: only its sealed form, and no part of it", async () => {
    const opener = new AssertionOpener({ privateKeys: [cloud.assertionKeys.privateKey] });
    const all: RawEntity[] = [];
    for (const t of tables) all.push(...(await rawEntities(t.services.ledger)));
    expect(all.length).toBeGreaterThan(10);
    expect(leaksIn(entityText(all))).toEqual([]);
    for (const e of all) {
      if (typeof e.assertion === "string" && e.assertion !== "") {
        expect(e.assertion).toMatch(SEALED);
        // It is the sealed form of an assertion the authority issued, bound to this very row
        // (a pattern check like /eyJ/ would also match random ciphertext now and then).
        const plain = await opener.open(e.assertion, { partitionKey: e.partitionKey!, rowKey: e.rowKey! });
        expect(cloud.authority.issuedTokens.has(plain)).toBe(true);
        expect(e.assertion).not.toContain(plain.split(".")[1]!);
      }
    }
  });

  it("start-up errors for bad settings do not repeat secret values", () => {
    const base = cloud.settings({ SESSIONS_TABLE: table.tableName });
    const privateKey = cloud.assertionKeys.privateKey;
    const standardBase64 = Buffer.from(privateKey, "base64url").toString("base64");
    const legacyKey = keepSecret(randomBytes(32)).toString("base64");
    // Each bad value, and the setting the error must name for it (each key setting names itself).
    const attempts: [Record<string, string | undefined>, string?][] = [
      [{ ASSERTION_PRIVATE_KEY: `${privateKey}AAAA` }, "ASSERTION_PRIVATE_KEY"],
      [{ ASSERTION_PRIVATE_KEY: privateKey.slice(0, 40) }, "ASSERTION_PRIVATE_KEY"],
      [{ ASSERTION_PRIVATE_KEY: `${standardBase64.slice(0, 20)}!${standardBase64.slice(21)}` }, "ASSERTION_PRIVATE_KEY"],
      [{ ASSERTION_PRIVATE_KEY: cloud.clientSecret }, "ASSERTION_PRIVATE_KEY"],
      [{ ASSERTION_PRIVATE_KEY: `${privateKey},${privateKey}` }, "ASSERTION_PRIVATE_KEY"],
      [{ ASSERTION_PRIVATE_KEY: undefined }, "ASSERTION_PRIVATE_KEY"],
      [{ ASSERTION_PREVIOUS_PRIVATE_KEYS: `${newKeyPair().privateKey},${privateKey}AA` }, "ASSERTION_PREVIOUS_PRIVATE_KEYS"],
      [{ ASSERTION_ENCRYPTION_KEY: `${legacyKey}AAAA` }, "ASSERTION_ENCRYPTION_KEY"],
      [{ AZURE_CLIENT_CERTIFICATE_PATH: "/nowhere.pem" }],
      [{ AzureWebJobsStorage: `AccountKey=${inject("azuriteAccountKey")}` }],
      [{ AzureWebJobsStorage: inject("storageConnectionString").replace("http://", "ftp://"), SWEEP_SCHEDULE: "bad" }],
    ];
    for (const [overrides, setting] of attempts) {
      let error: unknown;
      try {
        loadConfig({ ...base, ...overrides });
      } catch (e) {
        error = e;
      }
      expect(error, JSON.stringify(Object.keys(overrides))).toBeInstanceOf(ConfigurationError);
      if (setting) {
        expect((error as ConfigurationError).settings, setting).toEqual([setting]);
        expect((error as Error).message).toContain(setting);
      }
      record((error as Error).message, error);
    }
    // The private key in its other spelling (base64) and with surrounding blanks is the same key.
    expect(loadConfig({ ...base, ASSERTION_PRIVATE_KEY: ` ${standardBase64} ` }).auth.assertionKeys.privateKeys).toHaveLength(1);
    expect(leaksIn(outputs.join("\n"))).toEqual([]);
  });

  it("the whole file's captured output holds no secret so far", () => {
    expect(leaksIn(capturedText())).toEqual([]);
  });
});

describe("sealed assertions across key changes", () => {
  /** The final state of each row (live or moved to history), by session id. */
  async function finalRows(t: TableFixture): Promise<Map<string, Record<string, unknown>>> {
    return new Map((await rawEntities(t.services.ledger)).map((e) => [e.sessionId as string, e]));
  }
  const sentFor = (sessionId: string) => cloud.emulator.requests.filter((r) => r.sessionId === sessionId);

  /** Replaces a recorded row's assertion with `assertion` (as another producer would have written it). */
  async function overwriteAssertion(t: TableFixture, row: { partitionKey: string; rowKey: string }, assertion: string): Promise<void> {
    await t.services.ledger.client.updateEntity({ partitionKey: row.partitionKey, rowKey: row.rowKey, assertion }, "Merge");
  }

  it("during the transition from the shared key, an a1 row closes when ASSERTION_ENCRYPTION_KEY is given beside ASSERTION_PRIVATE_KEY; without it, it fails AssertionFormatRetired and nothing is sent", async () => {
    const legacyKey = keepSecret(randomBytes(32));
    const legacyCipher = new AssertionCipher(legacyKey);
    const transitional = await cloud.newTable({ ASSERTION_ENCRYPTION_KEY: legacyKey.toString("base64") });
    const sealedOnly = await cloud.newTable();
    for (const t of [transitional, sealedOnly]) expect(t.config.auth.assertionKeys.privateKeys).toEqual([cloud.assertionKeys.privateKey]);
    expect(transitional.config.auth.assertionKeys.legacyKey?.equals(legacyKey)).toBe(true);
    expect(sealedOnly.config.auth.assertionKeys.legacyKey).toBeUndefined();

    const results: Record<string, { legacy: string; sealed: string; legacyUser: string }> = {};
    for (const [name, t] of [["transitional", transitional], ["sealedOnly", sealedOnly]] as const) {
      const legacyUser = newUserId();
      // A row an old producer wrote with the shared key, in the a1 format, bound to its own row.
      const legacy = await t.openSession({ userId: legacyUser, workbook: `/drives/k/items/legacy-${name}` });
      const a1 = legacyCipher.encrypt(legacy.assertion, legacy.row);
      expect(a1).toMatch(/^a1\./);
      await overwriteAssertion(t, legacy.row, a1);
      // A row a current producer sealed with the public key.
      const sealed = await t.openSession({ userId: newUserId(), workbook: `/drives/k/items/sealed-${name}` });
      expect(sealed.row.encryptedAssertion).toMatch(SEALED);
      results[name] = { legacy: legacy.sessionId, sealed: sealed.sessionId, legacyUser };
    }

    // With the legacy key beside the private key: both close in the same sweep, each with its user's token.
    const withLegacy = await transitional.services.newSweeper().run();
    record(withLegacy);
    expect(withLegacy).toMatchObject({ closed: 2, failed: 0 });
    const after = await finalRows(transitional);
    for (const sessionId of [results.transitional!.legacy, results.transitional!.sealed]) {
      expect(after.get(sessionId)).toMatchObject({ status: "closed" });
      expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
      expect(sentFor(sessionId)).toEqual([expect.objectContaining({ status: 204, tokenKind: "delegated" })]);
    }
    expect(sentFor(results.transitional!.legacy)[0]!.userId).toBe(results.transitional!.legacyUser);

    // Without it: the a1 row is refused before any token is asked for or anything is sent; the sealed one closes.
    const withoutLegacy = await sealedOnly.services.newSweeper().run();
    record(withoutLegacy);
    expect(withoutLegacy).toMatchObject({ closed: 1, failed: 1 });
    const rows = await finalRows(sealedOnly);
    const refused = rows.get(results.sealedOnly!.legacy)!;
    expect(refused).toMatchObject({ status: "failed", lastErrorCode: "AssertionFormatRetired" });
    expect(String(refused.lastErrorMessage)).toContain("ASSERTION_ENCRYPTION_KEY");
    expect(refused.assertion ?? "").toBe("");
    expect(sentFor(results.sealedOnly!.legacy)).toEqual([]);
    expect(cloud.emulator.sessionState(results.sealedOnly!.legacy)).toBe("open");
    expect(cloud.authority.tokenRequests.filter((r) => r.userId === results.sealedOnly!.legacyUser)).toEqual([]);
    expect(rows.get(results.sealedOnly!.sealed)).toMatchObject({ status: "closed" });
    expect(cloud.emulator.sessionState(results.sealedOnly!.sealed)).toBe("closed");

    for (const t of [transitional, sealedOnly]) record(entityText(await rawEntities(t.services.ledger)));
    expect(leaksIn(outputs.join("\n"))).toEqual([]);
  });

  it("rotation: rows sealed for the old public key close while the old private key is in ASSERTION_PREVIOUS_PRIVATE_KEYS; new rows are sealed for the new key; with the new key alone, old rows fail AssertionKeyUnknown", async () => {
    const old = cloud.assertionKeys;
    const next = newKeyPair();
    const oldKeyId = AssertionSealer.fromPublicKey(old.publicKey).keyId;
    const newKeyId = AssertionSealer.fromPublicKey(next.publicKey).keyId;
    expect(newKeyId).not.toBe(oldKeyId);
    const rotating = await cloud.newTable({ ASSERTION_PRIVATE_KEY: next.privateKey, ASSERTION_PREVIOUS_PRIVATE_KEYS: old.privateKey });
    const rotated = await cloud.newTable({ ASSERTION_PRIVATE_KEY: next.privateKey });
    expect(rotating.config.auth.assertionKeys.privateKeys).toEqual([next.privateKey, old.privateKey]);
    expect(rotated.config.auth.assertionKeys.privateKeys).toEqual([next.privateKey]);

    const sessions: Record<string, { old: string; fresh: string; oldUser: string }> = {};
    for (const [name, t] of [["rotating", rotating], ["rotated", rotated]] as const) {
      const oldUser = newUserId();
      // Recorded before the producers were given the new public key.
      const before = await t.openSession({ userId: oldUser, workbook: `/drives/r/items/old-${name}`, assertionPublicKey: old.publicKey });
      // Recorded by a producer that has the new public key (the table's producer: its key follows ASSERTION_PRIVATE_KEY).
      const after = await t.openSession({ userId: newUserId(), workbook: `/drives/r/items/new-${name}` });
      expect(keyIdOf(before.row.encryptedAssertion)).toBe(oldKeyId);
      expect(keyIdOf(after.row.encryptedAssertion)).toBe(newKeyId);
      sessions[name] = { old: before.sessionId, fresh: after.sessionId, oldUser };
    }
    // A touch by a producer with the new key reseals the assertion for the new key.
    const touched = await rotating.openSession({ userId: newUserId(), workbook: "/drives/r/items/touched", idleMinutes: 0, assertionPublicKey: old.publicKey });
    const resealed = await rotating.producer.touch(touched.row, { userAssertion: touched.assertion });
    expect(keyIdOf(resealed.encryptedAssertion)).toBe(newKeyId);

    const both = await rotating.services.newSweeper().run();
    record(both);
    expect(both).toMatchObject({ closed: 2, failed: 0 });
    const rotatingRows = await finalRows(rotating);
    for (const sessionId of [sessions.rotating!.old, sessions.rotating!.fresh]) {
      expect(rotatingRows.get(sessionId)).toMatchObject({ status: "closed" });
      expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    }

    const newOnly = await rotated.services.newSweeper().run();
    record(newOnly);
    expect(newOnly).toMatchObject({ closed: 1, failed: 1 });
    const rotatedRows = await finalRows(rotated);
    const unknown = rotatedRows.get(sessions.rotated!.old)!;
    expect(unknown).toMatchObject({ status: "failed", lastErrorCode: "AssertionKeyUnknown" });
    // The message names the key id (derived from the public key, not secret), never a key.
    expect(String(unknown.lastErrorMessage)).toContain(oldKeyId);
    expect(sentFor(sessions.rotated!.old)).toEqual([]);
    expect(cloud.emulator.sessionState(sessions.rotated!.old)).toBe("open");
    expect(cloud.authority.tokenRequests.filter((r) => r.userId === sessions.rotated!.oldUser)).toEqual([]);
    expect(rotatedRows.get(sessions.rotated!.fresh)).toMatchObject({ status: "closed" });

    for (const t of [rotating, rotated]) record(entityText(await rawEntities(t.services.ledger)));
    expect(leaksIn(outputs.join("\n"))).toEqual([]);
  });

  it("a producer holds only the public key: it has no way to open what it sealed, and the public key used as a private key opens nothing", async () => {
    const own = await cloud.newTable();
    const producer = SessionProducer.fromConnectionString(inject("storageConnectionString"), own.tableName, { assertionPublicKey: cloud.assertionPublicKey });
    const userId = newUserId();
    const recorded = await producer.record({ tenantId: HOME_TENANT, userId, sessionId: `s-${userId}`, workbook: "/drives/p/items/x", recordedBy: "test", userAssertion: cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID }) });
    const stored = recorded.encryptedAssertion!;
    expect(stored).toMatch(SEALED);

    // No method on the producer or on what it seals with reads an assertion back.
    const methodsOf = (o: object) => {
      const names: string[] = [];
      for (let p = Object.getPrototypeOf(o) as object | null; p && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) names.push(...Object.getOwnPropertyNames(p));
      return names;
    };
    const OPENS = /open|decrypt|unseal|recipient|private/i;
    expect(methodsOf(producer).filter((n) => OPENS.test(n))).toEqual([]);
    const sealers = Object.values(producer).filter((v): v is AssertionSealer => v instanceof AssertionSealer);
    expect(sealers).toHaveLength(1);
    const sealer = sealers[0]!;
    expect(methodsOf(sealer).sort()).toEqual(["constructor", "seal", "toJSON"]);
    expect(Object.keys(sealer).sort()).toEqual(["keyId", "publicKey"]);
    expect(sealer.publicKey).toBe(cloud.assertionPublicKey);
    // Nothing the producer holds is the private key, in either spelling.
    const seen = inspect(producer, { depth: 4, showHidden: true });
    expect(seen).not.toContain(cloud.assertionKeys.privateKey);
    expect(seen).not.toContain(Buffer.from(cloud.assertionKeys.privateKey, "base64url").toString("base64"));

    // The public key taken for a private key: 32 bytes are a valid X25519 scalar, so the opener is
    // built, but for another key pair: it names a key id that is not the producer's, and opens nothing.
    const wrong = new AssertionOpener({ privateKeys: [cloud.assertionPublicKey] });
    expect(wrong.keyIds).not.toContain(sealer.keyId);
    const row = { partitionKey: recorded.partitionKey, rowKey: recorded.rowKey };
    await expect(wrong.open(stored, row)).rejects.toMatchObject({ code: "AssertionKeyUnknown" });
    // Even with the value relabelled for that key id, it does not open (DHKEM binds the recipient's key).
    const relabelled = stored.split(".").map((part, i) => (i === 1 ? wrong.keyIds[0]! : part)).join(".");
    await expect(wrong.open(relabelled, row)).rejects.toMatchObject({ code: "AssertionUnreadable" });
    // The sweeper's private key does open it.
    expect(cloud.authority.issuedTokens.has(await new AssertionOpener({ privateKeys: [cloud.assertionKeys.privateKey] }).open(stored, row))).toBe(true);

    // An app misconfigured with the public key as ASSERTION_PRIVATE_KEY closes nothing and sends nothing.
    const session = await own.openSession({ userId: newUserId(), workbook: "/drives/p/items/misconfigured" });
    const misconfigured = await cloud.newTableServicesFor(own, { ASSERTION_PRIVATE_KEY: cloud.assertionPublicKey });
    const summary = await misconfigured.newSweeper().run();
    record(summary);
    expect((await finalRows(own)).get(session.sessionId)).toMatchObject({ status: "failed", lastErrorCode: "AssertionKeyUnknown" });
    expect(sentFor(session.sessionId)).toEqual([]);
    expect(cloud.emulator.sessionState(session.sessionId)).toBe("open");
  });

  it("a sealed value copied into another user's row is not opened by a sweep: that row fails AssertionUnreadable and nothing is sent for it", async () => {
    const own = await cloud.newTable();
    const userId = newUserId();
    const source = await own.openSession({ userId, workbook: "/drives/c/items/source" });
    const target = await own.openSession({ userId: newUserId(), workbook: "/drives/c/items/target" });
    expect(target.row.partitionKey).not.toBe(source.row.partitionKey);
    // A valid assertion, sealed for the right key, but bound to the source row: the target's user
    // would borrow the source user's token with it. (Within one user's rows, a row is closed with
    // that user's credential, made from whichever of the user's rows came first.)
    await overwriteAssertion(own, target.row, source.row.encryptedAssertion!);

    const summary = await own.services.newSweeper().run();
    record(summary);
    expect(summary).toMatchObject({ closed: 1, failed: 1 });
    const rows = await finalRows(own);
    expect(rows.get(target.sessionId)).toMatchObject({ status: "failed", lastErrorCode: "AssertionUnreadable" });
    expect(rows.get(target.sessionId)!.assertion ?? "").toBe("");
    expect(sentFor(target.sessionId)).toEqual([]);
    expect(cloud.emulator.sessionState(target.sessionId)).toBe("open");
    // The source row, whose value it is, closes as usual.
    expect(rows.get(source.sessionId)).toMatchObject({ status: "closed" });
    expect(sentFor(source.sessionId)).toEqual([expect.objectContaining({ status: 204, userId })]);
    record(entityText(await rawEntities(own.services.ledger)));
    expect(leaksIn(outputs.join("\n"))).toEqual([]);
  });
});
