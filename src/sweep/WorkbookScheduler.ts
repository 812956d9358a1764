import type { SendLog } from "../ledger/tenantLeases";
import { InFlightTarget } from "./InFlightTarget";
import { ReadyWorkbooks } from "./ReadyWorkbooks";
import { burstRequests, TenantPacer, takeSendSlot } from "./TenantPacer";

/** One unit of work: which tenant's budget it spends and which workbook it must not overlap on. */
export interface ScheduledItem {
  readonly tenant: string;
  readonly workbook: string;
}

/**
 * A cooldown longer than this gives the tenant's waiting rows back (with the cooldown as their next
 * attempt) instead of holding them claimed, where they would keep other tenants' rows from being read.
 */
const LONG_COOLDOWN_MS = 5_000;

/**
 * Workbooks with work the scheduler asks for per request it keeps in flight. More than one: while
 * the budget's window is full, ready workbooks wait, and the rows behind them must already be
 * claimed when it frees; and the busiest workbooks must be known early to be started first
 * (ReadyWorkbooks). Measured on the bench (9 sessions per workbook at 1.3 s): at 1 the last users'
 * rows were claimed 27 s into a 40 s sweep.
 */
const WORKBOOKS_PER_SLOT = 4;

/** Any cooldown Graph asked for while running an item. */
export interface ItemResult {
  cooldownUntil?: number;
}

import type { SendSlot } from "./closeRecordedSession";
import type { RequestBudget } from "../core/budget";

export interface WorkbookSchedulerOptions<T extends ScheduledItem> {
  /** Never more items running at once, whatever the budgets and the latency would allow (SWEEP_CONCURRENCY). */
  concurrency: number;
  tenantBudget: RequestBudget;
  /** The app's budget across tenants. @default none: the tenants' budgets alone */
  appBudget?: RequestBudget;
  /** The end of the sweep's time budget (epoch ms): no wait is started that would outlast it. */
  deadline: number;
  /** The sweep's one stop signal (its caller's, its time budget's, a fault's): nothing new starts once it fires. */
  signal: AbortSignal;
  /**
   * How much later than sent a request sent `sentAgoMs` ago may have reached Graph (a new
   * connection's handshake): its slot is counted from then. @default 0
   */
  sendDelayMs?: (sentAgoMs: number) => number;
  /** Runs an item; it awaits `waitForSendSlot` right before its Graph request. */
  run: (item: T, waitForSendSlot: SendSlot) => Promise<ItemResult>;
  /** Items that will not run in this sweep because Graph asked their tenant to wait past the deadline. */
  onDeferred: (items: T[], until: number) => void;
  /** Items that will not run in this sweep for want of time, or because the scheduler stopped. */
  onLeft: (items: T[]) => void;
  /** A run that threw; the caller decides whether that stops the sweep (through `signal`). */
  onError: (error: unknown, item: T) => void;
  now?: () => number;
}

interface Workbook<T> {
  readonly tenant: string;
  readonly items: T[];
  busy: boolean;
}

interface Tenant {
  /** Workbooks of this tenant with work waiting and nothing in flight. */
  readonly ready: ReadyWorkbooks;
  /** Items started and not past their send gate yet: they will want a slot. */
  unsent: number;
  /** Items started and not finished. */
  inFlight: number;
}

/**
 * Runs items one at a time per workbook (Graph's rule for workbook calls), each tenant paced under
 * its request budget and all of them under the app's, a tenant's Retry-After holding back that
 * tenant only. Each tenant keeps as many items running as its budget's rate times Graph's latency
 * calls for (InFlightTarget), never more than `concurrency` in all. Tenants take turns for every
 * start and every slot of the app's budget, so one tenant's backlog does not starve another's.
 */
