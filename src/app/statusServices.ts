import { loadLedgerConfig, type LedgerConfig, type Settings } from "../config";
import { SessionLedger } from "../ledger/SessionLedger";
import { readLedgerStatus, type LedgerStatus } from "../ledger/ledgerStatus";
import type { AppLogger } from "./logging";
import { configured } from "./appServices";
import { storageConnection } from "./sweeperServices";

/** What the status view reads with: the ledger alone, built from the storage settings alone. */
export interface StatusServices {
  readonly config: LedgerConfig;
  readonly ledger: SessionLedger;
}

/** The ledger for the status view: no Entra ID, Graph or assertion settings are read or needed. */
export function createStatusServices(config: LedgerConfig): StatusServices {
  return { config, ledger: SessionLedger.fromConnection(storageConnection(config.storage.connection), config.storage.tableName) };
}

/** The ledger's status now (README "The status view"). */
export function readStatus(services: StatusServices): Promise<LedgerStatus> {
  return readLedgerStatus(services.ledger, { staleAfterMs: services.config.staleAfterMs });
}

let services: StatusServices | undefined;

/**
 * The status function's services, built at its first invocation from the storage settings only,
 * so it answers while the sweep's other settings are missing or wrong. A bad configuration is
 * logged as the other functions log theirs, thrown, and not kept.
 */
export function statusServices(logger: AppLogger, settings: Settings = process.env): StatusServices {
  if (services) return services;
  services = configured(logger, () => createStatusServices(loadLedgerConfig(settings)));
  return services;
}
