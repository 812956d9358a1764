import type { ErrorInfo } from "../core/errors";
import type { PauseScope } from "../core/closeOutcome";
/** What one sweep is asked to do. Every field is optional. */
export interface SweepRequest {
  /** List what would be closed; claim nothing, write nothing, send nothing. @default false */
  dryRun?: boolean;
  /** Close sessions idle longer than this. @default STALE_AFTER */
  olderThanMs?: number;
  /** Only this user's sessions (Entra object id). @default every user */
  userId?: string;
  /** Attempt at most this many sessions. @default no limit */
  limit?: number;
}

/** A session a dry run would have closed. */
export interface SweepCandidate {
  tenantId: string;
  userId: string;
  workbook: string;
  /** The first characters of Graph's session id, enough to find it, not to use it. */
  sessionIdPrefix: string;
  lastActivityAt: string;
  attempts: number;
}

/**
 * Sends paused because the app's own settings or credential failed: for every tenant (`app`) or
 * for one (`tenant`, with its id). `code` names the cause (`ClientCredentialRejected` …).
 */
export interface SweepPause {
  scope: PauseScope;
  tenantId?: string;
  code: string;
  message: string;
}

/**
 * What a sweep did. Logged as one structured line. Every row read is counted once:
 * `scanned = malformed + moved + claimed + lostRaces + skipped + deferred + paused + leasedElsewhere`, and every row
 * tried to an outcome once: `claimed = closed + expired + retry + failed`.
 */
export interface SweepSummary {
  dryRun: boolean;
  /** Rows the stale query returned (malformed ones included). */
  scanned: number;
  /** Stale rows due for an attempt now. */
  stale: number;
  /** Rows this sweep claimed (moved to `closing`) and tried to an outcome. */
  claimed: number;
  /** Rows that changed before the claim: a heartbeat or another sweeper won. */
  lostRaces: number;
  closed: number;
  expired: number;
  /** Attempts that will be retried by a later sweep (cooldown, fault, timeout). */
  retry: number;
  failed: number;
  /** Rows that could not be decoded; marked `failed` with the reason. */
  malformed: number;
  /** Rows not tried: not due yet, over the limit, or left when time ran out. */
  skipped: number;
  /** Rows not tried because Graph asked their tenant to wait past this sweep; their next attempt is set to the end of the wait. */
  deferred: number;
  /**
   * Rows not tried, or tried and given back, because the app's own settings or credential failed
   * for their tenant or for all (see `pauses`): back as they were, no attempt spent.
   */
  paused: number;
  /**
   * Rows of tenants another sender holds (another sweep, a close request: the tenant's lease), left
   * to it untouched: one sender per tenant keeps one request per workbook and one Excel budget.
   */
  leasedElsewhere: number;
  /** Finished rows an earlier run left in the live table (a crash mid-move) that this sweep moved to history. */
  moved: number;
  /** Graph requests sent. */
  graphRequests: number;
  durationMs: number;
  /** The time budget ran out (or a fault stopped the sweep) with rows left for the next run. */
  stoppedEarly: boolean;
  /**
   * A storage fault that ended the sweep, or the first app fault that paused it (its code names
   * the cause, e.g. `ClientCredentialRejected`); rows are consistent, the next sweep carries on.
   */
  error?: ErrorInfo;
  /** What paused sends, when something did: one entry for the app, or one per tenant. */
  pauses?: SweepPause[];
  /** Dry run only: the sessions that would be closed (at most 1,000). */
  candidates?: SweepCandidate[];
}

export function emptySummary(dryRun: boolean): SweepSummary {
  return {
    dryRun,
    scanned: 0,
    stale: 0,
    claimed: 0,
    lostRaces: 0,
    closed: 0,
    expired: 0,
    retry: 0,
    failed: 0,
    malformed: 0,
    skipped: 0,
    deferred: 0,
    paused: 0,
    leasedElsewhere: 0,
    moved: 0,
    graphRequests: 0,
    durationMs: 0,
    stoppedEarly: false,
  };
}
