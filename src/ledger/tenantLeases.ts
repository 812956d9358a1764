import { randomUUID } from "node:crypto";
import type { TableClient } from "@azure/data-tables";
import { storageStatus, withTable } from "./tableClient";

/** What the leases table's name adds to the live table's: `<SESSIONS_TABLE>Leases`. */
export const LEASES_TABLE_SUFFIX = "Leases";
const PARTITION = "tenant";

export interface TenantLeasesOptions {
  /** The storage service's time: expiries are written and judged in it, never in a host's clock. */
  serviceNow: () => Date;
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

  /**
   * Takes the tenant's lease for `leaseMs` (how long a dead holder keeps the tenant) if nobody else
   * holds it; undefined when another holder's lease is still running.
   */
  async acquire(tenantId: string, leaseMs: number): Promise<TenantLease | undefined> {
    const holder = randomUUID();
    const now = this.options.serviceNow();
    const entity = { partitionKey: PARTITION, rowKey: tenantId, holder, leaseUntil: new Date(now.getTime() + leaseMs), acquiredAt: now };
    let current: { etag: string; holder?: unknown; leaseUntil?: unknown } | undefined;
    try {
      current = await withTable(this.client, () => this.client.getEntity<{ holder?: unknown; leaseUntil?: unknown }>(PARTITION, tenantId));
    } catch (error) {
      if (storageStatus(error) !== 404) throw error;
    }
    try {
      if (!current) {
        const created = await this.client.createEntity(entity);
        return new TenantLease(this.client, { ...this.options, leaseMs }, tenantId, holder, created.etag ?? "", entity.leaseUntil);
      }
      if (current.leaseUntil instanceof Date && current.leaseUntil.getTime() > now.getTime()) return undefined;
      const taken = await this.client.updateEntity(entity, "Replace", { etag: current.etag });
      return new TenantLease(this.client, { ...this.options, leaseMs }, tenantId, holder, taken.etag ?? "", entity.leaseUntil);
    } catch (error) {
      // Someone else created or took it between our read and our write.
      const status = storageStatus(error);
      if (status === 409 || status === 412) return undefined;
      throw error;
    }
  }
}

/**
 * A tenant's lease while this holder has it. `held` is false once its expiry is near (a renewal
 * did not land in time) or another holder took it: from then on nothing may be sent for the tenant.
 */
export class TenantLease {
  private lost = false;

  constructor(
    private readonly client: TableClient,
    private readonly options: TenantLeasesOptions & { leaseMs: number },
    readonly tenantId: string,
    private readonly holder: string,
    private etag: string,
    private leaseUntil: Date,
  ) {}

  /** A lease is taken as lost a second (a quarter of a short lease) before it expires: a request decided on now arrives in time. */
  get held(): boolean {
    const safetyMs = Math.min(1_000, this.options.leaseMs / 4);
    return !this.lost && this.leaseUntil.getTime() - safetyMs > this.options.serviceNow().getTime();
  }

  /** Extends the lease; false (and `held` false from then on) when it was taken by another holder. */
  async renew(): Promise<boolean> {
    if (this.lost) return false;
    const leaseUntil = new Date(this.options.serviceNow().getTime() + this.options.leaseMs);
    try {
      const response = await this.client.updateEntity({ partitionKey: PARTITION, rowKey: this.tenantId, holder: this.holder, leaseUntil }, "Merge", { etag: this.etag });
      this.etag = response.etag ?? this.etag;
      this.leaseUntil = leaseUntil;
      return true;
    } catch (error) {
      const status = storageStatus(error);
      if (status !== 412 && status !== 404) throw error;
      this.lost = true;
      return false;
    }
  }

  /** Gives the lease up for the next holder at once; a lease already lost is left as it is. */
  async release(): Promise<void> {
    if (this.lost) return;
    this.lost = true;
    try {
      await this.client.updateEntity({ partitionKey: PARTITION, rowKey: this.tenantId, holder: "", leaseUntil: new Date(0) }, "Merge", { etag: this.etag });
    } catch (error) {
      const status = storageStatus(error);
      if (status !== 412 && status !== 404) throw error;
    }
  }
}

/**
 * The leases one sweep holds: taken as it meets each tenant, renewed in the background every third
 * of the lease, released when the sweep ends. A renewal that fails leaves the lease not `held`.
 */
export class HeldLeases {
  private readonly leases = new Map<string, TenantLease | undefined>();
  private readonly pending = new Map<string, Promise<TenantLease | undefined>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: TenantLeases,
    private readonly leaseMs: number,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Whether this sweep may send for the tenant: takes its lease the first time it is asked. */
  async take(tenantId: string): Promise<boolean> {
    if (this.leases.has(tenantId)) return this.leases.get(tenantId)?.held ?? false;
    let taking = this.pending.get(tenantId);
    if (!taking) {
      taking = this.source.acquire(tenantId, this.leaseMs);
      this.pending.set(tenantId, taking);
    }
    const lease = await taking;
    this.pending.delete(tenantId);
    this.leases.set(tenantId, lease);
    if (lease) this.timer ??= setInterval(() => void this.renewAll(), this.leaseMs / 3);
    return lease?.held ?? false;
  }

  /** Whether the tenant's lease is held now (a tenant never taken is not). */
  holds(tenantId: string): boolean {
    return this.leases.get(tenantId)?.held ?? false;
  }

  async releaseAll(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all([...this.pending.values()]);
    await Promise.all([...this.leases.values()].map((lease) => lease?.release().catch(this.onError)));
  }

  private async renewAll(): Promise<void> {
    await Promise.all([...this.leases.values()].map((lease) => (lease?.held ? lease.renew().catch(this.onError) : undefined)));
  }
}
