import { randomUUID } from "node:crypto";
import { odata, type TableClient } from "@azure/data-tables";
import { storageStatus, withTable } from "./tableClient";

/** What the leases table's name adds to the live table's: `<SESSIONS_TABLE>Leases`. */
export const LEASES_TABLE_SUFFIX = "Leases";
const PARTITION = "tenant";

export interface TenantLeasesOptions {
  /**
   * The storage service's time, the earliest it can be now: expiries are written and judged in it,
   * never in a host's clock. Another holder's lease is judged by it (it runs at least until then).
   */
  serviceNow: () => Date;
  /**
   * The latest the service's time can be now: a lease is written to last its term from it, and its
   * holder judges its own by it, so the holder stops before the lease can have run out and a term is
   * a whole term however little this process knows of the time. @default serviceNow
   */
  serviceLatest?: () => Date;
}

function latestOf(options: TenantLeasesOptions): Date {
  return (options.serviceLatest ?? options.serviceNow)();
}

/** Most sends a lease row carries (Excel's budget is 1,500 per window): a bound on what a row may hold. */
const MAX_SENDS = 5_000;

/**
 * The holder's sends still in the tenant's Excel window, in the service's time (ms), written with each
 * renewal and the release: the next holder counts them against the budget, so one budget holds
 * across a hand-over. A JSON array in a string column (well under its 64 KiB at Excel's 1,500).
 */
function parseSends(value: unknown): number[] {
  if (typeof value !== "string" || value.length === 0) return [];
  try {
    const parsed: unknown = JSON.parse(value);
    if (!Array.isArray(parsed)) return [];
    return parsed.filter((t): t is number => typeof t === "number" && Number.isFinite(t)).slice(-MAX_SENDS);
  } catch {
    return [];
  }
}

function formatSends(sends: readonly number[] | undefined): { recentSends?: string } {
  return sends === undefined ? {} : { recentSends: JSON.stringify(sends.slice(-MAX_SENDS).map(Math.round)) };
}

/**
 * One sender per tenant, across processes and instances: whatever sends closeSession for a tenant
 * (a sweep, a close request) does so only while it holds that tenant's lease, a row in
 * `<SESSIONS_TABLE>Leases` (PartitionKey `tenant`, RowKey the tenant id) with a holder and an expiry,
 * taken and renewed with the row's ETag. A row in the ledger's own account rather than a blob lease:
 * the same client, credential and role as the ledger, no second storage service to grant, and an
 * expiry of any length in the service's time (blob leases are 15-60 s or infinite).
 */
export class TenantLeases {
  constructor(
    private readonly client: TableClient,
    private readonly options: TenantLeasesOptions,
  ) {}

  serviceNow(): Date {
    return this.options.serviceNow();
  }

  /** How many tenants' leases run now, whoever holds them: the app's budget is shared among them. */
  async countHeld(): Promise<number> {
    const filter = odata`PartitionKey eq ${PARTITION} and leaseUntil gt ${this.serviceNow()}`;
    let held = 0;
    for await (const page of this.client.listEntities({ queryOptions: { filter, select: ["RowKey"] } }).byPage({ maxPageSize: 1_000 })) held += page.length;
    return held;
  }

  /**
   * Takes the tenant's lease for `leaseMs` (how long a dead holder keeps the tenant) if nobody else
   * holds it; undefined when another holder's lease is still running.
   */
  async acquire(tenantId: string, leaseMs: number): Promise<TenantLease | undefined> {
    return (await this.tryAcquire(tenantId, leaseMs)).lease;
  }

  /** `acquire`, saying until when another holder's lease runs where it got none. */
  async tryAcquire(tenantId: string, leaseMs: number): Promise<{ lease?: TenantLease; heldUntil?: Date }> {
    const holder = randomUUID();
    const now = this.options.serviceNow();
    const entity = { partitionKey: PARTITION, rowKey: tenantId, holder, leaseUntil: new Date(latestOf(this.options).getTime() + leaseMs), acquiredAt: now };
    let current: { etag: string; holder?: unknown; leaseUntil?: unknown; recentSends?: unknown } | undefined;
    try {
      current = await withTable(this.client, () => this.client.getEntity<{ holder?: unknown; leaseUntil?: unknown; recentSends?: unknown }>(PARTITION, tenantId));
    } catch (error) {
      if (storageStatus(error) !== 404) throw error;
    }
    try {
      if (!current) {
        const created = await this.client.createEntity(entity);
        return { lease: new TenantLease(this.client, { ...this.options, leaseMs }, tenantId, holder, created.etag ?? "", entity.leaseUntil, []) };
      }
      if (current.leaseUntil instanceof Date && current.leaseUntil.getTime() > now.getTime()) return { heldUntil: current.leaseUntil };
      // The previous holder's sends stay on the row until this holder writes its own.
      const previousSends = parseSends(current.recentSends);
      const taken = await this.client.updateEntity({ ...entity, ...formatSends(previousSends) }, "Replace", { etag: current.etag });
      return { lease: new TenantLease(this.client, { ...this.options, leaseMs }, tenantId, holder, taken.etag ?? "", entity.leaseUntil, previousSends) };
    } catch (error) {
      // Someone else created or took it between our read and our write.
      const status = storageStatus(error);
      if (status === 409 || status === 412) return {};
      throw error;
    }
  }
}

