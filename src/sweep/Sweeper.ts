import { Codes } from "../core/codes";
import type { RequestBudget } from "../core/budget";
import { isTerminal, type SessionStatus, type SessionToClose } from "../core/session";
import { formatWorkbookLocation, workbookKey } from "../core/workbookLocation";
import type { MalformedRow } from "../ledger/models";
import { closeClaimed, type CloseDependencies, type SendSlot } from "./closeRecordedSession";
import { OutcomeWriter } from "./OutcomeWriter";
import { emptySummary, type SweepCandidate, type SweepPause, type SweepRequest, type SweepSummary } from "./models";
import { WorkbookScheduler, type ItemResult } from "./WorkbookScheduler";
import type { ErrorInfo } from "../core/errors";
import type { PausedOutcome, SettledOutcome } from "../core/closeOutcome";
import type { RowTransition } from "../core/session";
import { NO_RECORDING, type SweepRecorder } from "./SweepRecorder";
import { HeldLeases } from "../ledger/tenantLeases";
import { msPastLease, wasMadeDue } from "../ledger/liveness";
import { readAhead } from "../utils/readAhead";

/**
 * A tenant's lease lasts half the claim lease (how long a dead sweeper may hold its rows), at most
 * 30 s: a dead sender's tenants are free again well before its claimed rows, which wait out
 * CLAIM_LEASE.
 */
export function tenantLeaseMs(claimLeaseMs: number): number {
  return Math.min(claimLeaseMs / 2, 30_000);
}

export interface SweeperSettings {
  /** STALE_AFTER */
  staleAfterMs: number;
  /** SWEEP_TIME_BUDGET */
  timeBudgetMs: number;
  /** SWEEP_CONCURRENCY: a cap on requests in flight; the budgets and Graph's latency set how many are. */
  concurrency: number;
  /** EXCEL_BUDGET_REQUESTS / EXCEL_BUDGET_WINDOW */
  tenantBudget: RequestBudget;
  /** EXCEL_APP_BUDGET_REQUESTS / EXCEL_APP_BUDGET_WINDOW. @default none: the tenants' budgets alone */
  appBudget?: RequestBudget;
  /** Rows read per page. @default the ledger's page size */
  pageSize?: number;
}

/** Structured logging, as the app's loggers offer it: a message and its details. */
export interface SweepLogger {
  log(message: string, details: Record<string, unknown>): void;
  warn(message: string, details: Record<string, unknown>): void;
}

export interface SweeperOptions {
  /** @default no logging */
  logger?: SweepLogger;
  /** @default the system clock */
  clock?: () => Date;
  /** Told about every row tried to an outcome, for metrics. @default records nothing */
  recorder?: SweepRecorder;
}

export interface SweepRunOptions {
  /** Called about once a second while the sweep runs, with the counts so far. @default none */
  onProgress?: (summary: Readonly<SweepSummary>) => void;
  /**
   * Ends the sweep early (an operator's Ctrl-C, an HTTP answer that must go out): nothing new is
   * claimed, rows claimed but not yet tried are given back, requests under way finish and their
   * outcomes are written. @default the time budget alone
   */
  abortSignal?: AbortSignal;
}

const MAX_CANDIDATES = 1_000;
/**
 * Rows claimed and waiting per request the sweep keeps in flight before claims pause: a few rows
 * per workbook, so that every workbook that finishes has its next row at hand. Not more: a claim
 * counts as an attempt, so every row claimed ahead is an attempt spent if the sweeper dies
 * (measured: at 32 per slot, 20 kills in quick succession spent five attempts on some rows of 300,
 * which then failed). How many workbooks are claimed ahead is the scheduler's (WORKBOOKS_PER_SLOT).
 */
const CLAIMED_AHEAD_PER_SLOT = 8;

/** A claimed row on its way through the scheduler. */
interface Work {
  readonly tenant: string;
  readonly workbook: string;
  /** The row as this sweep claimed it (its ETag is the claim's). */
  readonly claimed: SessionToClose;
  /** The row as read, before the claim. */
  readonly original: SessionToClose;
}

