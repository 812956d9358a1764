import type { SweeperServices } from "./sweeperServices";
import { describeFault, type SweepLogger, type SweepRunOptions } from "../sweep/Sweeper";
import type { SweepRequest, SweepSummary } from "../sweep/models";
import { recordSweepMetrics } from "./metrics";
import { RECORDED_SWEEP_COUNTS, sweepsTableOf, type RecordedSweep, type SweepsTable } from "../ledger/sweepsTable";

/** Where a sweep was started from, for the summary line. */
export type SweepTrigger = "timer" | "http" | "cli";

/** How long writing a sweep's record may take before it is given up (with a warning). */
const RECORD_TIMEOUT_MS = 5_000;

/**
 * Runs one sweep and logs its one summary line: the same for the timer, the HTTP trigger and the
 * CLI. A sweep ended by a storage fault, or paused by the app's own fault (its settings or
 * credential), is logged as a warning with the fault. Every sweep then leaves its record in the
 * ledger's sweeps table (`<SESSIONS_TABLE>Sweeps`, for the status view); a record that cannot be
 * written is a warning, never the sweep's failure.
 */
export async function runLoggedSweep(
  services: SweeperServices,
  request: SweepRequest,
  logger: SweepLogger,
  trigger: SweepTrigger,
  runOptions: SweepRunOptions = {},
  options: { sweepsTable?: SweepsTable } = {},
): Promise<SweepSummary> {
  const records = options.sweepsTable ?? sweepsTableOf(services.ledger);
  const started = Date.now();
  let summary: SweepSummary;
  try {
    summary = await services.newSweeper(logger).run(request, runOptions);
  } catch (error) {
    if (!request.dryRun) await recordSweep(records, services, logger, { trigger, dryRun: false, durationMs: Date.now() - started, error: describeFault(error) });
    throw error;
  }
  const { candidates, ...counts } = summary;
  // The metrics' names in the line too, so a trace and a chart speak one language.
  const line = { trigger, ...counts, ...(candidates && { candidates: candidates.length }), ...recordSweepMetrics(summary, trigger) };
  if (summary.error) logger.warn("Sweep ended by a fault", line);
  else logger.log("Sweep finished", line);
  // A dry run writes nothing, its record included.
  if (summary.dryRun) return summary;
  const recorded = { ...Object.fromEntries(RECORDED_SWEEP_COUNTS.map((name) => [name, summary[name]])), stoppedEarly: summary.stoppedEarly } as RecordedSweep["counts"];
  await recordSweep(records, services, logger, { trigger, dryRun: summary.dryRun, durationMs: summary.durationMs, counts: recorded, ...(summary.error && { error: summary.error }) });
  return summary;
}

/** Writes a sweep's record, dated in the storage service's time; a failure is only logged. */
async function recordSweep(
  records: SweepsTable,
  services: SweeperServices,
  logger: SweepLogger,
  sweep: Omit<RecordedSweep, "startedAt" | "finishedAt">,
): Promise<void> {
  const finishedAt = services.ledger.serviceNow();
  try {
    await records.record({ ...sweep, startedAt: new Date(finishedAt.getTime() - sweep.durationMs), finishedAt }, { abortSignal: AbortSignal.timeout(RECORD_TIMEOUT_MS) });
  } catch (error) {
    logger.warn("Sweep record not written; the sweep itself is unaffected", { trigger: sweep.trigger, ...describeFault(error) });
  }
}
