/**
 * Reliability: concurrent sweepers and live sessions.
 *
 * (a) The timer function, the HTTP function and a third sweeper run at once over the same table:
 *     no two requests for one session overlap, no closeSession follows Graph's 204 for a session,
 *     every row ends closed, and the three summaries add up to what happened.
 * (b) Producers heartbeat through SessionProducer.touch while sweeps run: a session touched after
 *     the sweep read it is never closed; a touch after the claim fails with SessionNotOpenError and
 *     that session is then closed.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { SessionLedger, SessionNotOpenError, Sweeper, type LedgerPage, type ListStaleOptions, type SessionRecord, type SessionToClose, type SweepSummary } from "../src";
import { type ClaimResult } from "../src/ledger/models";
import { mapConcurrent } from "../src/utils/concurrency";
import { installAppSettings, useCloudFixture, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { importHandlers, type FunctionHandlers } from "./support/functionsHost";
import {
  expectClosedOnlyWith204,
  expectConsistentRows,
  invocation,
  postSweep,
  rawEntities,
  sampleSize,
  sleep,
  SOAK,
  timerInfo,
  type LogLine,
} from "./support/reliability";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";

let cloud: CloudFixture;
/** The table the function handlers sweep (their settings come from the environment). */
let table: TableFixture;
let handlers: FunctionHandlers;

useCloudFixture((started) => (cloud = started));
beforeAll(async () => {
  ({ table } = await installAppSettings(cloud, { SWEEP_CONCURRENCY: "8" }));
  handlers = await importHandlers();
});

interface Opened {
  row: SessionRecord;
  sessionId: string;
}

/** `count` stale sessions of `users` users over two tenants, some sharing one workbook per tenant. */
async function openStale(target: TableFixture, count: number, users = 30): Promise<Opened[]> {
  const people = Array.from({ length: users }, (_, i) => ({ userId: newUserId(), tenantId: i % 3 === 0 ? OTHER_TENANT : HOME_TENANT }));
  return mapConcurrent(Array.from({ length: count }, (_, i) => i), 16, (i) => {
    const person = people[i % people.length]!;
    const workbook = i % 4 === 0 ? `/drives/team-${person.tenantId.slice(0, 4)}/items/shared` : `/me/drive/items/book-${i % 5}`;
    return target.openSession({ ...person, workbook });
  });
}

function summaryFromLog(lines: LogLine[]): SweepSummary {
  const line = lines.find((l) => l.event === "Sweep finished" || l.event === "Sweep ended by a fault");
  if (!line) throw new Error("no summary line was logged");
  return line.details as unknown as SweepSummary;
}

/** The three ways a sweep starts, at once, over the handlers' table. */
async function threeSweepsAtOnce(stagger: () => number = () => 0): Promise<{ timer: SweepSummary; http: SweepSummary; direct: SweepSummary }> {
  const timerRun = invocation("sweepTimer");
  const httpRun = invocation("sweep");
  const directServices = await cloud.newTableServicesFor(table, { SWEEP_CONCURRENCY: "8" });
  const [, response, direct] = await Promise.all([
    sleep(stagger()).then(() => handlers.sweepTimer(timerInfo(), timerRun.context)),
    sleep(stagger()).then(() => handlers.sweepHttp(postSweep("{}"), httpRun.context)),
    sleep(stagger()).then(() => directServices.newSweeper().run()),
  ]);
  expect(response.status).toBe(200);
  return { timer: summaryFromLog(timerRun.lines), http: response.jsonBody as SweepSummary, direct };
}

