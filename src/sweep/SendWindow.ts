import type { RequestBudget } from "../core/budget";

/**
 * The sends of one budget (a tenant's, or the app's across tenants) in a sliding window: how long
 * until one more may go, counting sends promised but not made yet. Nothing here sleeps.
 */
export class SendWindow {
  private sent: number[] = [];
  private head = 0;

  private budget: RequestBudget;

  constructor(budget: RequestBudget) {
    this.budget = budget;
  }

  /** From now on at most `requests` in a window (a share of a budget shared with others). */
  setRequests(requests: number): void {
    this.budget = { ...this.budget, requests };
  }

  /** Milliseconds until one more request may go (0: now), with `pending` already promised a slot. */
  waitMs(now: number, pending = 0): number {
    this.forget(now);
    const over = this.sent.length - this.head + pending - this.budget.requests;
    if (over < 0) return 0;
    // The oldest requests in the window must leave it before another may go.
    const leaving = this.sent[this.head + over];
    return leaving === undefined ? this.budget.windowMs : leaving + this.budget.windowMs - now;
  }

  record(now: number): void {
    this.sent.splice(this.insertionPoint(now), 0, now);
  }

  /** A send counted at `from` reached the server at `to` (later): it is counted from there. */
  restamp(from: number, to: number): void {
    const at = this.indexOf(from);
    if (at === undefined) return;
    this.sent.splice(at, 1);
    this.sent.splice(this.insertionPoint(to), 0, to);
  }

  /** How many sends are in the window at `now`. */
  count(now: number): number {
    this.forget(now);
    return this.sent.length - this.head;
  }

  /** The sends still in the window at `now`, oldest first. */
  recent(now: number): number[] {
    this.forget(now);
    return this.sent.slice(this.head);
  }

  /** Counts sends another sender made, in this window's time. */
  seed(times: readonly number[]): void {
    if (times.length === 0) return;
    this.sent = [...this.sent.slice(this.head), ...times].sort((a, b) => a - b);
    this.head = 0;
  }

  private indexOf(time: number): number | undefined {
    const at = this.insertionPoint(time);
    // insertionPoint is after every equal time: the last of them is the one before it.
    return at - 1 >= this.head && this.sent[at - 1] === time ? at - 1 : undefined;
  }

  /** Where `time` goes to keep the window sorted: after every send at or before it. */
  private insertionPoint(time: number): number {
    let lo = this.head;
    let hi = this.sent.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sent[mid]! <= time) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private forget(now: number): void {
    while (this.head < this.sent.length && this.sent[this.head]! <= now - this.budget.windowMs) this.head++;
    if (this.head > 1_024 && this.head * 2 > this.sent.length) {
      this.sent = this.sent.slice(this.head);
      this.head = 0;
    }
  }
}
