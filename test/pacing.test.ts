import { describe, expect, it } from "vitest";
import { InFlightTarget } from "../src/sweep/InFlightTarget";
import { ReadyWorkbooks } from "../src/sweep/ReadyWorkbooks";
import { SendWindow } from "../src/sweep/SendWindow";
import { burstRequests, TenantPacer } from "../src/sweep/TenantPacer";
import { readAhead } from "../src/utils/readAhead";
import { WorkbookScheduler, type ScheduledItem } from "../src/sweep/WorkbookScheduler";

const UNLIMITED = { requests: Number.MAX_SAFE_INTEGER, windowMs: 1 };

describe("InFlightTarget", () => {
  it("keeps the pacer's fastest rate times the observed latency in flight, with headroom, and follows the latency", () => {
    const target = new InFlightTarget({ tenantBudget: { requests: 1_500, windowMs: 10_000 }, appBudget: UNLIMITED, cap: 10_000, initialLatencyMs: 1_000 });
    // Before any answer: the pacer's 300/s (twice the budget's rate, while its window has room) × 1 s × 1.25, and 2 spare.
    expect(target.forTenant("a")).toBe(377);
    for (let i = 0; i < 400; i++) target.observe("a", 3_000);
    expect(target.latencyMs("a")).toBeCloseTo(3_000, 0);
    expect(target.forTenant("a")).toBe(1_127);
    // Graph speeds up during the sweep: the target comes down within a few hundred answers (about a second's).
    for (let i = 0; i < 300; i++) target.observe("a", 30);
    expect(target.forTenant("a")).toBeLessThan(20);
    // A tenant without answers of its own borrows the sweep's estimate.
    expect(target.latencyMs("b")).toBeCloseTo(target.latencyMs(), 5);
  });

  it("never exceeds the app's rate for one tenant, the app's budget for all, or the cap", () => {
    const app = { requests: 5_000, windowMs: 10_000 };
    const target = new InFlightTarget({ tenantBudget: { requests: 1_000_000, windowMs: 10_000 }, appBudget: app, cap: 10_000, initialLatencyMs: 1_000 });
    expect(target.forTenant("a")).toBe(1_252);
    const tenants = Array.from({ length: 10 }, (_, i) => `t${i}`);
    expect(target.forTenants(tenants)).toBe(1_252);
    const capped = new InFlightTarget({ tenantBudget: { requests: 1_000_000, windowMs: 10_000 }, appBudget: app, cap: 100 });
    expect(capped.forTenant("a")).toBe(100);
    expect(capped.forTenants(tenants)).toBe(100);
  });
});

describe("TenantPacer", () => {
  it("holds every tenant to the app's budget as well as its own", () => {
    const pacer = new TenantPacer({ requests: 3, windowMs: 1_000 }, { requests: 4, windowMs: 1_000 });
    for (let i = 0; i < 3; i++) pacer.record("a", 0);
    expect(pacer.waitMs("a", 0)).toBeGreaterThan(0);
    expect(pacer.waitMs("b", 0)).toBe(0);
    pacer.record("b", 0);
    // The app's fourth request is gone: b waits too, for the window (and the pacer's 100 ms margin) to pass.
    expect(pacer.waitMs("b", 10)).toBe(1_090);
    // Promised slots count: two tenants' pending sends against the app's budget.
    const fresh = new TenantPacer({ requests: 3, windowMs: 1_000 }, { requests: 4, windowMs: 1_000 });
    expect(fresh.waitMs("a", 0, 1, 3)).toBe(0);
    expect(fresh.waitMs("a", 0, 1, 4)).toBeGreaterThan(0);
  });

  it("counts a previous holder's sends for the tenant, not again for the app", () => {
    const pacer = new TenantPacer({ requests: 2, windowMs: 1_000 }, { requests: 3, windowMs: 1_000 });
    pacer.seed("a", [0, 0]);
    expect(pacer.waitMs("a", 0)).toBeGreaterThan(0);
    expect(pacer.waitMs("b", 0, 0, 2)).toBe(0);
  });
});

interface Item extends ScheduledItem {
  readonly id: number;
}

/**
 * Runs `items` through a scheduler whose runs take `latencyMs()` each after their send slot, and
 * records every send and how many were in flight per tenant.
 */