/**
 * The sweep: streams stale rows page by page; claims each page's due rows in transactions (one per
 * user and 100 rows); closes each under its user's token, one request at a time per workbook, each
 * tenant paced under its Excel budget, a Retry-After holding back only its tenant; and writes the
 * outcomes in transactions. Read-ahead is bounded, so memory stays flat however big the backlog.
 * When the time budget runs out nothing new is claimed, claimed rows not yet tried are given back
 * as they were, and tried ones are finished: no row is left `closing`.
 *
 * A fault of the app's own (a `paused` outcome: a wrong client secret or scope, the authority out of
 * reach) is not a fact about any session: sends stop for the row's tenant, or for the whole sweep,
 * and that row and every claimed row of that scope not yet sent go back as they were, no attempt
 * spent. The summary counts them as `paused` and names the cause in `error` and `pauses`.
 */
/** How rows given back untried are counted. */
type GivenBackAs = "skipped" | "deferred" | "paused" | "leasedElsewhere";

export class Sweeper {
  private readonly logger: SweepLogger | undefined;
  private readonly clock: () => Date;
  private readonly recorder: SweepRecorder;

  constructor(
    private readonly deps: CloseDependencies,
    private readonly settings: SweeperSettings,
    options: SweeperOptions = {},
  ) {
    this.logger = options.logger;
    this.clock = options.clock ?? (() => new Date());
    this.recorder = options.recorder ?? NO_RECORDING;
  }

  run(request: SweepRequest = {}, options: SweepRunOptions = {}): Promise<SweepSummary> {
    return new SweepRun(this.deps, this.settings, request, options, this.clock, this.logger, this.recorder).execute();
  }
}

/**
 * One sweep's state in one place: its counters, its writer, its scheduler, and its one stop
 * signal — the caller's, the time budget's, or a storage fault's, whichever fires first.
 */
class SweepRun {
  private readonly summary: SweepSummary;
  private readonly candidates: SweepCandidate[] = [];
  /** Gives-back under way: awaited before the summary is final. */
  private readonly background: Promise<void>[] = [];
  /** Claimed rows per user (partition) not finished yet: a user's outcomes are written when it reaches 0. */
  private readonly outstanding = new Map<string, number>();
  private readonly started: number;
  private readonly deadline: number;
  private readonly timeBudget: AbortSignal;
  private readonly fault = new AbortController();
  /** The app's own fault, for every tenant: the sweep stops (through `fault`) and sends nothing more. */
  private appPause: PausedOutcome | undefined;
  /** Tenants the app's fault stopped sends to, and why. */
  private readonly pausedTenants = new Map<string, PausedOutcome>();
  private readonly stop: AbortSignal;
  /** The tenants' leases this sweep holds; none in a dry run, which sends nothing. */
  private readonly leases: HeldLeases | undefined;
  private readonly writer: OutcomeWriter;
  private readonly scheduler: WorkbookScheduler<Work>;
  private readonly limit: number;
  private accepted = 0;

  constructor(
    private readonly deps: CloseDependencies,
    private readonly settings: SweeperSettings,
    private readonly request: SweepRequest,
    private readonly options: SweepRunOptions,
    private readonly clock: () => Date,
    private readonly logger: SweepLogger | undefined,
    private readonly recorder: SweepRecorder,
  ) {
    this.started = clock().getTime();
    this.deadline = this.started + settings.timeBudgetMs;
    this.summary = emptySummary(request.dryRun ?? false);
    this.limit = request.limit ?? Infinity;
    this.timeBudget = AbortSignal.timeout(settings.timeBudgetMs);
    this.stop = AbortSignal.any([this.timeBudget, this.fault.signal, ...(options.abortSignal ? [options.abortSignal] : [])]);
    // A failed write means storage is failing: stop sending closes whose 204 could not be recorded.
    this.writer = new OutcomeWriter(deps.ledger, { onError: (error) => this.fail(error) });
    this.scheduler = new WorkbookScheduler<Work>({
      concurrency: settings.concurrency,
      tenantBudget: settings.tenantBudget,
      ...(settings.appBudget && { appBudget: settings.appBudget }),
      deadline: this.deadline,
      signal: this.stop,
      now: () => this.clock().getTime(),
      sendDelayMs: (sentAgoMs) => deps.closer.sendDelayMs(sentAgoMs),
      run: (work, waitForSendSlot) => this.attempt(work, waitForSendSlot),
      onDeferred: (items, until) => this.returnUntried(items, { nextAttemptAt: new Date(until), count: "deferred" }),
      onLeft: (items) => this.returnUntried(items, { count: this.appPause ? "paused" : "skipped" }),
      onError: (error) => this.fail(error),
    });
    this.leases = this.summary.dryRun
      ? undefined
      : new HeldLeases(deps.ledger.tenantLeases, tenantLeaseMs(deps.leaseMs), {
          // A renewal that failed for a storage fault: the lease runs out and sends stop; the sweep goes on.
          onError: (error) => this.logger?.warn("A tenant lease could not be renewed", { ...describeFault(error) }),
          // One Excel budget per tenant across hand-overs: the pacer's sends go with the lease.
          sends: this.scheduler.sendLog(() => this.deps.ledger.serviceNow().getTime() - this.clock().getTime()),
          // One app budget for every sweep in every process: this one keeps its tenants' share.
          ...(settings.appBudget && { onAppShare: (share: number) => this.scheduler.setAppShare(share) }),
        });
  }

