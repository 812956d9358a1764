import type { RequestBudget } from "../core/budget";
import type { SendLog } from "../ledger/tenantLeases";
import { SendWindow } from "./SendWindow";

/**
 * Keeps Graph requests under Excel's two budgets, each a sliding window: each tenant's (1,500 per
 * 10 s per app per tenant) and, when given, the app's across all tenants (5,000 per 10 s); and
 * holds a tenant back while Graph's Retry-After cooldown runs. Nothing here sleeps: callers ask
 * when a tenant may send next and schedule themselves.
 */
export class TenantPacer {
  private readonly tenants = new Map<string, { window: SendWindow; burst: SendWindow; pausedUntil: number }>();
  private readonly tenantBudget: RequestBudget;
  private readonly burstBudget: RequestBudget;
  private readonly app: { budget: RequestBudget; window: SendWindow; burst: SendWindow } | undefined;

  constructor(tenantBudget: RequestBudget, appBudget?: RequestBudget) {
    this.tenantBudget = withMargin(tenantBudget);
    this.burstBudget = burstOf(tenantBudget);
    this.app = appBudget ? { budget: appBudget, window: new SendWindow(withMargin(appBudget)), burst: new SendWindow(burstOf(appBudget)) } : undefined;
  }

  /** Keeps `share` (0-1] of the app's budget: the rest is other processes' (HeldLeases' onAppShare). */
  setAppShare(share: number): void {
    if (!this.app) return;
    const requests = Math.max(1, Math.floor(this.app.budget.requests * share));
    this.app.window.setRequests(requests);
    this.app.burst.setRequests(burstOf({ ...this.app.budget, requests }).requests);
  }

  /**
   * Milliseconds until `tenant` may send one more request (0: now), counting requests already
   * promised a slot but not sent yet: `pending` of this tenant's, `appPending` of all tenants'.
   */
  waitMs(tenant: string, now: number, pending = 0, appPending = pending): number {
    const state = this.tenants.get(tenant);
    const pause = state ? Math.max(0, state.pausedUntil - now) : 0;
    const own = state
      ? Math.max(state.window.waitMs(now, pending), state.burst.waitMs(now, pending))
      : pending < this.burstBudget.requests
        ? 0
        : this.burstBudget.windowMs;
    const app = this.app ? Math.max(this.app.window.waitMs(now, appPending), this.app.burst.waitMs(now, appPending)) : 0;
    return Math.max(pause, own, app);
  }

  /** Counts one request sent now. */
  record(tenant: string, now: number): void {
    const state = this.state(tenant);
    state.window.record(now);
    state.burst.record(now);
    this.app?.window.record(now);
    this.app?.burst.record(now);
  }

  /** The tenant's requests in its budget's window at `now`. */
  sentInWindow(tenant: string, now: number): number {
    return this.tenants.get(tenant)?.window.count(now) ?? 0;
  }

  /**
   * A request counted at `from` reached Graph only at `to` (its connection's handshake came
   * first): Graph counts it from its arrival, and so does the pacer.
   */
  restamp(tenant: string, from: number, to: number): void {
    const state = this.tenants.get(tenant);
    state?.window.restamp(from, to);
    state?.burst.restamp(from, to);
    this.app?.window.restamp(from, to);
    this.app?.burst.restamp(from, to);
  }

  /**
   * The sends still in the tenant's window at `now`: what the next sender of this tenant must count
   * (handed over with its lease, see tenantLeases.ts).
   */
  recent(tenant: string, now: number): number[] {
    return this.tenants.get(tenant)?.window.recent(now) ?? [];
  }

  /**
   * Counts sends another sender made for the tenant (the lease's previous holder), in this pacer's
   * time. Not in the app's window: that sender counted them in its own.
   */
  seed(tenant: string, times: readonly number[]): void {
    if (times.length > 0) this.state(tenant).window.seed(times);
  }

