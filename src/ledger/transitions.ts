import type { TableClient, TransactionAction } from "@azure/data-tables";
import { isTableNotFound, storageStatus } from "./tableClient";
import { truncateMessage } from "./entity";
import type { WriteResult } from "./models";
import type { RowTransition, SessionToClose } from "../core/session";
import { chunk, groupBy, mapConcurrent } from "../utils/concurrency";
import type { ErrorInfo } from "../core/errors";

/** Merge patch: the columns one transition changes. */
export type RowPatch = Record<string, unknown> & { partitionKey: string; rowKey: string };

/** A claimed row as it is once `transition` is written at `now` (what history keeps of it, if it is finished). */
export function rowAfter(row: SessionToClose, transition: RowTransition, now: Date): SessionToClose {
  switch (transition.to) {
    case "closed":
      return { ...row, status: "closed", closedAt: now, closedBy: "sweeper", finishedAt: now };
    case "expired":
    case "failed":
      return { ...row, status: transition.to, lastError: transition.error, finishedAt: now };
    case "retry":
      return { ...row, status: "open", nextAttemptAt: transition.at, lastError: transition.error };
  }
}

/** The columns a transition writes. Terminal states wipe the stored assertion: it is no longer needed. */
export function patchFor(row: SessionToClose, transition: RowTransition, now: Date): RowPatch {
  // A sweeper's write is no heartbeat: it carries the row's last one forward (see liveness.ts).
  const base = { partitionKey: row.partitionKey, rowKey: row.rowKey, updatedAt: now, heartbeatSeenAt: row.lastActivityAt };
  switch (transition.to) {
    case "closed":
      return { ...base, status: "closed", closedAt: now, closedBy: "sweeper", finishedAt: now, assertion: "" };
    case "expired":
    case "failed":
      return { ...base, status: transition.to, ...errorColumns(transition.error), finishedAt: now, assertion: "" };
    case "retry":
      return { ...base, status: "open", nextAttemptAt: transition.at, ...errorColumns(transition.error) };
  }
}

export function errorColumns(error: ErrorInfo): Record<string, string> {
  return { lastErrorCode: error.code.slice(0, 200), lastErrorMessage: truncateMessage(error.message) };
}

/** One Merge, conditional on the ETag the row was read with. */
export async function mergeIfUnchanged(client: TableClient, patch: RowPatch, etag: string, abortSignal?: AbortSignal): Promise<WriteResult> {
  try {
    const response = await client.updateEntity(patch, "Merge", { etag, ...(abortSignal && { abortSignal }) });
    return { written: true, etag: response.etag ?? "" };
  } catch (error) {
    return notWritten(error);
  }
}

/**
 * A 412 or a 404 for the row is a lost race; anything else (a storage fault, a table that does not
 * exist, which `withTable` creates) is rethrown.
 */
export function notWritten(error: unknown): Extract<WriteResult, { written: false }> {
  if (isTableNotFound(error)) throw error;
  const status = storageStatus(error);
  if (status === 412) return { written: false, reason: "changed" };
  if (status === 404) return { written: false, reason: "gone" };
  throw error;
}

/**
 * A Merge of `patch` conditional on `etag`, or a delete of the row it names. Deletes are
 * unconditional: the SDK's transactions take no ETag for them, so they are only for rows that no
 * writer changes any more (terminal rows).
 */
export type ConditionalWrite =
  | { action: "merge"; patch: RowPatch; etag: string }
  | { action: "delete"; patch: RowPatch }
  /** The whole row as given, whatever was there (history rows: writing one again writes the same). */
  | { action: "upsert"; patch: RowPatch };

/** Table Storage's limit on operations in one entity-group transaction. */
export const MAX_TRANSACTION_OPERATIONS = 100;
/** Transactions `writeConditionally` keeps in flight at once unless told otherwise. */
export const PARALLEL_TRANSACTIONS = 8;

/**
 * Writes many conditional Merges and deletes: one transaction per partition and 100 rows (Table Storage's
 * limit), several partitions at once. A transaction is all or nothing: when one row in it has
 * changed (412) or vanished (404), that row is reported as a conflict and the rest of the chunk is
 * sent again as one transaction (k lost rows cost k + 1 transactions); only where the service does
 * not say which row failed is the chunk written row by row. Results come back in the order of `writes`.
 */
export async function writeConditionally(
  client: TableClient,
  writes: readonly ConditionalWrite[],
  options: { parallelTransactions?: number; abortSignal?: AbortSignal } = {},
): Promise<WriteResult[]> {
  const abortSignal = options.abortSignal;
  const indexed = writes.map((write, index) => ({ write, index }));
  const chunks = [...groupBy(indexed, (item) => item.write.patch.partitionKey).values()].flatMap((group) =>
    chunk(group, MAX_TRANSACTION_OPERATIONS),
  );
  const results = new Array<WriteResult>(writes.length);
  await mapConcurrent(chunks, options.parallelTransactions ?? PARALLEL_TRANSACTIONS, async (chunkItems) => {
    let items = chunkItems;
    while (items.length > 1 && hasUniqueRows(items.map((item) => item.write))) {
      const actions = items.map(({ write }) => transactionAction(write));
      try {
        const response = await client.submitTransaction(actions, abortSignal && { abortSignal });
        // Sub-responses come in the order of the operations (OData batch); a 204 names no RowKey.
        items.forEach(({ index }, position) => {
          results[index] = { written: true, etag: response.subResponses[position]?.etag ?? "" };
        });
        return;
      } catch (error) {
        const lost = notWritten(error); // rethrows anything that is not a 412/404: a storage fault, not a race
        // The service names the operation that failed ("3:The update condition…"): that row lost
        // its race, and the others go again together, not one write each.
        const failed = failedOperation(error, items.length);
        if (failed === undefined) break;
        results[items[failed]!.index] = lost;
        items = items.filter((_, position) => position !== failed);
      }
    }
    for (const { write, index } of items) results[index] = await writeOne(client, write, abortSignal);
  });
  return results;
}

/** The index of the operation an entity-group transaction failed on, from the service's message. */
function failedOperation(error: unknown, operations: number): number | undefined {
  const match = /^(\d+):/.exec(error instanceof Error ? error.message : "");
  const index = match ? Number(match[1]) : undefined;
  return index !== undefined && index < operations ? index : undefined;
}

function transactionAction(write: ConditionalWrite): TransactionAction {
  if (write.action === "delete") return ["delete", write.patch];
  if (write.action === "upsert") return ["upsert", write.patch, "Replace"];
  return ["update", write.patch, "Merge", { etag: write.etag }];
}

async function writeOne(client: TableClient, write: ConditionalWrite, abortSignal?: AbortSignal): Promise<WriteResult> {
  if (write.action === "merge") return mergeIfUnchanged(client, write.patch, write.etag, abortSignal);
  const options = abortSignal ? { abortSignal } : {};
  if (write.action === "upsert") {
    const response = await client.upsertEntity(write.patch, "Replace", options);
    return { written: true, etag: response.etag ?? "" };
  }
  try {
    await client.deleteEntity(write.patch.partitionKey, write.patch.rowKey, options);
    return { written: true, etag: "" };
  } catch (error) {
    return notWritten(error);
  }
}

/** A transaction may name each entity once; duplicates fall back to single writes. */
function hasUniqueRows(writes: readonly ConditionalWrite[]): boolean {
  return new Set(writes.map((w) => w.patch.rowKey)).size === writes.length;
}