/**
 * A tenant's lease while this holder has it. `held` is false once its expiry is near (a renewal
 * did not land in time) or another holder took it: from then on nothing may be sent for the tenant.
 */
export class TenantLease {
  private lostValue = false;

  constructor(
    private readonly client: TableClient,
    private readonly options: TenantLeasesOptions & { leaseMs: number },
    readonly tenantId: string,
    private readonly holder: string,
    private etag: string,
    private leaseUntil: Date,
    /** The previous holders' sends still on the row (service time, ms): count them before sending. */
    readonly previousSends: readonly number[],
  ) {}

  /** Whether another holder took it (a renewal found the row changed) or this holder gave it up. */
  get lost(): boolean {
    return this.lostValue;
  }

  /** A lease is taken as lost a second (a quarter of a short lease) before it expires: a request decided on now arrives in time. */
  get held(): boolean {
    const safetyMs = Math.min(1_000, this.options.leaseMs / 4);
    return !this.lostValue && this.leaseUntil.getTime() - safetyMs > latestOf(this.options).getTime();
  }

  /**
   * Extends the lease, writing `sends` (this holder's sends still in the window, service time) when
   * given; false (and `held` false from then on) when it was taken by another holder.
   */
  async renew(sends?: readonly number[]): Promise<boolean> {
    if (this.lostValue) return false;
    const leaseUntil = new Date(latestOf(this.options).getTime() + this.options.leaseMs);
    try {
      const patch = { partitionKey: PARTITION, rowKey: this.tenantId, holder: this.holder, leaseUntil, ...formatSends(sends) };
      const response = await this.client.updateEntity(patch, "Merge", { etag: this.etag });
      this.etag = response.etag ?? this.etag;
      this.leaseUntil = leaseUntil;
      return true;
    } catch (error) {
      const status = storageStatus(error);
      if (status !== 412 && status !== 404) throw error;
      this.lostValue = true;
      return false;
    }
  }

  /** Gives the lease up for the next holder at once, with `sends` for it to count; a lease already lost is left as it is. */
  async release(sends?: readonly number[]): Promise<void> {
    if (this.lostValue) return;
    this.lostValue = true;
    try {
      const patch = { partitionKey: PARTITION, rowKey: this.tenantId, holder: "", leaseUntil: new Date(0), ...formatSends(sends) };
      await this.client.updateEntity(patch, "Merge", { etag: this.etag });
    } catch (error) {
      const status = storageStatus(error);
      if (status !== 412 && status !== 404) throw error;
    }
  }
}

/** Where a holder's sends are counted (its pacer), in the service's time: handed over with the lease. */
export interface SendLog {
  /** The tenant's sends still in its window. */
  recent(tenantId: string): number[];
  /** Counts the previous holder's sends. */
  seed(tenantId: string, sends: readonly number[]): void;
}

export interface HeldLeasesOptions {
  /** A renewal or a count that failed for a storage fault (the lease then runs out). */
  onError: (error: unknown) => void;
  /** Where this holder's sends are counted. @default none: no sends handed over */
  sends?: SendLog;
  /**
   * The share of the app's Excel budget this holder's tenants are due: its tenants ÷ every tenant
   * held by anyone, counted when it takes a tenant and with every renewal. @default not counted
   */
  onAppShare?: (share: number) => void;
}

/**
 * The leases one sweep (or close request) holds: taken as it meets each tenant, renewed in the
 * background every third of the lease, released when it ends. A renewal that fails leaves the lease
 * not `held`. With a `sends` log, the previous holder's sends are counted on taking, and this
 * holder's are written with every renewal and the release.
 */
export class HeldLeases {
  private readonly leases = new Map<string, TenantLease | undefined>();
  private readonly pending = new Map<string, Promise<TenantLease | undefined>>();
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  /** A count of every holder's tenants under way: one at a time. */
  private counting = false;

