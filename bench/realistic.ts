/**
 * The realistic scenarios: Graph answering in 1-3 s (log-normal, median ~1.2 s, tail to ~3 s) and
 * Excel's two budgets as Graph keeps them (1,500 per 10 s per tenant, 5,000 per 10 s per app),
 * with backlogs of `realisticSeconds` of the binding budget. `realistic2`: 2 tenants, each tenant's
 * budget binds, and the peers run too (on prefixes: at 1-3 s a request their whole backlog would
 * take an hour). `realistic10`: 10 tenants, the app's budget binds and is shared.
 */
import type { RecordedRequest } from "../standins/graphEmulator";
import type { LognormalLatency } from "../standins/graphEmulator";
import type { BenchEnvironment } from "./environment";
import type { ContenderRun, ContenderSetup } from "./bench";
import { planDataset, staleLoad, type DatasetPlan, type SeededTable } from "./dataset";
import { budgetUtilization } from "./measure";
import { REALISTIC_TENANTS, type BenchOptions, type ContenderName, type RealisticScenario, type TenantBudget } from "./options";

export type RunContender = (
  env: BenchEnvironment,
  plan: DatasetPlan,
  options: BenchOptions,
  contender: ContenderName,
  scenario: RealisticScenario,
  budget: TenantBudget | null,
  repeat: number,
  log: (line: string) => void,
  setup: ContenderSetup,
) => Promise<{ run: ContenderRun; seeded: SeededTable }>;

/** What a sweep cannot beat: the binding budget, or the busiest workbook's sessions one at a time. */
export interface RealisticFloor {
  /** max over tenants of stale sessions ÷ the tenant budget's rate. */
  tenantMs: number;
  /** All stale sessions ÷ the app budget's rate. */
  appMs: number;
  /** The busiest workbook's stale sessions × the median latency. */
  workbookMs: number;
  floorMs: number;
  /** Which one it is. */
  binding: "tenant" | "app" | "workbook";
}

export interface RealisticFigures {
  /** The run's wall ÷ the floor (for a prefix: the floor of the same share of the backlog). */
  wallOverFloor: number;
  /** 429s ÷ Graph requests. */
  throttledShare: number | null;
  /** How full each tenant's budget was kept (null: it never filled a window), worst first. */
  tenantUtilization: (number | null)[];
  /** How full the app's budget was kept across tenants (null: it never filled a window). */
  appUtilization: number | null;
  /**
   * Each tenant's accepted requests ÷ a fair share of all, while every tenant still had work
   * (from the first request to the first tenant's last), and the largest |share − 1|.
   */
  fairShares: number[];
  maxShareDeviation: number | null;
  /**
   * From the run's start (every row was stale by then) to each session's 204, ms: how long a dead
   * session stayed open in this sweep.
   */
  releaseLatencyMs: { p50: number; p99: number; max: number } | null;
  /** Mean latency Graph drew for the run's requests (ms). */
  meanGraphLatencyMs: number;
  /** Graph requests in flight on average (Little's law over the emulator's own records). */
  meanInFlight: number;
}

export interface RealisticRun {
  contender: ContenderName;
  run: ContenderRun;
  figures: RealisticFigures;
}

export interface RealisticResult {
  scenario: RealisticScenario;
  tenants: number;
  users: number;
  workbooksPerUser: number;
  stale: number;
  staleByTenant: number[];
  latency: LognormalLatency;
  tenantBudget: TenantBudget;
  appBudget: TenantBudget;
  floor: RealisticFloor;
  runs: RealisticRun[];
}

const EXCEL_APP_BUDGET: TenantBudget = { requests: 5_000, windowMs: 10_000 };

/**
 * Ten workbooks per user and three stale sessions per workbook: a backlog spread over many
 * workbooks, as after an outage of the services that open sessions. The busiest workbook's
 * sessions go one at a time (its floor is in the report); with 9 per workbook the last workbooks'
 * serial closes, not the budget, set the sweep's last seconds.
 */
