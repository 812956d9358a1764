/**
 * The local stand-ins every contender runs against: Azurite (Table Storage), the fake Entra ID
 * authority (on-behalf-of tokens) and the Graph workbook emulator, the last two over https with a
 * certificate this process already trusts (NODE_EXTRA_CA_CERTS, read at process start).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { TableServiceClient } from "@azure/data-tables";
import { startAzurite, type AzuriteInstance } from "../test/support/azurite";
import { loadTestCertificate, type TestCertificate } from "../test/support/certificate";
import { GRAPH_RESOURCE, startFakeAuthority, type FakeAuthority } from "../test/support/fakeAuthority";
import { startGraphEmulator, type GraphEmulator } from "../test/support/graphEmulator";
import { isLoopbackEmulator } from "../src/ledger/tableClient";

export interface BenchEnvironment {
  readonly connectionString: string;
  /** The Azurite process this run started (undefined when given a connection string). */
  readonly azuritePid: number | undefined;
  readonly authority: FakeAuthority;
  readonly emulator: GraphEmulator;
  readonly clientId: string;
  readonly assertionKey: Buffer;
  /** Every app setting the sweeper needs for `tableName`, as the Functions host would pass them. */
  settings(tableName: string, overrides?: Record<string, string>): Record<string, string>;
  /** A table name not used before in this run. */
  newTableName(prefix: string): string;
  deleteTable(tableName: string): Promise<void>;
  close(): Promise<void>;
}

export interface EnvironmentOptions {
  /** Directory of a certificate made by makeTestCertificate, trusted by this process. */
  certificateDir: string;
  /** An Azurite (or account) to use; default: start one for this run. */
  connectionString?: string;
  latencyMs: number;
}

/** Sessions on the emulator never idle out during a bench: the rows' age is what is measured. */
const EMULATOR_IDLE = { persistent: 6 * 3_600_000, nonPersistent: 6 * 3_600_000 };

export async function startBenchEnvironment(options: EnvironmentOptions): Promise<BenchEnvironment> {
  const certificate: TestCertificate = loadTestCertificate(options.certificateDir);
  let azurite: AzuriteInstance | undefined;
  const connectionString = options.connectionString ?? (azurite = await startAzurite()).connectionString;
  const authority = await startFakeAuthority({ certificate });
  const emulator = await startGraphEmulator({ certificate, authority, latencyMs: options.latencyMs, idleMs: EMULATOR_IDLE });
  const clientId = randomUUID();
  const clientSecret = `bench-${randomBytes(24).toString("base64url")}`;
  const assertionKey = randomBytes(32);
  const homeTenant = randomUUID();
  authority.registerClient({ clientId, clientSecret });
  const service = TableServiceClient.fromConnectionString(connectionString, { allowInsecureConnection: isLoopbackEmulator(connectionString) });
  const runId = randomBytes(3).toString("hex");
  let tables = 0;

  return {
    connectionString,
    azuritePid: azurite?.pid,
    authority,
    emulator,
    clientId,
    assertionKey,
    settings(tableName, overrides = {}) {
      return {
        AzureWebJobsStorage: connectionString,
        SESSIONS_TABLE: tableName,
        GRAPH_BASE_URL: emulator.baseUrl,
        GRAPH_SCOPE: `${GRAPH_RESOURCE}/Files.ReadWrite`,
        AZURE_AUTHORITY_HOST: authority.authorityHost,
        AZURE_DISABLE_INSTANCE_DISCOVERY: "true",
        AZURE_TENANT_ID: homeTenant,
        AZURE_CLIENT_ID: clientId,
        AZURE_CLIENT_SECRET: clientSecret,
        AZURE_ADDITIONALLY_ALLOWED_TENANTS: "*",
        ASSERTION_ENCRYPTION_KEY: assertionKey.toString("base64"),
        // Stale rows are an hour idle and fresh ones seconds: a long run never turns fresh rows stale.
        STALE_AFTER: "PT15M",
        ...overrides,
      };
    },
    newTableName(prefix) {
      return `${prefix}${runId}n${++tables}`;
    },
    async deleteTable(tableName) {
      await service.deleteTable(tableName);
    },
    async close() {
      await emulator.close();
      await authority.close();
      await azurite?.stop();
    },
  };
}
