import { formatWorkbookLocation, workbookKey } from "../ledger/location";
import type { MalformedRow, SessionToClose } from "../ledger/models";
import { MAX_TRANSACTION_OPERATIONS, PARALLEL_TRANSACTIONS } from "../ledger/transitions";
import { DEFAULT_PAGE_SIZE } from "../ledger/SessionLedger";
import { closeClaimed, type CloseDependencies } from "./closeRecordedSession";
import { OutcomeWriter } from "./OutcomeWriter";
import { emptySummary, type SweepCandidate, type SweepRequest, type SweepSummary } from "./models";
import { WorkbookScheduler, type ItemResult, type SendGate } from "./WorkbookScheduler";

export interface SweeperSettings {
  /** STALE_AFTER */
  staleAfterMs: number;
  /** SWEEP_TIME_BUDGET */
  timeBudgetMs: number;
  /** SWEEP_CONCURRENCY */
  concurrency: number;
  /** EXCEL_BUDGET_REQUESTS / EXCEL_BUDGET_WINDOW */
  tenantBudget: { requests: number; windowMs: number };
  /** Rows read per page. Default DEFAULT_PAGE_SIZE (500). */
  pageSize?: number;
}

/** Structured logging, as InvocationContext offers it. */
export interface SweepLogger {
  log(message: string, details: Record<string, unknown>): void;
  warn(message: string, details: Record<string, unknown>): void;
}

const MAX_CANDIDATES = 1_000;
/** Rows claimed and waiting per SWEEP_CONCURRENCY slot before claims pause (1,024 at the default 128). */
const CLAIMED_AHEAD_PER_SLOT = 8;

export interface SweeperOptions {
  logger?: SweepLogger;
  clock?: () => Date;
}

export interface RunOptions {
  /** Called about once a second while the sweep runs, with the counts so far. */
  onProgress?: (summary: Readonly<SweepSummary>) => void;
  /**
   * Ends the sweep early (an operator's Ctrl-C): nothing new is claimed, rows claimed but not yet
   * tried are given back, requests under way finish and their outcomes are written.
   */
  signal?: AbortSignal;
}

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
 */
export class Sweeper {
  private readonly logger: SweepLogger | undefined;
  private readonly clock: () => Date;

  constructor(
    private readonly deps: CloseDependencies,
    private readonly settings: SweeperSettings,
    options: SweeperOptions = {},
  ) {
    this.logger = options.logger;
    this.clock = options.clock ?? (() => new Date());
  }

