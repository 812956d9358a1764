/**
 * Tenant leases (src/ledger/tenantLeases.ts): one holder per tenant across processes, taken and
 * renewed with the lease row's ETag, judged by the storage service's time.
 */
import { describe, expect, it } from "vitest";
import { inject } from "vitest";
import { SessionLedger } from "../src";
import { ServiceClock } from "../src/ledger/serviceClock";
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

describe("a lease judged by what the process knows of the service's time", () => {
  // The Date header has whole seconds: a process that has just begun learning the service's time
  // may find it almost a second later than it thought with its next answer. A short lease written
  // from the earlier estimate then looked lapsed at once, and its tenant's rows went back untried
  // (CI at 9defbd7: a 1 s tenant lease, the sweep's only tenant leasedElsewhere).
  it("a term is a whole term: a short lease stays held while the estimate catches up, and ends before it can have run out", async () => {
    const base = Math.floor(Date.now() / 1_000) * 1_000;
    let local = base + 950;
    // This host's clock and its monotonic clock alike here.
    const clock = new ServiceClock(() => new Date(local), () => local);
    const httpDate = (ms: number) => new Date(Math.floor(ms / 1_000) * 1_000).toUTCString();
    // Sent at .900, stamped at .920 in the service's time (same as this host's here), answered at .950.
    clock.observe(httpDate(base + 920), base + 900);
    expect(clock.now().getTime()).toBe(base);
    expect(clock.latest().getTime()).toBe(base + 1_050);
    const ledger = SessionLedger.fromConnectionString(inject("storageConnectionString"), uniqueTableName(), { serviceTime: clock });
    const lease = (await ledger.tenantLeases.acquire(TENANT, 1_000))!;
    expect(lease.held).toBe(true);

    // The next answer, stamped in the next second, moves the earliest estimate 940 ms on.
    local = base + 1_010;
    clock.observe(httpDate(base + 1_005), base + 1_000);
    expect(clock.now().getTime()).toBe(base + 1_000);
    expect(clock.latest().getTime(), "the latest bound is kept, the tightest").toBe(base + 1_110);
    expect(lease.held, "still within its term").toBe(true);

    // Held until a quarter term (the request's margin) before the latest the service's time can be its end.
    local = base + 950 + 1_000 - 250 - 1;
    expect(lease.held).toBe(true);
    local += 2;
    expect(lease.held).toBe(false);
    // Another holder, judging by the earliest the time can be, still sees it running then.
    expect(await ledger.tenantLeases.acquire(TENANT, 1_000)).toBeUndefined();
  });

  it("the latest bound is kept by a monotonic clock: a step of this host's clock does not move it, and a minute-old bound gives way to a fresh one", () => {
    let local = 10_000_000;
    let monotonic = 5_000;
    const clock = new ServiceClock(() => new Date(local), () => monotonic);
    // Sent 5 ms before it was answered; the service stamped 10_000_000 (a whole second).
    clock.observe(new Date(10_000_000).toUTCString(), monotonic - 5);
    expect(clock.latest().getTime()).toBe(10_001_005);
    // This host's clock goes back a minute, no answer since: the earliest follows it, the latest does not.
    local -= 60_000;
    monotonic += 100;
    expect(clock.latest().getTime()).toBe(10_001_105);
    expect(clock.now().getTime()).toBeLessThan(clock.latest().getTime());
    // Set forward instead: the latest is never below the earliest.
    local += 120_000;
    expect(clock.latest().getTime()).toBe(clock.now().getTime());
    // Over a minute later, a looser bound replaces the kept one: clocks drift apart over hours.
    monotonic += 61_000;
    const sentAt = monotonic - 400;
    clock.observe(new Date(10_062_000).toUTCString(), sentAt);
    expect(clock.latest().getTime()).toBe(10_062_000 + 1_000 + 400);
  });
});