  async execute(): Promise<SweepSummary> {
    const progress = this.options.onProgress;
    const ticker = progress ? setInterval(() => progress({ ...this.summary, durationMs: this.elapsed() }), 1_000) : undefined;
    try {
      await this.readPages();
    } catch (error) {
      this.fail(error);
    }
    await this.scheduler.drain();
    await this.writer.flush();
    await Promise.all(this.background);
    try {
      await this.leases?.releaseAll();
    } catch (error) {
      // Not given back: it runs out after its term.
      this.logger?.warn("Tenant leases could not be given back", { ...describeFault(error) });
    }
    if (ticker) clearInterval(ticker);
    this.summary.stoppedEarly = this.stop.aborted;
    this.summary.durationMs = this.elapsed();
    if (this.summary.dryRun) this.summary.candidates = this.candidates;
    return this.summary;
  }

  private elapsed(): number {
    return this.clock().getTime() - this.started;
  }

  /** A storage fault: the first one is the summary's error, and the sweep stops. */
  private fail(error: unknown): void {
    this.summary.error ??= describeFault(error);
    this.fault.abort(error);
  }

  /** The tenants of `rows` whose lease this sweep holds (taken now where nobody else holds it). */
  private async tenantsHeld(rows: readonly SessionToClose[]): Promise<Set<string>> {
    const ours = new Set<string>();
    const tenants = [...new Set(rows.map((row) => row.tenantId))];
    await Promise.all(tenants.map(async (tenant) => (await this.leases?.take(tenant)) && ours.add(tenant)));
    return ours;
  }

  /** Why sends to this tenant are paused, if they are. */
  private pauseOf(tenant: string): PausedOutcome | undefined {
    return this.appPause ?? this.pausedTenants.get(tenant);
  }

  /**
   * The app's own fault: sends stop for the tenant (its rows waiting in the scheduler go back) or
   * for the whole sweep (it stops; what waits goes back through the scheduler's onLeft). The first
   * pause is the summary's error, unless a storage fault came first.
   */
  private pause(outcome: PausedOutcome, tenant: string): void {
    if (this.appPause || (outcome.scope === "tenant" && this.pausedTenants.has(tenant))) return;
    const pause: SweepPause =
      outcome.scope === "app"
        ? { scope: "app", code: outcome.code, message: outcome.message }
        : { scope: "tenant", tenantId: tenant, code: outcome.code, message: outcome.message };
    (this.summary.pauses ??= []).push(pause);
    this.summary.error ??= { code: pause.code, message: pause.tenantId ? `Tenant ${pause.tenantId}: ${pause.message}` : pause.message };
    this.logger?.warn("Sends paused: the app's settings or credential failed", { ...pause });
    if (outcome.scope === "app") {
      this.appPause = outcome;
      this.fault.abort(new Error(outcome.code));
      return;
    }
    this.pausedTenants.set(tenant, outcome);
    const waiting = this.scheduler.withdraw(tenant);
    if (waiting.length > 0) this.returnUntried(waiting, { count: "paused" });
  }