  async run(request: SweepRequest = {}, runOptions: RunOptions = {}): Promise<SweepSummary> {
    const started = this.clock().getTime();
    const deadline = started + this.settings.timeBudgetMs;
    const dryRun = request.dryRun ?? false;
    const summary = emptySummary(dryRun);
    const candidates: SweepCandidate[] = [];
    const limit = request.limit ?? Infinity;
    const pageSize = this.settings.pageSize ?? DEFAULT_PAGE_SIZE;
    const background: Promise<void>[] = [];
    const fault = (error: unknown) => {
      summary.error ??= describeFault(error);
    };
    // A failed write means storage is failing: stop sending closes whose 204 could not be recorded.
    const writer = new OutcomeWriter(this.deps.ledger, {
      onError: (error) => {
        fault(error);
        scheduler.stop();
      },
    });

    const scheduler = new WorkbookScheduler<Work>({
      concurrency: this.settings.concurrency,
      tenantBudget: this.settings.tenantBudget,
      deadline,
      now: () => this.clock().getTime(),
      run: (work, beforeSend) => this.attempt(work, summary, writer, beforeSend, outstanding),
      onDeferred: (items, until) => {
        summary.deferred += items.length;
        summary.claimed -= items.length;
        for (const item of items) settle(outstanding, writer, item.claimed.partitionKey);
        background.push(this.giveBack(items, new Date(until)));
      },
      onLeft: (items) => {
        summary.skipped += items.length;
        summary.claimed -= items.length;
        for (const item of items) settle(outstanding, writer, item.claimed.partitionKey);
        background.push(this.giveBack(items));
      },
      onError: fault,
    });

    const stopOnAbort = () => scheduler.stop();
    runOptions.signal?.addEventListener("abort", stopOnAbort, { once: true });
    if (runOptions.signal?.aborted) scheduler.stop();
    const progress = runOptions.onProgress;
    const ticker = progress ? setInterval(() => progress({ ...summary, durationMs: this.clock().getTime() - started }), 1_000) : undefined;
    let accepted = 0;
    // However many workbooks it takes, no new claim while this many rows are claimed and waiting:
    // enough for every slot's workbook to hold several sessions (a crashed service leaves a few per
    // workbook), few enough that a dead sweeper's leases hold back little.
    const maxClaimedAhead = CLAIMED_AHEAD_PER_SLOT * this.settings.concurrency;
    /** Claimed rows per user not finished yet: a user's outcomes are written when it reaches 0. */
    const outstanding = new Map<string, number>();
    try {
      const now = this.clock();
      const pages = this.deps.ledger.listStale(request.olderThanMs ?? this.settings.staleAfterMs, {
        now,
        pageSize,
        withoutAssertion: dryRun,
        ...(request.userId !== undefined && { userId: request.userId }),
      });
      for await (const page of pages) {
        summary.scanned += page.rows.length + page.malformed.length;
        if (page.malformed.length > 0) await this.handleMalformed(page.malformed, dryRun, summary);
        const due: SessionToClose[] = [];
        for (const row of page.rows) {
          const notYet = row.nextAttemptAt !== undefined && row.nextAttemptAt.getTime() > now.getTime();
          if (notYet || accepted >= limit || scheduler.isStopped || this.clock().getTime() >= deadline) {
            summary.skipped++;
            continue;
          }
          accepted++;
          summary.stale++;
          if (dryRun) {
            if (candidates.length < MAX_CANDIDATES) candidates.push(candidateOf(row));
          } else {
            due.push(row);
          }
        }
        // Claim just ahead of need, whole users at a time (rows come sorted by user, so a user's
        // claims share a transaction, and several users' transactions go out together), until there
        // are enough workbooks to keep every slot busy: few rows are held `closing` at once, for a
        // dead sweeper's lease to delay or another sweeper to miss.
        let next = 0;
        while (next < due.length && !scheduler.isStopped) {
          const freeSlots = await scheduler.waitForDemand(maxClaimedAhead);
          if (scheduler.isStopped) break;
          const chunk = nextUsers(due, next, freeSlots);
          next += chunk.length;
          await this.claim(chunk, scheduler, summary, outstanding);
        }
        summary.skipped += due.length - next;
        if (scheduler.isStopped || accepted >= limit) break;
      }
    } catch (error) {
      fault(error);
      scheduler.stop();
    }
    await scheduler.drain();
    await writer.flush();
    await Promise.all(background);
    if (ticker) clearInterval(ticker);
    runOptions.signal?.removeEventListener("abort", stopOnAbort);

    summary.stoppedEarly = scheduler.stoppedByDeadline || summary.error !== undefined || runOptions.signal?.aborted === true;
    summary.durationMs = this.clock().getTime() - started;
    if (dryRun) summary.candidates = candidates;
    return summary;
  }

  private async claim(due: SessionToClose[], scheduler: WorkbookScheduler<Work>, summary: SweepSummary, outstanding: Map<string, number>): Promise<void> {
    // Rows of a tenant Graph asked to wait are not claimed: their next attempt is set to the wait's end.
    const rows: SessionToClose[] = [];
    const held = new Map<number, SessionToClose[]>();
    for (const row of due) {
      const until = scheduler.heldBackUntil(row.tenantId);
      if (until === undefined) rows.push(row);
      else if (held.has(until)) held.get(until)!.push(row);
      else held.set(until, [row]);
    }
    for (const [until, waiting] of held) {
      summary.deferred += waiting.length;
      await this.giveBack(waiting.map((row) => ({ claimed: row, original: row })), new Date(until));
    }
    if (rows.length === 0) return;
    const results = await this.deps.ledger.claimMany(rows, { leaseMs: this.deps.leaseMs });
    const claimed: Work[] = [];
    results.forEach((result, i) => {
      if (!result.claimed) {
        summary.lostRaces++;
        return;
      }
      const original = rows[i]!;
      claimed.push({ tenant: original.tenantId, workbook: workbookKey(original.workbook, original.userId), claimed: result.row, original });
    });
    summary.claimed += claimed.length;
    if (scheduler.isStopped) {
      // The deadline passed while claiming: give them straight back.
      summary.claimed -= claimed.length;
      summary.skipped += claimed.length;
      await this.giveBack(claimed);
      return;
    }
    for (const work of claimed) {
      outstanding.set(work.claimed.partitionKey, (outstanding.get(work.claimed.partitionKey) ?? 0) + 1);
      scheduler.add(work);
    }
  }

