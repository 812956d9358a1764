/**
 * `npm run demo`: the ledger end to end on a local Azurite. Services record sessions (some long
 * abandoned, some heartbeating), then the sweeper's side lists what is stale.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { startAzurite } from "../test/support/azurite";
import { SessionLedger, SessionProducer, formatWorkbookLocation, type SessionRecord } from "../src";

const MINUTE = 60_000;
const TABLE = "DemoSessions";

async function main(): Promise<void> {
  console.log("Starting Azurite (in memory, telemetry off, free ports)…");
  const azurite = await startAzurite();
  try {
    const ledger = SessionLedger.fromConnectionString(azurite.connectionString, TABLE);
    await ledger.ensureTable();
    const at = (minutesAgo: number) => SessionProducer.fromConnectionString(azurite.connectionString, TABLE, { clock: () => new Date(Date.now() - minutesAgo * MINUTE), assertionKey });

    const assertionKey = randomBytes(32);
    const users = [randomUUID(), randomUUID(), randomUUID()];
    const tenantId = randomUUID();
    const plan = [
      { user: 0, minutesAgo: 45, workbook: "/me/drive/items/01BUDGET2026", note: "service crashed 45 min ago" },
      { user: 0, minutesAgo: 12, workbook: "/drives/b!finance/items/01FORECAST", note: "redeployed mid-run" },
      { user: 1, minutesAgo: 7, workbook: "/sites/contoso.sharepoint.com,1a2b,3c4d/drive/items/01SALES", note: "forgot its finally" },
      { user: 1, minutesAgo: 0, workbook: "/users/" + users[1] + "/drive/items/01LIVE", note: "still heartbeating" },
      { user: 2, minutesAgo: 30, workbook: "/drives/b!ops/items/01ROTA", note: "closed by its service" },
    ];
    console.log(`\nRecording ${plan.length} sessions as producing services do:`);
    for (const item of plan) {
      const producer = at(item.minutesAgo);
      const row = await producer.record({
        tenantId,
        userId: users[item.user]!,
        sessionId: `cluster=PS2&session=15.${randomUUID()}/${randomUUID()}==`,
        workbook: item.workbook,
        recordedBy: "demo-service",
        userAssertion: `demo-assertion-of-${users[item.user]}`,
      });
      if (item.note.startsWith("closed")) await producer.release(row);
      console.log(`  recorded ${short(row.sessionId)}  ${item.workbook.padEnd(62)} ${item.note}`);
    }

    console.log("\nStale sessions (no heartbeat for 2 minutes), as the sweeper will see them:");
    let stale = 0;
    for await (const page of ledger.listStale(2 * MINUTE)) {
      for (const row of page.rows) {
        stale++;
        console.log(`  ${short(row.sessionId)}  idle ${Math.round((Date.now() - row.lastActivityAt.getTime()) / MINUTE)} min  ${formatWorkbookLocation(row.workbook)}`);
      }
    }
    console.log(`  ${stale} stale of ${plan.length} recorded.`);

    console.log("\nEvery row in the ledger:");
    printRows(await allRows(ledger));
  } finally {
    await azurite.stop();
    console.log("\nAzurite stopped.");
  }
}

async function allRows(ledger: SessionLedger): Promise<SessionRecord[]> {
  const rows: SessionRecord[] = [];
  for await (const page of ledger.listAll()) rows.push(...page.rows);
  return rows;
}

function printRows(rows: SessionRecord[]): void {
  for (const row of rows) {
    console.log(`  ${short(row.sessionId)}  ${row.status.padEnd(8)} attempts ${row.attempts}  ${row.closedBy ? `closed by ${row.closedBy}` : ""}`);
  }
}

function short(sessionId: string): string {
  return `${sessionId.slice(0, 28)}…`;
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
