/**
 * The operator CLI: `main()` called in process with captured streams, against Azurite and the
 * https stand-ins, and once the built launcher as an operator's shell runs it.
 */
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { TableServiceClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createSweeperServices, loadConfig, type SessionRecord, type SweepSummary } from "../src";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { createLedgerTableClient } from "../src/ledger/tableClient";
import { AssertionOpener, AssertionSealer } from "../src/core/assertionSealing";
import type { CliIo } from "../src/cli";
import { mapConcurrent } from "../src/utils/concurrency";
import { runCli } from "./support/cli";
import { useCloudFixture, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { uniqueTableName } from "./support/ledgerFixture";
import { captureLog } from "./support/secretScan";
import { exec, type Run } from "./support/exec";

const ROOT = resolve(__dirname, "..");
const LAUNCHER = join(ROOT, "bin", "workbook-session-sweeper.js");

let cloud: CloudFixture;
let workDir: string;

useCloudFixture((started) => (cloud = started));
beforeAll(() => {
  // No local.settings.json here unless a test writes one.
  workDir = mkdtempSync(join(tmpdir(), "wss-cli-"));
});
afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** The CLI in process, in this file's working directory unless a test gives another. */
function cli(argv: string[], io: Partial<CliIo> & { env: CliIo["env"] }): Promise<Run> {
  return runCli(argv, { cwd: workDir, ...io });
}

function lastLine(text: string): string {
  return text.trimEnd().split("\n").at(-1) ?? "";
}

async function rows(table: TableFixture): Promise<Map<string, SessionRecord>> {
  const found = new Map<string, SessionRecord>();
  for await (const page of table.services.ledger.listAll()) for (const row of page.rows) found.set(row.sessionId, row);
  return found;
}

describe("sweep", () => {
  it("closes the stale sessions and prints a summary table; fresh sessions stay open", async () => {
    const table = await cloud.newTable();
    const stale = await mapConcurrent([0, 1, 2], 3, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/d/items/s${i}` }));
    const fresh = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/live", idleMinutes: 0 });

    const run = await cli(["sweep"], { env: cloud.settings({ SESSIONS_TABLE: table.tableName }) });

    expect(run.code).toBe(0);
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain(`Sweep of table ${table.tableName} finished`);
    expect(run.stdout).toMatch(/^ {2}closed +3$/m);
    expect(run.stdout).toMatch(/^ {2}graphRequests +3$/m);
    expect(run.stdout).toMatch(/^ {2}dryRun +false$/m);
    expect(run.stdout).not.toMatch(/^ {2}error/m);
    const after = await rows(table);
    for (const { sessionId } of stale) {
      expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
      expect(after.get(sessionId)?.status).toBe("closed");
    }
    expect(after.get(fresh.sessionId)?.status).toBe("open");
    expect(cloud.emulator.sessionState(fresh.sessionId)).toBe("open");
  });

  it("--json prints the summary as the last (and only) line of stdout; sweep is the default command", async () => {
    const table = await cloud.newTable();
    await mapConcurrent([0, 1], 2, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/d/items/j${i}` }));

    const run = await cli(["--json"], { env: cloud.settings({ SESSIONS_TABLE: table.tableName }) });

    expect(run.code).toBe(0);
    expect(run.stdout.trimEnd().split("\n")).toHaveLength(1);
    const summary = JSON.parse(lastLine(run.stdout)) as SweepSummary;
    expect(summary).toMatchObject({ dryRun: false, scanned: 2, stale: 2, claimed: 2, closed: 2, failed: 0, stoppedEarly: false });
    expect(summary.error).toBeUndefined();
  });

  it("--dry-run lists the candidates and changes nothing", async () => {
    const table = await cloud.newTable();
    const opened = await mapConcurrent([0, 1, 2], 3, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/d/items/dry${i}` }));
    const before = await rows(table);
    const env = cloud.settings({ SESSIONS_TABLE: table.tableName });

    const text = await cli(["sweep", "--dry-run"], { env });
    const json = await cli(["sweep", "--dry-run", "--json"], { env });

    expect(text.code).toBe(0);
    expect(text.stdout).toContain("nothing was claimed, written or sent");
    expect(text.stdout).toMatch(/^ {2}dryRun +true$/m);
    expect(text.stdout).toContain("Sessions that would be closed (3):");
    for (const i of [0, 1, 2]) expect(text.stdout).toContain(`/drives/d/items/dry${i}`);
    expect(json.code).toBe(0);
    const summary = JSON.parse(lastLine(json.stdout)) as SweepSummary;
    expect(summary).toMatchObject({ dryRun: true, stale: 3, claimed: 0, closed: 0 });
    expect(summary.candidates).toHaveLength(3);
    expect(cloud.emulator.requests).toHaveLength(0);
    expect(cloud.authority.tokenRequests).toHaveLength(0);
    const after = await rows(table);
    for (const { sessionId } of opened) {
      expect(after.get(sessionId)!.etag).toBe(before.get(sessionId)!.etag);
      expect(cloud.emulator.sessionState(sessionId)).toBe("open");
    }
  });

  it("a dry run needs only the storage settings: none of Entra ID's nor the assertion keys", async () => {
    const table = await cloud.newTable();
    await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/storage-only" });
    const all = cloud.settings({ SESSIONS_TABLE: table.tableName });
    const env = { AzureWebJobsStorage: all.AzureWebJobsStorage, SESSIONS_TABLE: table.tableName };

    const dry = await cli(["sweep", "--dry-run", "--json"], { env });
    expect(dry.stderr).toBe("");
    expect(dry.code).toBe(0);
    expect(JSON.parse(lastLine(dry.stdout))).toMatchObject({ dryRun: true, stale: 1, claimed: 0 });
    // A real sweep still names every setting it needs.
    const real = await cli(["sweep", "--json"], { env });
    expect(real.code).toBe(2);
    for (const name of ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_ASSERTION_IDENTITY", "ASSERTION_PRIVATE_KEY"]) expect(real.stderr).toContain(name);
    // Services built from such settings pause a real close rather than send or fail it.
    const services = createSweeperServices(loadConfig(env, { credentials: false }));
    expect(await services.newSweeper().run()).toMatchObject({ paused: 1, failed: 0, closed: 0, error: { code: "CredentialsNotConfigured" } });
    expect(cloud.emulator.requests).toHaveLength(0);
  });

  it("a dry run shows the first 50 candidates and counts the rest", async () => {
    const table = await cloud.newTable();
    const user = newUserId();
    await mapConcurrent(Array.from({ length: 53 }, (_, i) => i), 16, (i) => table.openSession({ userId: user, workbook: `/drives/d/items/m${i}`, recordOnly: true }));

    const run = await cli(["--dry-run"], { env: cloud.settings({ SESSIONS_TABLE: table.tableName }) });

    expect(run.code).toBe(0);
    expect(run.stdout).toContain("Sessions that would be closed (53):");
    expect(run.stdout).toContain("… and 3 more");
    expect(run.stdout.match(/\/drives\/d\/items\/m\d+/g)).toHaveLength(50);
  });

  it("--user sweeps one user's sessions and --limit caps the attempts", async () => {
    const table = await cloud.newTable();
    const [alice, bob] = [newUserId(), newUserId()];
    const alices = await mapConcurrent([0, 1, 2], 3, (i) => table.openSession({ userId: alice, workbook: `/drives/d/items/a${i}` }));
    const bobs = await mapConcurrent([0, 1, 2], 3, (i) => table.openSession({ userId: bob, workbook: `/drives/d/items/b${i}` }));
    const env = cloud.settings({ SESSIONS_TABLE: table.tableName });

    const one = await cli(["sweep", "--user", alice.toUpperCase(), "--json"], { env });
    expect(one.code).toBe(0);
    expect(JSON.parse(lastLine(one.stdout))).toMatchObject({ scanned: 3, closed: 3 });
    for (const { sessionId } of alices) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    for (const { sessionId } of bobs) expect(cloud.emulator.sessionState(sessionId)).toBe("open");

    const limited = await cli(["sweep", "--limit", "2", "--json"], { env });
    expect(limited.code).toBe(0);
    expect(JSON.parse(lastLine(limited.stdout))).toMatchObject({ stale: 2, closed: 2 });
    expect(bobs.filter(({ sessionId }) => cloud.emulator.sessionState(sessionId) === "closed")).toHaveLength(2);
  });

  it("--older-than PT1H (or 3600 seconds) leaves 10-minute-idle sessions alone", async () => {
    const table = await cloud.newTable();
    const recent = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/recent", idleMinutes: 10 });
    const old = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/old", idleMinutes: 90 });
    const env = cloud.settings({ SESSIONS_TABLE: table.tableName });

    const dry = await cli(["--older-than", "3600", "--dry-run", "--json"], { env });
    expect(JSON.parse(lastLine(dry.stdout))).toMatchObject({ stale: 1, candidates: [{ workbook: "/drives/d/items/old" }] });

    const run = await cli(["--older-than", "PT1H", "--json"], { env });
    expect(run.code).toBe(0);
    expect(JSON.parse(lastLine(run.stdout))).toMatchObject({ scanned: 1, closed: 1 });
    expect(cloud.emulator.sessionState(old.sessionId)).toBe("closed");
    expect(cloud.emulator.sessionState(recent.sessionId)).toBe("open");
    expect((await rows(table)).get(recent.sessionId)?.status).toBe("open");
  });

  it("exits 1 with the fault in the summary when storage ends the sweep", async () => {
    // The right account with a wrong key: every request is refused (403).
    const wrongKey = cloud.settings().AzureWebJobsStorage!.replace(/AccountKey=[^;]+/, `AccountKey=${randomBytes(64).toString("base64")}`);
    const run = await cli(["sweep"], { env: cloud.settings({ AzureWebJobsStorage: wrongKey }) });

    expect(run.code).toBe(1);
    expect(run.stdout).toContain("ended by a storage fault");
    expect(run.stdout).toMatch(/^ {2}error +\S+/m);
    expect(run.stdout).toMatch(/^ {2}stoppedEarly +true$/m);
    expect(run.stderr).toMatch(/warn Sweep ended by a fault \{.*"trigger":"cli"/);
  });

  it("writes warnings (malformed rows) to stderr one line each, and structured lines only with --verbose", async () => {
    const table = await cloud.newTable();
    const client = createLedgerTableClient(cloud.settings().AzureWebJobsStorage!, table.tableName);
    const userId = newUserId();
    const longAgo = new Date(Date.now() - 60 * 60_000);
    await client.createEntity({
      partitionKey: partitionKeyFor(HOME_TENANT, userId),
      rowKey: rowKeyFor("bad"),
      tenantId: HOME_TENANT,
      userId,
      sessionId: "bad",
      workbook: "/drives/d/items/i",
      status: "open",
      schemaVersion: 2,
      createdAt: longAgo,
      heartbeatSeenAt: longAgo,
      leaseSeconds: 0,
      attempts: "many",
      recordedBy: "buggy",
    });
    await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/ok" });
    const env = cloud.settings({ SESSIONS_TABLE: table.tableName });

    const quiet = await cli(["--json"], { env });
    expect(quiet.code).toBe(0);
    expect(JSON.parse(lastLine(quiet.stdout))).toMatchObject({ malformed: 1, closed: 1 });
    const lines = quiet.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\S+Z warn Malformed ledger rows \{.*attempts/);

    await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/ok2" });
    const verbose = await cli(["--verbose"], { env });
    expect(verbose.code).toBe(0);
    expect(verbose.stderr).toMatch(/info Sweep finished \{.*"trigger":"cli".*"closed":1/);
    // Nothing secret in any of it, however verbose.
    const settings = cloud.settings();
    const accountKey = /AccountKey=([^;]+)/.exec(settings.AzureWebJobsStorage!)![1]!;
    for (const output of [verbose.stdout, verbose.stderr]) {
      expect(output).not.toContain(cloud.clientSecret);
      expect(output).not.toContain(accountKey);
      expect(output).not.toContain(cloud.assertionKeys.privateKey);
      expect(output).not.toContain(Buffer.from(cloud.assertionKeys.privateKey, "base64url").toString("base64"));
    }
  });

  it("shows a progress line on a terminal, cleared at the end, and none when not a terminal", async () => {
    const table = await cloud.newTable({ SWEEP_CONCURRENCY: "1" });
    await mapConcurrent([0, 1, 2, 3, 4], 5, (i) => table.openSession({ userId: newUserId(), workbook: `/drives/d/items/p${i}` }));
    cloud.emulator.configure({ latencyMs: 300 });
    const env = cloud.settings({ SESSIONS_TABLE: table.tableName, SWEEP_CONCURRENCY: "1" });

    const run = await cli([], { env, isTTY: true, columns: 100 });

    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/^\r\x1b\[2Ksweeping: scanned 5, closed \d, /);
    expect(run.stderr.endsWith("\r\x1b[2K")).toBe(true);
    expect(run.stdout).not.toContain("\r");
    expect(run.stdout).toMatch(/^ {2}closed +5$/m);

    const json = await cli(["--json"], { env, isTTY: true });
    expect(json.stderr).toBe("");
  });
});

describe("keys new", () => {
  it("prints a new key pair that works: the public key seals for the private key; --json for scripts; it needs no settings", async () => {
    const text = await cli(["keys", "new"], { env: {} });
    expect(text.code).toBe(0);
    const privateKey = /^ASSERTION_PRIVATE_KEY=([A-Za-z0-9_-]{43})$/m.exec(text.stdout)?.[1];
    const publicKey = /^ASSERTION_PUBLIC_KEY=([A-Za-z0-9_-]{43})$/m.exec(text.stdout)?.[1];
    expect(privateKey).toBeDefined();
    expect(publicKey).toBeDefined();
    const row = { partitionKey: "p", rowKey: "r" };
    const sealed = await AssertionSealer.fromPublicKey(publicKey!).seal("an assertion", row);
    expect(await new AssertionOpener({ privateKeys: [privateKey!] }).open(sealed, row)).toBe("an assertion");

    const json = await cli(["keys", "new", "--json"], { env: {} });
    const pair = JSON.parse(lastLine(json.stdout)) as Record<string, string>;
    expect(Object.keys(pair).sort()).toEqual(["ASSERTION_PRIVATE_KEY", "ASSERTION_PUBLIC_KEY", "keyId"]);
    expect(pair.ASSERTION_PRIVATE_KEY).not.toBe(privateKey);
    expect(AssertionSealer.fromPublicKey(pair.ASSERTION_PUBLIC_KEY!).keyId).toBe(pair.keyId);

    const usage = await cli(["keys"], { env: {} });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("keys new");
  });
});

describe("bad flags and configuration", () => {
  it("a missing setting exits 2 and names it, with nothing on stdout", async () => {
    const run = await cli(["sweep", "--json"], { env: cloud.settings({ AZURE_CLIENT_ID: undefined }) });

    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain("AZURE_CLIENT_ID is required but not set");
    expect(run.stderr).toContain("no local.settings.json");
  });

  it.each([
    [["--frobnicate"], /unknown option '--frobnicate'/],
    [["--older-than", "ten minutes"], /--older-than must be an ISO-8601 duration .* \(got 'ten minutes'\)/],
    [["--older-than", "0"], /--older-than must be at least one second/],
    [["--user", "alice"], /--user must be .*GUID.* \(got 'alice'\)/],
    [["--limit", "0"], /--limit must be a whole number from 1 to 1000000 \(got '0'\)/],
    [["--limit", "many"], /--limit must be a whole number/],
    [["--limit"], /option '--limit <value>' argument missing/],
    [["--dry-run=yes"], /option '--dry-run' does not take an argument/],
    [["purge"], /unknown command 'purge'/],
    [["sweep", "extra"], /unexpected argument 'extra'/],
  ])("%j exits 2 with the reason and the usage", async (argv, reason) => {
    const run = await cli(argv, { env: cloud.settings() });

    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(reason);
    expect(run.stderr).toContain("Usage: workbook-session-sweeper");
  });

  it("every bad flag is named at once", async () => {
    const run = await cli(["--user", "x", "--limit", "-1x", "--older-than", "soon"], { env: cloud.settings() });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--older-than/);
    expect(run.stderr).toMatch(/--user/);
    expect(run.stderr).toMatch(/--limit/);
  });

  it("help prints the usage on stdout and exits 0", async () => {
    for (const argv of [["help"], ["--help"], ["sweep", "-h"]]) {
      const run = await cli(argv, { env: {} });
      expect(run.code).toBe(0);
      expect(run.stdout).toContain("--older-than <dur>");
      expect(run.stderr).toBe("");
    }
  });

  it("reads local.settings.json (--settings or the working directory's), with the environment overriding it", async () => {
    const table = await cloud.newTable();
    const dir = mkdtempSync(join(workDir, "settings-"));
    const file = join(dir, "custom.settings.json");
    // The file points at a table that does not exist; the environment's SESSIONS_TABLE wins.
    const fileTable = uniqueTableName();
    writeFileSync(file, JSON.stringify({ IsEncrypted: false, Values: cloud.settings({ SESSIONS_TABLE: fileTable, FUNCTIONS_WORKER_RUNTIME: "node" }) }));
    const opened = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/f" });

    const run = await cli(["--settings", file, "--json"], { env: { SESSIONS_TABLE: table.tableName, AZURE_CLIENT_ID: "" } });

    expect(run.code).toBe(0);
    expect(JSON.parse(lastLine(run.stdout))).toMatchObject({ closed: 1 });
    expect(cloud.emulator.sessionState(opened.sessionId)).toBe("closed");

    // Without the override, the file's table is used: the sweep finds it missing, creates it, and has nothing to do.
    expect(await tableExists(fileTable)).toBe(false);
    const fileOnly = await cli(["--settings", file, "--json"], { env: {} });
    expect(fileOnly.code).toBe(0);
    expect(JSON.parse(lastLine(fileOnly.stdout))).toMatchObject({ scanned: 0, closed: 0 });
    expect(await tableExists(fileTable)).toBe(true);

    // ./local.settings.json is read without --settings; a setting missing from both is named.
    writeFileSync(join(dir, "local.settings.json"), JSON.stringify({ Values: cloud.settings({ AZURE_TENANT_ID: undefined }) }));
    const missing = await cli([], { env: {}, cwd: dir });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("AZURE_TENANT_ID is required but not set");
    expect(missing.stderr).toContain(join(dir, "local.settings.json"));
    const fixed = await cli(["--dry-run", "--json"], { env: { AZURE_TENANT_ID: HOME_TENANT, SESSIONS_TABLE: table.tableName }, cwd: dir });
    expect(fixed.code).toBe(0);

    // A settings file that cannot be used is a configuration error.
    const absent = await cli(["--settings", join(dir, "absent.json")], { env: cloud.settings() });
    expect(absent.code).toBe(2);
    expect(absent.stderr).toMatch(/cannot read the settings file .*absent\.json \(ENOENT\)/);
    writeFileSync(join(dir, "broken.json"), `{ "Values": { "AZURE_CLIENT_SECRET": "${cloud.clientSecret}" `);
    const broken = await cli(["--settings", join(dir, "broken.json")], { env: {} });
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/broken\.json is not valid JSON/);
    expect(broken.stderr).not.toContain(cloud.clientSecret);
  });
});

describe("the installed command", () => {
  beforeAll(async () => {
    // `npm test` builds before vitest runs; a bare `vitest run` may not have.
    if (!existsSync(join(ROOT, "dist", "src", "cli.js"))) await exec(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"], { cwd: ROOT });
  }, 120_000);

  it("bin/workbook-session-sweeper.js sweep --json runs the sweep and exits 0", async () => {
    const table = await cloud.newTable();
    const opened = await table.openSession({ userId: newUserId(), workbook: "/drives/d/items/bin" });
    const env = {
      PATH: process.env.PATH,
      NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS,
      ...cloud.settings({ SESSIONS_TABLE: table.tableName }),
    };

    const run = await exec(process.execPath, [LAUNCHER, "sweep", "--json"], { cwd: workDir, env });
    captureLog(run.stdout, run.stderr);

    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(JSON.parse(lastLine(run.stdout))).toMatchObject({ scanned: 1, closed: 1 });
    expect(cloud.emulator.sessionState(opened.sessionId)).toBe("closed");

    const bad = await exec(process.execPath, [LAUNCHER, "--limit", "none"], { cwd: workDir, env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--limit must be a whole number/);
  });

  it("the launcher says to build first when dist/ is missing", async () => {
    const copy = mkdtempSync(join(workDir, "unbuilt-"));
    mkdirSync(join(copy, "bin"));
    copyFileSync(LAUNCHER, join(copy, "bin", "workbook-session-sweeper.js"));

    const run = await exec(process.execPath, [join(copy, "bin", "workbook-session-sweeper.js"), "sweep"], { cwd: copy });

    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain("run `npm run build` first");
  });
});

async function tableExists(name: string): Promise<boolean> {
  const service = TableServiceClient.fromConnectionString(inject("storageConnectionString"), { allowInsecureConnection: true });
  for await (const table of service.listTables({ queryOptions: { filter: `TableName eq '${name}'` } })) if (table.name === name) return true;
  return false;
}
