import type { SweepSummary } from "../../src/sweep/models";

/** What one contender is given: the app settings (as the Functions host passes them) and a counter of its storage requests. */
export interface ContenderContext {
  readonly settings: Readonly<Record<string, string>>;
  /** Must be installed on every storage client the contender makes (createLedgerTableClient's onRequest). */
  readonly onStorageRequest: (request: { method: string; url: string }) => void;
  /** Work through at most this many stale rows (naive's prefix). */
  readonly limit?: number;
  /** Requests in flight (the Graph round-trip floor's). */
  readonly parallel?: number;
}

/** What a contender says it did; the bench checks the rows and Graph itself. */
export interface ContenderOutcome {
  /** Stale rows it attempted. */
  readonly attempted: number;
  /** Rows it believes it closed. */
  readonly closed: number;
  /** Attempts that ended in an error it gave up on (row left for another run). */
  readonly errors: number;
  /** Row keys (`PartitionKey/RowKey`) it attempted, when it worked on a prefix: the others must be untouched. */
  readonly attemptedKeys?: readonly string[];
  /** The sweeper's own summary line. */
  readonly summary?: SweepSummary;
  /** Named durations (ms) and figures a job measured itself. */
  readonly timings?: Record<string, number>;
}

export type Contender = (context: ContenderContext) => Promise<ContenderOutcome>;
