import { Codes } from "../core/codes";
import { SessionNotOpenError, SweeperError, ValidationError } from "../core/errors";
import { isSessionGone } from "../core/graphAnswer";
import type { SessionKey, SessionToClose } from "../core/session";
import type { SessionProducer } from "../ledger/SessionProducer";
import { WorkbookRequestError, WorkbookSessionGraph, type UserTokenSource } from "./WorkbookSessionGraph";

/** The ledger could not be reached to heartbeat for longer than the session's lease: the sweeper may take it. */
export class HeartbeatLostError extends SweeperError {
  readonly code = Codes.HeartbeatLost;
}

/** The session ended under the work: the sweeper took it (`SessionNotOpenError` is the cause) or Graph says it is gone. */
export class WorkbookSessionLostError extends SweeperError {
  readonly code = Codes.WorkbookSessionLost;
}

export interface WithWorkbookSessionOptions {
  /** Where the session is recorded. */
  producer: SessionProducer;
  /** The user's delegated access to Graph: their token source. */
  token: UserTokenSource;
  /** The user's tenant and object id (GUIDs): whose session it is. */
  tenantId: string;
  userId: string;
  /** The workbook, in one of the forms `record` takes (`/drives/{drive}/items/{item}` …). */
  workbook: string;
  /** Whether Graph keeps the session's changes. @default true */
  persistChanges?: boolean;
  /**
   * The user's assertion for the sweeper (the token your service received from the user), or a
   * function returning the freshest one: heartbeats pass a newer one on, so a session kept open
   * longer than an assertion lives can still be closed.
   */
  userAssertion: string | (() => string | Promise<string>);
  /** Who recorded the session, for operators (your service's name). */
  recordedBy: string;
  /**
   * How long without a heartbeat before the sweeper may close the session (10 s to 24 h), written
   * with the row: the sweeper judges the row by it, not by its own STALE_AFTER. @default 120_000
   */
  leaseMs?: number;
  /** How often the row is touched. @default a quarter of `leaseMs` (or of 2 min), room for three missed beats */
  heartbeatMs?: number;
  /**
   * How often Graph's own idle timer is reset with refreshSession while the work runs, for work that
   * leaves the session idle on Graph longer than its 5–7 minutes. @default never
   */
  refreshSessionMs?: number;
  /** Graph's service root. @default "https://graph.microsoft.com/v1.0" */
  graphBaseUrl?: string;
  /** The scope asked of a TokenCredential `token`. @default "<Graph's origin>/Files.ReadWrite" */
  graphScope?: string;
  /** One Graph request of the lifecycle (createSession, a poll, refreshSession, closeSession). @default 30_000 */
  graphRequestTimeoutMs?: number;
  /**
   * One ledger call of the lifecycle (a heartbeat, the release, a close request): one that has not
   * answered by then is given up (a heartbeat counts as missed). @default `heartbeatMs`, at most 30_000
   */
  ledgerRequestTimeoutMs?: number;
  /** Ends the work: aborts `session.signal`; the session is still closed and released. */
  abortSignal?: AbortSignal;
  /**
   * Where a cleanup fault goes when it cannot be the caller's error (the work's own result or error
   * wins): the session then stays recorded and the sweeper closes it. @default process.emitWarning
   */
  onCleanupError?: (error: unknown) => void;
  /** Stands in for setTimeout, for the heartbeat, refresh and lease timers. @default setTimeout / clearTimeout */
  timers?: { set(callback: () => void, ms: number): unknown; clear(handle: unknown): void };
}

/** What the work gets: the session, a request helper that sends in it, and a signal that says it is lost. */
export interface WorkbookSession {
  /** Graph's session id. */
  readonly id: string;
  /** The ledger key of the session's row. */
  readonly key: SessionKey;
  /**
   * Aborted when the session can no longer be used: the sweeper took it (reason: WorkbookSessionLostError,
   * cause SessionNotOpenError), heartbeats could not reach the ledger for longer than the lease
   * (HeartbeatLostError), Graph says it is gone, or the caller's `abortSignal` fired.
   */
  readonly signal: AbortSignal;
  /**
   * Sends a request under the workbook (`path` after `…/workbook`, e.g. `/worksheets/Sheet1/range(address='A1')`)
   * with the user's token and `workbook-session-id`. Refused once `signal` is aborted.
   */
  request(path: string, init?: RequestInit): Promise<Response>;
}

