import type { SweeperServices } from "./sweeperServices";
import type { SweepLogger, SweepRunOptions } from "../sweep/Sweeper";
import type { SweepRequest, SweepSummary } from "../sweep/models";

/** Where a sweep was started from, for the summary line. */
export type SweepTrigger = "timer" | "http" | "cli";

/**
 * Runs one sweep and logs its one summary line: the same for the timer, the HTTP trigger and the
 * CLI. A sweep ended by a storage fault, or paused by the app's own fault (its settings or
 * credential), is logged as a warning with the fault.
 */
export async function runLoggedSweep(
  services: SweeperServices,
  request: SweepRequest,
  logger: SweepLogger,
  trigger: SweepTrigger,
  runOptions: SweepRunOptions = {},
): Promise<SweepSummary> {
  const summary = await services.newSweeper(logger).run(request, runOptions);
  const { candidates, ...counts } = summary;
  const line = { trigger, ...counts, ...(candidates && { candidates: candidates.length }) };
  if (summary.error) logger.warn("Sweep ended by a fault", line);
  else logger.log("Sweep finished", line);
  return summary;
}
