import type { RequestBudget } from "../core/budget";
import type { SendLog } from "../ledger/tenantLeases";

/**
 * Keeps each tenant's Graph requests under its budget (Excel: 1,500 per 10 s per app per tenant)
 * with a sliding window, and holds a tenant back while Graph's Retry-After cooldown runs.
 * Nothing here sleeps: callers ask when a tenant may send next and schedule themselves.
 */
export class TenantPacer {
  private readonly tenants = new Map<string, { sent: number[]; head: number; pausedUntil: number }>();
  private readonly budget: RequestBudget;

  constructor(budget: RequestBudget) {
    // Graph counts a request when it arrives, a little after we count it: a request leaves our
    // window a margin later than it leaves Graph's, so jitter in transit cannot add up to a 429.
    // 2.5% of the window (at least 250 ms): 250 ms of Excel's 10 s.
    this.budget = { requests: budget.requests, windowMs: budget.windowMs + Math.max(250, budget.windowMs * 0.025) };
  }

  /**
   * Milliseconds until `tenant` may send one more request (0: now), counting `pending` requests
   * already promised a slot but not sent yet.
   */
  waitMs(tenant: string, now: number, pending = 0): number {
    const state = this.tenants.get(tenant);
    if (!state) return pending < this.budget.requests ? 0 : this.budget.windowMs;
    const pause = Math.max(0, state.pausedUntil - now);
    this.forget(state, now);
    const inWindow = state.sent.length - state.head;
    const over = inWindow + pending - this.budget.requests;
    if (over < 0) return pause;
    // The oldest requests in the window must leave it before another may go.
    const leaving = state.sent[state.head + over];
    return Math.max(pause, leaving === undefined ? this.budget.windowMs : leaving + this.budget.windowMs - now);
  }

  /** Counts one request sent now. */
  record(tenant: string, now: number): void {
    this.state(tenant).sent.push(now);
  }

  /**
   * The sends still in the tenant's window at `now`: what the next sender of this tenant must count
   * (handed over with its lease, see tenantLeases.ts).
   */
  recent(tenant: string, now: number): number[] {
    const state = this.tenants.get(tenant);
    if (!state) return [];
    this.forget(state, now);
    return state.sent.slice(state.head);
  }

  /** Counts sends another sender made for the tenant (the lease's previous holder), in this pacer's time. */
  seed(tenant: string, times: readonly number[]): void {
    if (times.length === 0) return;
    const state = this.state(tenant);
    state.sent = [...state.sent.slice(state.head), ...times].sort((a, b) => a - b);
    state.head = 0;
  }

  /**
   * This pacer as a tenant lease's send log: its sends handed over with the lease, in the storage
   * service's time (`serviceOffsetMs`: the service's time minus `now`'s).
   */
  sendLog(now: () => number, serviceOffsetMs: () => number): SendLog {
    return {
      recent: (tenant) => this.recent(tenant, now()).map((at) => at + serviceOffsetMs()),
      seed: (tenant, sends) => this.seed(tenant, sends.map((at) => at - serviceOffsetMs())),
    };
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
