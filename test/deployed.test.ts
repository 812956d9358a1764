/**
 * The built app as the Functions host runs it: dist/ loaded by a stand-in of the Node worker in a
 * plain `node` process whose environment is the app settings (standins/functionsWorker.cjs),
 * through the app's own @azure/functions. What the host indexes whatever the settings, what it
 * receives from an invocation (the formatted log text, the failure), and a first run against a
 * storage account that has no ledger table yet.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TableClient, TableServiceClient } from "@azure/data-tables";
import { QueueClient } from "@azure/storage-queue";
import { afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { DEFAULT_SETTINGS, SessionProducer } from "../src";
import { silence, useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture } from "./support/cloudFixture";
import { parseLogLine } from "./support/functionsHost";
import { newAssertionKeyPair } from "../standins";
import { httpInput, queueInput, startFunctionsWorker, timerInput, type RunningWorker } from "../standins/functionsWorker";
import { uniqueTableName } from "./support/ledgerFixture";
import { registerSecrets } from "./support/secretScan";

const FUNCTIONS = ["closeRequest", "purgeTimer", "status", "sweep", "sweepTimer"];
const REQUIRED_ONLY = {
  AzureWebJobsStorage: `DefaultEndpointsProtocol=http;AccountName=nowhere;AccountKey=${randomBytes(32).toString("base64")};TableEndpoint=http://127.0.0.1:9/nowhere;QueueEndpoint=http://127.0.0.1:9/nowhere`,
  AZURE_TENANT_ID: randomUUID(),
  AZURE_CLIENT_ID: randomUUID(),
  AZURE_CLIENT_SECRET: `cs-${randomBytes(16).toString("base64url")}`,
  ASSERTION_PRIVATE_KEY: newAssertionKeyPair().privateKey,
};
/** An input for each function, as the host would send it. */
const INPUTS: Record<string, Parameters<RunningWorker["invoke"]>[1]> = {
  sweepTimer: timerInput(),
  purgeTimer: timerInput(),
  sweep: httpInput("{}"),
  closeRequest: queueInput(JSON.stringify({ tenantId: HOME_TENANT, userId: HOME_TENANT, sessionId: "s" })),
  status: statusInput(),
};

/** `GET /api/status` as the host sends it (RpcHttp). */
function statusInput() {
  return { inputData: [{ data: { http: { method: "GET", url: "http://localhost:7071/api/status", headers: {} } } }] };
}

/** The JSON body of an HTTP response the worker returned (its bytes arrive as an object of indexed bytes, as the worker's channel carries a Uint8Array). */
function jsonBodyOf(outcome: { response?: { returnValue?: unknown } }): unknown {
  const body = (outcome.response?.returnValue as { http?: { body?: { string?: string; bytes?: Record<string, number> } } } | undefined)?.http?.body;
  return JSON.parse(body?.string ?? Buffer.from(Object.values(body?.bytes ?? {})).toString("utf8"));
}

let worker: RunningWorker | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

function triggerOf(name: string): Record<string, unknown> {
  const fn = worker!.functions.find((f) => f.name === name);
  expect(fn, `function ${name} is indexed`).toBeDefined();
  return Object.values(fn!.bindings).find((b) => /trigger$/i.test(b.type))!;
}

/** Every line the worker received, parsed: each must be one line whose structured part is JSON. */
function userLines(logs: { level: string; category: string; message: string }[]) {
  return logs.filter((l) => l.category === "user").map((l) => parseLogLine(l.level, l.message));
}

