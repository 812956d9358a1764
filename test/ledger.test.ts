import { describe, expect, it } from "vitest";
import { SessionNotOpenError, SessionNotFoundError, SessionAlreadyRecordedError, ValidationError, type LedgerPage, type SessionRecord, type SessionToClose } from "../src";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { DEFAULT_PAGE_SIZE } from "../src/ledger/SessionLedger";
import { historyTableName } from "../src/ledger/history";
import { groupBy, mapConcurrent } from "../src/utils/concurrency";
import { createLedgerFixture, graphLikeSessionId, newUser } from "./support/ledgerFixture";

const MINUTE = 60_000;

function assertNever(): never {
  throw new Error("not claimed");
}

async function collect<Row extends SessionToClose>(pages: AsyncIterable<LedgerPage<Row>>): Promise<{ rows: Row[]; pages: number; malformed: LedgerPage["malformed"] }> {
  const rows: Row[] = [];
  const malformed: LedgerPage["malformed"] = [];
  let count = 0;
  for await (const page of pages) {
    count++;
    rows.push(...page.rows);
    malformed.push(...page.malformed);
  }
  return { rows, pages: count, malformed };
}

function recordInput(overrides: Partial<Parameters<import("../src").SessionProducer["record"]>[0]> = {}) {
  return {
    ...newUser(),
    sessionId: graphLikeSessionId(),
    workbook: "/drives/b!drive-1/items/01ITEM",
    recordedBy: "test-service",
    userAssertion: "header.payload-of-a-user-token.signature",
    ...overrides,
  };
}

