/**
 * The bench (npm run bench) on a tiny data set, so its code cannot rot: every contender runs
 * against the real https stand-ins and Azurite, and every row must end as it should. Timings and
 * targets are not checked here; the bench measures them.
 */
import { describe, expect, inject, it } from "vitest";
import { runBench, type BenchResult } from "../bench/bench";
import { formatReport } from "../bench/report";
import { runJobInChild, runJobsTogether } from "../bench/worker";

describe("bench", () => {
  let result: BenchResult;

  it("runs every contender on a tiny data set and leaves every row right", { timeout: 90_000 }, async () => {
    result = await runBench({
      certificateDir: inject("testCertificateDir"),
      connectionString: inject("storageConnectionString"),
      stale: 40,
      fresh: 20,
      users: 4,
      tenants: 2,
      workbooksPerUser: 2,
      latencyMs: 2,
      budget: { requests: 15, windowMs: 1_000 },
      naivePrefix: 10,
      scanRows: 300,
      historyRows: 200,
      historyRepeats: 2,
      realisticLatency: { medianMs: 3, p99Ms: 12 },
      realisticSeconds: 1,
      realisticBudget: { requests: 20, windowMs: 1_000 },
      appBudget: { requests: 30, windowMs: 1_000 },
      realisticNaivePrefix: 3,
      realisticCompetentPrefix: 10,
      isolation: "inline",
    });

    const runs = result.runs.map((r) => `${r.scenario}/${r.contender}`);
    expect(runs).toEqual(["budget/naive", "budget/competent", "budget/sweeper", "unbounded/competent", "unbounded/sweeper"]);
    for (const run of result.runs) {
      expect(run.correctness, `${run.scenario}/${run.contender}: ${run.correctness.examples.join("; ")}`).toMatchObject({ checked: 60, wrongRows: 0 });
      expect(run.closed).toBe(run.contender === "naive" ? 10 : 40);
      expect(run.storage.total).toBeGreaterThan(0);
    }
    // The emulator enforced the budget, and the sweeper kept under it.
    const sweeper = result.runs.find((r) => r.scenario === "budget" && r.contender === "sweeper")!;
    for (const tenant of Object.values(sweeper.graph.perTenant)) expect(tenant.maxInWindow).toBeLessThanOrEqual(15);

    expect(result.idle).toMatchObject({ graphRequests: 0 });
    expect(result.scan).toMatchObject({ rows: 300, scanned: 300 });
    expect(result.floors?.graphRoundTrips.closed).toBe(40);
    expect(result.floors?.table.rowWrites).toBe(160);
    // The history scenario: the sweeper closes 20 stale live rows over a ledger with 200 finished sessions in history and over one with none.
    expect(result.history).toMatchObject({ historyRows: 200, liveStale: 20 });
    for (const c of [result.history!.withoutHistory, result.history!.withHistory]) {
      expect(c.wrongRows, c.examples.join("; ")).toBe(0);
      expect(c.sweeps.map((s) => s.closed)).toEqual([20, 20]);
      expect(c.idles.map((s) => s.graphRequests)).toEqual([0, 0]);
    }
    expect(result.history!.withHistory.historyTables.length).toBeGreaterThan(0);
    // The three scenario: three sweepers at once on one table under the budget; once they have all
    // ended (no sweep after them), every row is right and their summaries' closed add up to the stale rows.
    const three = result.three!;
    expect(three.correctness, three.correctness.examples.join("; ")).toMatchObject({ checked: 60, wrongRows: 0, closed: 40 });
    expect(three.workers).toHaveLength(3);
    expect(three.workers.reduce((sum, w) => sum + (w.summary?.closed ?? 0), 0)).toBe(40);
    expect(three.storage.total).toBe(three.workers.reduce((sum, w) => sum + w.storage.total, 0));
    // The realistic scenarios: 2 tenants with the peers on prefixes, 10 tenants sharing the app's budget.
    const realistic2 = result.realistic!.realistic2!;
    expect(realistic2.runs.map((r) => [r.contender, r.run.rows])).toEqual([
      ["naive", 3],
      ["competent", 10],
      ["sweeper", realistic2.stale],
    ]);
    const realistic10 = result.realistic!.realistic10!;
    expect(realistic10.tenants).toBe(10);
    expect(realistic10.runs.map((r) => r.contender)).toEqual(["sweeper"]);
    for (const { contender, run, figures } of [...realistic2.runs, ...realistic10.runs]) {
      expect(run.correctness, `${run.scenario}/${contender}: ${run.correctness.examples.join("; ")}`).toMatchObject({ wrongRows: 0, closed: run.rows });
      expect(figures.releaseLatencyMs).not.toBeNull();
      expect(figures.meanGraphLatencyMs).toBeGreaterThan(0);
    }
    expect(realistic10.runs[0]!.figures.fairShares).toHaveLength(10);
    expect(Object.keys(result.targets).sort()).toEqual(
      [
        "realistic10AppUtilization",
        "realistic10FairShare",
        "realistic10ThrottledShare",
        "realistic2BudgetUtilization",
        "realistic2ThrottledShare",
        "realistic2WallOverFloor",
        "realisticVsCompetent",
        "realisticVsNaive",
        "budgetUtilization",
        "historyRatio",
        "idleGraphRequests",
        "idleStorageRequests",
        "scanPeakRssMb",
        "threeBudgetUtilization",
        "threeThrottledShare",
        "threeWorkbookOverlaps",
        "throttledShare",
        "vsCompetent",
        "vsNaive",
        "wallOverFloor",
        "wrongRows",
      ].sort(),
    );
    expect(result.targets.wrongRows.value).toEqual({ naive: 0, competent: 0, sweeper: 0 });
    expect(formatReport(result)).toContain("Targets:");
  });

  it("runs a job in a worker process of its own and reports that process's RSS", { timeout: 30_000 }, async () => {
    const job = await runJobInChild({ job: "baseline", settings: {} });
    expect(job.rssScope).toBe("process");
    expect(job.peakRssBytes).toBeGreaterThan(10 * 2 ** 20);
  });

  it("runs jobs together, each in a worker process of its own, held until all have loaded", { timeout: 30_000 }, async () => {
    const jobs = await runJobsTogether([1, 2, 3].map(() => ({ job: "baseline" as const, settings: {} })), "process");
    expect(jobs.map((j) => j.rssScope)).toEqual(["process", "process", "process"]);
  });
});
