import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import { AssertionOpener } from "../../src/core/assertionSealing";
import { DEFAULT_SETTINGS } from "../../src/config";
import { createLedgerTableClient } from "../../src/ledger/tableClient";
import { parseDuration } from "../../src/utils/duration";
import type { ContenderContext } from "./types";

export type RawRow = TableEntityResult<Record<string, unknown>>;

/**
 * What the hand-written contenders start with: the ledger table (its requests counted), the
 * assertion opener (ASSERTION_PRIVATE_KEY), and the stale open rows read the plain way (every page into one array).
 */
export async function readStaleRows({ settings, onStorageRequest, limit = Infinity }: ContenderContext): Promise<{
  table: TableClient;
  opener: AssertionOpener;
  rows: RawRow[];
}> {
  const table = createLedgerTableClient(settings.AzureWebJobsStorage!, settings.SESSIONS_TABLE!, { onRequest: onStorageRequest });
  const opener = new AssertionOpener({ privateKeys: [settings.ASSERTION_PRIVATE_KEY!] });
  const cutoff = new Date(Date.now() - parseDuration(settings.STALE_AFTER ?? DEFAULT_SETTINGS.STALE_AFTER)!);
  const rows: RawRow[] = [];
  // Silent since the cutoff, as the README's schema tells it: the last heartbeat is the earlier of Timestamp and heartbeatSeenAt.
  const filter = odata`status eq ${"open"} and (Timestamp lt ${cutoff} or heartbeatSeenAt lt ${cutoff})`;
  for await (const row of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
    rows.push(row);
    if (rows.length >= limit) break;
  }
  return { table, opener, rows };
}
