import { app, type InvocationContext, type Timer } from "@azure/functions";
import { sweeperServicesFromEnvironment } from "../src";

const services = sweeperServicesFromEnvironment();

/** Deletes finished rows older than TERMINAL_RETENTION (PURGE_SCHEDULE), apart from the sweep. */
export async function purgeTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const started = Date.now();
  const { deleted } = await services.ledger.purgeTerminal(services.config.sweep.terminalRetentionMs);
  context.log("Purge finished", { deleted, retentionMs: services.config.sweep.terminalRetentionMs, durationMs: Date.now() - started });
}

app.timer("purgeTimer", { schedule: "%PURGE_SCHEDULE%", handler: purgeTimer });
