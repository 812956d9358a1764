/**
 * The bench: starts the stand-ins, seeds the same data into a fresh table for every contender run,
 * runs each contender against the same https Graph emulator and authority, checks every row, and
 * measures the floors, the 100k-row dry-run scan, an idle sweep and, in the history scenario, what a
 * long history costs a sweep. `runBench` is what `npm run bench` (bench/run.ts) and the test
 * (test/bench.test.ts) call.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import type { SweepSummary } from "../src/sweep/models";
import { historyTableName } from "../src/ledger/history";
import { planDataset, seedHistory, seedScanTable, seedTable, staleLoad, tableClientFor, type DatasetPlan, type SeededTable } from "./dataset";
import { startBenchEnvironment, type BenchEnvironment } from "./environment";
import { graphFloor, measureTableFloor, type GraphFloor, type TableFloor } from "./floors";
import { graphFigures, verifyRows, type Correctness, type GraphFigures } from "./measure";
import {
  CONTENDER_SCENARIOS,
  DEFAULT_OPTIONS,
  HISTORY_LIVE_STALE,
  REALISTIC_SCENARIOS,
  THREE_SWEEPERS,
  type BenchOptions,
  type ContenderName,
  type ContenderScenario,
  type RealisticScenario,
  type TenantBudget,
} from "./options";
import { runRealistic, type RealisticResult, type RunContender } from "./realistic";
import type { LatencySpec } from "../standins/graphEmulator";

export type { ContenderScenario, ScenarioName } from "./options";
import { PROJECT_ROOT } from "./projectRoot";
import { evaluateTargets, type Targets } from "./targets";
import { runJob, runJobsTogether, sumStorageCounts, type JobRequest, type JobResult, type StorageCounts } from "./worker";


export interface RunBenchOptions extends Partial<BenchOptions> {
  /** A certificate made by makeTestCertificate that this process trusts (NODE_EXTRA_CA_CERTS). */
  certificateDir: string;
  /** Use this storage account (an Azurite already running); default: start an Azurite for the run. */
  connectionString?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface ContenderRun {
  contender: ContenderName;
  scenario: ContenderScenario | RealisticScenario;
  repeat: number;
  /** Stale rows the contender was given (naive: its prefix). */
  rows: number;
  wallMs: number;
  /** When the contender's job started, in ms since the epoch (the stand-ins' requests are stamped on the same clock). */
  startedAtMs: number;
  /** Stale rows closed, as read back from the ledger and Graph. */
  closed: number;
  closedPerSecond: number;
  msPerClosed: number;
  graph: GraphFigures;
  graphRequestsPerClosed: number;
  storage: StorageCounts;
  storageRequestsPerClosed: number;
  peakRssMb: number;
  rssScope: "process" | "shared";
  /**
   * CPU time during the run: the contender's own (its worker process, or this process inline),
   * this bench process (the Graph emulator and the authority; with inline runs, the contender too)
   * and Azurite (null when the run did not start it). 2 cores give 2 ms of CPU per ms of wall.
   */
  cpuMs: { contender: number; standIns: number; azurite: number | null };
  /** The contender's event-loop delay while it ran (ms). */
  eventLoopDelayMs: { mean: number; p99: number; max: number };
  correctness: Correctness;
  seedMs: number;
  /** The sweeper's own summary line. */
  summary?: SweepSummary;
}

export interface GraphRoundTrips {
  requests: number;
  closed: number;
  /** Workbooks at once. */
  parallel: number;
  closeMs: number;
  /** One token per user, fetched before (not in closeMs). */
  tokenMs: number;
  /** CPU time of the client process (tokens and closes). */
  clientCpuMs: number;
}

export interface ScanResult {
  rows: number;
  seedMs: number;
  wallMs: number;
  scanned: number;
  peakRssMb: number;
  rssScope: "process" | "shared";
  /** Peak RSS of a worker process that loads the same modules and does nothing (process isolation). */
  workerBaselineRssMb: number | null;
  /** Heap still in use after a forced full GC at the end of the scan (process isolation). */
  liveHeapMbAfterScan: number | null;
  /** CPU time of the scanning process and of Azurite during the scan. */
  cpuMs: { contender: number; azurite: number | null };
  storage: StorageCounts;
}

export interface IdleResult {
  wallMs: number;
  storage: StorageCounts;
  graphRequests: number;
  tokenRequests: number;
  summary?: SweepSummary;
}

