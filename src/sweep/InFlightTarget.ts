import type { RequestBudget } from "../core/budget";
import { peakRate } from "./TenantPacer";

export interface InFlightTargetOptions {
  /** The tenant's Excel budget (EXCEL_BUDGET_REQUESTS per EXCEL_BUDGET_WINDOW). */
  tenantBudget: RequestBudget;
  /** The app's Excel budget across tenants (EXCEL_APP_BUDGET_REQUESTS per EXCEL_APP_BUDGET_WINDOW). */
  appBudget: RequestBudget;
  /** SWEEP_CONCURRENCY: never more in flight, whatever the estimate. */
  cap: number;
  /**
   * The latency assumed before the first answer: Graph's usual for an Excel call. Too high costs
   * one early burst within the budget; too low, a slow first second while the answers come in.
   * @default 1_000
   */
  initialLatencyMs?: number;
}

/**
 * Room above rate × latency: the estimate is a mean over a skewed distribution and lags a change,
 * and the pacer, not this number, is what must bind when the budget is the limit.
 */
const HEADROOM = 1.25;
/** In flight per tenant whatever the estimate, so a small budget or a near-zero latency still flows. */
const SPARE = 2;
/**
 * Weight of each new answer in the latency estimate: about the last 60 answers count, a fraction
 * of a second at a budget's rate. Measured on the bench at 1/16: Graph's skewed latencies moved
 * the estimate ±20% from one second to the next.
 */
const ALPHA = 1 / 32;

/**
 * How many requests each tenant keeps in flight. Little's law: a tenant that may send `rate`
 * requests a second keeps up with rate × latency requests in flight, so the target is the fastest
 * rate its pacer lets it send (twice its budget's rate while its window has room, no more than the
 * app's) times the latency observed lately, with headroom: at Graph's 1-3 s a few hundred per
 * tenant, at a local 30 ms a handful. Once the window is full the pacer starts a request only as
 * one leaves it, so no more than budget rate × latency are in flight whatever the target; the
 * target's work is the first window, sent in half of it instead of all of it. Not AIMD: the budget
 * is known beforehand, so there is nothing to probe for, and probing would spend 429s (and Graph's
 * Retry-After cooldowns) to find what the settings say. The latency is a moving average of the time
 * each request held its place, per tenant (tenants' files live on different SharePoint farms), the
 * sweep's average standing in until a tenant has answers of its own; it follows Graph as it slows
 * down or speeds up during a sweep.
 */
export class InFlightTarget {
  private readonly latency = new Map<string, number>();
  private overall: number;
  /** Requests per millisecond, at the pacer's fastest. */
  private rate: number;
  private appRate: number;

  constructor(private readonly options: InFlightTargetOptions) {
    this.overall = options.initialLatencyMs ?? 1_000;
    this.appRate = this.rate = 0;
    this.setAppShare(1);
  }

  /** Only `share` of the app's budget is this sweep's (the others' tenants are sent for elsewhere). */
  setAppShare(share: number): void {
    this.appRate = peakRate(this.options.appBudget) * share;
    this.rate = Math.min(peakRate(this.options.tenantBudget), this.appRate);
  }

  private inFlightAt(rate: number, latencyMs: number): number {
    return Math.min(this.options.cap, Math.ceil(HEADROOM * rate * latencyMs) + SPARE);
  }

  /** A request of `tenant` answered after `ms` in flight. */
  observe(tenant: string, ms: number): void {
    const before = this.latency.get(tenant);
    this.latency.set(tenant, before === undefined ? ms : before + ALPHA * (ms - before));
    this.overall += ALPHA * (ms - this.overall);
  }

  /** The latency the targets assume for `tenant` now (ms). */
  latencyMs(tenant?: string): number {
    return (tenant !== undefined ? this.latency.get(tenant) : undefined) ?? this.overall;
  }

  /** Requests `tenant` keeps in flight. */
  forTenant(tenant: string): number {
    return this.inFlightAt(this.rate, this.latencyMs(tenant));
  }

  /**
   * Requests the sweep keeps in flight for `tenants` together: theirs, within the app's budget and
   * the cap; before any tenant is known, one tenant's at the sweep's latency.
   */
  forTenants(tenants: Iterable<string>): number {
    let sum = 0;
    for (const tenant of tenants) sum += this.forTenant(tenant);
    return Math.min(this.inFlightAt(this.appRate, this.overall), sum === 0 ? this.inFlightAt(this.rate, this.overall) : sum);
  }
}