async function schedule(items: Item[], options: { tenantBudget: { requests: number; windowMs: number }; appBudget?: { requests: number; windowMs: number }; latencyMs: (item: Item) => number; concurrency?: number }) {
  const sends: { tenant: string; at: number; inFlight: number }[] = [];
  const finished = new Map<number, number>();
  const inFlight = new Map<string, number>();
  const maxInFlight = new Map<string, number>();
  let perWorkbookOverlap = 0;
  const busy = new Set<string>();
  const started = Date.now();
  const controller = new AbortController();
  const scheduler = new WorkbookScheduler<Item>({
    concurrency: options.concurrency ?? 10_000,
    tenantBudget: options.tenantBudget,
    ...(options.appBudget && { appBudget: options.appBudget }),
    deadline: Date.now() + 60_000,
    signal: controller.signal,
    run: async (item, waitForSendSlot) => {
      if (busy.has(item.workbook)) perWorkbookOverlap++;
      busy.add(item.workbook);
      const count = (inFlight.get(item.tenant) ?? 0) + 1;
      inFlight.set(item.tenant, count);
      maxInFlight.set(item.tenant, Math.max(maxInFlight.get(item.tenant) ?? 0, count));
      const slot = await waitForSendSlot();
      expect(slot.send).toBe(true);
      sends.push({ tenant: item.tenant, at: Date.now() - started, inFlight: inFlight.get(item.tenant)! });
      await new Promise((resolve) => setTimeout(resolve, options.latencyMs(item)));
      inFlight.set(item.tenant, inFlight.get(item.tenant)! - 1);
      busy.delete(item.workbook);
      finished.set(item.id, Date.now() - started);
      return {};
    },
    onDeferred: () => expect.unreachable("nothing is deferred"),
    onLeft: () => expect.unreachable("nothing is left"),
    onError: (error) => expect.unreachable(String(error)),
  });
  for (const item of items) scheduler.add(item);
  await scheduler.drain();
  return { sends, finished, maxInFlight, perWorkbookOverlap, wallMs: Date.now() - started };
}

