/**
 * Crash safety: the CLI sweeping in a child process is killed with SIGKILL at random points, again
 * and again; each kill is followed by a fresh sweep (the next child), and at the end a last one
 * runs to completion. Nothing is lost and nothing is marked closed without a 204. Then the same for
 * producers killed while they release sessions (and move them to history): each session ends in
 * exactly one place, and the sweep that finishes a cut-short move counts it once.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import fc from "fast-check";
import type { SessionRecord } from "../src";
import { groupBy, mapConcurrent } from "../src/utils/concurrency";
import { newUserId, startCloudFixture, type CloudFixture } from "./support/cloudFixture";
import { rawEntities, rowProblems } from "./support/reliability";

const SOAK = Boolean(process.env.SOAK);
const SESSIONS = SOAK ? 1_000 : 300;
const KILLS = SOAK ? 60 : 20;
const launcher = join(__dirname, "..", "bin", "workbook-session-sweeper.js");

let cloud: CloudFixture;
beforeAll(async () => {
  cloud = await startCloudFixture();
});
afterAll(async () => {
  await cloud?.close();
});

function runCli(env: Record<string, string | undefined>, killAfterMs?: number): Promise<{ code: number | null; signal: string | null; stdout: string; killedAt?: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launcher, "sweep", "--json"], { env: env as NodeJS.ProcessEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let killedAt: number | undefined;
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.resume();
    const timer =
      killAfterMs === undefined
        ? undefined
        : setTimeout(() => {
            killedAt = Date.now();
            child.kill("SIGKILL");
          }, killAfterMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, ...(signal === "SIGKILL" && killedAt !== undefined && { killedAt }) });
    });
  });
}

it(`survives ${KILLS} SIGKILLs in sweeps over ${SESSIONS} sessions: none lost, none closed without a 204`, { timeout: SOAK ? 600_000 : 120_000 }, async () => {
  expect(existsSync(join(__dirname, "..", "dist", "src", "cli.js")), "npm test builds dist before vitest runs").toBe(true);
  const table = await cloud.newTable({ CLAIM_LEASE: "1", SWEEP_CONCURRENCY: "8" });
  // Slow enough that the kills land inside sweeps: each run gets through a few dozen sessions.
  cloud.emulator.configure({ latencyMs: 200 });
  const users = Array.from({ length: 30 }, () => newUserId());
  const opened = await mapConcurrent(Array.from({ length: SESSIONS }, (_, i) => i), 16, (i) =>
    table.openSession({ userId: users[i % users.length]!, workbook: `/drives/crash/items/b${i % 97}` }),
  );
  const env = { PATH: process.env.PATH, NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS, ...cloud.settings({ SESSIONS_TABLE: table.tableName, CLAIM_LEASE: "1", SWEEP_CONCURRENCY: "8" }) };

  // Random kill points, reproducible from fast-check's seed when a run fails. A run that ends before
  // its kill point does not count: runs go on until KILLS kills have landed. (The next run waits
  // for the dead one's tenant lease to run out: half CLAIM_LEASE, 0.5 s here.)
  const delays = fc.sample(fc.integer({ min: 400, max: 1_400 }), { numRuns: 3 * KILLS, seed: Number(process.env.CRASH_SEED ?? Date.now() % 100_000) });
  const kills: number[] = [];
  for (const delay of delays) {
    if (kills.length === KILLS) break;
    const result = await runCli(env, delay);
    if (result.killedAt === undefined) continue;
    kills.push(result.killedAt);
  }
  expect(kills.length).toBe(KILLS);

  // Let the dead sweepers' leases run out, then sweep to the end.
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  // A round ends early only when it found nothing left to do; its summaries say why otherwise.
  const finals: unknown[] = [];
  for (let round = 0; round < 8; round++) {
    const final = await runCli(env);
    expect(final.code).toBe(0);
    const summary = JSON.parse(final.stdout.trim().split("\n").at(-1)!) as { stale: number; skipped: number; leasedElsewhere: number };
    finals.push(summary);
    if (summary.stale === 0 && summary.skipped === 0 && summary.leasedElsewhere === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 1_200));
  }

  const rows = new Map<string, SessionRecord>();
  const places = new Map<string, number>();
  for await (const page of table.services.ledger.listAll()) {
    for (const row of page.rows) {
      rows.set(row.sessionId, row);
      places.set(row.sessionId, (places.get(row.sessionId) ?? 0) + 1);
    }
  }
  // Kills land between the steps of moves to history too: still every session in exactly one place.
  expect([...places.entries()].filter(([, count]) => count !== 1)).toEqual([]);
  expect((await table.services.ledger.history.tableNames()).length).toBeGreaterThan(0);
  const answered204 = new Set(cloud.emulator.requests.filter((r) => r.status === 204).map((r) => r.sessionId));

  for (const { sessionId } of opened) {
    const row = rows.get(sessionId);
    expect(row, "no row is lost").toBeDefined();
    // Every session ends finished: none left open or closing.
    const unfinished = `${row!.status} after ${row!.attempts} attempts (next ${row!.nextAttemptAt?.toISOString() ?? "-"}, ${row!.lastError?.code ?? "no error"}); final sweeps: ${JSON.stringify(finals)}`;
    expect(["closed", "expired"], unfinished).toContain(row!.status);
    // closed only with a 204 from Graph
    if (row!.status === "closed") expect(answered204.has(sessionId)).toBe(true);
    // a session Graph closed is closed, or, when the sweeper that got the 204 died before writing it, expired saying so
    if (answered204.has(sessionId) && row!.status !== "closed") expect(row!.lastError?.code).toBe("GoneAfterInterruptedClose");
    // a session whose row is expired was either closed by a dead sweeper or is gone on Graph
    expect(cloud.emulator.sessionState(sessionId)).not.toBe("open");
  }
  const stats = cloud.emulator.stats();
  expect(stats.maxConcurrentPerSession).toBeLessThanOrEqual(1);
  expect(stats.maxConcurrentPerWorkbook).toBeLessThanOrEqual(1);
  // Sessions never go idle here, so a row expired by a take-over is exactly one whose 204 a killed
  // sweeper received and could not write; and every such session was sent closeSession again.
  const interrupted = [...rows.values()].filter((r) => r.lastError?.code === "GoneAfterInterruptedClose");
  for (const row of interrupted) expect(answered204.has(row.sessionId)).toBe(true);
  expect(rows.size).toBe(SESSIONS);
  expect([...rows.values()].filter((r) => r.status === "expired")).toEqual(interrupted);
  expect(stats.closesAfterClosed).toBeGreaterThanOrEqual(interrupted.length);
  expect(opened.length).toBe(SESSIONS);

  // A 204 is written at once: closeSession goes again only to a session whose close was in flight
  // at a kill, or whose 204 the killed sweeper got in its last moments (under 100 ms before the
  // kill), never one whose 204 it had time to write.
  const resentLate: string[] = [];
  for (const [sessionId, requests] of groupBy(cloud.emulator.requests.filter((r) => r.kind === "closeSession" && r.sessionId), (r) => r.sessionId!)) {
    const answered = requests.filter((r) => r.status === 204).sort((a, b) => a.startedAt - b.startedAt)[0];
    if (!answered || !requests.some((r) => r.startedAt > answered.endedAt!)) continue;
    if (kills.some((kill) => answered.startedAt <= kill && answered.endedAt! > kill - 100)) continue;
    const nextKill = kills.filter((kill) => kill >= answered.endedAt!).sort((a, b) => a - b)[0];
    resentLate.push(`${sessionId.slice(0, 24)}…: 204 ${nextKill === undefined ? "after the last kill" : `${nextKill - answered.endedAt!} ms before a kill`}`);
  }
  expect(resentLate, "closes sent again though their 204 came 100 ms or more before a kill").toEqual([]);
});

const producerChild = join(__dirname, "support", "producerChild.cjs");

/** Runs the producer child on `sessions`; SIGKILLs it `killAfterMs` after it is ready. Returns the ids it released. */
/** Kills the producer `killAfterMs` after its `afterReleases`-th release returned (0: after it is ready): whatever the machine's pace, mid-run. */
function runProducer(
  env: NodeJS.ProcessEnv,
  planFile: string,
  { afterReleases, killAfterMs }: { afterReleases: number; killAfterMs: number },
): Promise<{ released: string[]; signal: string | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [producerChild, planFile], { env, stdio: ["ignore", "pipe", "pipe"] });
    const released: string[] = [];
    let buffered = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith("released ")) released.push(line.slice("released ".length));
        const due = line === "ready" ? afterReleases === 0 : line.startsWith("released ") && released.length === afterReleases;
        if (due) timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      }
    });
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("exit", (_code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ released, signal, stderr });
    });
  });
}

