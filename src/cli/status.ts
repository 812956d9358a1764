import { loadLedgerConfig, type Settings } from "../config";
import { createStatusServices, readStatus } from "../app/statusServices";
import type { LedgerStatus } from "../ledger/ledgerStatus";
import { describeFault } from "../sweep/Sweeper";
import { printable, table, type TextSink } from "./output";
import { configOrFail } from "./settings";

/** The widest bar of the idle-age chart, in characters. */
export const BAR_WIDTH = 30;
/** What the bars are made of. */
export const BAR_CHARACTER = "#";

/**
 * `workbook-session-sweeper status`: reads the ledger with the storage settings alone and prints
 * its status, as text or (`json`) as the one JSON object `GET /api/status` answers. Returns the
 * exit code: 0 printed, 1 storage could not be read, 2 the settings are at fault.
 */
export async function runStatusCommand(
  settings: Settings,
  options: { json: boolean; settingsFrom?: string },
  out: { stdout: TextSink; fail(message: string): void },
): Promise<number> {
  const config = configOrFail(() => loadLedgerConfig(settings), (message) => out.fail(message), options.settingsFrom);
  if (!config) return 2;
  let status: LedgerStatus;
  try {
    status = await readStatus(createStatusServices(config));
  } catch (error) {
    const fault = describeFault(error);
    out.fail(`the ledger could not be read: ${fault.code}: ${fault.message}`);
    return 1;
  }
  out.stdout.write(options.json ? `${JSON.stringify(status)}\n` : formatStatus(status));
  return 0;
}

/** A duration for people: `850ms`, `12.3s`, `8m 0s`, `3h 4m`, `2d 5h`. */
export function formatDuration(ms: number): string {
  const sign = ms < 0 ? "-" : "";
  const abs = Math.abs(Math.round(ms));
  if (abs < 1_000) return `${sign}${abs}ms`;
  if (abs < 60_000) return `${sign}${(Math.floor(abs / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(abs / 1_000);
  if (s < 3_600) return `${sign}${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${sign}${Math.floor(s / 3_600)}h ${Math.floor((s % 3_600) / 60)}m`;
  return `${sign}${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3_600)}h`;
}

/** A bar of the chart: `count` of `max` as up to BAR_WIDTH characters, at least one for any count above 0. */
export function bar(count: number, max: number): string {
  const length = count === 0 || max === 0 ? 0 : Math.max(1, Math.round((count / max) * BAR_WIDTH));
  return BAR_CHARACTER.repeat(length).padEnd(BAR_WIDTH);
}

/** What each bucket of the chart means, in its order. */
export const IDLE_BUCKETS = [
  ["alive", "under the lease"],
  ["stale", "past the lease, claimed"],
  ["due", "a sweep would take it now"],
  ["cooldown", "waiting on a Graph cooldown"],
] as const;

/** The status as compact text: live sessions and the idle-age chart, the last 24 h, release latency, the last sweeps. */
export function formatStatus(status: LedgerStatus): string {
  const { live, finished, releaseLatency: latency } = status;
  const parts: string[] = [`Status of table ${status.table} at ${status.serviceNow} (the storage service's time)`];

  const liveLines = [`Live sessions: ${live.total} (open ${live.byState.open}, closing ${live.byState.closing}, waiting on a retry ${live.byState.waitingRetry})`];
  const max = Math.max(...IDLE_BUCKETS.map(([key]) => live.byIdle[key]));
  const facts: string[][] = [];
  facts.push(["oldest", live.oldest ? `idle ${formatDuration(live.oldest.idleMs)} (last heartbeat ${live.oldest.lastActivityAt}, ${live.oldest.status})` : "no live session"]);
  facts.push([
    "retries",
    live.retries.waiting === 0 ? "none waiting" : `${live.retries.waiting} waiting; the next due ${live.retries.nextDueAt} (in ${formatDuration(live.retries.nextDueInMs ?? 0)})`,
  ]);
  if (live.malformed > 0) facts.push(["malformed", `${live.malformed} row${live.malformed === 1 ? "" : "s"} that do not decode (a sweep marks them failed, MalformedRow)`]);
  // One column of names for the chart and the facts under it.
  const nameWidth = Math.max(...[...IDLE_BUCKETS.map(([key]) => key), ...facts.map(([key]) => key!)].map((key) => key.length));
  liveLines.push(table(IDLE_BUCKETS.map(([key, meaning]) => [key.padEnd(nameWidth), meaning, bar(live.byIdle[key], max), String(live.byIdle[key])])));
  liveLines.push(table(facts.map(([key, text]) => [key!.padEnd(nameWidth), text!])));
  parts.push(liveLines.join("\n"));

  const { closed, expired, failed } = finished.byOutcome;
  const finishedLines = [
    `Finished in the last 24 h: ${finished.total} (closed ${closed}: by the sweeper ${finished.closedBy.sweeper}, by producers ${finished.closedBy.producer}; expired ${expired}; failed ${failed})`,
  ];
  if (finished.byErrorCode.length > 0) {
    finishedLines.push(table([["lastErrorCode", "outcome", "count"], ["-------------", "-------", "-----"], ...finished.byErrorCode.map((e) => [printable(e.code), e.outcome, String(e.count)])]));
  } else finishedLines.push("  no error codes");
  parts.push(finishedLines.join("\n"));

  const latencyLines = [`Release latency (closed by the sweeper in the last 24 h, time past the lease to the 204): ${latency.count} session${latency.count === 1 ? "" : "s"}`];
  if (latency.count > 0) {
    latencyLines.push(`  p50 ${formatDuration(latency.p50Ms!)}  p95 ${formatDuration(latency.p95Ms!)}  p99 ${formatDuration(latency.p99Ms!)}  max ${formatDuration(latency.maxMs!)}`);
  }
  if (latency.closedBeforeLease > 0) latencyLines.push(`  ${latency.closedBeforeLease} closed before the lease ran out (close requests, --older-than): not counted`);
  parts.push(latencyLines.join("\n"));

  if (status.sweeps.length === 0) parts.push("Last sweeps: none recorded");
  else {
    const rows: string[][] = [
      ["startedAt", "trigger", "duration", "scanned", "closed", "expired", "retry", "failed", "skipped", "fault"],
      ["---------", "-------", "--------", "-------", "------", "-------", "-----", "------", "-------", "-----"],
    ];
    for (const sweep of status.sweeps) {
      const c = sweep.counts;
      const count = (value: number | undefined) => (value === undefined ? "-" : String(value));
      rows.push([
        sweep.startedAt,
        `${printable(sweep.trigger)}${sweep.dryRun ? " (dry run)" : ""}`,
        formatDuration(sweep.durationMs),
        count(c?.scanned),
        count(c?.closed),
        count(c?.expired),
        count(c?.retry),
        count(c?.failed),
        count(c?.skipped),
        sweep.error ? printable(sweep.error.code) : "",
      ]);
    }
    parts.push(`Last sweeps (newest first):\n${table(rows)}`);
  }
  return `${parts.join("\n\n")}\n`;
}