describe("listStale", () => {
  it("finds an open session only once it is older than the threshold", async () => {
    const { ledger, producer, clock } = await createLedgerFixture();
    const recorded = await producer.record(recordInput());

    expect((await collect(ledger.listStale(2 * MINUTE))).rows).toHaveLength(0);
    clock.advance(2 * MINUTE - 1_000);
    expect((await collect(ledger.listStale(2 * MINUTE))).rows).toHaveLength(0);
    clock.advance(2_000);
    const { rows } = await collect(ledger.listStale(2 * MINUTE));
    expect(rows.map((r) => r.sessionId)).toEqual([recorded.sessionId]);
    expect(rows[0]).toMatchObject({ status: "open", attempts: 0, tenantId: recorded.tenantId, userId: recorded.userId });
  });

  it("never lists fresh, closed, expired or failed rows", async () => {
    const { ledger, producer, silence } = await createLedgerFixture();
    const stale = await producer.record(recordInput());
    const toClose = await producer.record(recordInput());
    const toExpire = await producer.record(recordInput());
    const toFail = await producer.record(recordInput());
    const released = await producer.record(recordInput());
    const fresh = await producer.record(recordInput());
    await silence(stale, 10 * MINUTE);

    for (const [row, mark] of [
      [toClose, (r: SessionRecord) => ledger.markClosed(r)],
      [toExpire, (r: SessionRecord) => ledger.markExpired(r, { code: "itemNotFound", message: "gone" })],
      [toFail, (r: SessionRecord) => ledger.markFailed(r, { code: "accessDenied", message: "no" })],
    ] as const) {
      const claim = await ledger.claim(row, { leaseMs: MINUTE });
      expect(claim.claimed).toBe(true);
      if (claim.claimed) expect((await mark(claim.row)).written).toBe(true);
    }
    await producer.release(released);

    const { rows } = await collect(ledger.listStale(2 * MINUTE));
    expect(rows.map((r) => r.sessionId)).toEqual([stale.sessionId]);
    expect(rows.map((r) => r.sessionId)).not.toContain(fresh.sessionId);
  });

  it("lists a closing row again once its claim lease has run out (its sweeper died)", async () => {
    const { ledger, producer, clock } = await createLedgerFixture();
    const row = await producer.record(recordInput());
    clock.advance(5 * MINUTE);
    const claim = await ledger.claim(row, { leaseMs: 3 * MINUTE });
    expect(claim.claimed).toBe(true);

    expect((await collect(ledger.listStale(2 * MINUTE))).rows).toHaveLength(0);
    clock.advance(3 * MINUTE + 1);
    const { rows } = await collect(ledger.listStale(2 * MINUTE));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status: "closing", attempts: 1 });
    // A second sweeper can take it over, exactly once.
    expect((await ledger.claim(rows[0]!, { leaseMs: MINUTE })).claimed).toBe(true);
    expect(await ledger.claim(rows[0]!, { leaseMs: MINUTE })).toEqual({ claimed: false, reason: "changed" });
  });

  it("filters by user on the server", async () => {
    const { ledger, producer, clock, storageRequests } = await createLedgerFixture();
    const alice = newUser();
    await producer.record(recordInput(alice));
    await producer.record(recordInput(alice));
    await producer.record(recordInput());
    clock.advance(10 * MINUTE);
    storageRequests.length = 0;
    const { rows } = await collect(ledger.listStale(MINUTE, { userId: alice.userId }));
    expect(rows).toHaveLength(2);
    expect(rows.every((r) => r.userId === alice.userId)).toBe(true);
    expect(storageRequests).toHaveLength(1);
    expect(decodeURIComponent(storageRequests[0]!.url)).toContain(`userId eq '${alice.userId}'`);
  });

  it("the stale query asks for the columns to close only (no assertion in a dry run), 500 rows a page by default", async () => {
    const { ledger, producer, clock, storageRequests } = await createLedgerFixture();
    await producer.record(recordInput());
    clock.advance(10 * MINUTE);
    const queryOf = async (withoutAssertion: boolean) => {
      storageRequests.length = 0;
      const { rows } = await collect(ledger.listStale(2 * MINUTE, { withoutAssertion }));
      expect(rows).toHaveLength(1);
      expect(storageRequests).toHaveLength(1);
      return new URL(storageRequests[0]!.url).searchParams;
    };
    const toClose = ["PartitionKey", "RowKey", "Timestamp", "schemaVersion", "tenantId", "userId", "sessionId", "workbook", "heartbeatSeenAt", "leaseSeconds",
      "status", "attempts", "nextAttemptAt", "leaseUntil",
      // and what history keeps of a finished session
      "createdAt", "persistChanges", "recordedBy", "lastErrorCode", "lastErrorMessage", "closedAt", "closedBy", "finishedAt", "lastActivityAt"];
    const sweep = await queryOf(false);
    expect(sweep.get("$select")?.split(",").sort()).toEqual([...toClose, "assertion"].sort());
    expect(sweep.get("$top")).toBe(String(DEFAULT_PAGE_SIZE));
    const dryRun = await queryOf(true);
    expect(dryRun.get("$select")?.split(",").sort()).toEqual([...toClose].sort());
  });

  it("pages through 2,500 stale rows in 25 partitions, every row exactly once, a page at a time", async () => {
    const { ledger, producer, clock, storageRequests } = await createLedgerFixture();
    const users = Array.from({ length: 25 }, () => newUser());
    const inputs = Array.from({ length: 2_500 }, (_, i) => recordInput({ ...users[i % users.length]!, sessionId: `s-${i}-${graphLikeSessionId()}` }));
    await mapConcurrent(inputs, 16, (input) => producer.record(input));
    clock.advance(10 * MINUTE);

    storageRequests.length = 0;
    const seenPageSizes: number[] = [];
    const ids = new Set<string>();
    for await (const page of ledger.listStale(2 * MINUTE, { pageSize: 300 })) {
      seenPageSizes.push(page.rows.length);
      for (const row of page.rows) ids.add(row.sessionId);
      expect(page.malformed).toEqual([]);
    }
    expect(ids.size).toBe(2_500);
    expect(new Set(inputs.map((i) => i.sessionId))).toEqual(ids);
    expect(seenPageSizes.length).toBeGreaterThanOrEqual(9);
    expect(Math.max(...seenPageSizes)).toBeLessThanOrEqual(300);
    expect(storageRequests).toHaveLength(seenPageSizes.length);
    expect(new Set([...ids].map((id) => inputs.find((i) => i.sessionId === id)!.userId)).size).toBe(25);
  });

  it("returns rows a buggy producer wrote as malformed, with reasons, and can mark them failed", async () => {
    const { ledger, client, clock } = await createLedgerFixture();
    const { tenantId, userId } = newUser();
    const base = {
      partitionKey: partitionKeyFor(tenantId, userId),
      tenantId,
      userId,
      schemaVersion: 2,
      status: "open",
      createdAt: new Date(clock.now.getTime() - 60 * MINUTE),
      heartbeatSeenAt: new Date(Date.now() - 60 * MINUTE),
      leaseSeconds: 0,
      attempts: 0,
      recordedBy: "buggy",
    };
    await client.createEntity({ ...base, rowKey: rowKeyFor("a"), sessionId: "a", workbook: "/drives/d/items/../../me/messages" });
    await client.createEntity({ ...base, rowKey: rowKeyFor("b"), sessionId: "b", workbook: "/drives/d/items/i", attempts: "many" });
    await client.createEntity({ ...base, rowKey: "not-the-hash", sessionId: "c", workbook: "/drives/d/items/i" });

    const { rows, malformed } = await collect(ledger.listStale(MINUTE));
    expect(rows).toEqual([]);
    expect(malformed).toHaveLength(3);
    const problems = malformed.map((m) => m.problems.join("; ")).join(" | ");
    expect(problems).toMatch(/workbook/);
    expect(problems).toMatch(/attempts is not a whole number/);
    expect(problems).toMatch(/RowKey does not match sessionId/);

    const results = await ledger.markMalformed(malformed);
    expect(results.every((r) => r.written)).toBe(true);
    // Marked failed, it has moved to history as it was stored.
    const after = await ledger.history.storedEntity({ partitionKey: base.partitionKey, rowKey: rowKeyFor("b") });
    expect(after).toMatchObject({ status: "failed", lastErrorCode: "MalformedRow" });
    expect((await collect(ledger.listStale(MINUTE))).malformed).toEqual([]);
  });
});

