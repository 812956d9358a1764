import { randomBytes } from "node:crypto";
import { odata, type TableClient } from "@azure/data-tables";
import type { ErrorInfo } from "../core/errors";
import type { SessionLedger } from "./SessionLedger";
import { pagesIfTable, storageStatus, withTable } from "./tableClient";
import { MAX_TRANSACTION_OPERATIONS } from "./transitions";

/** What the sweeps table's name adds to the live table's: `<SESSIONS_TABLE>Sweeps`. */
export const SWEEPS_TABLE_SUFFIX = "Sweeps";
const PARTITION = "sweep";
/** How long a sweep's record is kept: each write drops the records older than this. */
const SWEEP_RECORD_RETENTION_MS = 7 * 86_400_000;
/** The longest fault message a record keeps. */
const MAX_MESSAGE_LENGTH = 500;
/** Later than any time a record can carry (JavaScript's last date): RowKey = this − startedAt, newest first. */
const MAX_TIME_MS = 8_640_000_000_000_000;
const KEY_DIGITS = String(MAX_TIME_MS).length;

/** The counts of a sweep's summary a record keeps (README "The sweep summary"). */
export const RECORDED_SWEEP_COUNTS = [
  "scanned",
  "stale",
  "claimed",
  "lostRaces",
  "closed",
  "expired",
  "retry",
  "failed",
  "malformed",
  "skipped",
  "deferred",
  "paused",
  "leasedElsewhere",
  "moved",
  "graphRequests",
] as const;

export type RecordedSweepCounts = Record<(typeof RECORDED_SWEEP_COUNTS)[number], number> & { stoppedEarly: boolean };

/** One sweep as the sweeps table keeps it. Times are the storage service's. */
export interface RecordedSweep {
  /** Where it was started from: `timer`, `http`, `cli`. */
  readonly trigger: string;
  readonly dryRun: boolean;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  readonly durationMs: number;
  /** The summary's counts; absent for a sweep that threw before it had one. */
  readonly counts?: RecordedSweepCounts;
  /** The fault that ended or paused it, as its summary named it. */
  readonly error?: ErrorInfo;
}

/** RowKey of a record: the inverted start time (then a random tail), so a query returns the newest first. */
function invertedKey(at: Date): string {
  return String(MAX_TIME_MS - at.getTime()).padStart(KEY_DIGITS, "0");
}

/**
 * The last sweeps, kept in the ledger's own account: one small row per sweep in
 * `<SESSIONS_TABLE>Sweeps` (PartitionKey `sweep`, RowKey the inverted start time), written at the
 * end of every sweep, read newest first by the status view, and kept SWEEP_RECORD_RETENTION_MS
 * (each write drops what has aged out: a query on a key range that is nearly always empty).
 */
export class SweepsTable {
  constructor(
    readonly client: TableClient,
    private readonly options: { retentionMs?: number } = {},
  ) {}

  /** Writes one sweep's record (creating the table the first time), then drops the records past retention. */
  async record(record: RecordedSweep, options: { abortSignal?: AbortSignal } = {}): Promise<void> {
    const entity = {
      partitionKey: PARTITION,
      rowKey: `${invertedKey(record.startedAt)}-${randomBytes(4).toString("hex")}`,
      trigger: record.trigger.slice(0, 40),
      dryRun: record.dryRun,
      startedAt: record.startedAt,
      finishedAt: record.finishedAt,
      durationMs: Math.max(0, Math.round(record.durationMs)),
      ...(record.counts && { ...record.counts }),
      ...(record.error && { errorCode: record.error.code.slice(0, 200), errorMessage: record.error.message.slice(0, MAX_MESSAGE_LENGTH) }),
    };
    const requestOptions = options.abortSignal ? { abortSignal: options.abortSignal } : {};
    await withTable(this.client, () => this.client.createEntity(entity, requestOptions));
    await this.prune(new Date(record.finishedAt.getTime() - (this.options.retentionMs ?? SWEEP_RECORD_RETENTION_MS)), options);
  }

  /** Drops the records of sweeps started before `cutoff`; returns how many. */
  async prune(cutoff: Date, options: { abortSignal?: AbortSignal } = {}): Promise<number> {
    const filter = odata`PartitionKey eq ${PARTITION} and RowKey gt ${invertedKey(cutoff)}`;
    const requestOptions = options.abortSignal ? { abortSignal: options.abortSignal } : {};
    let dropped = 0;
    for await (const page of pagesIfTable(this.client.listEntities({ queryOptions: { filter, select: ["RowKey"] }, ...requestOptions }).byPage({ maxPageSize: MAX_TRANSACTION_OPERATIONS }))) {
      const keys = page.map((entity) => entity.rowKey).filter((key): key is string => typeof key === "string");
      if (keys.length === 0) continue;
      try {
        await this.client.submitTransaction(keys.map((rowKey) => ["delete", { partitionKey: PARTITION, rowKey }]), requestOptions);
        dropped += keys.length;
      } catch (error) {
        // Another sweeper's write pruned the same records first, or the table went: what was to go is gone.
        if (storageStatus(error) !== 404) throw error;
      }
    }
    return dropped;
  }

  /** The last `limit` sweeps, newest first; none when the table does not exist yet. */
  async recent(limit = 10): Promise<RecordedSweep[]> {
    const filter = odata`PartitionKey eq ${PARTITION}`;
    const records: RecordedSweep[] = [];
    for await (const page of pagesIfTable(this.client.listEntities<Record<string, unknown>>({ queryOptions: { filter } }).byPage({ maxPageSize: limit }))) {
      for (const entity of page) {
        const record = decodeRecord(entity);
        if (record) records.push(record);
        if (records.length >= limit) return records;
      }
    }
    return records;
  }
}

/** A record as stored, read leniently: a row that is not one (no trigger or times) is left out. */
function decodeRecord(entity: Record<string, unknown>): RecordedSweep | undefined {
  const { trigger, startedAt, finishedAt } = entity;
  if (typeof trigger !== "string" || !(startedAt instanceof Date) || !(finishedAt instanceof Date)) return undefined;
  const number = (value: unknown) => (typeof value === "number" && Number.isFinite(value) ? value : 0);
  const hasCounts = RECORDED_SWEEP_COUNTS.some((name) => typeof entity[name] === "number");
  const counts = Object.fromEntries(RECORDED_SWEEP_COUNTS.map((name) => [name, number(entity[name])])) as Record<(typeof RECORDED_SWEEP_COUNTS)[number], number>;
  return {
    trigger,
    dryRun: entity.dryRun === true,
    startedAt,
    finishedAt,
    durationMs: number(entity.durationMs),
    ...(hasCounts && { counts: { ...counts, stoppedEarly: entity.stoppedEarly === true } }),
    ...(typeof entity.errorCode === "string" && { error: { code: entity.errorCode, message: typeof entity.errorMessage === "string" ? entity.errorMessage : "" } }),
  };
}

const stores = new WeakMap<SessionLedger, SweepsTable>();

/** The sweeps table beside `ledger`'s live table, on the same account, client options and service clock. */
export function sweepsTableOf(ledger: SessionLedger): SweepsTable {
  let store = stores.get(ledger);
  if (!store) stores.set(ledger, (store = new SweepsTable(ledger.history.siblingTable(SWEEPS_TABLE_SUFFIX))));
  return store;
}