it(`survives ${KILLS} SIGKILLs of producers releasing sessions: each session in one place, once`, { timeout: SOAK ? 600_000 : 120_000 }, async () => {
  const table = await cloud.newTable();
  const SESSIONS_TO_RELEASE = KILLS * 15 + 50;
  const users = Array.from({ length: 10 }, () => newUserId());
  const recorded = await mapConcurrent(Array.from({ length: SESSIONS_TO_RELEASE }, (_, i) => i), 16, (i) =>
    table.openSession({ userId: users[i % users.length]!, workbook: `/drives/producer-crash/items/b${i % 31}`, idleMinutes: 0, recordOnly: true }),
  );
  const env = {
    PATH: process.env.PATH,
    STORAGE_CONNECTION_STRING: inject("storageConnectionString"),
    ASSERTION_PUBLIC_KEY: cloud.assertionPublicKey,
  };
  const workDir = await mkdtemp(join(tmpdir(), "producer-crash-"));

  // Each producer takes up sessions no producer was given yet; every other one, as a restarted
  // service would, also those its predecessor held and did not see released (a release a kill cut
  // short is then released again). The others' cut-short moves are left for the sweep.
  const released = new Set<string>();
  const keys = recorded.map(({ row }) => ({ tenantId: row.tenantId, userId: row.userId, sessionId: row.sessionId }));
  // Up to 60 ms after the run's chosen release (0-3 of its 15): inside a release's storage calls.
  const delays = fc.sample(fc.integer({ min: 0, max: 60 }), { numRuns: KILLS, seed: Number(process.env.CRASH_SEED ?? Date.now() % 100_000) });
  let killed = 0;
  let next = 0;
  let previous: typeof keys = [];
  try {
    for (const [run, delay] of delays.entries()) {
      const fresh = keys.slice(next, (next += 15));
      const batch = [...(run % 2 === 1 ? previous.filter(({ sessionId }) => !released.has(sessionId)) : []), ...fresh];
      previous = fresh;
      const planFile = join(workDir, `plan-${run}.json`);
      await writeFile(planFile, JSON.stringify({ tableName: table.tableName, sessions: batch }));
      // Counted from a release, not from the start: the machine's pace (two test files share two
      // cores) does not decide whether the kill lands mid-run.
      const result = await runProducer(env, planFile, { afterReleases: run % 4, killAfterMs: delay });
      expect(result.stderr, "a producer fails only by being killed").toBe("");
      if (result.signal === "SIGKILL") killed++;
      for (const id of result.released) released.add(id);
    }
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
  expect(killed).toBeGreaterThanOrEqual(Math.floor(KILLS * 0.75));

  // What kills left between the steps of a move: finished rows still in the live table.
  let leftovers = 0;
  for await (const entity of table.services.ledger.client.listEntities({ queryOptions: { filter: "status ne 'open'" } })) if (entity) leftovers++;
  // The next sweep finishes those moves and counts each once; nothing it finds is stale.
  const summary = await table.services.newSweeper().run();
  expect(summary.stale).toBe(0);
  expect(leftovers, "some kills landed between the steps of a move").toBeGreaterThan(0);
  expect(summary.moved).toBe(leftovers);
  expect((await table.services.newSweeper().run()).moved, "a move is counted once").toBe(0);

  const places = new Map<string, number>();
  const rows = new Map<string, SessionRecord>();
  for await (const page of table.services.ledger.listAll()) {
    for (const row of page.rows) {
      rows.set(row.sessionId, row);
      places.set(row.sessionId, (places.get(row.sessionId) ?? 0) + 1);
    }
  }
  expect([...places.entries()].filter(([, count]) => count !== 1)).toEqual([]);
  expect(rows.size).toBe(SESSIONS_TO_RELEASE);
  const history = new Map<string, Record<string, unknown>>();
  for await (const page of table.services.ledger.history.pages(1_000)) for (const entity of page) history.set(entity.sessionId as string, entity);
  for (const entity of await rawEntities(table.services.ledger)) expect(rowProblems(entity), String(entity.sessionId)).toEqual([]);
  for (const { sessionId } of recorded) {
    const row = rows.get(sessionId)!;
    if (released.has(sessionId)) {
      expect(row.status).toBe("closed");
      expect(row.closedBy).toBe("producer");
    }
    // Finished means in history, without its assertion; open means still live, untouched by the kills.
    expect(history.has(sessionId)).toBe(row.status !== "open");
    if (row.status !== "open") expect(history.get(sessionId)).not.toHaveProperty("assertion");
  }
  expect(released.size).toBeGreaterThan(0);
  console.info(`producer kills: ${killed} of ${KILLS}; ${released.size} releases returned; ${leftovers} moves left half-done for the sweep`);
});