describe("keys", () => {
  it("round-trips a session id with / # ? \\ ' unicode and over 1,000 characters", async () => {
    const { ledger, producer, clock } = await createLedgerFixture();
    const sessionId = `a/b#c?d\\e'f"g%2F&h=+ 𝄞 ü 日本 ${"x/#?\\'".repeat(200)}`;
    expect(sessionId.length).toBeGreaterThan(1_000);
    const recorded = await producer.record(recordInput({ sessionId }));
    expect(recorded.rowKey).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const read = await ledger.get(recorded);
    expect(read?.sessionId).toBe(sessionId);
    clock.advance(10 * MINUTE);
    const { rows } = await collect(ledger.listStale(MINUTE));
    expect(rows.map((r) => r.sessionId)).toEqual([sessionId]);
    const touched = await producer.touch(recorded).catch((e) => e);
    expect(touched.sessionId).toBe(sessionId);
  });
});

describe("producer", () => {
  it("refuses bad input with every problem named, and writes nothing", async () => {
    const { producer, ledger } = await createLedgerFixture();
    const error = await producer
      .record({ tenantId: "contoso", userId: "", sessionId: "", workbook: "/me/drive/root:/Book.xlsx:", recordedBy: "", userAssertion: "" })
      .catch((e) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.code).toBe("InvalidInput");
    expect(error.problems).toHaveLength(6);
    expect((await collect(ledger.listAll())).rows).toEqual([]);
  });

  it("records idempotently, and refuses the same session id with other details", async () => {
    const { producer } = await createLedgerFixture();
    const input = recordInput();
    const first = await producer.record(input);
    const again = await producer.record(input);
    expect(again.etag).toBe(first.etag);
    await expect(producer.record({ ...input, workbook: "/drives/other/items/x" })).rejects.toBeInstanceOf(SessionAlreadyRecordedError);
  });

  it("touch keeps a session alive and is conditional: the holder's stale ETag is re-read, not overwritten", async () => {
    const { ledger, producer, silence } = await createLedgerFixture();
    const row = await producer.record(recordInput());
    await silence(row, 5 * MINUTE);
    const before = Date.now();
    const touched = await producer.touch(row, { known: row });
    // The heartbeat is the service's stamp on the write: now, whatever the producer's clock says.
    expect(touched.lastActivityAt.getTime()).toBeGreaterThanOrEqual(before - 1_000);
    expect(touched.lastActivityAt.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
    expect(touched.etag).not.toBe(row.etag);
    // Holding the old row (old ETag) still works: the conflict makes touch read again.
    const again = await producer.touch(row, { known: row });
    expect(again.lastActivityAt.getTime()).toBeGreaterThanOrEqual(touched.lastActivityAt.getTime());
    expect((await collect(ledger.listStale(2 * MINUTE))).rows).toEqual([]);
  });

  it("touch after a claim fails with SessionNotOpenError", async () => {
    const { ledger, producer, clock } = await createLedgerFixture();
    const row = await producer.record(recordInput());
    clock.advance(5 * MINUTE);
    const [stale] = (await collect(ledger.listStale(2 * MINUTE))).rows;
    expect((await ledger.claim(stale!, { leaseMs: MINUTE })).claimed).toBe(true);

    const error = await producer.touch(row).catch((e) => e);
    expect(error).toBeInstanceOf(SessionNotOpenError);
    expect(error).toMatchObject({ code: "SessionNotOpen", status: "closing" });
    expect((await ledger.get(row))?.status).toBe("closing");
  });

  it("a claim after a touch loses the race and leaves the row open", async () => {
    const { ledger, producer, clock } = await createLedgerFixture();
    const row = await producer.record(recordInput());
    clock.advance(5 * MINUTE);
    const [stale] = (await collect(ledger.listStale(2 * MINUTE))).rows;
    await producer.touch(row);

    expect(await ledger.claim(stale!, { leaseMs: MINUTE })).toEqual({ claimed: false, reason: "changed" });
    const after = await ledger.get(row);
    expect(after).toMatchObject({ status: "open", attempts: 0 });
  });

  it("touch and release of an unknown session throw SessionNotFoundError; release is idempotent", async () => {
    const { ledger, producer } = await createLedgerFixture();
    const unknown = { ...newUser(), sessionId: "nope" };
    await expect(producer.touch(unknown)).rejects.toBeInstanceOf(SessionNotFoundError);
    await expect(producer.release(unknown)).rejects.toBeInstanceOf(SessionNotFoundError);

    const row = await producer.record(recordInput());
    const released = await producer.release(row);
    expect(released).toMatchObject({ status: "closed" });
    expect(await ledger.get(row)).toMatchObject({ status: "closed", closedBy: "producer" });
    const twice = await producer.release(row);
    expect(twice).toMatchObject({ sessionId: released.sessionId, status: "closed", closedBy: "producer" });
    expect((await ledger.get(row))?.status).toBe("closed");
  });
});

describe("batched transitions", () => {
  it("when one ETag in a transaction is stale, lose that row and write the others in one more transaction", async () => {
    const { ledger, producer, clock, storageRequests } = await createLedgerFixture();
    const user = newUser();
    const recorded = await mapConcurrent(Array.from({ length: 30 }, () => recordInput(user)), 8, (i) => producer.record(i));
    clock.advance(10 * MINUTE);
    const claimed: SessionRecord[] = [];
    for (const row of recorded) {
      const claim = await ledger.claim(row, { leaseMs: MINUTE });
      if (claim.claimed) claimed.push(claim.row);
    }
    expect(claimed).toHaveLength(30);
    // Another writer changes one row after it was claimed: its ETag in our hands is now stale.
    const victim = claimed[17]!;
    await ledger.client.updateEntity({ partitionKey: victim.partitionKey, rowKey: victim.rowKey, note: "changed" }, "Merge");

    storageRequests.length = 0;
    const results = await ledger.applyTransitions(claimed.map((row) => ({ row, transition: { to: "closed" as const } })));
    expect(results.filter((r) => r.written)).toHaveLength(29);
    expect(results[17]).toEqual({ written: false, reason: "changed" });
    // One transaction that failed on the changed row, then one for the other 29: no write per row.
    expect(storageRequests.filter((r) => r.url.includes("$batch"))).toHaveLength(2);
    expect(storageRequests).toHaveLength(2);

    const statuses = await Promise.all(recorded.map((r) => ledger.get(r)));
    expect(statuses.filter((r) => r?.status === "closed")).toHaveLength(29);
    expect(statuses[17]?.status).toBe("closing");
  });

  it("write 250 rows of one partition in three transactions when nothing conflicts", async () => {
    const { ledger, producer, clock, storageRequests } = await createLedgerFixture();
    const user = newUser();
    const recorded = await mapConcurrent(Array.from({ length: 250 }, () => recordInput(user)), 16, (i) => producer.record(i));
    clock.advance(10 * MINUTE);
    storageRequests.length = 0;
    const results = await ledger.applyTransitions(
      recorded.map((row) => ({ row, transition: { to: "retry" as const, at: new Date(clock.now.getTime() + MINUTE), error: { code: "throttled", message: "429" } } })),
    );
    expect(results.every((r) => r.written && r.etag.length > 0)).toBe(true);
    expect(storageRequests).toHaveLength(3);
    const one = await ledger.get(recorded[0]!);
    expect(one).toMatchObject({ status: "open", lastError: { code: "throttled", message: "429" } });
    // Written in the service's time, as every time a sweeper writes.
    expect(one?.nextAttemptAt?.getTime()).toBe(ledger.toServiceTime(new Date(clock.now.getTime() + MINUTE)).getTime());
  });
});

describe("history", () => {
  it("a finished session leaves the live table for its week's history table, without its assertion", async () => {
    const { ledger, producer, tableName } = await createLedgerFixture();
    const row = await producer.record(recordInput({ recordedBy: "invoice-generator" }));
    const claim = await ledger.claim(row, { leaseMs: MINUTE });
    if (!claim.claimed) throw new Error("not claimed");
    const [recorded] = await ledger.recordTransitions([{ row: claim.row, transition: { to: "expired", error: { code: "itemNotFound", message: "gone" } } }]);
    expect(recorded).toBe(true);

    expect((await collect(ledger.listStale(0))).rows).toEqual([]);
    // The week the service's clock says it finished in (the fixture's service time is stood in, fixed while the test's clock stands still).
    const finishedAt = ledger.serviceNow();
    expect(await ledger.history.tableNames()).toEqual([historyTableName(tableName, finishedAt)]);
    const stored = await ledger.history.storedEntity(row);
    expect(stored).toMatchObject({
      schemaVersion: 2,
      status: "expired",
      lastErrorCode: "itemNotFound",
      attempts: 1,
      recordedBy: "invoice-generator",
      sessionId: row.sessionId,
      workbook: "/drives/b!drive-1/items/01ITEM",
    });
    expect(stored!.assertion).toBeUndefined();
    expect((stored!.finishedAt as Date).toISOString()).toBe(finishedAt.toISOString());
    expect(await ledger.get(row)).toMatchObject({ status: "expired", lastError: { code: "itemNotFound" } });
  });

  it("a move cut short after the outcome was written is finished by the next sweep's query, counted once", async () => {
    const { ledger, producer } = await createLedgerFixture();
    const row = await producer.record(recordInput());
    const claim = await ledger.claim(row, { leaseMs: MINUTE });
    if (!claim.claimed) throw new Error("not claimed");
    // Step 1 alone: the outcome written on the live row, then the writer died.
    expect((await ledger.applyTransitions([{ row: claim.row, transition: { to: "closed" } }]))[0]!.written).toBe(true);

    const { rows } = await collect(ledger.listStale(2 * MINUTE));
    expect(rows.map((r) => [r.sessionId, r.status])).toEqual([[row.sessionId, "closed"]]);
    expect(await ledger.moveFinished(rows)).toBe(1);
    // Again: nothing left to move, and history holds it once.
    expect(await ledger.moveFinished(rows)).toBe(0);
    expect((await collect(ledger.listStale(2 * MINUTE))).rows).toEqual([]);
    const everywhere = (await collect(ledger.listAll())).rows.filter((r) => r.sessionId === row.sessionId);
    expect(everywhere).toEqual([expect.objectContaining({ status: "closed", closedBy: "sweeper" })]);
  });

  it("moves racing to create a new week's table lose no row: a live row goes only once its history row is written", async () => {
    for (let round = 0; round < 4; round++) {
      const { ledger, producer } = await createLedgerFixture();
      // Users of two sessions each: each user's move is one transaction into a table none has made yet.
      const users = Array.from({ length: 8 }, () => newUser());
      const recorded = await mapConcurrent(
        users.flatMap((user) => [user, user]),
        8,
        (user) => producer.record(recordInput(user)),
      );
      const claimed = await ledger.claimMany(recorded, { leaseMs: MINUTE });
      await ledger.applyTransitions(claimed.map((c) => ({ row: c.claimed ? c.row : assertNever(), transition: { to: "closed" as const } })));
      const { rows } = await collect(ledger.listStale(2 * MINUTE));
      expect(rows).toHaveLength(16);

      const perUser = [...groupBy(rows, (r) => r.partitionKey).values()];
      await Promise.all(perUser.map((userRows) => ledger.moveFinished(userRows)));
      // Whatever a move could not copy stays live and finished, for the next sweep: never lost.
      const left = (await collect(ledger.listStale(2 * MINUTE))).rows;
      if (left.length > 0) await ledger.moveFinished(left);

      const everywhere = (await collect(ledger.listAll())).rows;
      expect(everywhere.map((r) => r.sessionId).sort()).toEqual(recorded.map((r) => r.sessionId).sort());
      expect(everywhere.every((r) => r.status === "closed")).toBe(true);
    }
  });

  it("touch of a session that finished says it is not open; release of one is a no-op", async () => {
    const { ledger, producer } = await createLedgerFixture();
    const row = await producer.record(recordInput());
    const claim = await ledger.claim(row, { leaseMs: MINUTE });
    if (!claim.claimed) throw new Error("not claimed");
    await ledger.markClosed(claim.row);
    await expect(producer.touch(row)).rejects.toBeInstanceOf(SessionNotOpenError);
    expect(await producer.release(row)).toMatchObject({ status: "closed", closedBy: "sweeper" });
  });

  it("lookups of finished sessions read a week's table or two, and list the history tables at most once in a while", async () => {
    const { ledger, producer, storageRequests } = await createLedgerFixture();
    const rows = await Promise.all([1, 2, 3].map(() => producer.record(recordInput())));
    for (const row of rows) await producer.release(row);
    const before = storageRequests.length;
    for (const row of rows) {
      await expect(producer.touch(row)).rejects.toBeInstanceOf(SessionNotOpenError);
      expect(await producer.release(row)).toMatchObject({ status: "closed", closedBy: "producer" });
      expect(await ledger.get(row)).toMatchObject({ status: "closed", closedBy: "producer" });
    }
    const listings = storageRequests.slice(before).filter((r) => r.method === "GET" && new URL(r.url).pathname.endsWith("/Tables"));
    // Nine lookups: the producer's history and the ledger's list the tables once each.
    expect(listings.length).toBeLessThanOrEqual(2);
    await expect(producer.touch(recordInput())).rejects.toBeInstanceOf(SessionNotFoundError);
  });
});

describe("purgeHistory", () => {
  it("drops whole weeks of history older than the retention, never a live row", async () => {
    const { ledger, producer, clock, tableName } = await createLedgerFixture();
    // The fixture's clock starts on Monday 2026-11-23: week 48 ends on Monday 30th.
    const old = await producer.record(recordInput());
    await producer.release(old);
    const open = await producer.record(recordInput());
    clock.advance(15 * 24 * 60 * MINUTE);
    const recent = await producer.record(recordInput());
    await producer.release(recent);
    expect(await ledger.history.tableNames()).toEqual([`${tableName}History2026W48`, `${tableName}History2026W50`]);

    expect(await ledger.purgeHistory(7 * 24 * 60 * MINUTE)).toEqual({ droppedTables: [`${tableName}History2026W48`] });
    expect(await ledger.get(old)).toBeUndefined();
    expect((await ledger.get(open))?.status).toBe("open");
    expect((await ledger.get(recent))?.status).toBe("closed");
  });
});