describe("what the host indexes", () => {
  it("registers all five functions with only the required settings, with the default schedules and queue as plain values", async () => {
    worker = await startFunctionsWorker(REQUIRED_ONLY);
    expect(worker.loadError).toBeUndefined();
    expect(worker.functions.map((f) => f.name).sort()).toEqual(FUNCTIONS);
    expect(triggerOf("sweepTimer")).toMatchObject({ type: "timerTrigger", schedule: DEFAULT_SETTINGS.SWEEP_SCHEDULE });
    expect(triggerOf("purgeTimer")).toMatchObject({ type: "timerTrigger", schedule: DEFAULT_SETTINGS.PURGE_SCHEDULE });
    expect(triggerOf("closeRequest")).toMatchObject({ type: "queueTrigger", queueName: DEFAULT_SETTINGS.CLOSE_QUEUE, connection: "AzureWebJobsStorage" });
    expect(triggerOf("sweep")).toMatchObject({ type: "httpTrigger", authLevel: "function", route: "sweep", methods: ["POST"] });
    expect(triggerOf("status")).toMatchObject({ type: "httpTrigger", authLevel: "function", route: "status", methods: ["GET"] });
    // The host resolves %NAME% from app settings only: nothing may be left for it to resolve.
    expect(JSON.stringify(worker.functions)).not.toMatch(/%[A-Za-z_]+%/);
  });

  it("binds the schedules and queue the settings give", async () => {
    worker = await startFunctionsWorker({ ...REQUIRED_ONLY, SWEEP_SCHEDULE: "30 */5 * * * *", PURGE_SCHEDULE: "0 0 2 * * Sun", CLOSE_QUEUE: "close-requests" });
    expect(triggerOf("sweepTimer").schedule).toBe("30 */5 * * * *");
    expect(triggerOf("purgeTimer").schedule).toBe("0 0 2 * * Sun");
    expect(triggerOf("closeRequest").queueName).toBe("close-requests");
  });

  it("registers all five with no settings at all, and each invocation fails naming every setting at fault, logged as one line", async () => {
    worker = await startFunctionsWorker({});
    expect(worker.loadError).toBeUndefined();
    expect(worker.functions.map((f) => f.name).sort()).toEqual(FUNCTIONS);
    for (const name of FUNCTIONS) {
      const outcome = await worker.invoke(name, INPUTS[name]!);
      expect(outcome.error?.name, name).toBe("ConfigurationError");
      // The status reads the ledger alone: only the storage settings are its to name.
      const settings = name === "status" ? ["AzureWebJobsStorage"] : ["AzureWebJobsStorage", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "ASSERTION_PRIVATE_KEY"];
      for (const setting of settings) expect(outcome.error?.message, name).toContain(setting);
      if (name === "status") expect(outcome.error?.message).not.toContain("AZURE_");
      const lines = userLines(outcome.logs);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: "error", event: "Invalid configuration; fix these app settings", details: { code: "InvalidConfiguration" } });
      expect((lines[0]!.details.problems as { setting: string }[]).map((p) => p.setting)).toContain(name === "status" ? "AzureWebJobsStorage" : "AZURE_CLIENT_ID");
    }
  });

  it("with one setting missing, registers all five and an invocation fails with that setting's name", async () => {
    worker = await startFunctionsWorker({ ...REQUIRED_ONLY, AZURE_CLIENT_ID: undefined });
    expect(worker.functions).toHaveLength(5);
    const outcome = await worker.invoke("sweepTimer", timerInput());
    expect(outcome.error?.message).toMatch(/AZURE_CLIENT_ID is required but not set/);
    expect(outcome.error?.message).not.toContain("AZURE_TENANT_ID");
  });

  it("a malformed schedule still registers the timer, on the default, and its invocations name the setting", async () => {
    worker = await startFunctionsWorker({ ...REQUIRED_ONLY, SWEEP_SCHEDULE: "*/5 * * * *", CLOSE_QUEUE: "Bad_Queue" });
    expect(triggerOf("sweepTimer").schedule).toBe(DEFAULT_SETTINGS.SWEEP_SCHEDULE);
    expect(triggerOf("closeRequest").queueName).toBe(DEFAULT_SETTINGS.CLOSE_QUEUE);
    const outcome = await worker.invoke("sweepTimer", timerInput());
    expect(outcome.error?.message).toMatch(/SWEEP_SCHEDULE is '\*\/5 \* \* \* \*', an NCRONTAB expression that has 5 fields/);
    expect(outcome.error?.message).toMatch(/CLOSE_QUEUE/);
  });

  it("refuses local.settings.sample.json copied as it is, naming each placeholder", async () => {
    const sample = JSON.parse(readFileSync(join(__dirname, "..", "local.settings.sample.json"), "utf8")) as { Values: Record<string, string> };
    worker = await startFunctionsWorker(sample.Values);
    expect(worker.functions).toHaveLength(5);
    const outcome = await worker.invoke("sweepTimer", timerInput());
    // Every placeholder the sample holds is named as one, and so is ASSERTION_PRIVATE_KEY (a
    // placeholder in the sample, or unset if the sample does not list it yet).
    const placeholders = Object.entries(sample.Values).filter(([, value]) => /<[^<>]*>/.test(value)).map(([setting]) => setting);
    expect(placeholders).toEqual(expect.arrayContaining(["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]));
    for (const setting of placeholders) {
      expect(outcome.error?.message).toMatch(new RegExp(`${setting} still holds a '<…>' placeholder`));
    }
    expect(outcome.error?.message).toMatch(/ASSERTION_PRIVATE_KEY (still holds a '<…>' placeholder|is required but not set)/);
  });
});

describe("a first run on a storage account without the ledger", () => {
  let cloud: CloudFixture;
  useCloudFixture((started) => (cloud = started));
  const connectionString = () => inject("storageConnectionString");
  const tableExists = async (name: string) => {
    const service = TableServiceClient.fromConnectionString(connectionString(), { allowInsecureConnection: true });
    for await (const table of service.listTables({ queryOptions: { filter: `TableName eq '${name}'` } })) if (table.name === name) return true;
    return false;
  };

  beforeAll(() => {
    expect(cloud).toBeDefined();
  });

  it("the timer sweep creates the table, and the host receives one JSON line per event with nothing cut", async () => {
    const tableName = uniqueTableName();
    worker = await startFunctionsWorker(cloud.settings({ SESSIONS_TABLE: tableName }));
    const first = await worker.invoke("sweepTimer", timerInput());
    expect(first.error).toBeUndefined();
    expect(userLines(first.logs)).toEqual([expect.objectContaining({ level: "information", event: "Sweep finished", details: expect.objectContaining({ trigger: "timer", scanned: 0, "workbook_session.sweep.duration": expect.any(Number), "workbook_session.backlog": 0 }) })]);
    expect(await tableExists(tableName)).toBe(true);

    // A stale session and a row the sweep cannot read, so a line carries nested values.
    const userId = newUserId();
    const sessionId = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId, workbook: "/drives/d/items/first" });
    const past = SessionProducer.fromConnectionString(connectionString(), tableName, { assertionPublicKey: cloud.assertionPublicKey });
    const assertion = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID });
    const staleRow = await past.record({ tenantId: HOME_TENANT, userId, sessionId, workbook: "/drives/d/items/first", recordedBy: "test", userAssertion: assertion });
    await silence(past.client, staleRow, 600_000);
    const broken = await past.record({ tenantId: HOME_TENANT, userId: newUserId(), sessionId: "broken", workbook: "/drives/d/items/b", recordedBy: "test", userAssertion: assertion });
    const client = TableClient.fromConnectionString(connectionString(), tableName, { allowInsecureConnection: true });
    await silence(past.client, broken, 600_000);
    await client.updateEntity({ partitionKey: broken.partitionKey, rowKey: broken.rowKey, attempts: "many" }, "Merge");

    const second = await worker.invoke("sweepTimer", timerInput(true));
    expect(second.error).toBeUndefined();
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    const lines = userLines(second.logs);
    expect(lines.map((l) => l.event)).toEqual(["Sweep timer is past due: the previous run was late or missed", "Malformed ledger rows", "Sweep finished"]);
    const malformed = lines[1]!.details as { rows: { rowKey: string; problems: string[] }[] };
    expect(malformed.rows[0]).toMatchObject({ rowKey: broken.rowKey, problems: [expect.stringContaining("attempts")] });
    expect(lines[2]!.details).toMatchObject({ trigger: "timer", closed: 1, malformed: 1 });
  });

  it("the HTTP sweep and the purge run on a table that does not exist yet", async () => {
    worker = await startFunctionsWorker(cloud.settings({ SESSIONS_TABLE: uniqueTableName() }));
    const http = await worker.invoke("sweep", httpInput(JSON.stringify({ dryRun: true })));
    expect(http.error).toBeUndefined();
    expect(http.response?.returnValue).toMatchObject({ http: { statusCode: "200" } });
    const purge = await worker.invoke("purgeTimer", timerInput());
    expect(purge.error).toBeUndefined();
    expect(userLines(purge.logs)).toEqual([expect.objectContaining({ event: "Purge finished", details: expect.objectContaining({ droppedTables: [], scanned: 0, moved: 0 }) })]);
  });

  it("with only the storage settings, the status function answers 200 with the ledger's status, the timer's sweep in it", async () => {
    const tableName = uniqueTableName();
    // The sweep needs every setting; the status, only the storage account and the table.
    const sweeper = await startFunctionsWorker(cloud.settings({ SESSIONS_TABLE: tableName }));
    const sweep = await sweeper.invoke("sweepTimer", timerInput());
    await sweeper.stop();
    expect(sweep.error).toBeUndefined();
    worker = await startFunctionsWorker({ AzureWebJobsStorage: connectionString(), SESSIONS_TABLE: tableName });
    const outcome = await worker.invoke("status", statusInput());
    expect(outcome.error).toBeUndefined();
    expect(outcome.response?.returnValue).toMatchObject({ http: { statusCode: "200" } });
    expect(jsonBodyOf(outcome)).toMatchObject({ table: tableName, live: { total: 0 }, sweeps: [{ trigger: "timer", counts: { scanned: 0 }, error: null }] });
    expect(userLines(outcome.logs)).toEqual([]);
  });

  it("a producer records into a table and asks for a close on a queue that do not exist yet", async () => {
    const tableName = uniqueTableName();
    const queueName = `q-${randomBytes(6).toString("hex")}`;
    const producer = SessionProducer.fromConnectionString(connectionString(), tableName, { assertionPublicKey: cloud.assertionPublicKey, closeQueueName: queueName });
    const key = { tenantId: HOME_TENANT, userId: newUserId(), sessionId: `s-${randomUUID()}` };
    const recorded = await Promise.all(
      [0, 1, 2].map((i) => producer.record({ ...key, sessionId: `${key.sessionId}-${i}`, workbook: "/drives/d/items/x", recordedBy: "test", userAssertion: "assertion-value" })),
    );
    expect(recorded.map((r) => r.status)).toEqual(["open", "open", "open"]);
    await producer.requestClose(recorded[0]!);
    const queue = new QueueClient(connectionString(), queueName);
    const received = await queue.receiveMessages();
    expect(JSON.parse(received.receivedMessageItems[0]!.messageText)).toMatchObject({ userId: key.userId, sessionId: `${key.sessionId}-0` });
  });

  it("a fault that is not a missing table is still a fault", async () => {
    // The right account with a wrong key: 403, which must not be taken for a missing table.
    const wrongKey = connectionString().replace(/AccountKey=[^;]+/, `AccountKey=${randomBytes(64).toString("base64")}`);
    const producer = SessionProducer.fromConnectionString(wrongKey, uniqueTableName(), { assertionPublicKey: cloud.assertionPublicKey });
    const error = await producer
      .record({ tenantId: HOME_TENANT, userId: newUserId(), sessionId: "s", workbook: "/drives/d/items/x", recordedBy: "test", userAssertion: "a" })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ statusCode: 403 });
  });
});