  private async attempt(work: Work, summary: SweepSummary, writer: OutcomeWriter, beforeSend: SendGate, outstanding: Map<string, number>): Promise<ItemResult> {
    const { outcome, transition, sent } = await closeClaimed(work.claimed, work.original, this.deps, { beforeSend });
    if (sent) summary.graphRequests++;
    summary[transition.to === "retry" ? "retry" : transition.to]++;
    writer.add(work.claimed, transition);
    settle(outstanding, writer, work.claimed.partitionKey);
    return outcome.kind === "retry" && outcome.cooldown ? { cooldownUntil: outcome.retryAt.getTime() } : {};
  }

  private async handleMalformed(rows: MalformedRow[], dryRun: boolean, summary: SweepSummary): Promise<void> {
    this.logger?.warn("Malformed ledger rows", { rows: rows.map((m) => ({ partitionKey: m.partitionKey, rowKey: m.rowKey, problems: m.problems })) });
    if (dryRun) summary.malformed += rows.length;
    else summary.malformed += (await this.deps.ledger.markMalformed(rows)).filter((r) => r.written).length;
  }

  /** Claimed rows this sweep will not try: back as they were (with a cooldown, if Graph set one). */
  private async giveBack(items: readonly Pick<Work, "claimed" | "original">[], nextAttemptAt?: Date): Promise<void> {
    try {
      await this.deps.ledger.releaseClaims(items, nextAttemptAt ? { nextAttemptAt } : {});
    } catch (error) {
      // They stay `closing` under their lease and are taken again once it runs out.
      this.logger?.warn("Could not give back untried rows", { rows: items.length, error: describeFault(error) });
    }
  }
}
/**
 * The rows of the users from `from` on (rows come sorted by partition, i.e. by user; at most one
 * transaction's worth of a user's at once): whole users until their workbooks would fill
 * `freeSlots`, at least one, and no more users than the ledger writes transactions at once.
 */
function nextUsers(rows: readonly SessionToClose[], from: number, freeSlots: number): SessionToClose[] {
  const workbooks = new Set<string>();
  let end = from;
  for (let users = 0; end < rows.length && users < PARALLEL_TRANSACTIONS && (users === 0 || workbooks.size < freeSlots); users++) {
    const partition = rows[end]!.partitionKey;
    const start = end;
    while (end < rows.length && end - start < MAX_TRANSACTION_OPERATIONS && rows[end]!.partitionKey === partition) {
      workbooks.add(workbookKey(rows[end]!.workbook, rows[end]!.userId));
      end++;
    }
  }
  return rows.slice(from, end);
}

/** One of a user's claimed rows is done: once none is left, the user's outcomes are written at once. */
function settle(outstanding: Map<string, number>, writer: OutcomeWriter, partitionKey: string): void {
  const left = (outstanding.get(partitionKey) ?? 1) - 1;
  if (left > 0) {
    outstanding.set(partitionKey, left);
    return;
  }
  outstanding.delete(partitionKey);
  writer.writePartition(partitionKey);
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
export function describeFault(error: unknown): { code: string; message: string } {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === "string" ? code : error.name, message: error.message.split("\n")[0]!.slice(0, 300) };
  }
  return { code: "Error", message: String(error).slice(0, 300) };
}
