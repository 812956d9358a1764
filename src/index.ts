/**
 * workbook-session-sweeper: the public API.
 *
 * - Services that open Excel sessions record them with `SessionProducer` (also the whole of the
 *   `workbook-session-sweeper/producer` entry, which loads neither the Functions library, the
 *   on-behalf-of credentials nor the Graph client).
 * - A host of your own (or a script) runs the same sweep as the Functions app: read the settings
 *   with `loadConfig`, build the services with `createSweeperServices`, and `run` a `Sweeper`.
 * - Operators read the ledger with `SessionLedger`, and its status with `readStatus` (what
 *   `workbook-session-sweeper status` prints and `GET /api/status` answers).
 *
 * Everything else is internal: the Functions registrations are the package's `main`, and the
 * project's own code imports modules by path.
 */
export * from "./producer";

export { Codes, type Code } from "./core/codes";
// The sweeper's side of assertion sealing: a new key pair (also `workbook-session-sweeper keys new`).
export { generateAssertionKeyPair } from "./core/assertionSealing";
export { AppFaultError, ConfigurationError } from "./core/errors";
export { loadConfig, DEFAULT_SETTINGS, REQUIRED_SETTINGS, type SweeperConfig, type Settings } from "./config";
export { createSweeperServices, type SweeperServices, type SweeperServicesOptions } from "./app/sweeperServices";
export { Sweeper, type SweeperSettings, type SweeperOptions, type SweepLogger, type SweepRunOptions } from "./sweep/Sweeper";
export type { SweepRequest, SweepSummary, SweepCandidate, SweepPause } from "./sweep/models";
export type { SweepRecorder, AttemptRecord } from "./sweep/SweepRecorder";
export { SessionLedger, type SessionLedgerOptions, type ListStaleOptions } from "./ledger/SessionLedger";
// The ledger at a glance (`workbook-session-sweeper status`, `GET /api/status`), from the storage settings alone.
export { loadLedgerConfig, type LedgerConfig } from "./config";
export { createStatusServices, readStatus, type StatusServices } from "./app/statusServices";
export { readLedgerStatus, type LedgerStatus, type LedgerStatusOptions } from "./ledger/ledgerStatus";
export { SweepsTable, sweepsTableOf, SWEEPS_TABLE_SUFFIX, type RecordedSweep, type RecordedSweepCounts } from "./ledger/sweepsTable";
export type { LedgerPage, MalformedRow } from "./ledger/models";