/** One sweep of the history scenario, in a worker process of its own. */
export interface HistorySweep {
  /** The sweeper's own time, from the call to its return. */
  wallMs: number;
  /** Rows the live table's queries returned, counted off the service's answers. */
  rowsReturned: number;
  /** The summary's `scanned`: the rows of those the ledger kept as due (stale, closing past its lease, finished, other schema). */
  scanned: number;
  /** Every request of the sweep's storage clients (live table, history tables, the table service), `byTable` too. */
  storage: StorageCounts;
  graphRequests: number;
  /** Rows the sweep closed (its summary). */
  closed: number;
}

/** Medians over the repeats. */
export interface HistoryFigures {
  wallMs: number;
  rowsReturned: number;
  scanned: number;
  requests: number;
  queries: number;
}

export interface HistoryCase {
  liveTable: string;
  /** Finished sessions in the ledger's history before its first sweep. */
  historyRows: number;
  historyTables: string[];
  /** Per repeat: the sweep of the stale live rows, then the next one (the idle sweep). */
  sweeps: HistorySweep[];
  idles: HistorySweep[];
  sweep: HistoryFigures;
  idle: HistoryFigures;
  /** The stale rows not closed in the ledger and on Graph, over every repeat. */
  wrongRows: number;
  examples: string[];
}

/** with history ÷ without (1 where both are 0). */
export interface HistoryRatios {
  requests: number;
  rowsReturned: number;
  scanned: number;
  wallMs: number;
}

export interface HistoryResult {
  historyRows: number;
  /** Stale live rows each sweep closes. */
  liveStale: number;
  repeats: number;
  /** Writing the history. */
  seedMs: number;
  /** The whole scenario, the history's seeding included. */
  durationMs: number;
  withoutHistory: HistoryCase;
  withHistory: HistoryCase;
  ratios: { idle: HistoryRatios; sweep: HistoryRatios };
}

/** One of the three scenario's sweeper processes. */
export interface ThreeSweeperWorker {
  /** When it started and ended, ms after the first of the three started. */
  startMs: number;
  endMs: number;
  /** Its own time, from the call to its return. */
  wallMs: number;
  storage: StorageCounts;
  /** Its process's CPU time (inline: the bench process's over the same time, shared with the others). */
  cpuMs: number;
  peakRssMb: number;
  eventLoopDelayMs: { mean: number; p99: number; max: number };
  /** Its summary line: `closed`, `leasedElsewhere` (rows of a tenant another worker held), `lostRaces`, … */
  summary?: SweepSummary;
}

/**
 * The three scenario: THREE_SWEEPERS sweeper processes started at once on one seeded table, the
 * emulator enforcing the per-tenant budget as in the budget scenario, measured together.
 */
export interface ThreeResult {
  sweepers: number;
  /** Stale rows seeded. */
  rows: number;
  /** From the first worker's start to the last one's end. */
  wallMs: number;
  /** The budget scenario's Graph floor (max over tenants of stale sessions ÷ the budget's rate): the same load. */
  graphFloorMs: number;
  /** Stale rows closed, as read back from the ledger and Graph. */
  closed: number;
  closedPerSecond: number;
  /** Graph's side of the three together: requests, 429s, budget utilization per tenant, requests overlapping on a workbook. */
  graph: GraphFigures;
  /** 429s ÷ Graph requests; null without requests. */
  throttledShare: number | null;
  /** Every storage request of the three workers together. */
  storage: StorageCounts;
  storageRequestsPerClosed: number;
  /**
   * CPU time during the scenario: the three worker processes together (null inline, where they
   * share the bench process and are in `standIns`), this bench process, Azurite.
   */
  cpuMs: { workers: number | null; standIns: number; azurite: number | null };
  /**
   * Every row after the three have ended. No sweep runs after them: a stale row left open (its
   * tenant's holder ended early, say) is a wrong row here.
   */
  correctness: Correctness;
  seedMs: number;
  workers: ThreeSweeperWorker[];
}

export interface Floors {
  table: TableFloor;
  /** The issue's Graph floor per scenario: max(tenant requests ÷ budget rate, workbook sessions × latency). */
  graph: Partial<Record<ContenderScenario, GraphFloor>>;
  /** Not a floor of the issue's: the same closeSession calls with plain fetch and nothing else, on this machine. */
  graphRoundTrips: GraphRoundTrips;
}

