/** The bench's printed table and target list. */
import type { BenchResult, ContenderRun, HistoryFigures, HistoryResult, ThreeResult } from "./bench";
import type { RealisticResult } from "./realistic";
import type { GraphFigures } from "./measure";
import { representative, type Target } from "./targets";

export function formatReport(result: BenchResult): string {
  const { options, dataset, floors } = result;
  const lines: string[] = [];
  const throughput = result.runs.length > 0;
  // The three scenario sweeps the same seeded rows under the same budget.
  const seededRows = throughput || result.three !== undefined;
  lines.push(
    `workbook-session-sweeper bench · ${result.source.commit ? `${result.source.commit.slice(0, 7)}${result.source.srcDirty ? " + uncommitted src/ changes" : ""} · ` : ""}Node ${result.machine.node}, ${result.machine.cpus} cores · ` +
      (seededRows ? `${dataset.stale} stale + ${dataset.fresh} fresh + ${dataset.closed} closed rows, ` : "") +
      `${dataset.users} users, ${dataset.tenants} tenants, ${dataset.workbooksPerUser} workbooks/user · Graph latency ${options.latencyMs} ms` +
      (seededRows ? ` · budget ${options.budget.requests}/${options.budget.windowMs / 1000} s per tenant` : ""),
  );
  lines.push("");
  if (throughput) lines.push(...throughputTable(result), "");
  if (floors) lines.push(...floorLines(result));
  if (result.three) lines.push(...threeLines(result.three, representative(result.runs, "sweeper", "budget")));
  if (result.history) lines.push(...historyLines(result.history));
  for (const realistic of Object.values(result.realistic ?? {})) lines.push(...realisticLines(realistic));
  if (result.scan) lines.push(`Dry-run scan of ${result.scan.rows} rows: ${(result.scan.wallMs / 1000).toFixed(2)} s, ${result.scan.storage.queries} pages, peak RSS ${result.scan.peakRssMb.toFixed(0)} MB (${result.scan.rssScope}${result.scan.workerBaselineRssMb !== null ? `; an idle worker process: ${result.scan.workerBaselineRssMb.toFixed(0)} MB` : ""})`);
  if (result.idle) lines.push(`Idle sweep: ${result.idle.storage.total} storage request(s) (${result.idle.storage.queries} queries), ${result.idle.graphRequests} Graph request(s), ${result.idle.tokenRequests} token request(s)`);
  lines.push("");
  lines.push("Targets:");
  const nameWidth = Math.max(20, ...Object.keys(result.targets).map((name) => name.length));
  for (const [name, target] of Object.entries(result.targets) as [string, Target<unknown>][]) {
    const mark = target.met === null ? "n/a " : target.met ? "met " : "MISS";
    lines.push(`  [${mark}] ${name.padEnd(nameWidth)} ${showValue(target.value).padEnd(36)} target ${target.target}${target.note ? `  (${target.note})` : ""}`);
  }
  return lines.join("\n");
}

function throughputTable(result: BenchResult): string[] {
  const { options, dataset } = result;
  const lines: string[] = [];
  const header = ["scenario", "contender", "rows", "wall", "closed/s", "ms/closed", "Graph req/closed", "429s", "storage req/closed", "peak RSS MB", "wrong rows"];
  const table: string[][] = [header];
  for (const scenario of ["budget", "unbounded"] as const) {
    for (const contender of ["naive", "competent", "sweeper"] as const) {
      const run = representative(result.runs, contender, scenario);
      if (!run) continue;
      table.push([
        scenario === "budget" ? "budget on" : "budget off",
        contender,
        `${run.rows}${contender === "naive" ? " (prefix)" : ""}`,
        `${(run.wallMs / 1000).toFixed(2)} s`,
        run.closedPerSecond.toFixed(1),
        fmt(run.msPerClosed, 2),
        fmt(run.graphRequestsPerClosed, 3),
        String(run.graph.throttled),
        fmt(run.storageRequestsPerClosed, 3),
        `${run.peakRssMb.toFixed(0)}${run.rssScope === "shared" ? "*" : ""}`,
        run.correctness.wrongRows === 0 ? "0" : `${run.correctness.wrongRows} WRONG`,
      ]);
    }
  }
  const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const [index, row] of table.entries()) {
    lines.push(row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "));
    if (index === 0) lines.push(widths.map((w) => "-".repeat(w)).join("  "));
  }
  if (result.runs.some((r) => r.rssScope === "shared")) lines.push("* inline run: RSS of the whole bench process, stand-ins included");
  if (result.runs.some((r) => r.contender === "naive")) {
    lines.push(`naive works through a prefix of ${Math.min(options.naivePrefix, dataset.stale)} of the ${dataset.stale} stale rows (one at a time); compare ms/closed, not wall.`);
  }
  return lines;
}

