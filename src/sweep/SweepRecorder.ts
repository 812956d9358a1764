import type { RowTransition } from "../core/session";

/**
 * What the sweep tells about each row it tried to an outcome, for metrics. The sweep knows nothing
 * of how it is recorded: the app passes a recorder over OpenTelemetry (src/app/metrics.ts); the
 * default records nothing. A recorder must not throw and must not wait: it is called on the sweep's
 * path, once per row.
 */
export interface SweepRecorder {
  /** A claimed row was tried to an outcome (one of the summary's `claimed`), as its outcome goes to be written. */
  attempted(attempt: AttemptRecord): void;
}

export interface AttemptRecord {
  readonly tenantId: string;
  /** The row's new state: `closed`, `expired`, `failed`, or `retry` (open again, due later). As the summary counts it. */
  readonly outcome: RowTransition["to"];
  /** The row's `lastErrorCode` as written; undefined for `closed`. */
  readonly code?: string;
  /** A request reached Graph (the summary's `graphRequests`). */
  readonly sent: boolean;
  /** Graph's HTTP status, when a request was sent and answered. */
  readonly status?: number;
  /** Graph asked for a cooldown (`Retry-After`): the row's tenant waits before its next request. */
  readonly cooldown: boolean;
  /**
   * `closed` only: how long the session stayed open past its lease before Graph's 204, in ms, by
   * the storage service's clock (the row's last heartbeat and its lease, as the ledger keeps them,
   * and the service's time when the 204 came). Never negative.
   */
  readonly pastLeaseMs?: number;
}

/** Records nothing: a sweep without metrics (the default). */
export const NO_RECORDING: SweepRecorder = { attempted: () => undefined };