export interface BenchResult {
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  machine: { node: string; cpus: number; platform: string };
  /** The code measured: HEAD and whether src/ had uncommitted changes. */
  source: { commit: string | null; srcDirty: boolean | null };
  options: BenchOptions;
  dataset: { stale: number; fresh: number; closed: number; users: number; tenants: number; workbooksPerUser: number; staleByTenant: number[]; maxStalePerWorkbook: number };
  /** Measured when a contender scenario (budget, unbounded) runs. */
  floors?: Floors;
  runs: ContenderRun[];
  scan?: ScanResult;
  idle?: IdleResult;
  three?: ThreeResult;
  history?: HistoryResult;
  realistic?: Partial<Record<RealisticScenario, RealisticResult>>;
  targets: Targets;
}

export async function runBench(input: RunBenchOptions): Promise<BenchResult> {
  const { certificateDir, connectionString, log = () => {}, ...overrides } = input;
  const options: BenchOptions = { ...DEFAULT_OPTIONS, ...stripUndefined(overrides) };
  const startedAt = new Date();
  const plan = planDataset(options);
  const load = staleLoad(plan);
  const env = await startBenchEnvironment({ certificateDir, latencyMs: options.latencyMs, ...(connectionString && { connectionString }) });
  try {
    const runs: ContenderRun[] = [];
    const scenarios = CONTENDER_SCENARIOS.filter((name) => options.scenarios.includes(name)).map((name) => ({ name, budget: name === "budget" ? options.budget : null }));

    let floors: Floors | undefined;
    if (scenarios.length > 0) {
      log(`Floors: seeding ${plan.counts.stale} stale rows…`);
      const floorTable = await seed(env, plan, "floor", ["stale"]);
      const trips = await job(options, { job: "graphRoundTrips", settings: env.settings(floorTable.tableName), parallel: 128 });
      const graphRoundTrips: GraphRoundTrips = {
        requests: env.emulator.requests.length,
        closed: trips.outcome.closed,
        parallel: trips.outcome.timings?.parallel ?? 0,
        closeMs: trips.outcome.timings?.closeMs ?? 0,
        tokenMs: trips.outcome.timings?.tokenMs ?? 0,
        clientCpuMs: trips.cpuMs,
      };
      log(`  Graph round trips alone (plain fetch, ${graphRoundTrips.parallel} workbooks at once): ${graphRoundTrips.closed} closed in ${fmtMs(graphRoundTrips.closeMs)}`);
      const table = await measureTableFloor(env, floorTable);
      await env.deleteTable(floorTable.tableName);
      log(`  Table: ${table.rowWrites} row writes in ${table.transactions} transactions: ${fmtMs(table.floorMs)} (the scan before them: ${fmtMs(table.scanMs)})`);
      const graph: Partial<Record<ContenderScenario, GraphFloor>> = {};
      for (const s of scenarios) graph[s.name] = graphFloor(plan, s.budget, options.latencyMs);
      floors = { table, graph, graphRoundTrips };
    }

    let idle: IdleResult | undefined;
    const idleScenario = scenarios[scenarios.length - 1]?.name;
    for (const scenario of scenarios) {
      // naive runs once, in the first scenario: one at a time, it never comes near the budget.
      const contenders = options.contenders.filter((c) => c !== "naive" || scenario === scenarios[0]);
      for (const contender of contenders) {
        for (let repeat = 1; repeat <= options.repeats; repeat++) {
          const keepForIdle = contender === "sweeper" && scenario.name === idleScenario && repeat === options.repeats;
          const { run, seeded } = await runContender(env, plan, options, contender, scenario.name, scenario.budget, repeat, log);
          runs.push(run);
          if (keepForIdle) {
            idle = await runIdleSweep(env, options, seeded, log);
          }
          await env.deleteTable(seeded.tableName);
        }
      }
    }

    let three: ThreeResult | undefined;
    if (options.scenarios.includes("three")) three = await runThree(env, plan, options, log);

    let history: HistoryResult | undefined;
    if (options.scenarios.includes("history")) history = await runHistory(env, options, log);

    let realistic: BenchResult["realistic"];
    for (const name of REALISTIC_SCENARIOS.filter((n) => options.scenarios.includes(n))) {
      (realistic ??= {})[name] = await runRealistic(env, options, name, runContender, log);
    }

    let scan: ScanResult | undefined;
    if (options.scanRows > 0) scan = await runScan(env, plan, options, log);

    const finishedAt = new Date();
    return {
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      machine: { node: process.version, cpus: cpus().length, platform: `${process.platform}-${process.arch}` },
      source: sourceInfo(),
      options,
      dataset: {
        stale: plan.counts.stale,
        fresh: plan.counts.fresh,
        closed: plan.counts.closed,
        users: options.users,
        tenants: options.tenants,
        workbooksPerUser: options.workbooksPerUser,
        staleByTenant: [...load.perTenant.values()],
        maxStalePerWorkbook: load.maxPerWorkbook,
      },
      ...(floors && { floors }),
      runs,
      ...(scan && { scan }),
      ...(idle && { idle }),
      ...(three && { three }),
      ...(history && { history }),
      ...(realistic && { realistic }),
      targets: evaluateTargets({
        runs,
        ...(floors && { floors }),
        ...(scan && { scan }),
        ...(idle && { idle }),
        ...(three && { three }),
        ...(history && { history }),
        ...(realistic && { realistic }),
      }),
    };
  } finally {
    await env.close();
  }
}

