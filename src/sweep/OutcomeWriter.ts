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
 *
 * The rows an outcome finished move to history (two more transactions per user: the history rows,
 * the live rows' deletes) when their user has nothing under way, or at the end of the sweep; not
 * after every outcome write, which would double the sweep's transactions. Until then a finished row
 * waits in the live table, which is what a crash leaves too: the next sweep moves it.
 */
export class OutcomeWriter {
  private readonly buffers = new Map<string, TransitionRequest[]>();
  /** Finished rows per partition, waiting to move to history. */
  private readonly toMove = new Map<string, SessionToClose[]>();
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
    if (buffer.length >= MAX_TRANSACTION_ROWS) this.write(row.partitionKey, { move: false });
    else this.timer ??= setTimeout(() => this.writeAll({ move: false }), this.maxDelayMs);
  }

  /** Writes everything buffered, waits for every write under way, and moves every finished row. */
  async flush(): Promise<void> {
    this.writeAll({ move: true });
    while (this.writing.size > 0) await Promise.all([...this.writing]);
    for (const partition of [...this.toMove.keys()]) this.move(partition);
    while (this.writing.size > 0) await Promise.all([...this.writing]);
  }

  /** Writes what waits for this partition now, and moves its finished rows: its last row under way has finished. */
  writePartition(partition: string): void {
    this.write(partition, { move: true });
  }

  private writeAll(how: { move: boolean }): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const partition of [...this.buffers.keys()]) this.write(partition, how);
  }

  private write(partition: string, how: { move: boolean }): void {
    const items = this.buffers.get(partition);
    this.buffers.delete(partition);
    if (!items || items.length === 0) {
      if (how.move) this.move(partition);
      return;
    }
    this.track(
      this.ledger.writeOutcomes(items).then(({ finished }) => {
        this.pendingMoves(partition).push(...finished);
        if (how.move || this.pendingMoves(partition).length >= MAX_TRANSACTION_ROWS) this.move(partition);
      }),
    );
  }

  private move(partition: string): void {
    const rows = this.toMove.get(partition);
    this.toMove.delete(partition);
    if (!rows || rows.length === 0) return;
    this.track(this.ledger.moveFinished(rows).then(() => undefined));
  }

  private pendingMoves(partition: string): SessionToClose[] {
    let rows = this.toMove.get(partition);
    if (!rows) this.toMove.set(partition, (rows = []));
    return rows;
  }

  private track(work: Promise<void>): void {
    const done = work.catch((error: unknown) => this.options.onError(error));
    this.writing.add(done);
    void done.finally(() => this.writing.delete(done));
  }
}