const DEFAULT_LEASE_MS = 120_000;
const MAX_LEDGER_REQUEST_TIMEOUT_MS = 30_000;
/** How long before the last landed beat's lease runs out the work is told to stop (at most a heartbeat interval). */
const LEASE_MARGIN_MS = 1_000;

/**
 * The whole lifecycle of a workbook session around `work`: createSession (Graph's long-running form
 * included), record, heartbeats while the work runs, then closeSession and release. If the close does
 * not answer 204, the sweeper is asked to close it (`requestClose`) instead of the fault being
 * swallowed; if the process dies, the recorded row is what lets the sweeper close it within its lease.
 * Returns the work's result or rethrows its error, never a cleanup error in its place.
 */
export async function withWorkbookSession<T>(options: WithWorkbookSessionOptions, work: (session: WorkbookSession) => Promise<T>): Promise<T> {
  const { producer, tenantId, userId, workbook, recordedBy } = options;
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  const heartbeatMs = options.heartbeatMs ?? Math.floor(leaseMs / 4);
  if (!Number.isFinite(heartbeatMs) || heartbeatMs <= 0 || heartbeatMs >= leaseMs) {
    throw new ValidationError([{ field: "heartbeatMs", message: "must be more than 0 and less than the lease" }]);
  }
  // One heartbeat's interval at most by default: a touch stuck on a half-open connection is given up
  // in time for the next beat, which may land, rather than holding every beat after it.
  const ledgerRequestTimeoutMs = options.ledgerRequestTimeoutMs ?? Math.min(MAX_LEDGER_REQUEST_TIMEOUT_MS, heartbeatMs);
  if (!Number.isFinite(ledgerRequestTimeoutMs) || ledgerRequestTimeoutMs <= 0) {
    throw new ValidationError([{ field: "ledgerRequestTimeoutMs", message: "must be more than 0" }]);
  }
  const ledgerCall = () => AbortSignal.timeout(ledgerRequestTimeoutMs);
  const timers = options.timers ?? { set: (callback: () => void, ms: number) => setTimeout(callback, ms), clear: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout) };
  const onCleanupError = options.onCleanupError ?? ((error: unknown) => process.emitWarning(error instanceof Error ? error : String(error), { code: "WORKBOOK_SESSION_CLEANUP" }));
  const assertion = async () => (typeof options.userAssertion === "function" ? options.userAssertion() : options.userAssertion);
  const graph = new WorkbookSessionGraph(workbook, {
    token: options.token,
    ...(options.graphBaseUrl !== undefined && { baseUrl: options.graphBaseUrl }),
    ...(options.graphScope !== undefined && { scope: options.graphScope }),
    ...(options.graphRequestTimeoutMs !== undefined && { requestTimeoutMs: options.graphRequestTimeoutMs }),
  });
  options.abortSignal?.throwIfAborted();

  const persistChanges = options.persistChanges ?? true;
  const sessionId = await graph.createSession(persistChanges, options.abortSignal);
  const key: SessionKey = { tenantId, userId, sessionId };
  let lastAssertion: string;
  let row: SessionToClose;
  // A heartbeat is stamped by the service when it lands, after it was sent: the lease runs at least
  // until a landed beat's send time + leaseMs (a monotonic clock: a step of the host's clock moves nothing).
  let beatSentAt = performance.now();
  try {
    lastAssertion = await assertion();
    beatSentAt = performance.now();
    // The lease the heartbeats keep, written with the row: the sweeper judges the row by it.
    row = await producer.record({ tenantId, userId, sessionId, workbook, persistChanges, recordedBy, userAssertion: lastAssertion, leaseMs });
  } catch (error) {
    // Not recorded, so no sweeper knows of it: close it here, or nobody will.
    await graph.closeSession(sessionId).catch(onCleanupError);
    throw error;
  }

  const lost = new AbortController();
  const signal = options.abortSignal ? AbortSignal.any([options.abortSignal, lost.signal]) : lost.signal;
  let taken = false;
  // Set once the work has ended: a heartbeat or refresh in flight then schedules no other.
  let stopped = false;
  let beating: Promise<void> = Promise.resolve();
  let refreshing: Promise<void> = Promise.resolve();
  let lastFault: unknown;
  const handles: { heartbeat?: unknown; refresh?: unknown; lease?: unknown } = {};

  // The work is told to stop LEASE_MARGIN_MS before the lease of the last landed beat runs out, so
  // before a sweeper can judge the session stale (a late timer or a busy event loop aside); not when
  // a failing touch gives up, which the storage client's retries put seconds past the lease.
  const watchLease = () => {
    timers.clear(handles.lease);
    handles.lease = timers.set(() => {
      const silentMs = performance.now() - beatSentAt;
      const message = `No heartbeat has reached the ledger for ${Math.round(silentMs)} ms, nearly the session's lease (${leaseMs} ms): stop before the sweeper may take it.`;
      lost.abort(new HeartbeatLostError(message, lastFault === undefined ? {} : { cause: lastFault }));
    }, Math.max(0, beatSentAt + leaseMs - Math.min(LEASE_MARGIN_MS, heartbeatMs) - performance.now()));
  };
  const heartbeat = async () => {
    const sentAt = performance.now();
    try {
      const fresh = await assertion();
      row = await producer.touch(key, { known: row, abortSignal: ledgerCall(), ...(fresh !== lastAssertion && { userAssertion: fresh }) });
      lastAssertion = fresh;
      // Not once the work has ended: a beat that lands during cleanup must not set a new watch.
      if (!signal.aborted && !stopped) {
        beatSentAt = sentAt;
        lastFault = undefined;
        watchLease();
      }
    } catch (error) {
      if (error instanceof SessionNotOpenError) {
        taken = true;
        lost.abort(new WorkbookSessionLostError("The sweeper took the session (its heartbeats stopped for longer than its lease); stop using it.", { cause: error }));
        return;
      }
      lastFault = error;
    }
    if (!signal.aborted && !stopped) handles.heartbeat = timers.set(() => (beating = heartbeat()), heartbeatMs);
  };
  handles.heartbeat = timers.set(() => (beating = heartbeat()), heartbeatMs);
  watchLease();
  if (options.refreshSessionMs !== undefined) {
    const refreshMs = options.refreshSessionMs;
    const refresh = async () => {
      try {
        await graph.refreshSession(sessionId, signal);
      } catch (error) {
        // Gone on Graph (it idled out or was closed): the work cannot go on in it.
        if (error instanceof WorkbookRequestError && isSessionGone(error.status, [error.graphCode])) lost.abort(new WorkbookSessionLostError("Graph says the session is gone.", { cause: error }));
      }
      if (!signal.aborted && !stopped) handles.refresh = timers.set(() => (refreshing = refresh()), refreshMs);
    };
    handles.refresh = timers.set(() => (refreshing = refresh()), refreshMs);
  }

  const session: WorkbookSession = {
    id: sessionId,
    key,
    signal,
    request: (path, init = {}) => {
      if (signal.aborted) return Promise.reject(signal.reason);
      return graph.request(sessionId, path, { ...init, signal: init.signal ? AbortSignal.any([init.signal, signal]) : signal });
    },
  };

  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await work(session) };
  } catch (error) {
    outcome = { ok: false, error };
  }

  stopped = true;
  timers.clear(handles.heartbeat);
  timers.clear(handles.refresh);
  timers.clear(handles.lease);
  // A beat still in flight sets no new watch (it sees `stopped`).
  await Promise.all([beating, refreshing]);
  lost.abort(new WorkbookSessionLostError("The work has ended."));
  // Taken by the sweeper: it closes the session; nothing more is sent in it from here.
  if (!taken) await closeAndRelease(graph, producer, key, { onCleanupError, ledgerCall });
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}

/** closeSession, then release; a close without its 204 is handed to the sweeper's close queue. */
async function closeAndRelease(
  graph: WorkbookSessionGraph,
  producer: SessionProducer,
  key: SessionKey,
  { onCleanupError, ledgerCall }: { onCleanupError: (error: unknown) => void; ledgerCall: () => AbortSignal },
): Promise<void> {
  try {
    await graph.closeSession(key.sessionId);
  } catch (closeError) {
    try {
      await producer.requestClose(key, { requestedBy: "withWorkbookSession", abortSignal: ledgerCall() });
    } catch (requestError) {
      // The row stays open and stops heartbeating: the sweeper closes it within its lease.
      onCleanupError(new AggregateError([closeError, requestError], "The session could not be closed nor handed to the sweeper's close queue; the sweeper closes it once its lease runs out."));
    }
    return;
  }
  await producer.release(key, { abortSignal: ledgerCall() }).catch((error: unknown) => {
    // Closed on Graph; a row left open is closed again by the sweeper, which then finds it gone.
    if (!(error instanceof SessionNotOpenError)) onCleanupError(error);
  });
}
