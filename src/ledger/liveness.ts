import { odata } from "@azure/data-tables";
import type { SessionToClose } from "../core/session";

/**
 * When a session is stale, by the storage service's clock alone.
 *
 * Every write stamps the row with the service's time (`Timestamp`). A producer's heartbeat (record,
 * touch) also sets `heartbeatSeenAt` to the end of time; a sweeper's write to a live row (a claim, a
 * retry, a row given back) sets it to the row's last heartbeat as read. So a row's last heartbeat,
 * in the service's time, is the earlier of the two: `Timestamp` after a heartbeat, `heartbeatSeenAt`
 * after a sweeper's write, which never counts as one. A session is stale when that heartbeat is
 * older than its lease, judged against the service's time now (ServiceClock): neither host's own
 * clock enters, so a producer or a sweeper whose clock is ten minutes off closes nothing early.
 */
export const END_OF_TIME = new Date("9999-12-31T00:00:00.000Z");

/** A producer's lease: how long without a heartbeat before its session may be closed. */
export const MIN_LEASE_MS = 10_000;
export const MAX_LEASE_MS = 24 * 3_600_000;

/**
 * The query cannot compare each row's heartbeat with its own lease (OData has no arithmetic), so
 * leases are grouped in buckets four times apart, each asked for with its shortest lease; a row a
 * bucket returns early is judged by its own lease and left for a later sweep. Every stale row is
 * returned; at most four times the rows that are due come back.
 */
const BUCKET_STARTS_S = [10, 40, 160, 640, 2_560, 10_240, 40_960];

/** The last heartbeat of a row as stored: the earlier of its Timestamp and its heartbeatSeenAt. */
export function lastHeartbeat(timestamp: Date, heartbeatSeenAt: Date | undefined): Date {
  return heartbeatSeenAt && heartbeatSeenAt.getTime() < timestamp.getTime() ? heartbeatSeenAt : timestamp;
}

/** No heartbeat since `cutoff`: the row's Timestamp or its heartbeatSeenAt is before it. */
function silentSince(cutoff: Date): string {
  return odata`(Timestamp lt ${cutoff} or heartbeatSeenAt lt ${cutoff})`;
}

/**
 * The open rows that may be stale at `serviceNow`: with `olderThanMs` (an operator's manual sweep),
 * every row silent that long, whatever its lease; otherwise by lease bucket, rows without a lease
 * of their own (0) by `defaultLeaseMs`.
 */
export function openStaleFilter(serviceNow: Date, leases: { defaultLeaseMs: number; olderThanMs?: number }): string {
  const before = (ms: number) => new Date(serviceNow.getTime() - ms);
  if (leases.olderThanMs !== undefined) return silentSince(before(leases.olderThanMs));
  const clauses = [`(${odata`leaseSeconds eq ${0}`} and ${silentSince(before(leases.defaultLeaseMs))})`];
  BUCKET_STARTS_S.forEach((start, i) => {
    const end = BUCKET_STARTS_S[i + 1];
    const range = end === undefined ? odata`leaseSeconds ge ${start}` : odata`leaseSeconds ge ${start} and leaseSeconds lt ${end}`;
    clauses.push(`(${range} and ${silentSince(before(start * 1_000))})`);
  });
  return `(${clauses.join(" or ")})`;
}

/**
 * How long past its lease a row's last heartbeat is at `at` (negative: still within it), every time
 * the storage service's: its own lease, or `defaultLeaseMs` (STALE_AFTER) for a row without one.
 */
export function msPastLease(row: { readonly lastActivityAt: Date; readonly leaseMs?: number | undefined }, at: Date, defaultLeaseMs: number): number {
  return at.getTime() - row.lastActivityAt.getTime() - (row.leaseMs ?? defaultLeaseMs);
}

/** Whether an open row is stale at `serviceNow` by its own lease (or `olderThanMs`, which overrides it). */
export function isStale(row: SessionToClose, serviceNow: Date, leases: { defaultLeaseMs: number; olderThanMs?: number }): boolean {
  return msPastLease({ lastActivityAt: row.lastActivityAt, leaseMs: leases.olderThanMs ?? row.leaseMs }, serviceNow, leases.defaultLeaseMs) >= 0;
}

/**
 * The last heartbeat a close request writes (`markDue`) when it hands a row to its tenant's sender:
 * the row is due at once, whatever its lease. It says nothing of when the session was last used, so
 * such a row has no idle age and no release latency.
 */
export const MADE_DUE = new Date(0);

/** Whether a row's last heartbeat is the one `markDue` wrote (see MADE_DUE). */
export function wasMadeDue(lastActivityAt: Date): boolean {
  return lastActivityAt.getTime() <= MADE_DUE.getTime();
}
