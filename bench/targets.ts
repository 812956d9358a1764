/**
 * The targets, measured (never asserted in tests): each with the measured value, the
 * target, and whether it is met (null when the run did not measure it).
 */
import type { ContenderRun, ContenderScenario, Floors, HistoryResult, IdleResult, ScanResult, ThreeResult } from "./bench";
import type { GraphFigures } from "./measure";
import type { ContenderName, RealisticScenario } from "./options";
import type { RealisticResult, RealisticRun } from "./realistic";

export interface Target<V = number | null> {
  value: V;
  target: string;
  met: boolean | null;
  note?: string;
}

export interface Targets {
  /** Sweeper, budget scenario: how full it kept the tenant budget (worst tenant). */
  budgetUtilization: Target;
  /** Sweeper, budget scenario: share of its Graph requests answered 429. */
  throttledShare: Target;
  /** Sweeper, budget off: wall ÷ max(Graph floor, Table floor). */
  wallOverFloor: Target & { wallMs: number | null; floorMs: number | null };
  /** Per closed session: naive's time ÷ the sweeper's. */
  vsNaive: Target & { scenario: ContenderScenario | null; byScenario: Partial<Record<ContenderScenario, number | null>> };
  /** Per closed session: competent's time ÷ the sweeper's. */
  vsCompetent: Target & { scenario: ContenderScenario | null; byScenario: Partial<Record<ContenderScenario, number | null>> };
  scanPeakRssMb: Target;
  idleStorageRequests: Target;
  idleGraphRequests: Target;
  /**
   * History scenario: with a long history ÷ without, the worst of storage requests, rows the stale
   * query returned and rows it kept (`scanned`), over the idle sweep and the sweep of the stale live
   * rows. Wall time is in `history.ratios`, not in the target.
   */
  historyRatio: Target & { ratios: HistoryResult["ratios"] | null };
  /** Three scenario: the three sweepers' 429s ÷ their Graph requests. */
  threeThrottledShare: Target;
  /** Three scenario: how full the three together kept the tenant budget (worse tenant). */
  threeBudgetUtilization: Target;
  /** Three scenario: requests that reached a workbook while another was still being answered on it. */
  threeWorkbookOverlaps: Target & { maxOverlapMs: number | null };
  /** Realistic latency, 2 tenants: the worse tenant's budget utilization. */
  realistic2BudgetUtilization: Target;
  /** Realistic latency, 2 tenants: 429s ÷ Graph requests. */
  realistic2ThrottledShare: Target;
  /** Realistic latency, 2 tenants: wall ÷ the budget floor. */
  realistic2WallOverFloor: Target;
  /** Realistic latency, 10 tenants: the app budget's utilization across tenants. */
  realistic10AppUtilization: Target;
  /** Realistic latency, 10 tenants: 429s ÷ Graph requests. */
  realistic10ThrottledShare: Target;
  /** Realistic latency, 10 tenants: the largest |tenant's share ÷ fair − 1| while every tenant had work. */
  realistic10FairShare: Target;
  /** Realistic latency, 2 tenants, per closed session: naive's time ÷ the sweeper's. */
  realisticVsNaive: Target;
  /** Realistic latency, 2 tenants, per closed session: competent's time ÷ the sweeper's. */
  realisticVsCompetent: Target;
  /** Rows left in a wrong state, per contender, over all its runs; the target is the sweeper's 0. */
  wrongRows: Target<Partial<Record<ContenderName, number>>>;
}

/** The run whose time per closed session is the median of its repeats. */
export function representative(runs: readonly ContenderRun[], contender: ContenderName, scenario: ContenderScenario): ContenderRun | undefined {
  const matching = runs.filter((r) => r.contender === contender && r.scenario === scenario).sort((a, b) => a.msPerClosed - b.msPerClosed);
  return matching[Math.floor((matching.length - 1) / 2)];
}

