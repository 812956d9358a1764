/**
 * The local stand-ins every contender runs against: Azurite (Table Storage), the fake Entra ID
 * authority (on-behalf-of tokens) and the Graph workbook emulator, the last two over https with a
 * certificate this process already trusts (NODE_EXTRA_CA_CERTS, read at process start).
 */
import { randomBytes } from "node:crypto";
import { TableServiceClient } from "@azure/data-tables";
import { loadTestCertificate } from "../standins/certificate";
import type { FakeAuthority } from "../standins/fakeAuthority";
import type { GraphEmulator } from "../standins/graphEmulator";
import { startStandIns } from "../standins/startStandIns";
import { HISTORY_TABLE_INFIX } from "../src/ledger/history";
import { LEASES_TABLE_SUFFIX } from "../src/ledger/tenantLeases";
import { isLoopbackEmulator } from "../src/ledger/storageConnection";

export interface BenchEnvironment {
  readonly connectionString: string;
  /** The Azurite process this run started (undefined when given a connection string). */
  readonly azuritePid: number | undefined;
  readonly authority: FakeAuthority;
  readonly emulator: GraphEmulator;
  readonly clientId: string;
  /** The sweeper's assertion key pair (raw X25519, base64url): seeding seals with the public key. */
  readonly assertionKeys: { readonly privateKey: string; readonly publicKey: string };
  /** Every app setting the sweeper needs for `tableName`, as the Functions host would pass them. */
  settings(tableName: string, overrides?: Record<string, string>): Record<string, string>;
  /** A table name not used before in this run. */
  newTableName(prefix: string): string;
  /** Deletes a ledger's live table, its history tables (`<name>History<YYYY>W<WW>`) and its tenants' leases (`<name>Leases`). */
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
  const standIns = await startStandIns({
    certificate: loadTestCertificate(options.certificateDir),
    ...(options.connectionString !== undefined && { storageConnectionString: options.connectionString }),
    emulator: { latencyMs: options.latencyMs, idleMs: EMULATOR_IDLE },
  });
  const { storageConnectionString: connectionString, authority, emulator, clientId, assertionKeys } = standIns;
  const service = TableServiceClient.fromConnectionString(connectionString, { allowInsecureConnection: isLoopbackEmulator(connectionString) });
  const runId = randomBytes(3).toString("hex");
  let tables = 0;

  return {
    connectionString,
    azuritePid: standIns.azurite?.pid,
    authority,
    emulator,
    clientId,
    assertionKeys,
    settings(tableName, overrides = {}) {
      return standIns.settings({
        SESSIONS_TABLE: tableName,
        // Stale rows are an hour idle and fresh ones seconds: a long run never turns fresh rows stale.
        STALE_AFTER: "PT15M",
        ...overrides,
      });
    },
    newTableName(prefix) {
      return `${prefix}${runId}n${++tables}`;
    },
    async deleteTable(tableName) {
      // A sweep moves what it finished to history: Azurite keeps all of it in memory for the run unless it goes too.
      const prefix = `${tableName}${HISTORY_TABLE_INFIX}`;
      for await (const table of service.listTables({ queryOptions: { filter: `TableName ge '${prefix}' and TableName lt '${prefix}{'` } })) {
        if (table.name) await service.deleteTable(table.name);
      }
      // A sweep that came to claim rows took its tenants' leases there (an idle sweep or a dry run makes no such table).
      const leases = `${tableName}${LEASES_TABLE_SUFFIX}`;
      for await (const table of service.listTables({ queryOptions: { filter: `TableName eq '${leases}'` } })) {
        if (table.name) await service.deleteTable(table.name);
      }
      await service.deleteTable(tableName);
    },
    async close() {
      await standIns.close();
    },
  };
}
