import type { SessionLedger } from "../ledger/SessionLedger";
import type { RowTransition, SessionRecord } from "../ledger/models";
import { recordTransitions } from "./closeRecordedSession";

interface Pending {
  row: SessionRecord;
  transition: RowTransition;
}

export interface OutcomeWriterOptions {
  /** Longest an outcome waits to share a transaction with others. Default 50 ms. */
  maxDelayMs?: number;
  /** A write failed (storage fault): the rows stay `closing` and are taken again after the lease. */
  onError: (error: unknown) => void;
}

const MAX_TRANSACTION_ROWS = 100;

/**
 * Writes the sweep's outcomes in transactions: a user's rows finish close together, so waiting
 * a few milliseconds lets them share one (a transaction of 100 costs about what 5 single writes
 * do). A partition's rows are written as soon as 100 wait, the rest after `maxDelayMs`. Until
 * written, a row stays `closing` under its lease: a crash loses no session, only the outcome of
 * its last few milliseconds, and the row is taken over after the lease.
 */
export class OutcomeWriter {
  private readonly buffers = new Map<string, Pending[]>();
  private readonly writing = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly maxDelayMs: number;

  constructor(
    private readonly ledger: SessionLedger,
    private readonly options: OutcomeWriterOptions,
  ) {
    this.maxDelayMs = options.maxDelayMs ?? 50;
  }

  add(row: SessionRecord, transition: RowTransition): void {
    let buffer = this.buffers.get(row.partitionKey);
    if (!buffer) this.buffers.set(row.partitionKey, (buffer = []));
    buffer.push({ row, transition });
    if (buffer.length >= MAX_TRANSACTION_ROWS) this.write(row.partitionKey);
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
    for (const partition of [...this.buffers.keys()]) this.write(partition);
  }

  private write(partition: string): void {
    const items = this.buffers.get(partition);
    this.buffers.delete(partition);
    if (!items || items.length === 0) return;
    const done = recordTransitions(this.ledger, items).then(
      () => undefined,
      (error: unknown) => this.options.onError(error),
    );
    this.writing.add(done);
    void done.finally(() => this.writing.delete(done));
  }
}
