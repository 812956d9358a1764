/**
 * Tenant leases (src/ledger/tenantLeases.ts): one holder per tenant across processes, taken and
 * renewed with the lease row's ETag, judged by the storage service's time.
 */
import { describe, expect, it } from "vitest";
import { inject } from "vitest";
import { SessionLedger } from "../src";
import { HeldLeases } from "../src/ledger/tenantLeases";
import { uniqueTableName } from "./support/ledgerFixture";

const TENANT = "11111111-1111-4111-8111-111111111111";
const OTHER = "22222222-2222-4222-8222-222222222222";

/** Two processes' ledgers over one table, their service time stood in and moved by hand. */
function twoLedgers() {
  const tableName = uniqueTableName();
  const service = { offsetMs: 0 };
  const serviceTime = { calibrated: true, now: () => new Date(Date.now() + service.offsetMs) };
  const make = () => SessionLedger.fromConnectionString(inject("storageConnectionString"), tableName, { serviceTime });
  return { a: make(), b: make(), service };
}

describe("tenant leases", () => {
  it("one holder at a time; another may take it once it expired, and the old holder's renewal then fails", async () => {
    const { a, b, service } = twoLedgers();
    const first = await a.tenantLeases.acquire(TENANT, 30_000);
    expect(first?.held).toBe(true);
    expect(await b.tenantLeases.acquire(TENANT, 30_000), "held elsewhere").toBeUndefined();
    // Another tenant is free.
    expect((await b.tenantLeases.acquire(OTHER, 30_000))?.held).toBe(true);

    expect(await first!.renew()).toBe(true);
    service.offsetMs += 31_000;
    expect(first!.held, "expired by the service's time").toBe(false);
    const second = await b.tenantLeases.acquire(TENANT, 30_000);
    expect(second?.held).toBe(true);
    expect(await first!.renew(), "taken by another holder").toBe(false);
    expect(first!.held).toBe(false);
    // Its release does not free what is now the other's.
    await first!.release();
    expect(await a.tenantLeases.acquire(TENANT, 30_000)).toBeUndefined();

    await second!.release();
    expect((await a.tenantLeases.acquire(TENANT, 30_000))?.held, "released: free at once").toBe(true);
  });

  it("two takers racing for a free tenant: exactly one wins", async () => {
    const { a, b } = twoLedgers();
    for (let round = 0; round < 10; round++) {
      const tenant = `${round}1111111-1111-4111-8111-111111111111`;
      const results = await Promise.all([a.tenantLeases.acquire(tenant, 30_000), b.tenantLeases.acquire(tenant, 30_000), a.tenantLeases.acquire(tenant, 30_000)]);
      expect(results.filter((lease) => lease?.held)).toHaveLength(1);
    }
  });

  it("a sweep's held leases renew in the background and are released at its end", async () => {
    const { a, b } = twoLedgers();
    const held = new HeldLeases(a.tenantLeases, 1_500, {
      onError: (error) => {
        throw error;
      },
    });
    expect(await held.take(TENANT)).toBe(true);
    expect(await held.take(TENANT), "asked again: still held").toBe(true);
    // Past the lease's first term: renewals kept it.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(held.holds(TENANT)).toBe(true);
    expect(await b.tenantLeases.acquire(TENANT, 1_500)).toBeUndefined();
    await held.releaseAll();
    expect(held.holds(TENANT)).toBe(false);
    expect((await b.tenantLeases.acquire(TENANT, 1_500))?.held).toBe(true);
  });

  it("hands the holder's sends still in the window to the next holder, in the service's time", async () => {
    const { a, b } = twoLedgers();
    const first = await a.tenantLeases.acquire(TENANT, 30_000);
    const sends = [Date.now() - 2_000, Date.now() - 1_000, Date.now()];
    expect(await first!.renew(sends.slice(0, 2))).toBe(true);
    await first!.release(sends);
    const next = await b.tenantLeases.acquire(TENANT, 30_000);
    expect(next?.previousSends).toEqual(sends);
    // Taken over after its holder died: the sends of its last renewal.
    const dead = await a.tenantLeases.acquire(OTHER, 1_000);
    await dead!.renew(sends.slice(0, 1));
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await b.tenantLeases.acquire(OTHER, 1_000))?.previousSends).toEqual(sends.slice(0, 1));
  });
});