const WORKBOOKS_PER_USER = 10;
const SESSIONS_PER_WORKBOOK = 3;

export async function runRealistic(
  env: BenchEnvironment,
  options: BenchOptions,
  scenario: RealisticScenario,
  runContender: RunContender,
  log: (line: string) => void,
): Promise<RealisticResult> {
  const tenants = REALISTIC_TENANTS[scenario];
  const tenantBudget = options.realisticBudget;
  // Excel's own app budget where the tenants' budgets bind; where the app's binds, the one this
  // machine can carry (options.ts, appBudget).
  const appBudget = scenario === "realistic10" ? options.appBudget : EXCEL_APP_BUDGET;
  const rate = Math.min(tenants * (tenantBudget.requests / tenantBudget.windowMs), appBudget.requests / appBudget.windowMs);
  const stale = Math.max(tenants, Math.round(rate * options.realisticSeconds * 1000));
  const users = Math.max(tenants, Math.ceil(stale / (WORKBOOKS_PER_USER * SESSIONS_PER_WORKBOOK)));
  const plan = planDataset({ stale, fresh: 0, users, tenants, workbooksPerUser: WORKBOOKS_PER_USER });
  const latency: LognormalLatency = { kind: "lognormal", medianMs: options.realisticLatency.medianMs, p99Ms: options.realisticLatency.p99Ms };
  const floor = realisticFloor(plan, tenantBudget, appBudget, latency.medianMs);
  log(
    `${scenario}: ${tenants} tenants, ${stale} stale sessions, Graph latency log-normal (median ${latency.medianMs} ms, p99 ${latency.p99Ms} ms), ` +
      `budgets ${tenantBudget.requests}/${tenantBudget.windowMs / 1000} s per tenant and ${appBudget.requests}/${appBudget.windowMs / 1000} s per app; floor ${(floor.floorMs / 1000).toFixed(1)} s (${floor.binding})`,
  );
  const contenders = options.contenders.filter((c) => c === "sweeper" || scenario === "realistic2");
  const runs: RealisticRun[] = [];
  for (const contender of contenders) {
    const limit = contender === "naive" ? options.realisticNaivePrefix : contender === "competent" ? options.realisticCompetentPrefix : undefined;
    const { run, seeded } = await runContender(env, plan, options, contender, scenario, tenantBudget, 1, log, {
      appBudget,
      latency,
      ...(limit !== undefined && { limit: Math.min(limit, stale) }),
    });
    const figures = realisticFigures(env.emulator.requests, run, tenantBudget, appBudget, floor.floorMs * (run.rows / stale));
    runs.push({ contender, run, figures });
    log(
      `  ${contender}: wall ÷ floor ${figures.wallOverFloor.toFixed(3)}, 429 share ${fmtShare(figures.throttledShare)}, ` +
        `tenant budget utilization ${figures.tenantUtilization.map((u) => (u === null ? "n/a" : u.toFixed(3))).join(", ")}, ` +
        `app ${figures.appUtilization === null ? "n/a" : figures.appUtilization.toFixed(3)}, ` +
        `fair share deviation ${figures.maxShareDeviation === null ? "n/a" : figures.maxShareDeviation.toFixed(3)}, ` +
        `${figures.meanInFlight.toFixed(0)} in flight at ${figures.meanGraphLatencyMs.toFixed(0)} ms mean latency, ` +
        `release latency p50 ${fmtS(figures.releaseLatencyMs?.p50)} p99 ${fmtS(figures.releaseLatencyMs?.p99)}`,
    );
    await env.deleteTable(seeded.tableName);
  }
  return {
    scenario,
    tenants,
    users,
    workbooksPerUser: WORKBOOKS_PER_USER,
    stale,
    staleByTenant: [...staleLoad(plan).perTenant.values()],
    latency,
    tenantBudget,
    appBudget,
    floor,
    runs,
  };
}