describe("three sweepers at once over one table", () => {
  it("never overlap on a session, never close twice, and their summaries add up to the truth", async () => {
    const rounds = sampleSize(1, 4);
    for (let round = 0; round < rounds; round++) {
      cloud.emulator.reset();
      cloud.emulator.configure({ latencyMs: 15 });
      const count = sampleSize(240, 600);
      const opened = await openStale(table, count);
      const ids = new Set(opened.map((o) => o.sessionId));

      const { timer, http, direct } = await threeSweepsAtOnce(() => (round === 0 ? 0 : Math.floor(Math.random() * 40)));
      const summaries = [timer, http, direct];

      // Each summary is consistent in itself: what it read, it either claimed or lost to another.
      for (const s of summaries) {
        expect(s.error).toBeUndefined();
        expect(s.stoppedEarly).toBe(false);
        // A tenant another sweeper held is left to it (its lease): counted, not claimed.
        expect(s.stale).toBe(s.claimed + s.lostRaces + s.leasedElsewhere);
        expect(s.claimed).toBe(s.closed + s.expired + s.retry + s.failed);
        expect(s.graphRequests).toBe(s.claimed);
      }
      const sum = (key: "claimed" | "closed" | "lostRaces" | "stale" | "graphRequests" | "expired" | "failed" | "retry" | "leasedElsewhere") =>
        summaries.reduce((total, s) => total + s[key], 0);
      // Every session was claimed by exactly one sweeper; every other sighting was left to the
      // tenant's holder, or (rarely now) lost as a race.
      expect(sum("claimed")).toBe(count);
      expect(sum("closed")).toBe(count);
      expect(sum("expired") + sum("failed") + sum("retry")).toBe(0);
      expect(sum("lostRaces") + sum("leasedElsewhere")).toBe(sum("stale") - count);

      // What Graph saw: one closeSession per session, never two at once, never after its 204.
      const closes = cloud.emulator.requests.filter((r) => r.kind === "closeSession");
      expect(closes).toHaveLength(count);
      expect(sum("graphRequests")).toBe(count);
      expect(new Set(closes.map((r) => r.sessionId)).size).toBe(count);
      expect(closes.every((r) => ids.has(r.sessionId!) && r.status === 204)).toBe(true);
      const stats = cloud.emulator.stats();
      expect(stats.maxConcurrentPerSession).toBe(1);
      expect(stats.closesAfterClosed).toBe(0);

      // Every row ends right, and the ledger agrees with the summaries.
      const entities = (await rawEntities(table.services.ledger)).filter((e) => ids.has(e.sessionId as string));
      expect(entities).toHaveLength(count);
      expect(entities.filter((e) => e.status === "closed" && e.closedBy === "sweeper")).toHaveLength(sum("closed"));
      expect(entities.every((e) => e.attempts === 1)).toBe(true);
      expectConsistentRows(entities);
      expectClosedOnlyWith204(entities, cloud.emulator.requests);
      for (const { sessionId } of opened) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    }
  }, SOAK ? 300_000 : 60_000);
});

/**
 * A ledger that lets the test act between the sweep's steps: after a page of stale rows was read
 * (before anything is claimed), and right after the claims.
 */
class SteppedLedger extends SessionLedger {
  constructor(
    base: SessionLedger,
    private readonly hooks: {
      afterRead?: (page: LedgerPage<SessionToClose>) => Promise<void>;
      afterClaim?: (rows: readonly SessionToClose[], results: readonly ClaimResult[]) => Promise<void>;
    },
  ) {
    super(base.client, base.history, { serviceTime: base.serviceTime });
  }

  override async *listStale(olderThanMs: number, options: ListStaleOptions = {}): AsyncIterableIterator<LedgerPage<SessionToClose>> {
    for await (const page of super.listStale(olderThanMs, options)) {
      await this.hooks.afterRead?.(page);
      yield page;
    }
  }

  override async claimMany<Row extends SessionToClose>(rows: readonly Row[], options: { leaseMs: number; now?: Date }): Promise<ClaimResult<Row>[]> {
    const results = await super.claimMany(rows, options);
    await this.hooks.afterClaim?.(rows, results);
    return results;
  }
}

function sweeperOver(target: TableFixture, ledger: SessionLedger): Sweeper {
  const { sweep, graph } = target.config;
  return new Sweeper(
    { ...target.services.closeDependencies(), ledger },
    { staleAfterMs: sweep.staleAfterMs, timeBudgetMs: sweep.timeBudgetMs, concurrency: sweep.concurrency, tenantBudget: graph.tenantBudget },
  );
}

