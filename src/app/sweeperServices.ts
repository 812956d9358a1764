import { AssertionOpener } from "../core/assertionSealing";
import { classifyAuthorityError } from "../auth/authorityErrors";
import { DelegatedCredentials, type ClientCredential } from "../auth/DelegatedCredentials";
import { managedIdentityAssertion, storageCredential } from "../auth/managedIdentity";
import type { ClientCredentialSettings, StorageConnectionSettings, SweeperConfig } from "../config";
import type { StorageConnection } from "../ledger/storageConnection";
import { WorkbookSessionCloser } from "../graph/WorkbookSessionCloser";
import { SessionLedger, type ServiceTime } from "../ledger/SessionLedger";
import type { CloseDependencies } from "../sweep/closeRecordedSession";
import { Sweeper, type SweepLogger } from "../sweep/Sweeper";
import type { SweepRecorder } from "../sweep/SweepRecorder";
import { openTelemetryRecorder } from "./metrics";

export interface SweeperServicesOptions {
  /** Where sweeps log when `newSweeper` is given no logger of its own. @default no logging */
  logger?: SweepLogger;
  /** Called for every storage request (for request counts in benchmarks and tests). @default none */
  onStorageRequest?: (request: { method: string; url: string }) => void;
  /** @default the system clock */
  clock?: () => Date;
  /**
   * Stands in for the storage service's clock (a test that lets an hour pass without waiting).
   * @default learned from the service's answers (`Date` headers), carried forward by `clock`
   */
  serviceTime?: ServiceTime;
  /** Retries of the token client's HTTP pipeline. @default 3 */
  tokenMaxRetries?: number;
  /**
   * What each sweep's rows are recorded to. @default the app's metrics over OpenTelemetry's API
   * (src/app/metrics.ts): into the global MeterProvider, a no-op while none is registered
   */
  recorder?: SweepRecorder;
}

/** Everything a sweep or a close request needs, built from validated configuration. */
export interface SweeperServices {
  readonly config: SweeperConfig;
  readonly ledger: SessionLedger;
  /** Fresh dependencies for one close request or one sweep (their credentials are cached for that long). */
  closeDependencies(): CloseDependencies;
  /** A sweeper for one run: credentials (and so tokens) are cached for the sweep's lifetime. */
  newSweeper(logger?: SweepLogger): Sweeper;
}

export function createSweeperServices(config: SweeperConfig, options: SweeperServicesOptions = {}): SweeperServices {
  const clock = options.clock ?? (() => new Date());
  const ledger = SessionLedger.fromConnection(storageConnection(config.storage.connection), config.storage.tableName, {
    clock,
    ...(options.serviceTime && { serviceTime: options.serviceTime }),
    ...(options.onStorageRequest && { onRequest: options.onStorageRequest }),
  });
  const closer = new WorkbookSessionCloser({
    baseUrl: config.graph.baseUrl,
    requestTimeoutMs: config.graph.requestTimeoutMs,
    credentialErrorOutcome: classifyAuthorityError,
    clock,
  });
  // Built now, so a key it cannot take fails the invocation before any row is claimed; a dry run's
  // configuration holds no key, and its sweep opens none.
  const opener = config.auth.assertionKeys.privateKeys.length > 0 ? new AssertionOpener(config.auth.assertionKeys) : { open: () => Promise.reject(new RangeError("No assertion key configured.")) };
  const clientCredential = clientCredentialOf(config.auth.clientCredential);
  const newCredentials = () =>
    new DelegatedCredentials({
      authorityHost: config.auth.authorityHost,
      disableInstanceDiscovery: config.auth.disableInstanceDiscovery,
      tenantId: config.auth.tenantId,
      clientId: config.auth.clientId,
      clientCredential,
      additionallyAllowedTenants: config.auth.additionallyAllowedTenants,
      scope: config.auth.scope,
      opener,
      clock,
      ...(options.tokenMaxRetries !== undefined && { maxRetries: options.tokenMaxRetries }),
    });
  const dependencies = (): CloseDependencies => ({
    ledger,
    credentials: newCredentials(),
    closer,
    leaseMs: config.sweep.claimLeaseMs,
    maxAttempts: config.sweep.maxAttempts,
  });
  return {
    config,
    ledger,
    closeDependencies: dependencies,
    newSweeper: (logger = options.logger) =>
      new Sweeper(
        dependencies(),
        {
          staleAfterMs: config.sweep.staleAfterMs,
          timeBudgetMs: config.sweep.timeBudgetMs,
          concurrency: config.sweep.concurrency,
          tenantBudget: config.graph.tenantBudget,
          appBudget: config.graph.appBudget,
        },
        { ...(logger && { logger }), clock, recorder: options.recorder ?? openTelemetryRecorder },
      ),
  };
}

/** The account's connection as the SDKs take it: the connection string, or service URLs with the identity's credential. */
export function storageConnection(settings: StorageConnectionSettings): StorageConnection {
  if (settings.kind === "connectionString") return settings.connectionString;
  return { tableServiceUrl: settings.tableServiceUrl, queueServiceUrl: settings.queueServiceUrl, credential: storageCredential(settings.credential) };
}

function clientCredentialOf(settings: ClientCredentialSettings): ClientCredential {
  if (settings.kind !== "managedIdentity") return settings;
  // One managed-identity credential for every user's exchange: its token is cached across them.
  return { kind: "assertion", getAssertion: managedIdentityAssertion({ audience: settings.audience, ...(settings.clientId && { clientId: settings.clientId }) }) };
}
