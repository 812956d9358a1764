/**
 * `naive`: the first thing anyone writes. Reads the stale rows, then for each one in order gets a
 * token for its user, sends closeSession and writes the row, each step awaited before the next.
 * Nothing is cached, nothing overlaps. Correct on a quiet ledger, just slow.
 */
import { OnBehalfOfCredential } from "@azure/identity";
import { Client } from "@microsoft/microsoft-graph-client";
import { readStaleRows } from "./staleRows";
import type { Contender } from "./types";

export const naive: Contender = async (context) => {
  const { settings } = context;
  const { table, opener, rows } = await readStaleRows(context);
  const graphHost = new URL(settings.GRAPH_BASE_URL!);
  let closed = 0;
  let errors = 0;
  for (const row of rows) {
    const keys = { partitionKey: row.partitionKey!, rowKey: row.rowKey! };
    // disableInstanceDiscovery: the stand-in authority is not one Microsoft's discovery knows.
    const credentialOptions = {
      tenantId: String(row.tenantId),
      clientId: settings.AZURE_CLIENT_ID!,
      clientSecret: settings.AZURE_CLIENT_SECRET!,
      userAssertionToken: await opener.open(String(row.assertion), keys),
      authorityHost: settings.AZURE_AUTHORITY_HOST!,
      disableInstanceDiscovery: true,
    };
    const credential = new OnBehalfOfCredential(credentialOptions);
    const token = await credential.getToken(settings.GRAPH_SCOPE!);
    const client = Client.init({
      authProvider: (done) => done(null, token.token),
      baseUrl: `${graphHost.origin}/`,
      customHosts: new Set([graphHost.hostname]),
    });
    try {
      await client.api(`${row.workbook}/workbook/closeSession`).header("workbook-session-id", String(row.sessionId)).post(undefined);
      await table.updateEntity({ ...keys, status: "closed", closedAt: new Date(), closedBy: "sweeper", updatedAt: new Date(), assertion: "" }, "Merge");
      closed++;
    } catch {
      errors++;
    }
  }
  return { attempted: rows.length, closed, errors, attemptedKeys: rows.map((r) => `${r.partitionKey}/${r.rowKey}`) };
};
