import type { SessionLedger } from "../ledger/SessionLedger";
import type { RowTransition, SessionToClose, TransitionRequest } from "../core/session";

export interface OutcomeWriterOptions {
  /** A write failed (storage fault): the rows stay `closing` and are taken again after the lease. */
  onError: (error: unknown) => void;
}

const MAX_TRANSACTION_ROWS = 100;

/**
 * Writes the sweep's outcomes as they come: an outcome is written on the next turn of the event
 * loop, in one transaction with the others of its user that arrived in the same turn or while that
 * user's previous write was under way; none waits for slower ones. So a 204 reaches the ledger
 * within a storage round trip of its answer, and a sweeper killed after it does not leave the row
 * `closing` for the next one to send closeSession again.
 *
 * The rows an outcome finished move to history (two more transactions per user: the history rows,
 * the live rows' deletes) when their user has nothing under way (writePartition), or at the end of
 * the sweep; not after every outcome write, which would double the sweep's transactions. Until then
 * a finished row waits in the live table, which is what a crash leaves too: the next sweep moves it.
 */
export class OutcomeWriter {
  private readonly buffers = new Map<string, TransitionRequest[]>();
  /** Finished rows per partition, waiting to move to history. */
  private readonly toMove = new Map<string, SessionToClose[]>();
  /** Partitions with a write under way, and whether to move their rows once it is done. */
  private readonly writingPartitions = new Map<string, { moveAfter: boolean }>();
  private readonly writing = new Set<Promise<void>>();
  private scheduled = false;

  constructor(
    private readonly ledger: SessionLedger,
    private readonly options: OutcomeWriterOptions,
  ) {}

  add(row: SessionToClose, transition: RowTransition): void {
    let buffer = this.buffers.get(row.partitionKey);
    if (!buffer) this.buffers.set(row.partitionKey, (buffer = []));
    buffer.push({ row, transition });
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      for (const partition of [...this.buffers.keys()]) this.write(partition, { move: false });
    });
  }

  /** Writes everything buffered, waits for every write under way, and moves every finished row. */
  async flush(): Promise<void> {
    for (const partition of [...this.buffers.keys()]) this.write(partition, { move: true });
    while (this.writing.size > 0) await Promise.all([...this.writing]);
    for (const partition of [...this.toMove.keys()]) this.move(partition);
    while (this.writing.size > 0) await Promise.all([...this.writing]);
  }

  /** The partition's last row under way has finished: write what waits for it, then move its finished rows. */
  writePartition(partition: string): void {
    this.write(partition, { move: true });
  }

  private write(partition: string, how: { move: boolean }): void {
    const underWay = this.writingPartitions.get(partition);
    if (underWay) {
      // One write per partition at a time: what arrives meanwhile goes out together right after.
      underWay.moveAfter ||= how.move;
      return;
    }
    const items = this.buffers.get(partition);
    this.buffers.delete(partition);
    if (!items || items.length === 0) {
      if (how.move) this.move(partition);
      return;
    }
    const state = { moveAfter: how.move };
    this.writingPartitions.set(partition, state);
    this.track(
      this.ledger
        .writeOutcomes(items)
        .then(({ finished }) => {
          this.pendingMoves(partition).push(...finished);
        })
        .finally(() => {
          this.writingPartitions.delete(partition);
          if (this.buffers.has(partition)) this.write(partition, { move: state.moveAfter });
          else if (state.moveAfter || this.pendingMoves(partition).length >= MAX_TRANSACTION_ROWS) this.move(partition);
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