/** Most sends within any `windowMs`, of `tenant` or of all. */
function mostInWindow(sends: { tenant: string; at: number }[], windowMs: number, tenant?: string): number {
  const times = sends.filter((s) => tenant === undefined || s.tenant === tenant).map((s) => s.at).sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < times.length; i++) {
    while (times[i]! - times[j]! >= windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

function itemsOf(tenant: string, count: number, from: number): Item[] {
  return Array.from({ length: count }, (_, i) => ({ id: from + i, tenant, workbook: `${tenant}/book-${i}` }));
}

function interleave<T>(...lists: T[][]): T[] {
  const out: T[] = [];
  for (let i = 0; out.length < lists.reduce((n, l) => n + l.length, 0); i++) for (const list of lists) if (i < list.length) out.push(list[i]!);
  return out;
}

describe("WorkbookScheduler at Graph-like latency", () => {
  it("keeps rate × latency in flight per tenant: fills the budget without bursting it", async () => {
    // 400 a second per tenant at 100 ms: 40 in flight fill it; a fixed 128 would burst 128 at once.
    const budget = { requests: 200, windowMs: 500 };
    const items = [...itemsOf("a", 600, 0), ...itemsOf("b", 600, 600)];
    const result = await schedule(items, { tenantBudget: budget, latencyMs: () => 100 });

    for (const tenant of ["a", "b"]) {
      expect(mostInWindow(result.sends, budget.windowMs, tenant)).toBeLessThanOrEqual(budget.requests);
      // The first guess (1 s) lets a window's worth start at once; once answers come in, the
      // pacer's fastest 0.8/ms × 100 ms × 1.25 + 2 = 102, a little more for timers that fire
      // late; and once the window is full, only what leaves it: not the window's 200.
      expect(result.maxInFlight.get(tenant)).toBeLessThanOrEqual(budget.requests);
      const later = result.sends.filter((s) => s.tenant === tenant).slice(budget.requests);
      expect(Math.max(...later.map((s) => s.inFlight))).toBeLessThanOrEqual(120);
    }
    expect(result.perWorkbookOverlap).toBe(0);
    // 600 per tenant at 200 per 0.5 s (and the pacer's 250 ms margin): three windows of sends.
    expect(result.sends).toHaveLength(1_200);
  });

  it("shares the app's budget between tenants in turn: a small backlog is not starved by a large one", async () => {
    const app = { requests: 150, windowMs: 500 };
    // Claimed as a sweep claims them: users of every tenant mixed in the ledger's order.
    const items = interleave(itemsOf("big1", 500, 0), itemsOf("small", 30, 1_000), itemsOf("big2", 500, 2_000));
    const result = await schedule(items, { tenantBudget: { requests: 1_000, windowMs: 500 }, appBudget: app, latencyMs: () => 20 });

    expect(mostInWindow(result.sends, app.windowMs)).toBeLessThanOrEqual(app.requests);
    const finishedOf = (tenant: string) => items.filter((i) => i.tenant === tenant).map((i) => result.finished.get(i.id)!);
    // A fair share of the app's 150 per 0.5 s is 50 per window for each of the three: the small
    // tenant's 30 go out in the first window, not spread over the big tenants' ten.
    expect(Math.max(...finishedOf("small"))).toBeLessThan(app.windowMs);
    const firstWindow = result.sends.filter((s) => s.at < app.windowMs / 2);
    const share = (tenant: string) => firstWindow.filter((s) => s.tenant === tenant).length;
    expect(Math.abs(share("big1") - share("big2"))).toBeLessThanOrEqual(5);
  });
});

describe("WorkbookScheduler's demand for claimed work", () => {
  it("holds a burst's worth of a tenant's work while its window is full, even where latency is tiny: the burst that frees it does not wait on claims", async () => {
    // 1,000 per 2 s: the pacer lets 200 go at once (per 0.2 s). At a few ms of latency the tenant keeps
    // ~9 in flight, and 8 items and 4 workbooks per slot held ~40 ready: a burst then waited on claims.
    const budget = { requests: 1_000, windowMs: 2_000 };
    const controller = new AbortController();
    let sent = 0;
    const scheduler = new WorkbookScheduler<Item>({
      concurrency: 10_000,
      tenantBudget: budget,
      deadline: Date.now() + 60_000,
      signal: controller.signal,
      run: async (_item, waitForSendSlot) => {
        if ((await waitForSendSlot()).send) sent++;
        await new Promise((resolve) => setTimeout(resolve, 1));
        return {};
      },
      onDeferred: () => undefined,
      onLeft: () => undefined,
      onError: (error) => expect.unreachable(String(error)),
    });
    // A window's worth first: the answers teach the scheduler its latency (a guess of 1 s before them).
    for (let id = 0; id < budget.requests; id++) scheduler.add({ id, tenant: "a", workbook: `a/book-${id}` });
    for (const until = Date.now() + 20_000; sent < budget.requests; ) {
      if (Date.now() > until) expect.unreachable(`only ${sent} sent`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // The window is full. Claimed as the sweep claims: only as the scheduler asks, a workbook per item.
    let added = budget.requests;
    const claiming = (async () => {
      while (added < 5_000) {
        const free = await scheduler.waitForDemand(8);
        if (free === 0) return;
        for (let i = 0; i < free && added < 5_000; i++, added++) scheduler.add({ id: added, tenant: "a", workbook: `a/book-${added}` });
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const atHand = added - sent;
    controller.abort();
    await scheduler.drain();
    await claiming;
    expect(atHand).toBeGreaterThanOrEqual(burstRequests(budget) * 0.9);
    // And not the whole backlog: claims stay just ahead of need.
    expect(atHand).toBeLessThan(2 * burstRequests(budget));
  });
});

describe("SendWindow and TenantPacer: a send counted from its arrival", () => {
  it("a restamped send holds its slot until a window after it arrived", () => {
    const pacer = new TenantPacer({ requests: 2, windowMs: 1_000 });
    pacer.record("a", 0);
    pacer.record("a", 10);
    // The window (and its 100 ms margin) lets the first send go at 1,100 ms...
    expect(pacer.waitMs("a", 500)).toBe(600);
    // ...unless its handshake made it reach Graph 400 ms late: then at 1,500 ms.
    pacer.restamp("a", 0, 400);
    expect(pacer.waitMs("a", 500)).toBe(610);
    expect(pacer.recent("a", 1_110)).toEqual([400]);
    expect(pacer.waitMs("a", 1_110, 1)).toBe(390);
  });

  it("keeps the window in order when a send moves past later ones", () => {
    const window = new SendWindow({ requests: 3, windowMs: 1_000 });
    for (const at of [0, 10, 20]) window.record(at);
    window.restamp(0, 15);
    expect(window.recent(20)).toEqual([10, 15, 20]);
    expect(window.waitMs(20)).toBe(990);
    // A time it does not hold is left alone.
    window.restamp(5, 500);
    expect(window.recent(20)).toEqual([10, 15, 20]);
  });
});

describe("ReadyWorkbooks", () => {
  it("starts the workbook with the most work first, the oldest first among equals", () => {
    const ready = new ReadyWorkbooks();
    ready.push("one-a", 1);
    ready.push("nine", 9);
    ready.push("three", 3);
    ready.push("one-b", 1);
    ready.push("also-three", 3);
    expect([ready.pop(), ready.pop(), ready.pop(), ready.pop(), ready.pop(), ready.pop()]).toEqual(["nine", "three", "also-three", "one-a", "one-b", undefined]);
    ready.push("x", 2);
    ready.push("y", 5);
    expect(ready.drain().sort()).toEqual(["x", "y"]);
    expect(ready.size).toBe(0);
  });
});

describe("readAhead", () => {
  it("asks for the next page while the caller works on this one, and closes the source when the caller stops", async () => {
    const events: string[] = [];
    let closed = false;
    async function* pages() {
      try {
        for (let i = 1; i <= 5; i++) {
          events.push(`fetch ${i}`);
          await new Promise((resolve) => setTimeout(resolve, 1));
          yield i;
        }
      } finally {
        closed = true;
      }
    }
    for await (const page of readAhead(pages())) {
      events.push(`work ${page}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (page === 3) break;
    }
    expect(events.slice(0, 4)).toEqual(["fetch 1", "fetch 2", "work 1", "fetch 3"]);
    expect(events).toContain("fetch 4");
    expect(events).not.toContain("work 4");
    expect(closed).toBe(true);
  });

  it("passes a source's failure to the caller", async () => {
    async function* failing() {
      yield 1;
      throw new Error("storage is gone");
    }
    const seen: number[] = [];
    await expect(async () => {
      for await (const page of readAhead(failing())) seen.push(page);
    }).rejects.toThrow("storage is gone");
    expect(seen).toEqual([1]);
  });
});