export function realisticFloor(plan: DatasetPlan, tenantBudget: TenantBudget, appBudget: TenantBudget, medianLatencyMs: number): RealisticFloor {
  const load = staleLoad(plan);
  const tenantMs = Math.max(0, ...[...load.perTenant.values()].map((n) => (n * tenantBudget.windowMs) / tenantBudget.requests));
  const appMs = (plan.counts.stale * appBudget.windowMs) / appBudget.requests;
  const workbookMs = load.maxPerWorkbook * medianLatencyMs;
  const floorMs = Math.max(tenantMs, appMs, workbookMs);
  return { tenantMs, appMs, workbookMs, floorMs, binding: floorMs === appMs ? "app" : floorMs === tenantMs ? "tenant" : "workbook" };
}

export function realisticFigures(requests: readonly RecordedRequest[], run: ContenderRun, tenantBudget: TenantBudget, appBudget: TenantBudget, floorMs: number): RealisticFigures {
  const accepted = requests.filter((r) => r.status !== 429);
  const byTenant = new Map<string, number[]>();
  for (const r of accepted) {
    const list = byTenant.get(r.tenantId ?? "?") ?? [];
    list.push(r.startedAt);
    byTenant.set(r.tenantId ?? "?", list);
  }
  const tenantUtilization = [...byTenant.values()]
    .map((starts) => budgetUtilization(starts, tenantBudget))
    .sort((a, b) => (a ?? -1) - (b ?? -1));
  const appUtilization = budgetUtilization(accepted.map((r) => r.startedAt), appBudget);

  // Shares while every tenant had work: up to the first tenant's last accepted request.
  const contentionEnd = Math.min(...[...byTenant.values()].map((starts) => Math.max(...starts)));
  const during = [...byTenant.values()].map((starts) => starts.filter((t) => t <= contentionEnd).length);
  const total = during.reduce((sum, n) => sum + n, 0);
  const fairShares = byTenant.size > 1 && total > 0 ? during.map((n) => n / (total / byTenant.size)) : [];
  const maxShareDeviation = fairShares.length > 0 ? Math.max(...fairShares.map((share) => Math.abs(share - 1))) : null;

  const released = requests
    .filter((r) => r.kind === "closeSession" && r.status === 204 && r.endedAt !== undefined)
    .map((r) => r.endedAt! - run.startedAtMs)
    .sort((a, b) => a - b);
  const at = (q: number) => released[Math.min(released.length - 1, Math.floor(q * released.length))]!;

  const done = requests.filter((r) => r.endedAt !== undefined);
  const first = Math.min(...done.map((r) => r.startedAt));
  const last = Math.max(...done.map((r) => r.endedAt!));
  const busy = done.reduce((sum, r) => sum + (r.endedAt! - r.startedAt), 0);
  const drawn = requests.filter((r) => r.latencyMs !== undefined);
  return {
    wallOverFloor: run.wallMs / floorMs,
    throttledShare: requests.length > 0 ? (requests.length - accepted.length) / requests.length : null,
    tenantUtilization,
    appUtilization,
    fairShares,
    maxShareDeviation,
    releaseLatencyMs: released.length > 0 ? { p50: at(0.5), p99: at(0.99), max: released[released.length - 1]! } : null,
    meanGraphLatencyMs: drawn.length > 0 ? drawn.reduce((sum, r) => sum + r.latencyMs!, 0) / drawn.length : 0,
    meanInFlight: done.length > 0 ? busy / Math.max(1, last - first) : 0,
  };
}

function fmtShare(share: number | null): string {
  return share === null ? "n/a" : `${(share * 100).toFixed(2)}%`;
}

function fmtS(ms: number | undefined): string {
  return ms === undefined ? "n/a" : `${(ms / 1000).toFixed(1)} s`;
}
