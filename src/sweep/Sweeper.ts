import { formatWorkbookLocation, workbookKey } from "../ledger/location";
import type { SessionRecord } from "../ledger/models";
import { closeRecordedSession, type CloseDependencies } from "./closeRecordedSession";
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
  /** Rows read per page. Default 1,000. */
  pageSize?: number;
}

/** Structured logging, as InvocationContext offers it. */
export interface SweepLogger {
  log(message: string, details: Record<string, unknown>): void;
  warn(message: string, details: Record<string, unknown>): void;
}

const MAX_CANDIDATES = 1_000;

interface Work {
  readonly tenant: string;
  readonly workbook: string;
  readonly row: SessionRecord;
}

/**
 * The sweep: streams stale rows page by page, and for each due one claims it, closes it with its
 * user's token and records the outcome. One request at a time per workbook, each tenant paced
 * under its Excel budget, a Retry-After holding back only its tenant. When the time budget runs
 * out no new row is claimed; claimed rows are always finished, so none is left `closing`.
 */
export interface SweeperOptions {
  logger?: SweepLogger;
  clock?: () => Date;
}

export interface RunOptions {
  /** Called about once a second while the sweep runs, with the counts so far. */
  onProgress?: (summary: Readonly<SweepSummary>) => void;
}

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
    const dryRun = request.dryRun ?? false;
    const summary = emptySummary(dryRun);
    const candidates: SweepCandidate[] = [];
    const limit = request.limit ?? Infinity;
    const pageSize = this.settings.pageSize ?? 1_000;
    let accepted = 0;
    const deferrals: Promise<void>[] = [];

    const scheduler = new WorkbookScheduler<Work>({
      concurrency: this.settings.concurrency,
      tenantBudget: this.settings.tenantBudget,
      deadline: started + this.settings.timeBudgetMs,
      now: () => this.clock().getTime(),
      run: (work, beforeSend) => this.attempt(work.row, summary, beforeSend),
      onDeferred: (items, until) => {
        summary.deferred += items.length;
        deferrals.push(this.defer(items.map((w) => w.row), new Date(until)));
      },
      onLeft: (items) => {
        summary.skipped += items.length;
      },
      onError: (error) => {
        summary.error ??= describeFault(error);
      },
    });

    const progress = runOptions.onProgress;
    const ticker = progress
      ? setInterval(() => progress({ ...summary, durationMs: this.clock().getTime() - started }), 1_000)
      : undefined;
    try {
      const now = this.clock();
      const pages = this.deps.ledger.listStale(request.olderThanMs ?? this.settings.staleAfterMs, {
        now,
        pageSize,
        ...(request.userId !== undefined && { userId: request.userId }),
      });
      for await (const page of pages) {
        summary.scanned += page.rows.length + page.malformed.length;
        if (page.malformed.length > 0) {
          this.logger?.warn("Malformed ledger rows", { rows: page.malformed.map((m) => ({ partitionKey: m.partitionKey, rowKey: m.rowKey, problems: m.problems })) });
          if (!dryRun) summary.malformed += (await this.deps.ledger.markMalformed(page.malformed)).filter((r) => r.written).length;
          else summary.malformed += page.malformed.length;
        }
        for (const row of page.rows) {
          if (row.nextAttemptAt && row.nextAttemptAt.getTime() > now.getTime()) {
            summary.skipped++;
          } else if (accepted >= limit || scheduler.isStopped) {
            summary.skipped++;
          } else {
            accepted++;
            summary.stale++;
            if (dryRun) {
              if (candidates.length < MAX_CANDIDATES) candidates.push(candidateOf(row));
            } else {
              scheduler.add({ tenant: row.tenantId, workbook: workbookKey(row.workbook, row.userId), row });
            }
          }
        }
        if (scheduler.isStopped || accepted >= limit) break;
        // Read ahead only as far as the scheduler can use: memory stays flat however big the backlog.
        await scheduler.waitForRoom(2 * pageSize);
        if (scheduler.isStopped) break;
      }
    } catch (error) {
      summary.error ??= describeFault(error);
      scheduler.stop();
    }
    await scheduler.drain();
    await Promise.all(deferrals);
    if (ticker) clearInterval(ticker);

    summary.stoppedEarly = scheduler.stoppedByDeadline || summary.error !== undefined;
    summary.durationMs = this.clock().getTime() - started;
    if (dryRun) summary.candidates = candidates;
    return summary;
  }

  private async attempt(row: SessionRecord, summary: SweepSummary, beforeSend: SendGate): Promise<ItemResult> {
    const report = await closeRecordedSession(row, this.deps, { beforeSend });
    if (report.result === "lostRace") {
      summary.lostRaces++;
      return {};
    }
    summary.claimed++;
    if (report.sent) summary.graphRequests++;
    const counted = report.transition.to === "closed" ? "closed" : report.transition.to;
    summary[counted]++;
    if (report.outcome.kind === "retry" && report.outcome.cooldown) return { cooldownUntil: report.outcome.retryAt.getTime() };
    return {};
  }

  private async defer(rows: SessionRecord[], until: Date): Promise<void> {
    try {
      await this.deps.ledger.deferRows(rows, until);
    } catch (error) {
      // The rows stay as they were: due, and tried by the next sweep.
      this.logger?.warn("Could not record a Graph cooldown on deferred rows", { rows: rows.length, error: describeFault(error) });
    }
  }
}

function candidateOf(row: SessionRecord): SweepCandidate {
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