export function evaluateTargets(input: {
  runs: ContenderRun[];
  floors?: Floors;
  scan?: ScanResult;
  idle?: IdleResult;
  three?: ThreeResult;
  history?: HistoryResult;
  realistic?: Partial<Record<RealisticScenario, RealisticResult>>;
}): Targets {
  const { runs, floors, scan, idle, three, history, realistic } = input;
  const realisticRun = (scenario: RealisticScenario, contender: ContenderName): RealisticRun | undefined =>
    realistic?.[scenario]?.runs.find((r) => r.contender === contender);
  const sweeper2 = realisticRun("realistic2", "sweeper");
  const sweeper10 = realisticRun("realistic10", "sweeper");
  const worstTenant2 = sweeper2 ? (sweeper2.figures.tenantUtilization.some((u) => u === null) ? null : Math.min(...(sweeper2.figures.tenantUtilization as number[]))) : null;
  const realisticRatio = (contender: ContenderName) => {
    const other = realisticRun("realistic2", contender);
    return other && sweeper2 && Number.isFinite(other.run.msPerClosed) && Number.isFinite(sweeper2.run.msPerClosed) ? other.run.msPerClosed / sweeper2.run.msPerClosed : null;
  };
  const sweeperBudget = representative(runs, "sweeper", "budget");
  const sweeperFree = representative(runs, "sweeper", "unbounded");
  const naive = representative(runs, "naive", "budget") ?? representative(runs, "naive", "unbounded");

  const utilization = sweeperBudget ? worseUtilization(sweeperBudget.graph) : null;
  const throttled = sweeperBudget && sweeperBudget.graph.requests > 0 ? sweeperBudget.graph.throttled / sweeperBudget.graph.requests : null;
  const threeUtilization = three ? worseUtilization(three.graph) : null;

  const floorFree = floors?.graph.unbounded ? Math.max(floors.graph.unbounded.floorMs, floors.table.floorMs) : null;
  const wallOverFloor = sweeperFree && floorFree ? sweeperFree.wallMs / floorFree : null;

  const ratio = (other: ContenderRun | undefined, sweeper: ContenderRun | undefined) =>
    other && sweeper && Number.isFinite(other.msPerClosed) && Number.isFinite(sweeper.msPerClosed) ? other.msPerClosed / sweeper.msPerClosed : null;
  const primary: ContenderScenario | null = sweeperFree ? "unbounded" : sweeperBudget ? "budget" : null;
  const vsNaive = { ...(sweeperBudget && { budget: ratio(naive, sweeperBudget) }), ...(sweeperFree && { unbounded: ratio(naive, sweeperFree) }) };
  const vsCompetent = {
    ...(sweeperBudget && { budget: ratio(representative(runs, "competent", "budget"), sweeperBudget) }),
    ...(sweeperFree && { unbounded: ratio(representative(runs, "competent", "unbounded"), sweeperFree) }),
  };

  const wrong: Partial<Record<ContenderName, number>> = {};
  for (const run of runs) wrong[run.contender] = (wrong[run.contender] ?? 0) + run.correctness.wrongRows;
  // The history scenario's sweeps and the three scenario's are the sweeper's too.
  if (history) wrong.sweeper = (wrong.sweeper ?? 0) + history.withoutHistory.wrongRows + history.withHistory.wrongRows;
  if (three) wrong.sweeper = (wrong.sweeper ?? 0) + three.correctness.wrongRows;
  for (const result of Object.values(realistic ?? {})) {
    for (const { contender, run } of result.runs) wrong[contender] = (wrong[contender] ?? 0) + run.correctness.wrongRows;
  }

  const historyWorst = history
    ? Math.max(...(["idle", "sweep"] as const).flatMap((sweep) => [history.ratios[sweep].requests, history.ratios[sweep].rowsReturned, history.ratios[sweep].scanned]))
    : null;

  const atLeast = (value: number | null, min: number) => (value === null ? null : value >= min);
  const atMost = (value: number | null, max: number) => (value === null ? null : value <= max);
  return {
    budgetUtilization: {
      value: utilization,
      target: ">= 0.95",
      met: atLeast(utilization, 0.95),
      ...(utilization === null && sweeperBudget && { note: "the budget never filled a window: it did not bind" }),
    },
    throttledShare: { value: throttled, target: "<= 0.01", met: atMost(throttled, 0.01) },
    wallOverFloor: {
      value: wallOverFloor,
      target: "<= 1.3",
      met: atMost(wallOverFloor, 1.3),
      wallMs: sweeperFree?.wallMs ?? null,
      floorMs: floorFree,
      note: "budget off; floor = max(Graph floor, Table floor)",
    },
    vsNaive: {
      value: primary ? (vsNaive[primary] ?? null) : null,
      target: ">= 50",
      met: atLeast(primary ? (vsNaive[primary] ?? null) : null, 50),
      scenario: primary,
      byScenario: vsNaive,
      note: "time per closed session; naive runs once, on a prefix, in the first scenario (one at a time, it never reaches the budget)",
    },
    vsCompetent: {
      value: primary ? (vsCompetent[primary] ?? null) : null,
      target: ">= 3",
      met: atLeast(primary ? (vsCompetent[primary] ?? null) : null, 3),
      scenario: primary,
      byScenario: vsCompetent,
    },
    scanPeakRssMb: { value: scan?.peakRssMb ?? null, target: "<= 150", met: atMost(scan?.peakRssMb ?? null, 150), ...(scan && { note: `${scan.rows} rows, RSS scope: ${scan.rssScope}` }) },
    idleStorageRequests: { value: idle?.storage.total ?? null, target: "== 1", met: idle ? idle.storage.total === 1 : null },
    idleGraphRequests: { value: idle?.graphRequests ?? null, target: "== 0", met: idle ? idle.graphRequests === 0 : null },
    historyRatio: {
      value: historyWorst,
      target: "<= 1.2",
      met: atMost(historyWorst, 1.2),
      ratios: history?.ratios ?? null,
      ...(history && {
        note: `with ${history.historyRows} rows of history ÷ without; worst of storage requests, rows returned and scanned, idle sweep and ${history.liveStale}-row sweep (wall, not a target: idle ${history.ratios.idle.wallMs.toFixed(2)}, sweep ${history.ratios.sweep.wallMs.toFixed(2)})`,
      }),
    },
    threeThrottledShare: {
      value: three?.throttledShare ?? null,
      target: "<= 0.01",
      met: atMost(three?.throttledShare ?? null, 0.01),
      ...(three && { note: `${three.sweepers} sweepers at once, budget on; ${three.graph.throttled} of ${three.graph.requests} Graph requests` }),
    },
    threeBudgetUtilization: {
      value: threeUtilization,
      target: ">= 0.95",
      met: atLeast(threeUtilization, 0.95),
      ...(three && { note: threeUtilization === null ? "the budget never filled a window: it did not bind" : "worse tenant, the three sweepers' requests together" }),
    },
    threeWorkbookOverlaps: {
      value: three?.graph.workbookOverlaps.count ?? null,
      target: "== 0",
      met: three ? three.graph.workbookOverlaps.count === 0 : null,
      maxOverlapMs: three?.graph.workbookOverlaps.maxOverlapMs ?? null,
      ...(three && three.graph.workbookOverlaps.count > 0 && { note: `longest ${three.graph.workbookOverlaps.maxOverlapMs} ms` }),
    },
    realistic2BudgetUtilization: {
      value: worstTenant2,
      target: ">= 0.95",
      met: atLeast(worstTenant2, 0.95),
      ...(sweeper2 && { note: "worse tenant; Graph at 1-3 s, Excel's budgets" }),
    },
    realistic2ThrottledShare: { value: sweeper2?.figures.throttledShare ?? null, target: "<= 0.01", met: atMost(sweeper2?.figures.throttledShare ?? null, 0.01) },
    realistic2WallOverFloor: {
      value: sweeper2?.figures.wallOverFloor ?? null,
      target: "<= 1.1",
      met: atMost(sweeper2?.figures.wallOverFloor ?? null, 1.1),
      ...(realistic?.realistic2 && { note: `floor ${(realistic.realistic2.floor.floorMs / 1000).toFixed(1)} s: ${realistic.realistic2.floor.binding} budget` }),
    },
    realistic10AppUtilization: { value: sweeper10?.figures.appUtilization ?? null, target: ">= 0.95", met: atLeast(sweeper10?.figures.appUtilization ?? null, 0.95) },
    realistic10ThrottledShare: { value: sweeper10?.figures.throttledShare ?? null, target: "<= 0.01", met: atMost(sweeper10?.figures.throttledShare ?? null, 0.01) },
    realistic10FairShare: {
      value: sweeper10?.figures.maxShareDeviation ?? null,
      target: "<= 0.2",
      met: atMost(sweeper10?.figures.maxShareDeviation ?? null, 0.2),
      ...(sweeper10 && { note: "largest |a tenant's share of the app budget ÷ fair − 1| while all had work" }),
    },
    realisticVsNaive: {
      value: realisticRatio("naive"),
      target: ">= 100",
      met: atLeast(realisticRatio("naive"), 100),
      ...(sweeper2 && { note: "time per closed session, realistic2; naive on a prefix" }),
    },
    realisticVsCompetent: {
      value: realisticRatio("competent"),
      target: ">= 3",
      met: atLeast(realisticRatio("competent"), 3),
      ...(sweeper2 && { note: "time per closed session, realistic2; competent on a prefix" }),
    },
    wrongRows: { value: wrong, target: "sweeper == 0", met: wrong.sweeper === undefined ? null : wrong.sweeper === 0 },
  };
}

/** The worse tenant's budget utilization; null when a tenant's budget never filled a window (or no tenant was sent to). */
function worseUtilization(graph: GraphFigures): number | null {
  const utilizations = Object.values(graph.perTenant).map((t) => t.budgetUtilization);
  return utilizations.length > 0 && utilizations.every((u) => u !== null) ? Math.min(...(utilizations as number[])) : null;
}
