import type { InvocationContext, Timer } from "@azure/functions";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";

/** Malformed rows listed in full in the warning line; the rest are counted. */
const MAX_LISTED_ROWS = 50;

/**
 * Daily (PURGE_SCHEDULE), apart from the sweep: drops the weeks of history older than
 * TERMINAL_RETENTION, moves finished rows a crash left in the live table, and marks rows that do
 * not decode.
 */
export async function purgeTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const logger = invocationLogger(context);
  const { ledger, config } = appServices(logger);
  const started = Date.now();
  const { droppedTables } = await ledger.purgeHistory(config.sweep.terminalRetentionMs);
  const audit = await ledger.auditMalformed();
  if (audit.rows.length > 0) {
    logger.warn("Malformed ledger rows marked failed", {
      rows: audit.rows.slice(0, MAX_LISTED_ROWS).map((r) => ({ partitionKey: r.partitionKey, rowKey: r.rowKey, problems: r.problems })),
    });
  }
  logger.log("Purge finished", {
    droppedTables,
    scanned: audit.scanned,
    malformed: audit.marked,
    moved: audit.moved,
    retentionMs: config.sweep.terminalRetentionMs,
    durationMs: Date.now() - started,
  });
}