function floorLines(result: BenchResult): string[] {
  const floors = result.floors!;
  const lines: string[] = [];
  const g = floors.graph;
  lines.push(
    `Floors: Table ${(floors.table.floorMs / 1000).toFixed(2)} s (${floors.table.rowWrites} row writes in ${floors.table.transactions} transactions; scan ${(floors.table.scanMs / 1000).toFixed(2)} s)` +
      (g.budget ? ` · Graph, budget on ${(g.budget.floorMs / 1000).toFixed(2)} s` : "") +
      (g.unbounded ? ` · Graph, budget off ${(g.unbounded.floorMs / 1000).toFixed(2)} s (busiest workbook)` : ""),
  );
  const trips = floors.graphRoundTrips;
  lines.push(
    `Graph round trips alone on this machine (plain fetch, ${trips.parallel} workbooks at once, no ledger): ${trips.closed} closes in ${(trips.closeMs / 1000).toFixed(2)} s ` +
      `(${((trips.closed / trips.closeMs) * 1000).toFixed(0)}/s)`,
  );
  for (const run of result.runs.filter((r) => r.contender === "sweeper")) {
    if (run.scenario !== "budget" && run.scenario !== "unbounded") continue;
    const floor = Math.max(floors.table.floorMs, g[run.scenario]?.floorMs ?? 0);
    const tenants = Object.values(run.graph.perTenant).map((t) => (t.budgetUtilization === null ? "n/a" : t.budgetUtilization.toFixed(3)));
    lines.push(
      `sweeper, ${run.scenario === "budget" ? "budget on" : "budget off"}${result.options.repeats > 1 ? ` #${run.repeat}` : ""}: wall ÷ max(floors) = ${(run.wallMs / floor).toFixed(2)}` +
        (run.scenario === "budget" ? ` · budget utilization per tenant ${tenants.join(", ")}` : "") +
        ` · ${run.graph.meanInFlight.toFixed(1)} Graph requests in flight on average · ${run.graph.tokenRequests} token requests · requests overlapping on a workbook: ${run.graph.workbookOverlaps.count}` +
        (run.graph.workbookOverlaps.count > 0 ? ` (longest ${run.graph.workbookOverlaps.maxOverlapMs} ms${run.graph.workbookOverlaps.maxOverlapMs < 5 ? ": the emulator's bookkeeping, not a real overlap" : ""})` : ""),
    );
  }
  return lines;
}

