/**
 * `npm run demo`: the product end to end on local stand-ins. Starts Azurite, a fake Entra ID
 * authority and a Graph workbook emulator (https, with a certificate made for this run), records a
 * mix of sessions as producing services do, runs the timer function's handler, and prints what it
 * did, the final state of every row, and the status view an operator sees
 * (`workbook-session-sweeper status`). Stops everything it started.
 *
 * Secretless by default, as the README deploys it: Azurite in OAuth mode over https, reached
 * through the app's managed identity (the authority's stand-in for App Service's identity
 * endpoint), whose token is also the on-behalf-of exchange's client assertion; no storage key,
 * client secret or shared key in the app's or the producers' settings. `--connection-string` runs
 * the same story with a storage connection string and a client secret instead.
 */
import { randomUUID } from "node:crypto";
import { format } from "node:util";
import { InvocationContext } from "@azure/functions";
import { ManagedIdentityCredential } from "@azure/identity";
import { startAzurite, startStandIns, trustedCertificateOrRerun, type AzuriteInstance } from "../standins";
import { SessionLedger, SessionProducer, formatWorkbookLocation, type SessionRecord, type StorageConnection } from "../src";
import { runStatusCommand } from "../src/cli/status";

const MINUTE = 60_000;
const TABLE = "DemoSessions";
const TENANT = "7d3f1c52-5a0b-4f3e-9d7e-2b6c1a0e4f11";
const CLIENT_ID = "c0ffee00-0000-4000-8000-00000000de70";

