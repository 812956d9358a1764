import { app, type InvocationContext, type Timer } from "@azure/functions";
import { runLoggedSweep, sweeperServicesFromEnvironment } from "../src";

const services = sweeperServicesFromEnvironment();

/** The scheduled sweep (SWEEP_SCHEDULE). */
export async function sweepTimer(timer: Timer, context: InvocationContext): Promise<void> {
  if (timer.isPastDue) {
    context.warn("Sweep timer is past due: the previous run was late or missed", { last: timer.scheduleStatus?.last, next: timer.scheduleStatus?.next });
  }
  const summary = await runLoggedSweep(services, {}, context, "timer");
  // Record the run as failed, so a storage outage shows in the function's failure rate.
  if (summary.error) throw new Error(`Sweep ended by a fault: ${summary.error.code}`);
}

app.timer("sweepTimer", { schedule: "%SWEEP_SCHEDULE%", handler: sweepTimer });