/** A realistic scenario: its setup and floor, then a row per contender. */
function realisticLines(r: RealisticResult): string[] {
  const lines: string[] = [];
  lines.push(
    `${r.scenario}: ${r.tenants} tenants, ${r.stale} stale sessions (${r.users} users × ${r.workbooksPerUser} workbooks), Graph latency log-normal median ${r.latency.medianMs} ms / p99 ${r.latency.p99Ms} ms, ` +
      `budgets ${r.tenantBudget.requests}/${r.tenantBudget.windowMs / 1000} s per tenant and ${r.appBudget.requests}/${r.appBudget.windowMs / 1000} s per app · ` +
      `floor ${fmtSeconds(r.floor.floorMs)} (${r.floor.binding} budget binds; tenant ${fmtSeconds(r.floor.tenantMs)}, app ${fmtSeconds(r.floor.appMs)}, busiest workbook ${fmtSeconds(r.floor.workbookMs)})`,
  );
  const header = ["contender", "rows", "wall", "÷ floor", "closed/s", "ms/closed", "429 share", "tenant util.", "app util.", "share dev.", "in flight", "release p50", "release p99", "wrong rows"];
  const table: string[][] = [header];
  for (const { contender, run, figures: f } of r.runs) {
    table.push([
      contender,
      `${run.rows}${run.rows < r.stale ? " (prefix)" : ""}`,
      fmtSeconds(run.wallMs),
      f.wallOverFloor.toFixed(3),
      run.closedPerSecond.toFixed(1),
      fmt(run.msPerClosed, 2),
      f.throttledShare === null ? "n/a" : `${(f.throttledShare * 100).toFixed(2)}%`,
      f.tenantUtilization[0] === undefined || f.tenantUtilization[0] === null ? "n/a" : f.tenantUtilization[0].toFixed(3),
      f.appUtilization === null ? "n/a" : f.appUtilization.toFixed(3),
      f.maxShareDeviation === null ? "n/a" : f.maxShareDeviation.toFixed(3),
      f.meanInFlight.toFixed(0),
      f.releaseLatencyMs ? fmtSeconds(f.releaseLatencyMs.p50) : "n/a",
      f.releaseLatencyMs ? fmtSeconds(f.releaseLatencyMs.p99) : "n/a",
      run.correctness.wrongRows === 0 ? "0" : `${run.correctness.wrongRows} WRONG`,
    ]);
  }
  const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const [index, row] of table.entries()) {
    lines.push(`  ${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ")}`);
    if (index === 0) lines.push(`  ${widths.map((w) => "-".repeat(w)).join("  ")}`);
  }
  lines.push("  tenant util.: the worst tenant's; share dev.: the largest |tenant's share ÷ a fair share − 1| while every tenant had work; release: from the run's start (every row stale by then) to the session's 204.");
  return lines;
}

/** The three scenario: a row per sweeper process, the three together, and the budget scenario's single sweeper beside them. */
function threeLines(three: ThreeResult, single: ContenderRun | undefined): string[] {
  const lines: string[] = [];
  lines.push(`Three sweepers at once (${three.sweepers} processes started together on one table of ${three.rows} stale rows, budget on as in the budget scenario; no sweep after them):`);
  const header = ["sweeper", "start", "end", "wall", "closed", "leasedElsewhere", "lostRaces", "storage req", "stopped early"];
  const table: string[][] = [header];
  for (const [i, w] of three.workers.entries()) {
    const s = w.summary;
    table.push([
      String(i + 1),
      `${(w.startMs / 1000).toFixed(2)} s`,
      `${(w.endMs / 1000).toFixed(2)} s`,
      `${(w.wallMs / 1000).toFixed(2)} s`,
      String(s?.closed ?? "?"),
      String(s?.leasedElsewhere ?? "?"),
      String(s?.lostRaces ?? "?"),
      String(w.storage.total),
      s === undefined ? "?" : s.stoppedEarly ? `YES${s.error ? ` (${s.error.code})` : ""}` : "no",
    ]);
  }
  const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const [index, r] of table.entries()) {
    lines.push(`  ${r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ")}`);
    if (index === 0) lines.push(`  ${widths.map((w) => "-".repeat(w)).join("  ")}`);
  }
  const wrong = three.correctness.wrongRows;
  lines.push(
    `  together: wall ${fmtSeconds(three.wallMs)} (first start to last end; ÷ Graph floor ${(three.wallMs / three.graphFloorMs).toFixed(2)}) · ${three.closed} closed · ` +
      `${three.graph.requests} Graph requests · ${three.graph.throttled} × 429 · budget utilization per tenant ${utilizations(three.graph)} · ` +
      `requests overlapping on a workbook: ${overlaps(three.graph)} · ${three.storage.total} storage requests (${fmt(three.storageRequestsPerClosed, 3)}/closed) · ` +
      (wrong === 0 ? "0 wrong rows" : `${wrong} WRONG rows (${three.correctness.examples[0] ?? ""})`),
  );
  if (single) {
    lines.push(
      `  one sweeper (budget scenario, this run): wall ${fmtSeconds(single.wallMs)} · ${single.closed} closed · ${single.graph.requests} Graph requests · ${single.graph.throttled} × 429 · ` +
        `budget utilization per tenant ${utilizations(single.graph)} · requests overlapping on a workbook: ${overlaps(single.graph)} · ` +
        `${single.storage.total} storage requests (${fmt(single.storageRequestsPerClosed, 3)}/closed) · ${single.correctness.wrongRows} wrong rows`,
    );
  }
  return lines;
}