  private async readPages(): Promise<void> {
    const pages = this.deps.ledger.listStale(this.settings.staleAfterMs, {
      ...(this.request.olderThanMs !== undefined && { olderThanMs: this.request.olderThanMs }),
      pageSize: this.settings.pageSize ?? this.deps.ledger.pageSize,
      withoutAssertion: this.summary.dryRun,
      ...(this.request.userId !== undefined && { userId: this.request.userId }),
    });
    // The next page is read while this one's rows are claimed.
    for await (const page of readAhead(pages)) {
      this.summary.scanned += page.rows.length + page.malformed.length;
      if (page.malformed.length > 0) await this.handleMalformed(page.malformed);
      const finished = page.rows.filter((row) => isTerminal(row.status));
      if (finished.length > 0 && !this.summary.dryRun) {
        // Left by a move cut short, or waiting for its own sweep to move it: a tenant's holder moves
        // its own. Copied as stored (the columns a sweep reads are not all of them).
        const ours = await this.tenantsHeld(finished);
        const elsewhere = finished.filter((row) => !ours.has(row.tenantId));
        this.summary.leasedElsewhere += elsewhere.length;
        this.summary.moved += await this.deps.ledger.history.moveAsStored(
          finished.filter((row) => ours.has(row.tenantId)),
          this.clock(),
        );
      }
      // A row's nextAttemptAt is in the service's time, as the ledger wrote it.
      const due = this.dueRows(
        page.rows.filter((row) => !isTerminal(row.status)),
        this.deps.ledger.serviceNow(),
      );
      const claimed = await this.claimAhead(due);
      this.summary[this.appPause ? "paused" : "skipped"] += due.length - claimed;
      if (this.stop.aborted || this.accepted >= this.limit) break;
    }
  }

  /** The page's rows to try now (a dry run lists them instead); the rest are counted as skipped. */
  private dueRows(rows: readonly SessionToClose[], now: Date): SessionToClose[] {
    const due: SessionToClose[] = [];
    for (const row of rows) {
      const notYet = row.nextAttemptAt !== undefined && row.nextAttemptAt.getTime() > now.getTime();
      // The budget is also read on the sweep's own clock, which tests may move by hand.
      if (notYet || this.accepted >= this.limit || this.stop.aborted || this.clock().getTime() >= this.deadline) {
        this.summary[!notYet && this.appPause ? "paused" : "skipped"]++;
        continue;
      }
      this.accepted++;
      this.summary.stale++;
      if (!this.summary.dryRun) due.push(row);
      else if (this.candidates.length < MAX_CANDIDATES) this.candidates.push(candidateOf(row));
    }
    return due;
  }

  /**
   * Claims just ahead of need, whole users at a time (rows come sorted by user, so a user's claims
   * share a transaction, and several users' transactions go out together), until there are enough
   * workbooks to keep every slot busy: few rows are held `closing` at once, for a dead sweeper's
   * lease to delay or another sweeper to miss. Returns how many of `due` it took up.
   */
  private async claimAhead(due: readonly SessionToClose[]): Promise<number> {
    let next = 0;
    while (next < due.length && !this.stop.aborted) {
      const freeSlots = await this.scheduler.waitForDemand(CLAIMED_AHEAD_PER_SLOT);
      if (this.stop.aborted) break;
      const chunk = nextUsers(due, next, freeSlots, this.deps.ledger.writeBatching);
      next += chunk.length;
      await this.claim(chunk);
    }
    return next;
  }

  private async claim(due: SessionToClose[]): Promise<void> {
    // Rows of a tenant Graph asked to wait are not claimed: their next attempt is set to the wait's end.
    // Rows of a tenant the app's fault paused are not claimed either, nor written: they stay as they are.
    const rows: SessionToClose[] = [];
    const held = new Map<number, SessionToClose[]>();
    // One sender per tenant: a tenant another sender holds is left to it, its rows untouched.
    const ours = await this.tenantsHeld(due);
    for (const row of due) {
      if (this.pauseOf(row.tenantId)) {
        this.summary.paused++;
        continue;
      }
      if (!ours.has(row.tenantId)) {
        this.summary.leasedElsewhere++;
        continue;
      }
      const until = this.scheduler.heldBackUntil(row.tenantId);
      if (until === undefined) rows.push(row);
      else if (held.has(until)) held.get(until)!.push(row);
      else held.set(until, [row]);
    }
    for (const [until, waiting] of held) {
      this.giveBack(
        waiting.map((row) => ({ claimed: row, original: row })),
        { nextAttemptAt: new Date(until), count: "deferred" },
      );
    }
    if (rows.length === 0) return;
    const results = await this.deps.ledger.claimMany(rows, { leaseMs: this.deps.leaseMs });
    const claimed: Work[] = [];
    const paused: Work[] = [];
    results.forEach((result, i) => {
      if (!result.claimed) {
        this.summary.lostRaces++;
        return;
      }
      const original = rows[i]!;
      const work = { tenant: original.tenantId, workbook: workbookKey(original.workbook, original.userId), claimed: result.row, original };
      // A pause that came while claiming: the row goes straight back.
      (this.pauseOf(original.tenantId) ? paused : claimed).push(work);
    });
    if (paused.length > 0) this.giveBack(paused, { count: "paused" });
    if (this.stop.aborted) {
      // The sweep stopped while claiming: give them straight back.
      this.giveBack(claimed, { count: this.appPause ? "paused" : "skipped" });
      return;
    }
    for (const work of claimed) {
      const user = work.claimed.partitionKey;
      this.outstanding.set(user, (this.outstanding.get(user) ?? 0) + 1);
      this.scheduler.add(work);
    }
  }

