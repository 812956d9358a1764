/**
 * A tenant's workbooks that have work waiting and nothing in flight, the one with the most work
 * first (the oldest first among equals). A workbook takes its sessions one at a time, so the one
 * with the most bounds the sweep's end: started first, the longest queues end with the others
 * instead of closing their last sessions alone after everything else is done (longest processing
 * time first). Measured on the bench with 9 sessions per workbook at 1.3 s: first come, first
 * served left the last 8 s of a 40 s sweep at a third of the budget's rate.
 */
export class ReadyWorkbooks {
  /** A binary max-heap on (waiting, -sequence). */
  private readonly heap: { key: string; waiting: number; sequence: number }[] = [];
  private sequence = 0;

  get size(): number {
    return this.heap.length;
  }

  /** `waiting`: the workbook's items waiting now. */
  push(key: string, waiting: number): void {
    this.heap.push({ key, waiting, sequence: this.sequence++ });
    this.up(this.heap.length - 1);
  }

  pop(): string | undefined {
    const top = this.heap[0];
    const last = this.heap.pop();
    if (top === undefined || last === undefined) return undefined;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.down(0);
    }
    return top.key;
  }

  /** Takes every workbook out, in no particular order. */
  drain(): string[] {
    return this.heap.splice(0).map((entry) => entry.key);
  }

  private before(a: number, b: number): boolean {
    const x = this.heap[a]!;
    const y = this.heap[b]!;
    return x.waiting !== y.waiting ? x.waiting > y.waiting : x.sequence < y.sequence;
  }

  private up(index: number): void {
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!this.before(index, parent)) return;
      this.swap(index, parent);
      index = parent;
    }
  }

  private down(index: number): void {
    for (;;) {
      const left = 2 * index + 1;
      const right = left + 1;
      let best = index;
      if (left < this.heap.length && this.before(left, best)) best = left;
      if (right < this.heap.length && this.before(right, best)) best = right;
      if (best === index) return;
      this.swap(index, best);
      index = best;
    }
  }

  private swap(a: number, b: number): void {
    const entry = this.heap[a]!;
    this.heap[a] = this.heap[b]!;
    this.heap[b] = entry;
  }
}
