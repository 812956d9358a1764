/**
 * `npm run demo` is the README's first promise: on a fresh machine it runs the main job on the
 * local stand-ins. Run it as a user would and hold it to its story: the abandoned sessions are
 * closed, the live and the throttled one stay open. It runs secretless (storage and the
 * on-behalf-of exchange through a managed identity), and with `--connection-string` the other way.
 * `npm run demo:producer` is the killed-producer story: a producer process killed with SIGKILL
 * mid-work, whose session the sweeper closes within the lease plus one sweep.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

const root = join(__dirname, "..");

function runDemo(args: string[], script = join(root, "scripts", "demo.ts")): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, "node_modules", "tsx", "dist", "cli.mjs"), script, ...args], {
      cwd: root,
      env: { PATH: process.env.PATH },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.resume();
    child.on("error", reject);
    child.on("exit", (exitCode) => resolve({ code: exitCode, stdout: out }));
  });
}

it.each([
  ["secretless, as deployed", [], /^Secretless .*no storage key, client secret or shared key in any setting/m],
  ["with a connection string and a client secret", ["--connection-string"], /^With a storage connection string and a client secret/m],
])("npm run demo %s closes the abandoned sessions and leaves the live one", { timeout: 120_000 }, async (_way, args, mode) => {
  const { code, stdout } = await runDemo(args);
  expect(code).toBe(0);
  expect(stdout).toMatch(mode);
  expect(stdout.match(/closed by sweeper/g)).toHaveLength(3);
  expect(stdout).toMatch(/ben +live +open +0 .*left alone: it is alive/);
  expect(stdout).toMatch(/history expired .*AADSTS500133/);
  expect(stdout).toContain("Graph sessions still open: 2");
});

it("npm run demo:producer: a producer killed mid-work has its session closed by the sweeper within its lease plus one sweep; one that finishes closes its own", { timeout: 120_000 }, async () => {
  const { code, stdout } = await runDemo([], join(root, "scripts", "demo-producer.ts"));
  expect(code).toBe(0);
  expect(stdout).toMatch(/crasher killed with SIGKILL mid-work/);
  expect(stdout).toMatch(/finisher: closed by producer/);
  expect(stdout).toMatch(/crasher: +closed by sweeper/);
  expect(stdout).toMatch(/closed [\d.]+ s after the kill: within its lease \(10 s\) plus one sweep \(2 s\): yes\./);
  // Each session closed once, each by one party.
  expect(stdout.match(/closeSession +204/g)).toHaveLength(2);
});
