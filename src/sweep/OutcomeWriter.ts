import type { SessionLedger } from "../ledger/SessionLedger";
import type { RowTransition, SessionToClose, TransitionRequest } from "../core/session";

export interface OutcomeWriterOptions {
  /** Longest an outcome waits to share a transaction with others. @default 500 */
  maxDelayMs?: number;
  /** A write failed (storage fault): the rows stay `closing` and are taken again after the lease. */
  onError: (error: unknown) => void;
}

const MAX_TRANSACTION_ROWS = 100;

/**
 * Writes the sweep's outcomes in transactions (one costs about what 5 single writes do): a user's
 * outcomes wait until the sweep has no more of that user's rows under way (writePartition), 100 of
 * them wait, or `maxDelayMs` passes. Until written, a row stays `closing` under its lease: a crash
 * loses no session, only the outcomes of its last moments, and those rows are taken over after the
 * lease.
 */
export class OutcomeWriter {
  private readonly buffers = new Map<string, TransitionRequest[]>();
  private readonly writing = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly maxDelayMs: number;

  constructor(
    private readonly ledger: SessionLedger,
    private readonly options: OutcomeWriterOptions,
  ) {
    this.maxDelayMs = options.maxDelayMs ?? 500;
  }

  add(row: SessionToClose, transition: RowTransition): void {
    let buffer = this.buffers.get(row.partitionKey);
    if (!buffer) this.buffers.set(row.partitionKey, (buffer = []));
    buffer.push({ row, transition });
    if (buffer.length >= MAX_TRANSACTION_ROWS) this.writePartition(row.partitionKey);
    else this.timer ??= setTimeout(() => this.writeAll(), this.maxDelayMs);
  }

  /** Writes everything buffered and waits for every write under way. */
  async flush(): Promise<void> {
    this.writeAll();
    while (this.writing.size > 0) await Promise.all([...this.writing]);
  }

  private writeAll(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const partition of [...this.buffers.keys()]) this.writePartition(partition);
  }

  /** Writes what waits for this partition now (its last row under way has finished). */
  writePartition(partition: string): void {
    const items = this.buffers.get(partition);
    this.buffers.delete(partition);
    if (!items || items.length === 0) return;
    const done = this.ledger.recordTransitions(items).then(
      () => undefined,
      (error: unknown) => this.options.onError(error),
    );
    this.writing.add(done);
    void done.finally(() => this.writing.delete(done));
  }
}
