import { AssertionCipher } from "../core/AssertionCipher";
import { classifyAuthorityError } from "../auth/authorityErrors";
import { DelegatedCredentials } from "../auth/DelegatedCredentials";
import type { SweeperConfig } from "../config";
import { WorkbookSessionCloser } from "../graph/WorkbookSessionCloser";
import { SessionLedger, type ServiceTime } from "../ledger/SessionLedger";
import type { CloseDependencies } from "../sweep/closeRecordedSession";
import { Sweeper, type SweepLogger } from "../sweep/Sweeper";

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
  const ledger = SessionLedger.fromConnectionString(config.storage.connectionString, config.storage.tableName, {
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
  const cipher = new AssertionCipher(config.auth.assertionKey);
  const newCredentials = () =>
    new DelegatedCredentials({
      authorityHost: config.auth.authorityHost,
      disableInstanceDiscovery: config.auth.disableInstanceDiscovery,
      tenantId: config.auth.tenantId,
      clientId: config.auth.clientId,
      clientCredential: config.auth.clientCredential,
      additionallyAllowedTenants: config.auth.additionallyAllowedTenants,
      scope: config.auth.scope,
      cipher,
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
        { ...(logger && { logger }), clock },
      ),
  };
}