export class WorkbookScheduler<T extends ScheduledItem> {
  private readonly pacer: TenantPacer;
  private readonly target: InFlightTarget;
  private readonly workbooks = new Map<string, Workbook<T>>();
  private readonly tenants = new Map<string, Tenant>();
  private readonly now: () => number;
  private inFlight = 0;
  /** Items started and not past their send gate yet, all tenants'. */
  private unsent = 0;
  private queued = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private waiters: (() => void)[] = [];
  private nextTenant = 0;
  private appShare = 1;
  private pendingShare = 1;
  private shareTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: WorkbookSchedulerOptions<T>) {
    this.pacer = new TenantPacer(options.tenantBudget, options.appBudget);
    this.target = new InFlightTarget({
      tenantBudget: options.tenantBudget,
      appBudget: options.appBudget ?? { requests: Number.MAX_SAFE_INTEGER, windowMs: 1 },
      cap: options.concurrency,
    });
    this.now = options.now ?? Date.now;
    if (options.signal.aborted) this.stop();
    else options.signal.addEventListener("abort", this.onAbort, { once: true });
  }

  private readonly onAbort = (): void => this.stop();

  /**
   * When Graph has asked `tenant` to wait longer than this sweep should hold rows for it (a long
   * cooldown, or one past the deadline): the end of the wait; otherwise undefined.
   */
  heldBackUntil(tenant: string): number | undefined {
    const until = this.pacer.pausedUntil(tenant);
    const now = this.now();
    return until - now > LONG_COOLDOWN_MS || until >= this.options.deadline ? until : undefined;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  add(item: T): void {
    if (this.stopped) throw new Error("The scheduler has stopped.");
    let workbook = this.workbooks.get(item.workbook);
    if (!workbook) this.workbooks.set(item.workbook, (workbook = { tenant: item.tenant, items: [], busy: false }));
    workbook.items.push(item);
    this.queued++;
    if (!workbook.busy && workbook.items.length === 1) this.tenant(item.tenant).ready.push(item.workbook, 1);
    this.pump();
  }

  /**
   * Resolves once the scheduler could use more work (fewer workbooks ready to start or running
   * than WORKBOOKS_PER_SLOT times what it would keep in flight now) and fewer than
   * `pendingPerSlot` items per such slot wait, with how many more workbooks it could take; or
   * with 0 once it has stopped. Rows come to it sorted by user, a handful of workbooks per user:
   * counting workbooks, not rows, is what keeps every slot busy.
   */
  async waitForDemand(pendingPerSlot: number): Promise<number> {
    while (!this.stopped) {
      const slots = this.slots();
      // A burst's worth per tenant at hand (within the cap) when its window frees: at a local 30 ms
      // a handful of slots held ~80 rows a tenant, sent in 0.4 s, and the burst then waited on
      // claims for a second or two (the bench's budget scenario: 50 and 82 sends in the seconds
      // after the window freed, 0.80-0.94 of the budget used). At Graph's latency slots hold more.
      const reserve = Math.min(this.options.concurrency, burstRequests(this.options.tenantBudget)) * this.tenants.size;
      const free = Math.max(WORKBOOKS_PER_SLOT * slots, reserve) - this.readyWorkbooks() - this.inFlight;
      if (this.queued < Math.max(pendingPerSlot * slots, reserve) && free > 0) return free;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return 0;
  }

  /** Items the scheduler would keep running now, for the tenants it has met. */
  slots(): number {
    return this.target.forTenants(this.tenants.keys());
  }

  private readyWorkbooks(): number {
    let ready = 0;
    for (const tenant of this.tenants.values()) ready += tenant.ready.size;
    return ready;
  }

  /**
   * This scheduler may use `share` (0-1] of the app's budget: other processes send for other
   * tenants. A smaller share holds at once; a larger one (another sender finished) only a window
   * later, once that sender's last requests have left Graph's window: taken at once, it drew 16 ×
   * 429 in a burst in the test of two sweeps.
   */
  setAppShare(share: number): void {
    // The same larger share counted again before it holds: its window is already running.
    if (this.shareTimer && share === this.pendingShare) return;
    if (this.shareTimer) clearTimeout(this.shareTimer);
    this.shareTimer = undefined;
    this.pendingShare = share;
    const apply = () => {
      this.shareTimer = undefined;
      this.appShare = share;
      this.pacer.setAppShare(share);
      this.target.setAppShare(share);
      this.pump();
    };
    if (share <= this.appShare || !this.options.appBudget) return apply();
    this.shareTimer = setTimeout(apply, this.options.appBudget.windowMs);
    this.shareTimer.unref();
  }

  /** The tenants' sends, handed over with their leases (TenantPacer.sendLog). */
  sendLog(serviceOffsetMs: () => number): SendLog {
    return this.pacer.sendLog(this.now, serviceOffsetMs);
  }

  /**
   * Takes back every item of `tenantId` not started yet (its items in flight finish): the sweep
   * must stop sending to that tenant. The caller gives them back.
   */
  withdraw(tenantId: string): T[] {
    const items: T[] = [];
    for (const [key, workbook] of this.workbooks) {
      if (workbook.tenant !== tenantId) continue;
      items.push(...workbook.items.splice(0));
      if (!workbook.busy) this.workbooks.delete(key);
    }
    const tenant = this.tenants.get(tenantId);
    tenant?.ready.drain();
    this.queued -= items.length;
    this.wake();
    return items;
  }

  /** Stops starting items; what waits goes to onLeft. Items in flight finish. */
  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimer();
    if (this.shareTimer) clearTimeout(this.shareTimer);
    const left: T[] = [];
    for (const workbook of this.workbooks.values()) left.push(...workbook.items.splice(0));
    this.queued = 0;
    if (left.length > 0) this.options.onLeft(left);
    this.wake();
  }

  /** Resolves when nothing waits and nothing is in flight; the scheduler is stopped after. */
  async drain(): Promise<void> {
    while (this.inFlight > 0 || (this.queued > 0 && !this.stopped)) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.options.signal.removeEventListener("abort", this.onAbort);
    this.stop();
  }

  private tenant(id: string): Tenant {
    let tenant = this.tenants.get(id);
    if (!tenant) this.tenants.set(id, (tenant = { ready: new ReadyWorkbooks(), unsent: 0, inFlight: 0 }));
    return tenant;
  }

  private pump(): void {
    if (this.stopped) return;
    const now = this.now();
    if (now >= this.options.deadline) return;
    let earliest = Infinity;
    // Each start goes to the tenant that has sent the fewest requests in the app's window (and
    // promised the fewest slots), among those that can start now: where the app's budget binds,
    // each tenant with work gets an equal share of it, and a tenant whose rows came late is not
    // left behind the ones that took the first window. Ties go round-robin.
    const ids = [...this.tenants.keys()];
    while (this.inFlight < this.options.concurrency) {
      let chosen: string | undefined;
      let fewest = Infinity;
      for (let i = 0; i < ids.length; i++) {
        const id = ids[(this.nextTenant + i) % ids.length]!;
        const tenant = this.tenants.get(id)!;
        if (tenant.ready.size === 0 || tenant.inFlight >= this.target.forTenant(id)) continue;
        const wait = this.pacer.waitMs(id, now, tenant.unsent, this.unsent);
        if (wait > 0) {
          if (now + wait >= this.options.deadline || this.heldBackUntil(id) !== undefined) this.giveUpTenant(id, tenant);
          else earliest = Math.min(earliest, now + wait);
          continue;
        }
        const sent = this.pacer.sentInWindow(id, now) + tenant.unsent;
        if (sent < fewest) {
          fewest = sent;
          chosen = id;
        }
      }
      if (chosen === undefined) break;
      this.nextTenant = (ids.indexOf(chosen) + 1) % ids.length;
      this.start(chosen, this.tenants.get(chosen)!);
    }
    if (earliest < Infinity) this.wakeAt(earliest);
    this.wake();
  }

  private start(tenantId: string, tenant: Tenant): void {
    const key = tenant.ready.pop()!;
    const workbook = this.workbooks.get(key)!;
    const item = workbook.items.shift()!;
    workbook.busy = true;
    this.queued--;
    this.inFlight++;
    tenant.inFlight++;
    tenant.unsent++;
    this.unsent++;
    const startedAt = this.now();
    let gated = false;
    let sentAt: number | undefined;
    const waitForSendSlot: SendSlot = async () => {
      if (!gated) {
        gated = true;
        tenant.unsent--;
        this.unsent--;
      }
      // A claimed item is finished even after the deadline or a stop, if a slot is free.
      const slot = await takeSendSlot(this.pacer, tenantId, { now: this.now, deadline: this.options.deadline, stopped: () => this.stopped });
      if (slot.send) sentAt = slot.at;
      return slot;
    };
    void this.options
      .run(item, waitForSendSlot)
      .then(
        (result) => {
          if (result.cooldownUntil !== undefined) this.pacer.pause(tenantId, result.cooldownUntil);
        },
        (error: unknown) => this.options.onError(error, item),
      )
      .finally(() => {
        if (!gated) {
          tenant.unsent--;
          this.unsent--;
        }
        if (sentAt !== undefined) {
          // The time the item held its place, its token and its wait for a slot included: what Little's law counts.
          this.target.observe(tenantId, this.now() - startedAt);
          const late = this.options.sendDelayMs?.(this.now() - sentAt) ?? 0;
          if (late > 0) this.pacer.restamp(tenantId, sentAt, sentAt + late);
        }
        this.inFlight--;
        tenant.inFlight--;
        workbook.busy = false;
        if (workbook.items.length > 0 && !this.stopped) tenant.ready.push(key, workbook.items.length);
        else if (workbook.items.length === 0) this.workbooks.delete(key);
        this.pump();
        this.wake();
      });
  }

  /**
   * The tenant cannot send again before the deadline, or Graph asked it for a long wait: its
   * waiting items go back untried, as deferred (to be written with Graph's cooldown) when Graph
   * asked for the wait.
   */
  private giveUpTenant(id: string, tenant: Tenant): void {
    const items: T[] = [];
    for (const key of tenant.ready.drain()) {
      const workbook = this.workbooks.get(key)!;
      items.push(...workbook.items.splice(0));
      if (!workbook.busy) this.workbooks.delete(key);
    }
    this.queued -= items.length;
    if (items.length === 0) return;
    const heldBack = this.heldBackUntil(id);
    if (heldBack !== undefined) this.options.onDeferred(items, heldBack);
    else this.options.onLeft(items);
  }

  private wakeAt(at: number): void {
    if (at >= this.timerAt) return;
    this.clearTimer();
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.pump();
    }, Math.max(0, at - this.now()));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}
