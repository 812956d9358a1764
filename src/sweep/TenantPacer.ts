/**
 * Keeps each tenant's Graph requests under its budget (Excel: 1,500 per 10 s per app per tenant)
 * with a sliding window, and holds a tenant back while Graph's Retry-After cooldown runs.
 * Nothing here sleeps: callers ask when a tenant may send next and schedule themselves.
 */
export class TenantPacer {
  private readonly tenants = new Map<string, { sent: number[]; head: number; pausedUntil: number }>();

  constructor(private readonly budget: { requests: number; windowMs: number }) {}

  /** Milliseconds until `tenant` may send (0: now). */
  waitMs(tenant: string, now: number): number {
    const state = this.tenants.get(tenant);
    if (!state) return 0;
    const pause = Math.max(0, state.pausedUntil - now);
    this.forget(state, now);
    const inWindow = state.sent.length - state.head;
    if (inWindow < this.budget.requests) return pause;
    // The oldest request in the window must leave it before another may go.
    const oldest = state.sent[state.head]!;
    return Math.max(pause, oldest + this.budget.windowMs - now);
  }

  /** Counts one request sent now. */
  record(tenant: string, now: number): void {
    this.state(tenant).sent.push(now);
  }

  /** A reserved request was not sent after all (the claim was lost, no token): give its slot back. */
  refund(tenant: string): void {
    const state = this.tenants.get(tenant);
    if (state && state.sent.length > state.head) state.sent.pop();
  }

  /** Graph asked for a cooldown: nothing for this tenant before `until`. */
  pause(tenant: string, until: number): void {
    const state = this.state(tenant);
    state.pausedUntil = Math.max(state.pausedUntil, until);
  }

  pausedUntil(tenant: string): number {
    return this.tenants.get(tenant)?.pausedUntil ?? 0;
  }

  private state(tenant: string) {
    let state = this.tenants.get(tenant);
    if (!state) this.tenants.set(tenant, (state = { sent: [], head: 0, pausedUntil: 0 }));
    return state;
  }

  private forget(state: { sent: number[]; head: number }, now: number): void {
    while (state.head < state.sent.length && state.sent[state.head]! <= now - this.budget.windowMs) state.head++;
    if (state.head > 1_024 && state.head * 2 > state.sent.length) {
      state.sent = state.sent.slice(state.head);
      state.head = 0;
    }
  }
}