function utilizations(graph: GraphFigures): string {
  return Object.values(graph.perTenant).map((t) => (t.budgetUtilization === null ? "n/a" : t.budgetUtilization.toFixed(3))).join(", ");
}

function overlaps(graph: GraphFigures): string {
  const { count, maxOverlapMs } = graph.workbookOverlaps;
  return count === 0 ? "0" : `${count} (longest ${maxOverlapMs} ms${maxOverlapMs < 5 ? ": the emulator's bookkeeping" : ""})`;
}

/** The history scenario: its own small table of medians, then the ratios. */
function historyLines(history: HistoryResult): string[] {
  const lines: string[] = [];
  const { withoutHistory: without, withHistory: withRows, ratios } = history;
  lines.push(
    `History: ${history.historyRows} finished sessions in ${withRows.historyTables.length} weekly history table(s) against none, ${history.liveStale} stale live rows, ` +
      `no finished row in either live table${history.repeats > 1 ? ` · medians of ${history.repeats} repeats` : ""} · ${fmtSeconds(history.durationMs)} in all (seeding the history ${fmtSeconds(history.seedMs)})`,
  );
  const header = ["history", "sweep", "rows returned", "scanned", "storage requests", "queries", "wall"];
  const table: string[][] = [header];
  const row = (label: string, sweep: string, f: HistoryFigures) => [label, sweep, String(f.rowsReturned), String(f.scanned), String(f.requests), String(f.queries), `${f.wallMs.toFixed(0)} ms`];
  table.push(row("none", `${history.liveStale} stale`, without.sweep), row(String(history.historyRows), `${history.liveStale} stale`, withRows.sweep));
  table.push(row("none", "idle", without.idle), row(String(history.historyRows), "idle", withRows.idle));
  const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const [index, r] of table.entries()) {
    lines.push(`  ${r.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ")}`);
    if (index === 0) lines.push(`  ${widths.map((w) => "-".repeat(w)).join("  ")}`);
  }
  const r = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : String(x));
  lines.push(
    `  with ÷ without: ${history.liveStale}-row sweep: requests ${r(ratios.sweep.requests)}, rows returned ${r(ratios.sweep.rowsReturned)}, scanned ${r(ratios.sweep.scanned)}, wall ${r(ratios.sweep.wallMs)} · ` +
      `idle sweep: requests ${r(ratios.idle.requests)}, rows returned ${r(ratios.idle.rowsReturned)}, scanned ${r(ratios.idle.scanned)}, wall ${r(ratios.idle.wallMs)}` +
      (without.wrongRows + withRows.wrongRows > 0 ? ` · ${without.wrongRows + withRows.wrongRows} WRONG rows (${[...without.examples, ...withRows.examples][0] ?? ""})` : ""),
  );
  return lines;
}

function fmtSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function fmt(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "—";
}

function showValue(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k} ${showValue(v)}`).join(", ");
  return String(value);
}
