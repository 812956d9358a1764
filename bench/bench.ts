/**
 * The bench: starts the stand-ins, seeds the same data into a fresh table for every contender run,
 * runs each contender against the same https Graph emulator and authority, checks every row, and
 * measures the floors, the 100k-row dry-run scan and an idle sweep. `runBench` is what `npm run
 * bench` (bench/run.ts) and the test (test/bench.test.ts) call.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import type { SweepSummary } from "../src/sweep/models";
import { planDataset, seedScanTable, seedTable, staleLoad, type DatasetPlan, type SeededTable } from "./dataset";
import { startBenchEnvironment, type BenchEnvironment } from "./environment";
import { graphFloor, measureTableFloor, type GraphFloor, type TableFloor } from "./floors";
import { graphFigures, verifyRows, type Correctness, type GraphFigures } from "./measure";
import { DEFAULT_OPTIONS, type BenchOptions, type ContenderName, type ScenarioName, type TenantBudget } from "./options";

export type { ScenarioName } from "./options";
import { PROJECT_ROOT } from "./projectRoot";
import { evaluateTargets, type Targets } from "./targets";
import { runJob, type JobRequest, type JobResult, type StorageCounts } from "./worker";


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
  scenario: ScenarioName;
  repeat: number;
  /** Stale rows the contender was given (naive: its prefix). */
  rows: number;
  wallMs: number;
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

export interface BenchResult {
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  machine: { node: string; cpus: number; platform: string };
  /** The code measured: HEAD and whether src/ had uncommitted changes. */
  source: { commit: string | null; srcDirty: boolean | null };
  options: BenchOptions;
  dataset: { stale: number; fresh: number; closed: number; users: number; tenants: number; workbooksPerUser: number; staleByTenant: number[]; maxStalePerWorkbook: number };
  floors: {
    table: TableFloor;
    /** The issue's Graph floor per scenario: max(tenant requests ÷ budget rate, workbook sessions × latency). */
    graph: Partial<Record<ScenarioName, GraphFloor>>;
    /** Not a floor of the issue's: the same closeSession calls with plain fetch and nothing else, on this machine. */
    graphRoundTrips: GraphRoundTrips;
  };
  runs: ContenderRun[];
  scan?: ScanResult;
  idle?: IdleResult;
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
    const scenarios = options.scenarios.map((name) => ({ name, budget: name === "budget" ? options.budget : null }));

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

    let scan: ScanResult | undefined;
    if (options.scanRows > 0) scan = await runScan(env, plan, options, log);

    const graph: Partial<Record<ScenarioName, GraphFloor>> = {};
    for (const s of scenarios) graph[s.name] = graphFloor(plan, s.budget, options.latencyMs);
    const floors = { table, graph, graphRoundTrips };
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
      floors,
      runs,
      ...(scan && { scan }),
      ...(idle && { idle }),
      targets: evaluateTargets({ runs, floors, ...(scan && { scan }), ...(idle && { idle }) }),
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

function sweeperSettings(options: BenchOptions, budget: TenantBudget | null): Record<string, string> {
  return {
    // The operator sets the budget the sweep keeps under to the tenant's; with no budget enforced, one that never binds.
    EXCEL_BUDGET_REQUESTS: String(budget ? budget.requests : 1_000_000),
    EXCEL_BUDGET_WINDOW: budget ? String(budget.windowMs / 1000) : "PT10S",
    ...(options.sweepConcurrency !== undefined && { SWEEP_CONCURRENCY: String(options.sweepConcurrency) }),
  };
}

async function runContender(
  env: BenchEnvironment,
  plan: DatasetPlan,
  options: BenchOptions,
  contender: ContenderName,
  scenario: ScenarioName,
  budget: TenantBudget | null,
  repeat: number,
  log: (line: string) => void,
): Promise<{ run: ContenderRun; seeded: SeededTable }> {
  const seeded = await seed(env, plan, contender.slice(0, 5));
  env.emulator.configure({ tenantBudget: budget });
  const limit = contender === "naive" ? Math.min(options.naivePrefix, plan.counts.stale) : undefined;
  const rows = limit ?? plan.counts.stale;
  log(`${scenario} · ${contender}${options.repeats > 1 ? ` #${repeat}` : ""}: ${rows} stale rows${limit !== undefined ? ` (a prefix of ${plan.counts.stale})` : ""}…`);
  const cpuBefore = process.cpuUsage();
  const azuriteBefore = processCpuMs(env.azuritePid);
  const result: JobResult = await job(options, {
    job: contender,
    settings: env.settings(seeded.tableName, sweeperSettings(options, budget)),
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