async function seed(env: BenchEnvironment, plan: DatasetPlan, prefix: string, kinds?: ("stale" | "fresh" | "closed")[]): Promise<SeededTable> {
  env.emulator.reset();
  env.authority.reset();
  return seedTable(env, plan, env.newTableName(prefix), kinds ? { kinds } : {});
}

function sweeperSettings(options: BenchOptions, budget: TenantBudget | null, appBudget?: TenantBudget): Record<string, string> {
  return {
    // The operator sets the budget the sweep keeps under to the tenant's; with no budget enforced, one that never binds.
    EXCEL_BUDGET_REQUESTS: String(budget ? budget.requests : 1_000_000),
    EXCEL_BUDGET_WINDOW: budget ? String(budget.windowMs / 1000) : "PT10S",
    // The app's budget only where the emulator keeps one (the realistic scenarios): elsewhere one that never binds.
    EXCEL_APP_BUDGET_REQUESTS: String(appBudget ? appBudget.requests : 10_000_000),
    EXCEL_APP_BUDGET_WINDOW: appBudget ? String(appBudget.windowMs / 1000) : "PT10S",
    ...(options.sweepConcurrency !== undefined && { SWEEP_CONCURRENCY: String(options.sweepConcurrency) }),
  };
}

/** What a scenario sets beyond the tenant's budget: the app's, Graph's latency, a prefix. */
export interface ContenderSetup {
  appBudget?: TenantBudget;
  latency?: LatencySpec;
  /** Stale rows the contender is given. @default naive: `naivePrefix`; the others: all */
  limit?: number;
}

