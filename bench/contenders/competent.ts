/**
 * `competent`: what a careful developer writes in an hour. Reads the stale rows, then 16 at a time
 * (a p-limit(16) over the rows): one on-behalf-of credential and Graph client per user (so tokens
 * are cached), the Graph SDK's default middleware (its RetryHandler retries 429/503/504 up to 3
 * times, honouring Retry-After), and the row written once, conditional on the ETag it was read
 * with. No per-workbook or per-tenant control.
 */
import { OnBehalfOfCredential } from "@azure/identity";
import { Client, GraphError } from "@microsoft/microsoft-graph-client";
import { TokenCredentialAuthenticationProvider } from "@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials";
import { mapConcurrent } from "../../src/utils/concurrency";
import { readStaleRows, type RawRow } from "./staleRows";
import type { Contender } from "./types";

const CONCURRENCY = 16;

export const competent: Contender = async (context) => {
  const { settings } = context;
  const { table, opener, rows } = await readStaleRows(context);
  const graphHost = new URL(settings.GRAPH_BASE_URL!);
  // One client per user, made once: the promise is kept, so rows of a user that arrive while its
  // assertion is being opened wait for that client rather than make another. A row whose assertion
  // does not open leaves no client behind: the user's next row tries with its own.
  const clients = new Map<string, Promise<Client>>();
  const clientFor = (row: RawRow): Promise<Client> => {
    let client = clients.get(row.partitionKey!);
    if (!client) {
      client = newClient(row);
      clients.set(row.partitionKey!, client);
      client.catch(() => clients.delete(row.partitionKey!));
    }
    return client;
  };
  const newClient = async (row: RawRow): Promise<Client> => {
    // disableInstanceDiscovery: the stand-in authority is not one Microsoft's discovery knows.
    const credentialOptions = {
      tenantId: String(row.tenantId),
      clientId: settings.AZURE_CLIENT_ID!,
      clientSecret: settings.AZURE_CLIENT_SECRET!,
      userAssertionToken: await opener.open(String(row.assertion), { partitionKey: row.partitionKey!, rowKey: row.rowKey! }),
      authorityHost: settings.AZURE_AUTHORITY_HOST!,
      disableInstanceDiscovery: true,
    };
    const credential = new OnBehalfOfCredential(credentialOptions);
    return Client.initWithMiddleware({
      authProvider: new TokenCredentialAuthenticationProvider(credential, { scopes: [settings.GRAPH_SCOPE!] }),
      baseUrl: `${graphHost.origin}/`,
      customHosts: new Set([graphHost.hostname]),
    });
  };

  let closed = 0;
  let errors = 0;
  await mapConcurrent(rows, CONCURRENCY, async (row) => {
    const keys = { partitionKey: row.partitionKey!, rowKey: row.rowKey! };
    let patch: Record<string, unknown>;
    try {
      await (await clientFor(row)).api(`${row.workbook}/workbook/closeSession`).header("workbook-session-id", String(row.sessionId)).post(undefined);
      patch = { status: "closed", closedAt: new Date(), closedBy: "sweeper", assertion: "" };
      closed++;
    } catch (error) {
      const status = error instanceof GraphError ? error.statusCode : -1;
      if (status === 404) {
        patch = { status: "expired", lastErrorCode: "notFound", assertion: "" };
      } else {
        // Left open for the next run, with what went wrong.
        errors++;
        patch = { lastErrorCode: error instanceof GraphError ? (error.code ?? `http${status}`) : "error" };
      }
    }
    try {
      await table.updateEntity({ ...keys, ...patch, updatedAt: new Date() }, "Merge", { etag: row.etag });
    } catch {
      // 412: a heartbeat or someone else changed the row meanwhile; leave it to them.
    }
  });
  return { attempted: rows.length, closed, errors, attemptedKeys: rows.map((r) => `${r.partitionKey}/${r.rowKey}`) };
};