describe("live sessions", () => {
  it("a session touched after the sweep read it is never closed; a touch after the claim fails and that session is closed", async () => {
    const own = await cloud.newTable();
    cloud.emulator.configure({ latencyMs: 5 });
    const opened = await openStale(own, 60, 12);
    const touchedAfterRead = new Set(opened.filter((_, i) => i % 3 === 0).map((o) => o.sessionId));
    const touchedAfterClaim = new Set(opened.filter((_, i) => i % 3 === 1).map((o) => o.sessionId));
    const heartbeats = new Map<string, SessionToClose>();
    const refusals = new Map<string, unknown>();

    const ledger = new SteppedLedger(own.services.ledger, {
      // The producers' heartbeats land after the sweep read their rows as stale, before its claims.
      afterRead: async (page) => {
        const rows = page.rows.filter((r) => touchedAfterRead.has(r.sessionId));
        expect(rows).toHaveLength(touchedAfterRead.size);
        await mapConcurrent(rows, 8, async (row) => heartbeats.set(row.sessionId, await own.producer.touch(row, { known: row })));
      },
      // These producers heartbeat just after the sweep claimed their rows.
      afterClaim: async (rows) => {
        const mine = rows.filter((r) => touchedAfterClaim.has(r.sessionId));
        await mapConcurrent(mine, 8, async (row) => {
          const error = await own.producer.touch(row, { known: row }).then(
            () => undefined,
            (e: unknown) => e,
          );
          refusals.set(row.sessionId, error);
        });
      },
    });

    const summary = await sweeperOver(own, ledger).run();

    expect(summary).toMatchObject({ scanned: 60, stale: 60, lostRaces: touchedAfterRead.size, claimed: 60 - touchedAfterRead.size });
    expect(summary.closed).toBe(60 - touchedAfterRead.size);
    const closedIds = new Set(cloud.emulator.requests.filter((r) => r.kind === "closeSession").map((r) => r.sessionId));
    for (const { row, sessionId } of opened) {
      const after = (await own.services.ledger.get(row))!;
      if (touchedAfterRead.has(sessionId)) {
        // Never closed: not in Graph's log, still open there, and the row keeps its heartbeat.
        expect(closedIds.has(sessionId)).toBe(false);
        expect(cloud.emulator.sessionState(sessionId)).toBe("open");
        expect(after).toMatchObject({ status: "open", attempts: 0 });
        expect(after.lastActivityAt.getTime()).toBe(heartbeats.get(sessionId)!.lastActivityAt.getTime());
      } else {
        expect(after.status).toBe("closed");
        expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
      }
      if (touchedAfterClaim.has(sessionId)) {
        const error = refusals.get(sessionId);
        expect(error).toBeInstanceOf(SessionNotOpenError);
        expect(error).toMatchObject({ code: "SessionNotOpen", status: "closing" });
      }
    }
    // The heartbeating sessions stay alive: the next sweep does not even read them.
    const next = await own.services.newSweeper().run();
    expect(next).toMatchObject({ scanned: 0, closed: 0 });
    for (const id of touchedAfterRead) expect(cloud.emulator.sessionState(id)).toBe("open");
    expectClosedOnlyWith204(await rawEntities(own.services.ledger), cloud.emulator.requests);
  });

  it("producers heartbeating while three sweepers run: every session is either kept alive or closed, never both", async () => {
    cloud.emulator.configure({ latencyMs: 10 });
    const liveCount = sampleSize(60, 200);
    const live = await openStale(table, liveCount, 20);
    const abandoned = await openStale(table, sampleSize(80, 300), 20);

    interface Heartbeat {
      successes: number;
      refusal?: unknown;
    }
    const beats = new Map<string, Heartbeat>(live.map((o) => [o.sessionId, { successes: 0 }]));
    let stop = false;
    // Half the producers wake at once (they likely beat the claims), half a little later.
    const producers = live.map(async ({ row, sessionId }, i) => {
      const beat = beats.get(sessionId)!;
      let known: SessionToClose = row;
      await sleep(i % 2 === 0 ? Math.random() * 10 : 20 + Math.random() * 60);
      while (!stop) {
        try {
          known = await table.producer.touch(known, { known });
          beat.successes++;
        } catch (error) {
          beat.refusal = error;
          return;
        }
        await sleep(20 + Math.random() * 40);
      }
    });

    const { timer, http, direct } = await threeSweepsAtOnce(() => Math.random() * 30);
    await sleep(100);
    stop = true;
    await Promise.all(producers);

    const summaries = [timer, http, direct];
    for (const s of summaries) expect(s.error).toBeUndefined();
    const closes = cloud.emulator.requests.filter((r) => r.kind === "closeSession");
    const closedIds = new Set(closes.map((r) => r.sessionId));
    let keptAlive = 0;
    for (const { row, sessionId } of live) {
      const beat = beats.get(sessionId)!;
      const after = (await table.services.ledger.get(row))!;
      if (beat.successes > 0) {
        // Touched after every sweeper had read it stale: no sweeper may close it.
        keptAlive++;
        expect(beat.refusal).toBeUndefined();
        expect(closedIds.has(sessionId)).toBe(false);
        expect(cloud.emulator.sessionState(sessionId)).toBe("open");
        expect(after.status).toBe("open");
      } else {
        // The claim came first: the producer is told, and the session is closed.
        expect(beat.refusal).toBeInstanceOf(SessionNotOpenError);
        expect(after.status).toBe("closed");
        expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
      }
    }
    for (const { sessionId } of abandoned) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    const sum = (key: "claimed" | "closed") => summaries.reduce((total, s) => total + s[key], 0);
    expect(sum("closed")).toBe(abandoned.length + liveCount - keptAlive);
    expect(sum("claimed")).toBe(sum("closed"));
    const stats = cloud.emulator.stats();
    expect(stats.maxConcurrentPerSession).toBe(1);
    expect(stats.closesAfterClosed).toBe(0);
    const mine = new Set([...live, ...abandoned].map((o) => o.sessionId));
    const entities = (await rawEntities(table.services.ledger)).filter((e) => mine.has(e.sessionId as string));
    expect(entities).toHaveLength(mine.size);
    expectConsistentRows(entities);
    expectClosedOnlyWith204(entities, cloud.emulator.requests);
  }, SOAK ? 300_000 : 60_000);
});