  private async attempt(work: Work, waitForSendSlot: SendSlot): Promise<ItemResult> {
    if (!this.leases?.holds(work.tenant)) {
      // The tenant's lease ran out (a renewal did not land): its other sender may be sending now.
      this.returnUntried([work, ...this.scheduler.withdraw(work.tenant)], { count: "leasedElsewhere" });
      return {};
    }
    // Paused since it was queued: not even a token is asked for.
    const pausedAlready = this.pauseOf(work.tenant);
    const result = pausedAlready
      ? { outcome: pausedAlready, sent: false as const }
      : await closeClaimed(work.claimed, work.original, this.deps, {
          // A pause that comes while this row waits for its turn stops it before it is sent.
          waitForSendSlot: async () => {
            const before = this.pauseOf(work.tenant);
            if (before) return { send: false, paused: before };
            const slot = await waitForSendSlot();
            const after = this.pauseOf(work.tenant);
            if (after) return { send: false, paused: after };
            // Lost while its token was fetched: not sent beside the tenant's new holder.
            if (slot.send && !this.leases?.holds(work.tenant)) return { send: false, retryAt: new Date(this.clock().getTime()) };
            return slot;
          },
        });
    if ("heldBackUntil" in result) {
      // Nothing reached Graph: the row goes back as it was, its attempt not spent (a claim that
      // spent one would let a lapsed lease or a long cooldown fail a session never asked about).
      if (!this.leases?.holds(work.tenant)) this.returnUntried([work, ...this.scheduler.withdraw(work.tenant)], { count: "leasedElsewhere" });
      else this.returnUntried([work], { count: "deferred", nextAttemptAt: result.heldBackUntil });
      return {};
    }
    if (!("transition" in result)) {
      // The app's fault, not the session's: the row goes back as it was, its attempt not spent.
      this.pause(result.outcome, work.tenant);
      this.giveBack([work], { count: "paused" });
      this.settle(work.claimed.partitionKey);
      return {};
    }
    const { outcome, transition, sent } = result;
    this.summary.claimed++;
    if (sent) this.summary.graphRequests++;
    this.summary[transition.to]++;
    this.record(work, outcome, transition, sent);
    this.writer.add(work.claimed, transition);
    this.settle(work.claimed.partitionKey);
    return outcome.kind === "retry" && outcome.cooldown ? { cooldownUntil: outcome.retryAt.getTime() } : {};
  }

  /**
   * Tells the recorder what a row came to. How long a closed session stayed open past its lease
   * is read from the service's times alone: its last heartbeat as the ledger keeps it (the storage
   * service's stamp, never a producer's clock), its lease, and the service's time now, at the 204.
   */
  private record(work: Work, outcome: SettledOutcome, transition: RowTransition, sent: boolean): void {
    const row = work.original;
    // Only sessions that died: not one a close request made due, nor one closed before its lease ran
    // out (a request, --older-than), as the status view counts them.
    const pastLease = transition.to === "closed" && !wasMadeDue(row.lastActivityAt) ? msPastLease(row, this.deps.ledger.serviceNow(), this.settings.staleAfterMs) : -1;
    const pastLeaseMs = pastLease >= 0 ? pastLease : undefined;
    try {
      this.recorder.attempted({
        tenantId: row.tenantId,
        outcome: transition.to,
        ...(transition.to !== "closed" && { code: transition.error.code }),
        sent,
        ...(sent && outcome.status !== undefined && { status: outcome.status }),
        cooldown: outcome.kind === "retry" && outcome.cooldown,
        ...(pastLeaseMs !== undefined && { pastLeaseMs }),
      });
    } catch (error) {
      // Metrics never stop a sweep.
      this.logger?.warn("A metric could not be recorded", { ...describeFault(error) });
    }
  }

