import { app, type InvocationContext, type Timer } from "@azure/functions";
import { sweeperServicesFromEnvironment } from "../src";

const services = sweeperServicesFromEnvironment();

/**
 * Daily (PURGE_SCHEDULE), apart from the sweep: deletes finished rows older than
 * TERMINAL_RETENTION, and marks rows the sweep cannot see because they do not decode.
 */
export async function purgeTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const started = Date.now();
  const { deleted } = await services.ledger.purgeTerminal(services.config.sweep.terminalRetentionMs);
  const audit = await services.ledger.auditMalformed();
  if (audit.rows.length > 0) {
    context.warn("Malformed ledger rows marked failed", {
      rows: audit.rows.slice(0, 50).map((r) => ({ partitionKey: r.partitionKey, rowKey: r.rowKey, problems: r.problems })),
    });
  }
  context.log("Purge finished", {
    deleted,
    scanned: audit.scanned,
    malformed: audit.marked,
    retentionMs: services.config.sweep.terminalRetentionMs,
    durationMs: Date.now() - started,
  });
}

app.timer("purgeTimer", { schedule: "%PURGE_SCHEDULE%", handler: purgeTimer });
