import type { InvocationContext, Timer } from "@azure/functions";
import { runLoggedSweep } from "./runSweep";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";

/** The scheduled sweep (SWEEP_SCHEDULE). */
export async function sweepTimer(timer: Timer, context: InvocationContext): Promise<void> {
  const logger = invocationLogger(context);
  const services = appServices(logger);
  if (timer.isPastDue) {
    logger.warn("Sweep timer is past due: the previous run was late or missed", { last: timer.scheduleStatus?.last, next: timer.scheduleStatus?.next });
  }
  const summary = await runLoggedSweep(services, {}, logger, "timer");
  // Record the run as failed, so a storage outage shows in the function's failure rate.
  if (summary.error) throw new Error(`Sweep ended by a fault: ${summary.error.code}`);
}