async function main(): Promise<void> {
  const certificate = trustedCertificateOrRerun();
  if (!certificate) return;

  const secretless = !process.argv.includes("--connection-string");
  console.log("Starting the local stand-ins: Azurite (in memory, telemetry off), Entra ID authority, Graph emulator…");
  // Secretless: an Azurite that takes Entra ID tokens over https, as an account with shared keys off.
  const oauthStorage: AzuriteInstance | undefined = secretless ? await startAzurite({ certificate, oauth: true }) : undefined;
  const standIns = await startStandIns({
    certificate,
    tenantId: TENANT,
    clientId: CLIENT_ID,
    emulator: { latencyMs: 20 },
    ...(oauthStorage && { storageConnectionString: oauthStorage.connectionString }),
  });
  const { authority, emulator, assertionKeys, storageConnectionString } = standIns;
  try {
    // One tenant only here: the app is left to its default of no other tenants.
    const common = { SESSIONS_TABLE: TABLE, STALE_AFTER: "PT2M", AZURE_ADDITIONALLY_ALLOWED_TENANTS: "" };
    let producerConnection: StorageConnection = storageConnectionString;
    if (oauthStorage) {
      // The Function app's managed identity: App Service's identity endpoint, and the app
      // registration's trust in it as a federated credential.
      const identity = authority.registerManagedIdentity({ tenantId: TENANT });
      authority.trustManagedIdentity(CLIENT_ID, identity);
      Object.assign(process.env, authority.managedIdentityEnvironment());
      Object.assign(
        process.env,
        standIns.settings({
          ...common,
          AzureWebJobsStorage: "",
          AzureWebJobsStorage__tableServiceUri: oauthStorage.tableEndpoint,
          AzureWebJobsStorage__queueServiceUri: oauthStorage.queueEndpoint,
          AzureWebJobsStorage__credential: "managedidentity",
          AzureWebJobsStorage__clientId: identity.clientId,
          AZURE_CLIENT_SECRET: "",
          AZURE_CLIENT_ASSERTION_IDENTITY: identity.clientId,
        }),
      );
      // The producers' services have identities of their own; here they borrow the app's.
      producerConnection = { tableServiceUrl: oauthStorage.tableEndpoint, queueServiceUrl: oauthStorage.queueEndpoint, credential: new ManagedIdentityCredential({ clientId: identity.clientId }) };
      console.log("Secretless (npm run demo -- --connection-string for the other way): storage and the on-behalf-of client assertion through a managed identity; no storage key, client secret or shared key in any setting.");
    } else {
      Object.assign(process.env, standIns.settings(common));
      console.log("With a storage connection string and a client secret (npm run demo runs secretless).");
    }
    // No table is made here: the first session recorded creates it, as on a new storage account.
    // The demo reads the rows it prints with the account key; the app and producers do not have it.
    const ledger = SessionLedger.fromConnectionString(storageConnectionString, TABLE);

    const users: Record<"ana" | "ben" | "chloe" | "dan", string> = { ana: randomUUID(), ben: randomUUID(), chloe: randomUUID(), dan: randomUUID() };
    const names = new Map(Object.entries(users).map(([name, id]) => [id, name]));
    const plan: { user: keyof typeof users; idle: number; workbook: string; story: string; setup?: (sessionId: string) => void; assertionLifetimeSec?: number; release?: boolean }[] = [
      { user: "ana", idle: 45, workbook: "/me/drive/items/01BUDGET2026", story: "its service crashed 45 min ago" },
      { user: "ana", idle: 12, workbook: "/drives/b!finance/items/01FORECAST", story: "redeployed mid-run" },
      { user: "ben", idle: 7, workbook: "/sites/contoso.sharepoint.com,1a2b3c4d,5e6f7a8b/drive/items/01SALES", story: "forgot its finally" },
      { user: "ben", idle: 0, workbook: `/users/${users.ben}/drive/items/01LIVE`, story: "still heartbeating" },
      { user: "chloe", idle: 20, workbook: "/drives/b!ops/items/01ROTA", story: "Graph already dropped it", setup: (id) => emulator.expireSession(id) },
      {
        user: "chloe",
        idle: 9,
        workbook: "/drives/b!ops/items/01STOCK",
        story: "Graph throttles this workbook",
        setup: (id) => emulator.addFault({ sessionId: id, times: 1, action: { status: 429, headers: { "Retry-After": "30" } } }),
      },
      {
        user: "dan",
        idle: 95,
        workbook: "/me/drive/items/01OLD",
        story: "user's token ran out long ago",
        assertionLifetimeSec: -1800,
        setup: (id) => emulator.expireSession(id),
      },
      // Its service closed it on Graph itself, then released the row.
      { user: "ana", idle: 30, workbook: "/drives/b!finance/items/01LEDGER", story: "closed by its own service", release: true, setup: (id) => emulator.expireSession(id) },
    ];

    console.log(`\nServices record ${plan.length} sessions they opened with createSession:`);
    const stories = new Map<string, { story: string; order: number }>();
    for (const item of plan) {
      const userId = users[item.user];
      const sessionId = emulator.openSession({ tenantId: TENANT, userId, workbook: item.workbook });
      item.setup?.(sessionId);
      const producer = SessionProducer.fromConnection(producerConnection, TABLE, {
        // Producers get the public key only: they seal assertions they cannot read back.
        assertionPublicKey: assertionKeys.publicKey,
        clock: () => new Date(Date.now() - item.idle * MINUTE),
      });
      const row = await producer.record({
        tenantId: TENANT,
        userId,
        sessionId,
        workbook: item.workbook,
        recordedBy: "demo-service",
        userAssertion: authority.issueUserAssertion({ tenantId: TENANT, userId, audience: CLIENT_ID, lifetimeSec: item.assertionLifetimeSec ?? 3600 }),
      });
      // The demo cannot wait 45 minutes: it marks the row silent since its last heartbeat, as the
      // storage service would have seen it (liveness is judged by the service's clock, never the
      // producer's, so the producer's clock above only dates the row's own columns).
      if (item.idle > 0) await ledger.client.updateEntity({ partitionKey: row.partitionKey, rowKey: row.rowKey, heartbeatSeenAt: new Date(Date.now() - item.idle * MINUTE) }, "Merge");
      if (item.release) await producer.release(row);
      stories.set(sessionId, { story: item.story, order: stories.size });
      console.log(`  ${item.user.padEnd(6)} idle ${String(item.idle).padStart(2)} min  ${short(item.workbook, 46).padEnd(46)}  ${item.story}`);
    }

    console.log("\nThe timer function runs a sweep (the same handler the Functions host calls):");
    const { sweepTimer } = await import("../functions/sweepTimer");
    const context = new InvocationContext({
      functionName: "sweepTimer",
      invocationId: randomUUID(),
      // What the worker sends the host: @azure/functions formats the arguments with util.format.
      logHandler: (level, ...args) => console.log(`  [${level}] ${format(...args)}`),
    });
    await sweepTimer({ isPastDue: false, schedule: { adjustForDST: true }, scheduleStatus: { last: "", next: "", lastUpdated: "" } }, context);

    console.log("\nWhat Graph received:");
    for (const request of emulator.requests) {
      console.log(`  ${request.method} …${request.path.slice(request.path.indexOf("/workbook"))}  ${request.status}  ${request.errorCode ?? ""} (${names.get(request.userId ?? "")})`);
    }

    // Finished sessions have left the live table for their week's history table.
    const finished = new Set<string>();
    for await (const page of ledger.listHistory()) for (const row of page.rows) finished.add(row.sessionId);
    console.log(`\nEvery row afterwards (live table ${TABLE}; history ${(await ledger.history.tableNames()).join(", ")}):`);
    const rows: SessionRecord[] = [];
    for await (const page of ledger.listAll()) rows.push(...page.rows);
    rows.sort((a, b) => (stories.get(a.sessionId)?.order ?? 0) - (stories.get(b.sessionId)?.order ?? 0));
    console.log(`  ${"user".padEnd(6)} ${"table".padEnd(7)} ${"status".padEnd(8)} ${"att".padEnd(3)} ${"workbook".padEnd(46)} detail`);
    for (const row of rows) {
      const detail = row.status === "closed"
        ? `closed by ${row.closedBy}`
        : row.lastError
          ? `${row.lastError.code}${row.nextAttemptAt && row.status === "open" ? `, next attempt ${row.nextAttemptAt.toISOString().slice(11, 19)}` : ""}`
          : row.status === "open" ? "left alone: it is alive" : "";
      console.log(`  ${(names.get(row.userId) ?? "?").padEnd(6)} ${(finished.has(row.sessionId) ? "history" : "live").padEnd(7)} ${row.status.padEnd(8)} ${String(row.attempts).padEnd(3)} ${short(formatWorkbookLocation(row.workbook), 46).padEnd(46)} ${detail}  (${stories.get(row.sessionId)?.story})`);
    }
    console.log(`\nGraph sessions still open: ${rows.filter((r) => emulator.sessionState(r.sessionId) === "open").length} (the live one and the throttled one, retried by the next sweep).`);

    // What an operator sees: `workbook-session-sweeper status`, run in process with the app's settings.
    console.log("\nThe status view (workbook-session-sweeper status, or GET /api/status for the JSON):\n");
    const statusCode = await runStatusCommand(process.env, { json: false }, { stdout: process.stdout, fail: (message) => console.error(`workbook-session-sweeper: ${message}`) });
    if (statusCode !== 0) throw new Error(`the status view failed (exit code ${statusCode})`);
  } finally {
    await standIns.close();
    await oauthStorage?.stop();
    console.log("Stopped Azurite, the authority and the Graph emulator.");
  }
}

function short(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : error);
  process.exit(1);
});