  /** One of a user's claimed rows is done: once none is left, the user's outcomes are written at once. */
  private settle(partitionKey: string): void {
    const left = (this.outstanding.get(partitionKey) ?? 1) - 1;
    if (left > 0) {
      this.outstanding.set(partitionKey, left);
      return;
    }
    this.outstanding.delete(partitionKey);
    this.writer.writePartition(partitionKey);
  }

  private async handleMalformed(rows: MalformedRow[]): Promise<void> {
    // A finished row that does not decode was finished already: it only moves to history, as stored.
    const finished = rows.filter((row) => isTerminal(row.storedStatus as SessionStatus));
    const unfinished = rows.filter((row) => !finished.includes(row));
    if (finished.length > 0 && !this.summary.dryRun) this.summary.moved += await this.deps.ledger.history.moveAsStored(finished, this.clock());
    if (unfinished.length === 0) return;
    this.logger?.warn("Malformed ledger rows", { rows: unfinished.map((m) => ({ partitionKey: m.partitionKey, rowKey: m.rowKey, problems: m.problems })) });
    if (this.summary.dryRun) this.summary.malformed += unfinished.length;
    else this.summary.malformed += (await this.deps.ledger.markMalformed(unfinished)).filter((r) => r.written).length;
  }

  /** Claimed rows the scheduler held and will not run: their users settle, and they go back untried. */
  private returnUntried(items: readonly Work[], how: { count: GivenBackAs; nextAttemptAt?: Date }): void {
    for (const item of items) this.settle(item.claimed.partitionKey);
    this.giveBack(items, how);
  }

  /**
   * Rows this sweep will not try: back as they were (with a cooldown, if Graph set one), counted as
   * `skipped`, `deferred` or `paused`.
   */
  private giveBack(items: readonly Pick<Work, "claimed" | "original">[], how: { count: GivenBackAs; nextAttemptAt?: Date }): void {
    this.summary[how.count] += items.length;
    const released = this.deps.ledger.releaseClaims(items, how.nextAttemptAt ? { nextAttemptAt: how.nextAttemptAt } : {}).then(
      () => undefined,
      (error: unknown) => {
        // They stay `closing` under their lease and are taken again once it runs out.
        this.logger?.warn("Could not give back untried rows", { rows: items.length, error: describeFault(error) });
      },
    );
    this.background.push(released);
  }
}

/**
 * The rows of the users from `from` on (rows come sorted by partition, i.e. by user; at most one
 * transaction's worth of a user's at once): whole users until their workbooks would fill
 * `freeSlots`, at least one, and no more users than the ledger writes transactions at once.
 */
function nextUsers(
  rows: readonly SessionToClose[],
  from: number,
  freeSlots: number,
  batching: { rowsPerTransaction: number; transactionsInParallel: number },
): SessionToClose[] {
  const workbooks = new Set<string>();
  let end = from;
  for (let users = 0; end < rows.length && users < batching.transactionsInParallel && (users === 0 || workbooks.size < freeSlots); users++) {
    const partition = rows[end]!.partitionKey;
    const start = end;
    while (end < rows.length && end - start < batching.rowsPerTransaction && rows[end]!.partitionKey === partition) {
      workbooks.add(workbookKey(rows[end]!.workbook, rows[end]!.userId));
      end++;
    }
  }
  return rows.slice(from, end);
}

function candidateOf(row: SessionToClose): SweepCandidate {
  return {
    tenantId: row.tenantId,
    userId: row.userId,
    workbook: formatWorkbookLocation(row.workbook),
    sessionIdPrefix: row.sessionId.slice(0, 24),
    lastActivityAt: row.lastActivityAt.toISOString(),
    attempts: row.attempts,
  };
}

/** A fault's code and message, for the summary: storage and network errors carry no secrets. */
export function describeFault(error: unknown): ErrorInfo {
  // @azure/identity's errors reach a sweep only from the storage clients: an identity-based
  // connection that got no token. The SDK's text says why; the code says where to look.
  if (error instanceof Error && (error.name === "CredentialUnavailableError" || error.name === "AuthenticationError" || error.name === "AggregateAuthenticationError")) {
    return {
      code: Codes.StorageCredentialUnavailable,
      message: `The storage connection's identity got no token (check AzureWebJobsStorage__credential and __clientId): ${error.message.split("\n")[0]!.slice(0, 240)}`,
    };
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === "string" ? code : error.name, message: error.message.split("\n")[0]!.slice(0, 300) };
  }
  return { code: "Error", message: String(error).slice(0, 300) };
}
