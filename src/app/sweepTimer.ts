import type { InvocationContext, Timer } from "@azure/functions";
import { runLoggedSweep } from "./runSweep";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";
import { AppFaultError } from "../core/errors";

/** The scheduled sweep (SWEEP_SCHEDULE). */
export async function sweepTimer(timer: Timer, context: InvocationContext): Promise<void> {
  const logger = invocationLogger(context);
  const services = appServices(logger);
  if (timer.isPastDue) {
    logger.warn("Sweep timer is past due: the previous run was late or missed", { last: timer.scheduleStatus?.last, next: timer.scheduleStatus?.next });
  }
  const summary = await runLoggedSweep(services, {}, logger, "timer");
  // Record the run as failed, so a storage outage, or the app's own fault that paused sends (a wrong
  // client secret or scope …: its code names the cause), shows in the function's failure rate.
  const pause = summary.pauses?.find((p) => p.code === summary.error?.code);
  if (pause) throw new AppFaultError(pause.code, `Sweep paused: ${summary.error!.message}`, pause.scope, pause.tenantId);
  if (summary.error) throw new Error(`Sweep ended by a fault: ${summary.error.code}`);
}