  /**
   * This pacer as a tenant lease's send log: its sends handed over with the lease, in the storage
   * service's time (`serviceOffsetMs`: the service's time minus `now`'s).
   */
  sendLog(now: () => number, serviceOffsetMs: () => number): SendLog {
    return {
      recent: (tenant) => this.recent(tenant, now()).map((at) => at + serviceOffsetMs()),
      // The service's time is known to its Date header's second, by each holder on its own: a send
      // the previous holder stamped may have been up to a second later than its stamp says here.
      seed: (tenant, sends) => this.seed(tenant, sends.map((at) => at - serviceOffsetMs() + SERVICE_TIME_RESOLUTION_MS)),
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
    if (!state) this.tenants.set(tenant, (state = { window: new SendWindow(this.tenantBudget), burst: new SendWindow(this.burstBudget), pausedUntil: 0 }));
    return state;
  }
}

/** A slot in a tenant's budget: taken at `at`, or not to be had before `retryAt`. */
export type PacedSlot = { send: true; at: number } | { send: false; retryAt: Date };

export interface TakeSendSlotOptions {
  /** The clock the pacer counts in. */
  now: () => number;
  /** A wait that would end at or after this is not waited for. @default none */
  deadline?: number;
  /** Whether the sender has stopped: a wait is then not waited for. @default never */
  stopped?: () => boolean;
}

/**
 * Waits for a slot in `tenant`'s budgets and takes it (counts the request as sent). A slot free now
 * is taken even after a stop; only a wait that would outlast the deadline, or any wait once
 * stopped, gives up, saying when the slot would have come.
 */
export async function takeSendSlot(pacer: TenantPacer, tenant: string, options: TakeSendSlotOptions): Promise<PacedSlot> {
  for (;;) {
    const now = options.now();
    const wait = pacer.waitMs(tenant, now);
    if (wait === 0) {
      pacer.record(tenant, now);
      return { send: true, at: now };
    }
    if (options.stopped?.() || now + wait >= (options.deadline ?? Infinity)) return { send: false, retryAt: new Date(now + wait) };
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

/** The storage service's Date header has whole seconds (ServiceClock). */
const SERVICE_TIME_RESOLUTION_MS = 1_000;

/**
 * At most twice the budget's rate over a tenth of its window (300 a second for Excel's 1,500 per
 * 10 s), and never fewer than 20 at once. Without it a window would go out in one burst of new
 * connections, whose requests reach Graph spread over the time their handshakes take; a window
 * later the pacer frees those slots all at once, on warm connections that arrive at once, before
 * Graph's window has let the late arrivals go: 429s. Measured on the bench at 1.5 s: 22 × 429 in
 * 4,000 requests without it. Twice the rate, not once: a sweep's first window is sent in half of
 * it, so a backlog of k windows' worth ends about half a window sooner.
 */
function burstOf(budget: RequestBudget): RequestBudget {
  return { requests: Math.max(20, Math.ceil(budget.requests / 5)), windowMs: budget.windowMs / 10 };
}

/** The most requests the pacer lets a budget send at once when its window has room: its burst limit's. */
export function burstRequests(budget: RequestBudget): number {
  return burstOf(budget).requests;
}

/** The fastest the pacer lets a budget's requests go (per ms): its burst limit's rate. */
export function peakRate(budget: RequestBudget): number {
  const burst = burstOf(budget);
  return burst.requests / burst.windowMs;
}

/**
 * Graph counts a request when it arrives, a little after we count it: a request leaves our window a
 * margin later than it leaves Graph's, so jitter in transit cannot add up to a 429. A new
 * connection's handshake is counted exactly (restamp); what is left is a warm connection's transit
 * and the event loops on both ends, at most 70 ms measured on the bench's busy 2 cores. 1% of the
 * window, at least 100 ms: 100 ms of Excel's 10 s, which keeps 99% of the budget usable.
 */
function withMargin(budget: RequestBudget): RequestBudget {
  return { requests: budget.requests, windowMs: budget.windowMs + Math.max(100, budget.windowMs * 0.01) };
}