async function runContender(
  env: BenchEnvironment,
  plan: DatasetPlan,
  options: BenchOptions,
  contender: ContenderName,
  scenario: ContenderScenario | RealisticScenario,
  budget: TenantBudget | null,
  repeat: number,
  log: (line: string) => void,
  setup: ContenderSetup = {},
): Promise<{ run: ContenderRun; seeded: SeededTable }> {
  const seeded = await seed(env, plan, contender.slice(0, 5));
  env.emulator.configure({
    tenantBudget: budget,
    appBudget: setup.appBudget ?? null,
    ...(setup.latency !== undefined && { latencyMs: setup.latency }),
  });
  const limit = setup.limit ?? (contender === "naive" ? Math.min(options.naivePrefix, plan.counts.stale) : undefined);
  const rows = limit ?? plan.counts.stale;
  log(`${scenario} · ${contender}${options.repeats > 1 ? ` #${repeat}` : ""}: ${rows} stale rows${limit !== undefined ? ` (a prefix of ${plan.counts.stale})` : ""}…`);
  const cpuBefore = process.cpuUsage();
  const azuriteBefore = processCpuMs(env.azuritePid);
  const result: JobResult = await job(options, {
    job: contender,
    settings: env.settings(seeded.tableName, sweeperSettings(options, budget, setup.appBudget)),
    ...(limit !== undefined && { limit }),
  });
  const cpuHere = process.cpuUsage(cpuBefore);
  const azuriteAfter = processCpuMs(env.azuritePid);
  const cpuMs = {
    contender: result.cpuMs,
    standIns: (cpuHere.user + cpuHere.system) / 1000 - (options.isolation === "inline" ? result.cpuMs : 0),
    azurite: azuriteBefore !== null && azuriteAfter !== null ? azuriteAfter - azuriteBefore : null,
  };
  const graph = graphFigures(env, budget);
  const correctness = await verifyRows(env, seeded, result.outcome.attemptedKeys);
  const closed = correctness.closed;
  const run: ContenderRun = {
    contender,
    scenario,
    repeat,
    rows,
    wallMs: result.wallMs,
    startedAtMs: result.startedAtMs,
    closed,
    closedPerSecond: closed > 0 ? closed / (result.wallMs / 1000) : 0,
    msPerClosed: closed > 0 ? result.wallMs / closed : Infinity,
    graph,
    graphRequestsPerClosed: closed > 0 ? graph.requests / closed : Infinity,
    storage: result.storage,
    storageRequestsPerClosed: closed > 0 ? result.storage.total / closed : Infinity,
    peakRssMb: result.peakRssBytes / 2 ** 20,
    rssScope: result.rssScope,
    cpuMs,
    eventLoopDelayMs: result.eventLoopDelayMs,
    correctness,
    seedMs: seeded.seedMs,
    ...(result.outcome.summary && { summary: result.outcome.summary }),
  };
  log(
    `  ${fmtMs(run.wallMs)}, ${closed} closed (${run.closedPerSecond.toFixed(1)}/s), ${graph.requests} Graph requests (${graph.meanInFlight.toFixed(1)} in flight on average), ${graph.throttled} × 429, ` +
      `${result.storage.total} storage requests, CPU s: contender ${(cpuMs.contender / 1000).toFixed(1)}, stand-ins ${(cpuMs.standIns / 1000).toFixed(1)}, Azurite ${cpuMs.azurite === null ? "?" : (cpuMs.azurite / 1000).toFixed(1)}; ` +
      `event loop delay p99 ${result.eventLoopDelayMs.p99.toFixed(0)} ms; ` +
      `${correctness.wrongRows} wrong rows${correctness.examples[0] ? ` (e.g. ${correctness.examples[0]})` : ""}`,
  );
  return { run, seeded };
}

/** The next timer tick after the sweep: nothing is stale any more. */
async function runIdleSweep(env: BenchEnvironment, options: BenchOptions, seeded: SeededTable, log: (line: string) => void): Promise<IdleResult> {
  env.emulator.reset();
  env.authority.reset();
  const result = await job(options, { job: "sweeper", settings: env.settings(seeded.tableName, sweeperSettings(options, null)) });
  const idle: IdleResult = {
    wallMs: result.wallMs,
    storage: result.storage,
    graphRequests: env.emulator.requests.length,
    tokenRequests: env.authority.tokenRequests.length,
    ...(result.outcome.summary && { summary: result.outcome.summary }),
  };
  log(`Idle sweep over ${seeded.rows.length} rows, none stale: ${idle.storage.total} storage request(s), ${idle.graphRequests} Graph request(s), ${fmtMs(idle.wallMs)}`);
  return idle;
}

/**
 * The three scenario: the budget scenario's table, budget and settings, swept by THREE_SWEEPERS
 * sweeper processes started at the same moment (as the timer, a manual HTTP sweep and an operator's
 * CLI would run at once), each exactly as the budget scenario's single sweeper runs. The tenants'
 * leases are to keep one sender per tenant: one request per workbook and one budget per tenant
 * across the three. Measured together: Graph's side from the emulator, storage requests summed, and
 * every row once all three have ended, with no extra sweep to finish what they left.
 */
async function runThree(env: BenchEnvironment, plan: DatasetPlan, options: BenchOptions, log: (line: string) => void): Promise<ThreeResult> {
  const budget = options.budget;
  const seeded = await seed(env, plan, "three");
  env.emulator.configure({ tenantBudget: budget });
  log(`three · ${THREE_SWEEPERS} sweepers at once: ${plan.counts.stale} stale rows…`);
  const settings = env.settings(seeded.tableName, sweeperSettings(options, budget));
  const requests: JobRequest[] = Array.from({ length: THREE_SWEEPERS }, () => ({ job: "sweeper", settings }));
  const cpuBefore = process.cpuUsage();
  const azuriteBefore = processCpuMs(env.azuritePid);
  const results = await runJobsTogether(requests, options.isolation, { ...(options.cpuProfileDir && { cpuProfileDir: options.cpuProfileDir }) });
  const cpuHere = process.cpuUsage(cpuBefore);
  const azuriteAfter = processCpuMs(env.azuritePid);
  const graph = graphFigures(env, budget);
  const correctness = await verifyRows(env, seeded);
  await env.deleteTable(seeded.tableName);

  const firstStart = Math.min(...results.map((r) => r.startedAtMs));
  const wallMs = Math.max(...results.map((r) => r.endedAtMs)) - firstStart;
  const workers = results.map((r): ThreeSweeperWorker => ({
    startMs: r.startedAtMs - firstStart,
    endMs: r.endedAtMs - firstStart,
    wallMs: r.wallMs,
    storage: r.storage,
    cpuMs: r.cpuMs,
    peakRssMb: r.peakRssBytes / 2 ** 20,
    eventLoopDelayMs: r.eventLoopDelayMs,
    ...(r.outcome.summary && { summary: r.outcome.summary }),
  }));
  const storage = sumStorageCounts(results.map((r) => r.storage));
  const closed = correctness.closed;
  const three: ThreeResult = {
    sweepers: THREE_SWEEPERS,
    rows: plan.counts.stale,
    wallMs,
    graphFloorMs: graphFloor(plan, budget, options.latencyMs).floorMs,
    closed,
    closedPerSecond: closed > 0 ? closed / (wallMs / 1000) : 0,
    graph,
    throttledShare: graph.requests > 0 ? graph.throttled / graph.requests : null,
    storage,
    storageRequestsPerClosed: closed > 0 ? storage.total / closed : Infinity,
    cpuMs: {
      workers: options.isolation === "process" ? results.reduce((sum, r) => sum + r.cpuMs, 0) : null,
      standIns: (cpuHere.user + cpuHere.system) / 1000,
      azurite: azuriteBefore !== null && azuriteAfter !== null ? azuriteAfter - azuriteBefore : null,
    },
    correctness,
    seedMs: seeded.seedMs,
    workers,
  };
  for (const [i, w] of workers.entries()) {
    const s = w.summary;
    log(
      `  sweeper ${i + 1}: ${fmtMs(w.startMs)} → ${fmtMs(w.endMs)} (${fmtMs(w.wallMs)}), closed ${s?.closed ?? "?"}, leasedElsewhere ${s?.leasedElsewhere ?? "?"}, lostRaces ${s?.lostRaces ?? "?"}, ` +
        `${w.storage.total} storage requests${s?.stoppedEarly ? `, STOPPED EARLY${s.error ? ` (${s.error.code})` : ""}` : ""}`,
    );
  }
  log(
    `  together: ${fmtMs(wallMs)}, ${closed} closed, ${graph.requests} Graph requests, ${graph.throttled} × 429, ` +
      `budget utilization per tenant ${Object.values(graph.perTenant).map((t) => (t.budgetUtilization === null ? "n/a" : t.budgetUtilization.toFixed(3))).join(", ")}, ` +
      `${graph.workbookOverlaps.count} requests overlapping on a workbook, ${storage.total} storage requests; ` +
      `${correctness.wrongRows} wrong rows${correctness.examples[0] ? ` (e.g. ${correctness.examples[0]})` : ""}`,
  );
  return three;
}

/**
 * The history scenario: two ledgers, each with HISTORY_LIVE_STALE stale live rows (seeded as every
 * contender's are, their Graph sessions open on the emulator), one of them with `historyRows`
 * finished sessions in its history tables and not one finished row in its live table. On each, per
 * repeat: the sweeper closes the stale rows (the sweep), then runs again, as the timer's next tick
 * would, with nothing stale left (the idle sweep). A ledger that reads only live rows does the same
 * work on both.
 */
async function runHistory(env: BenchEnvironment, options: BenchOptions, log: (line: string) => void): Promise<HistoryResult> {
  const started = performance.now();
  const plan = planDataset({ ...options, stale: HISTORY_LIVE_STALE, fresh: 0 });
  env.emulator.configure({ tenantBudget: null });
  const without = env.newTableName("hnone");
  const withHistory = env.newTableName("hlong");
  // Both live tables exist, and so does this week's history table: a week's first move to history
  // creates its table (a failed write, a create and the write again, once a week), which is not the
  // cost compared here.
  await tableClientFor(env.connectionString, without).createTable();
  await tableClientFor(env.connectionString, historyTableName(without, new Date())).createTable();
  await tableClientFor(env.connectionString, withHistory).createTable();
  log(`History: seeding ${options.historyRows} finished sessions into the history of one of two ledgers…`);
  const seeded = await seedHistory(env, plan, withHistory, options.historyRows);
  log(`  ${seeded.rows} rows in ${seeded.tables.length} weekly table(s) (${seeded.tables.join(", ")}) in ${fmtMs(seeded.seedMs)}`);

  const cases = {
    without: { table: without, historyRows: 0, historyTables: [historyTableName(without, new Date())], sweeps: [] as HistorySweep[], idles: [] as HistorySweep[], wrong: [] as Correctness[] },
    with: { table: withHistory, historyRows: seeded.rows, historyTables: [...seeded.tables], sweeps: [] as HistorySweep[], idles: [] as HistorySweep[], wrong: [] as Correctness[] },
  };
  const settings = (table: string) => env.settings(table, sweeperSettings(options, null));
  // Not measured: a sweep of each (empty) live table, so that the first one measured does not pay
  // for the stand-ins' first requests or for Azurite collecting what the seeding left.
  for (const table of [withHistory, without]) await historySweep(env, options, settings(table));
  for (let repeat = 1; repeat <= options.historyRepeats; repeat++) {
    // Whatever bias is left falls on the first sweep: the ledger with history goes first in odd
    // repeats, so that a single run's bias goes against it.
    const order = repeat % 2 === 1 ? (["with", "without"] as const) : (["without", "with"] as const);
    for (const name of order) {
      const c = cases[name];
      env.emulator.reset();
      env.authority.reset();
      const live = await seedTable(env, plan, c.table);
      const sweep = await historySweep(env, options, settings(c.table));
      c.wrong.push(await verifyRows(env, live, undefined, { read: "point" }));
      env.emulator.reset();
      env.authority.reset();
      const idle = await historySweep(env, options, settings(c.table));
      c.sweeps.push(sweep);
      c.idles.push(idle);
      const line = (s: HistorySweep) =>
        `${s.rowsReturned} rows returned (${s.scanned} scanned), ${s.storage.total} storage requests (${s.storage.queries} queries; by table: ${Object.entries(s.storage.byTable).map(([t, n]) => `${t.replace(c.table, "<live>")} ${n}`).join(", ")}), ${s.graphRequests} Graph requests, ${fmtMs(s.wallMs)}`;
      log(`  ${name === "with" ? `with ${seeded.rows} rows of history` : "without history"}${options.historyRepeats > 1 ? ` #${repeat}` : ""}: sweep of ${live.rows.length} stale rows: ${line(sweep)}, ${sweep.closed} closed; idle sweep: ${line(idle)}`);
    }
  }

  const toCase = (c: (typeof cases)["with"]): HistoryCase => ({
    liveTable: c.table,
    historyRows: c.historyRows,
    historyTables: c.historyTables,
    sweeps: c.sweeps,
    idles: c.idles,
    sweep: medianFigures(c.sweeps),
    idle: medianFigures(c.idles),
    wrongRows: c.wrong.reduce((sum, w) => sum + w.wrongRows, 0),
    examples: c.wrong.flatMap((w) => w.examples).slice(0, 10),
  });
  const withoutCase = toCase(cases.without);
  const withCase = toCase(cases.with);
  await env.deleteTable(without);
  await env.deleteTable(withHistory);
  const ratios = (a: HistoryFigures, b: HistoryFigures): HistoryRatios => ({
    requests: ratioOf(a.requests, b.requests),
    rowsReturned: ratioOf(a.rowsReturned, b.rowsReturned),
    scanned: ratioOf(a.scanned, b.scanned),
    wallMs: ratioOf(a.wallMs, b.wallMs),
  });
  const result: HistoryResult = {
    historyRows: seeded.rows,
    liveStale: HISTORY_LIVE_STALE,
    repeats: options.historyRepeats,
    seedMs: seeded.seedMs,
    durationMs: performance.now() - started,
    withoutHistory: withoutCase,
    withHistory: withCase,
    ratios: { idle: ratios(withCase.idle, withoutCase.idle), sweep: ratios(withCase.sweep, withoutCase.sweep) },
  };
  log(
    `  with ÷ without history: idle sweep requests ${result.ratios.idle.requests.toFixed(2)}, rows ${result.ratios.idle.rowsReturned.toFixed(2)}, wall ${result.ratios.idle.wallMs.toFixed(2)}; ` +
      `sweep requests ${result.ratios.sweep.requests.toFixed(2)}, rows ${result.ratios.sweep.rowsReturned.toFixed(2)}, wall ${result.ratios.sweep.wallMs.toFixed(2)} ` +
      `(scenario ${fmtMs(result.durationMs)}, of which seeding the history ${fmtMs(result.seedMs)})`,
  );
  return result;
}

async function historySweep(env: BenchEnvironment, options: BenchOptions, settings: Record<string, string>): Promise<HistorySweep> {
  const result = await job(options, { job: "sweeperCountingRows", settings });
  return {
    wallMs: result.wallMs,
    rowsReturned: result.outcome.timings?.rowsReturned ?? 0,
    scanned: result.outcome.summary?.scanned ?? 0,
    storage: result.storage,
    graphRequests: env.emulator.requests.length,
    closed: result.outcome.summary?.closed ?? 0,
  };
}

function medianFigures(sweeps: readonly HistorySweep[]): HistoryFigures {
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  return {
    wallMs: median(sweeps.map((s) => s.wallMs)),
    rowsReturned: median(sweeps.map((s) => s.rowsReturned)),
    scanned: median(sweeps.map((s) => s.scanned)),
    requests: median(sweeps.map((s) => s.storage.total)),
    queries: median(sweeps.map((s) => s.storage.queries)),
  };
}

/** a ÷ b; 1 where both are 0 (nothing, both times). */
function ratioOf(a: number, b: number): number {
  return a === b ? 1 : a / b;
}

async function runScan(env: BenchEnvironment, plan: DatasetPlan, options: BenchOptions, log: (line: string) => void): Promise<ScanResult> {
  const tableName = env.newTableName("scan");
  log(`Dry-run scan: seeding ${options.scanRows} stale rows…`);
  const { seedMs } = await seedScanTable(env, plan, tableName, options.scanRows);
  env.emulator.reset();
  const azuriteBefore = processCpuMs(env.azuritePid);
  // --expose-gc only lets the worker force one collection after the scan, to say what stayed alive.
  const result = await job(options, { job: "sweeperDryRun", settings: env.settings(tableName) }, ["--expose-gc"]);
  const azuriteAfter = processCpuMs(env.azuritePid);
  await env.deleteTable(tableName);
  // What a worker process holds before any work (Node, tsx's hook, the SDKs and the app loaded).
  const baseline = options.isolation === "process" ? await job(options, { job: "baseline", settings: env.settings(tableName) }) : undefined;
  const scan: ScanResult = {
    rows: options.scanRows,
    seedMs,
    wallMs: result.wallMs,
    scanned: result.outcome.summary?.scanned ?? 0,
    peakRssMb: result.peakRssBytes / 2 ** 20,
    rssScope: result.rssScope,
    workerBaselineRssMb: baseline ? baseline.peakRssBytes / 2 ** 20 : null,
    liveHeapMbAfterScan: result.liveHeapBytesAfterGc !== undefined ? result.liveHeapBytesAfterGc / 2 ** 20 : null,
    cpuMs: { contender: result.cpuMs, azurite: azuriteBefore !== null && azuriteAfter !== null ? azuriteAfter - azuriteBefore : null },
    storage: result.storage,
  };
  log(`  seeded in ${fmtMs(seedMs)}; scanned ${scan.scanned} rows in ${fmtMs(scan.wallMs)}, ${scan.storage.queries} pages, peak RSS ${scan.peakRssMb.toFixed(0)} MB (${scan.rssScope}` +
      `${scan.workerBaselineRssMb !== null ? `; an idle worker: ${scan.workerBaselineRssMb.toFixed(0)} MB` : ""}` +
      `${scan.liveHeapMbAfterScan !== null ? `; heap alive after GC: ${scan.liveHeapMbAfterScan.toFixed(0)} MB` : ""}), ` +
      `CPU s: scanner ${(scan.cpuMs.contender / 1000).toFixed(1)}, Azurite ${scan.cpuMs.azurite === null ? "?" : (scan.cpuMs.azurite / 1000).toFixed(1)}`);
  return scan;
}

function sourceInfo(): BenchResult["source"] {
  const git = (...args: string[]) => execFileSync("git", args, { cwd: PROJECT_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  try {
    return { commit: git("rev-parse", "HEAD"), srcDirty: git("status", "--porcelain", "--", "src").length > 0 };
  } catch {
    return { commit: null, srcDirty: null };
  }
}

/** User + system CPU time of a process, from /proc (Linux); null where unreadable. */
function processCpuMs(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the command), in clock ticks of 10 ms.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

function job(options: BenchOptions, request: JobRequest, nodeArgs: string[] = []): Promise<JobResult> {
  return runJob(request, options.isolation, { nodeArgs, ...(options.cpuProfileDir && { cpuProfileDir: options.cpuProfileDir }) });
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function fmtMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}