  private readonly onError: (error: unknown) => void;
  private readonly sends: SendLog | undefined;

  constructor(
    private readonly source: TenantLeases,
    private readonly leaseMs: number,
    private readonly options: HeldLeasesOptions,
  ) {
    this.onError = options.onError;
    this.sends = options.sends;
  }

  /** Whether this sweep may send for the tenant: takes its lease the first time it is asked. */
  async take(tenantId: string): Promise<boolean> {
    if (this.leases.has(tenantId)) {
      const lease = this.leases.get(tenantId);
      // Lapsed (a renewal came late) but nobody took it: the row is still ours to extend.
      if (lease && !lease.held && !lease.lost) await lease.renew(this.sends?.recent(tenantId)).catch(this.onError);
      return lease?.held ?? false;
    }
    let taking = this.pending.get(tenantId);
    if (!taking) {
      taking = this.takeOrWait(tenantId);
      this.pending.set(tenantId, taking);
    }
    const lease = await taking;
    this.pending.delete(tenantId);
    if (!this.leases.has(tenantId) && lease) this.sends?.seed(tenantId, lease.previousSends);
    this.leases.set(tenantId, lease);
    // Taken, but already short of its safety margin: the service's time as this process knows it
    // moved up to a second forward with an answer that came in meanwhile (a short lease then looks
    // lapsed at once, and the sweep left its own tenant as leasedElsewhere). Still ours: extend it.
    if (lease && !lease.held && !lease.lost) await lease.renew(this.sends?.recent(tenantId)).catch(this.onError);
    if (lease) this.timer ??= setInterval(() => this.renewAll(), this.leaseMs / 3);
    if (lease?.held) void this.countShare();
    return lease?.held ?? false;
  }

  /**
   * A lease another holder let run out (it died) ends within one term of its last renewal; a live
   * holder's has most of a term left. One that ends within a third of a term is waited for, once,
   * so a sweep started just after a crash does not leave the tenant for a whole sweep interval.
   */
  private async takeOrWait(tenantId: string): Promise<TenantLease | undefined> {
    const first = await this.source.tryAcquire(tenantId, this.leaseMs);
    if (first.lease || !first.heldUntil) return first.lease;
    // The service's time as this process knows it may lag by the Date header's second.
    const waitMs = first.heldUntil.getTime() - this.source.serviceNow().getTime() + 1_000;
    if (waitMs > this.leaseMs / 3 + 1_000) return undefined;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    return (await this.source.tryAcquire(tenantId, this.leaseMs)).lease;
  }

  /** Whether the tenant's lease is held now (a tenant never taken is not). */
  holds(tenantId: string): boolean {
    return this.leases.get(tenantId)?.held ?? false;
  }

  async releaseAll(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    // A renewal under way would otherwise land after the release, on the ETag the release just changed.
    await this.renewing;
    await Promise.all([...this.pending.values()]);
    await Promise.all([...this.leases.values()].map((lease) => lease?.release(this.sends?.recent(lease.tenantId)).catch(this.onError)));
  }

  private renewAll(): void {
    if (this.renewing) return;
    // A lease that lapsed is renewed too: its ETag still matches unless another holder took it.
    this.renewing = Promise.all([...this.leases.values()].map((lease) => (lease && !lease.lost ? lease.renew(this.sends?.recent(lease.tenantId)).catch(this.onError) : undefined))).then(() => {
      this.renewing = undefined;
    });
    // Beside the renewals, never in their way: a slow count held renewals back until short leases
    // lapsed, and every row of a lapsed tenant went back untried.
    void this.countShare();
  }

  /**
   * Excel's app budget is one for all of the app's senders, in every process: each keeps the share
   * its tenants are of all tenants held, so each tenant gets an equal share app-wide. A sender that
   * joins counts at once; one already sending learns of it at its next renewal.
   */
  private async countShare(): Promise<void> {
    const onAppShare = this.options.onAppShare;
    if (!onAppShare || this.counting) return;
    this.counting = true;
    try {
      const all = await this.source.countHeld();
      // Counted once the count is in, takes under way included: a tenant this holder took while
      // the count was asked for is then in both, or only here, never only there (counted before
      // the count, such tenants made a single sweep its own rival: 0.88 of the app's budget).
      const mine = [...this.leases.values()].filter((lease) => lease?.held).length + this.pending.size;
      if (mine > 0) onAppShare(Math.min(1, mine / Math.max(mine, all)));
    } catch (error) {
      this.onError(error);
    } finally {
      this.counting = false;
    }
  }
}