describe("a secretless deployment", () => {
  let cloud: CloudFixture;
  useCloudFixture((started) => (cloud = started));

  it("with only identity-based settings, the host indexes all five, and the timer and queue functions close sessions through the managed identity", async () => {
    const oauth = inject("oauthStorage");
    const identity = cloud.authority.registerManagedIdentity({ tenantId: HOME_TENANT });
    cloud.authority.trustManagedIdentity(CLIENT_ID, identity);
    const environment = cloud.authority.managedIdentityEnvironment();
    registerSecrets([environment.IDENTITY_HEADER, oauth.accountKey]);
    const tableName = uniqueTableName();
    // As App Service passes them: the platform's identity endpoint beside the app settings, and no
    // storage key, connection string or client secret among them.
    const settings = cloud.settings({
      ...environment,
      SESSIONS_TABLE: tableName,
      AzureWebJobsStorage: undefined,
      AzureWebJobsStorage__tableServiceUri: oauth.tableEndpoint,
      AzureWebJobsStorage__queueServiceUri: oauth.queueEndpoint,
      AzureWebJobsStorage__credential: "managedidentity",
      AzureWebJobsStorage__clientId: identity.clientId,
      AZURE_CLIENT_SECRET: undefined,
      AZURE_CLIENT_ASSERTION_IDENTITY: identity.clientId,
    });
    expect(Object.entries(settings).filter(([name, value]) => value !== undefined && /SECRET|^AzureWebJobsStorage$|ENCRYPTION_KEY/.test(name))).toEqual([]);
    worker = await startFunctionsWorker(settings);
    expect(worker.loadError).toBeUndefined();
    expect(worker.functions.map((f) => f.name).sort()).toEqual(FUNCTIONS);
    // The queue trigger names the connection; the host resolves it in its identity-based form.
    expect(triggerOf("closeRequest")).toMatchObject({ type: "queueTrigger", connection: "AzureWebJobsStorage" });

    // Seeded with the fixture's own key (the app has none).
    const seed = SessionProducer.fromConnectionString(oauth.connectionString, tableName, { assertionPublicKey: cloud.assertionPublicKey });
    const record = async (stale: boolean) => {
      const userId = newUserId();
      const workbook = `/drives/d/items/${randomUUID()}`;
      const sessionId = cloud.emulator.openSession({ tenantId: HOME_TENANT, userId, workbook });
      const userAssertion = cloud.authority.issueUserAssertion({ tenantId: HOME_TENANT, userId, audience: CLIENT_ID });
      const row = await seed.record({ tenantId: HOME_TENANT, userId, sessionId, workbook, recordedBy: "test", userAssertion });
      if (stale) await silence(seed.client, row, 600_000);
      return row;
    };
    const stale = await record(true);
    const requested = await record(false);

    const timer = await worker.invoke("sweepTimer", timerInput());
    expect(timer.error).toBeUndefined();
    expect(userLines(timer.logs).at(-1)).toMatchObject({ event: "Sweep finished", details: expect.objectContaining({ closed: 1, paused: 0 }) });
    const queued = await worker.invoke("closeRequest", queueInput(JSON.stringify({ tenantId: HOME_TENANT, userId: requested.userId, sessionId: requested.sessionId })));
    expect(queued.error).toBeUndefined();
    expect(cloud.emulator.sessionState(stale.sessionId)).toBe("closed");
    expect(cloud.emulator.sessionState(requested.sessionId)).toBe("closed");
    // The exchange proved the app with the identity's token, never a secret.
    expect(cloud.authority.tokenRequests.filter((r) => r.grantType.includes("jwt-bearer")).every((r) => r.clientAuth === "federated")).toBe(true);
  });
});
