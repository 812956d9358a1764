/**
 * The package as another project gets it: `npm pack`, `npm install <tarball>` into a fresh project
 * in the temp directory, then plain `node` processes there require and import it the way a
 * producing service does. The rest of the suite imports ../src directly, so only this file notices
 * a wrong `exports` map, a `files` list that ships too much or too little, a `main` the Functions
 * host can no longer glob, or a producer entry that drags the sweeper's own dependencies along.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exec, type Run } from "./support/exec";

const ROOT = resolve(__dirname, "..");
const NAME = "workbook-session-sweeper";
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");
// npm is a .cmd on Windows (exec runs it through a shell there).
const NPM = process.platform === "win32" ? "npm.cmd" : "npm";

/**
 * What only the sweeper needs: the Functions host's library, the on-behalf-of credentials and the
 * Graph client. A producing service loads the ledger and the close queue, never these.
 */
const SWEEPER_ONLY = ["@azure/functions", "@azure/identity", "@microsoft/microsoft-graph-client"] as const;


/** The part of `npm pack --json`'s report this file reads. */
interface PackReport {
  filename: string;
  entryCount: number;
  files: { path: string }[];
}

let workDir: string | undefined;
/** The temporary project the tarball is installed into. */
let consumer: string;
/** The package as npm installed it, inside `consumer`. */
let installed: string;
let packed: PackReport;

beforeAll(async () => {
  // `npm test` builds before vitest runs; a bare `vitest run` may not have.
  if (!existsSync(join(ROOT, "dist", "src", "producer.js"))) {
    expectSuccess(await exec(process.execPath, [TSC, "-p", "tsconfig.build.json"], { cwd: ROOT }), "tsc");
  }
  // Real path: Node reports module paths resolved through symlinks (macOS's /var is one).
  workDir = realpathSync(mkdtempSync(join(tmpdir(), "wss-package-")));

  // Scripts off: this packs dist/ as the build left it, and a prepack hook must not rebuild it mid-suite.
  const pack = await exec(NPM, ["pack", "--pack-destination", workDir, "--json", "--ignore-scripts"], { cwd: ROOT });
  expectSuccess(pack, "npm pack");
  const reports = JSON.parse(pack.stdout) as PackReport[];
  expect(reports).toHaveLength(1);
  packed = reports[0]!;

  consumer = join(workDir, "consumer");
  mkdirSync(consumer);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "wss-consumer", version: "1.0.0", private: true }, null, 2));
  const started = performance.now();
  const install = await exec(
    NPM,
    ["install", join(workDir, packed.filename), "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"],
    { cwd: consumer },
  );
  expectSuccess(install, "npm install");
  console.info(`npm install of ${packed.filename} (${packed.entryCount} files): ${((performance.now() - started) / 1000).toFixed(1)} s`);
  installed = join(consumer, "node_modules", NAME);
}, 120_000);

afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe("require (CommonJS)", () => {
  it("loads the root and ./producer, and both give the same SessionProducer and error classes", async () => {
    const result = await nodeScript(
      "require.cjs",
      `
      const root = require("${NAME}");
      const producer = require("${NAME}/producer");
      console.log(JSON.stringify({
        root: typeof root.SessionProducer,
        producer: typeof producer.SessionProducer,
        sameClass: root.SessionProducer === producer.SessionProducer,
        sameError: root.SessionNotOpenError === producer.SessionNotOpenError,
        resolvedFrom: require.resolve("${NAME}/producer"),
        version: require("${NAME}/package.json").version,
      }));
      `,
    );

    expect(result).toEqual({
      root: "function",
      producer: "function",
      sameClass: true,
      sameError: true,
      // The installed copy, not this repository found by walking up from the temp project.
      resolvedFrom: join(installed, "dist", "src", "producer.js"),
      version: readPackageJson(ROOT).version,
    });
  });
});

describe("import (ESM)", () => {
  it("gets named exports from the root and ./producer, the same classes require gives", async () => {
    // Named imports from CommonJS rely on Node's static analysis of the compiled exports
    // (cjs-module-lexer); a SyntaxError at link time here means the compiled shape defeats it.
    const result = await nodeScript(
      "import.mjs",
      `
      import { createRequire } from "node:module";
      import { SessionProducer } from "${NAME}";
      import { SessionProducer as FromProducerEntry, ValidationError, WORKBOOK_FORMS } from "${NAME}/producer";
      const require = createRequire(import.meta.url);
      console.log(JSON.stringify({
        root: typeof SessionProducer,
        producer: typeof FromProducerEntry,
        sameClass: SessionProducer === FromProducerEntry,
        sameAsRequire: require("${NAME}/producer").SessionProducer === FromProducerEntry,
        error: typeof ValidationError,
        forms: WORKBOOK_FORMS.length,
      }));
      `,
    );

    expect(result).toEqual({ root: "function", producer: "function", sameClass: true, sameAsRequire: true, error: "function", forms: 4 });
  });
});

describe("the producer entry", () => {
  it("loads none of the sweeper-only packages, which the root entry does load", async () => {
    // Each is installed, so its absence from require.cache means it was not loaded, not that it is missing.
    for (const name of SWEEPER_ONLY) expect(existsSync(join(consumer, "node_modules", name, "package.json")), name).toBe(true);
    const loadedBy = async (specifier: string): Promise<string[]> => {
      const modules = (await nodeScript(
        `loaded-${specifier.replace(/\W/g, "-")}.cjs`,
        `require("${specifier}"); console.log(JSON.stringify(Object.keys(require.cache)));`,
      )) as string[];
      return SWEEPER_ONLY.filter((name) => modules.some((path) => packagePath(name).test(path)));
    };

    expect(await loadedBy(`${NAME}/producer`)).toEqual([]);
    // The same check finds them through the root entry, so an empty list above is not a check that sees nothing.
    expect(await loadedBy(NAME)).toEqual(expect.arrayContaining(["@azure/identity", "@microsoft/microsoft-graph-client"]));
  });

  it("seals with the public key and holds nothing that opens: no opener, no legacy cipher, loaded or exported", async () => {
    const report = (await nodeScript("producer-exports.cjs", `console.log(JSON.stringify({ exported: Object.keys(require("${NAME}/producer")) }));`)) as { exported: string[] };
    expect(report.exported).toEqual(expect.arrayContaining(["SessionProducer", "withWorkbookSession", "WorkbookSessionLostError", "HeartbeatLostError"]));
    for (const name of report.exported) expect(name).not.toMatch(/AssertionOpener|Cipher|Decrypt|Unseal|PrivateKey/i);
    const loaded = (await nodeScript("producer-modules.cjs", `require("${NAME}/producer"); console.log(JSON.stringify(Object.keys(require.cache)));`)) as string[];
    const ours = loaded.filter((path) => /[\\/]dist[\\/]src[\\/]/.test(path)).map((path) => path.replace(/^.*[\\/]dist[\\/]src[\\/]/, ""));
    expect(ours).toContain("core/AssertionSealer.js");
    expect(ours.filter((path) => /assertionSealing|AssertionCipher/.test(path)), "the producer entry loads no code that opens an assertion").toEqual([]);
  });

  it("has types that a NodeNext consumer resolves, from both module formats", async () => {
    writeFileSync(
      join(consumer, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ["node"],
          typeRoots: [join(ROOT, "node_modules", "@types")],
        },
        files: ["consumer.mts", "consumer.cts"],
      }),
    );
    // Each @ts-expect-error fails the compile if the types resolved to `any` instead of the real ones.
    writeFileSync(
      join(consumer, "consumer.mts"),
      `
      import { SessionProducer, SessionNotOpenError, type SessionKey, type CloseRequestMessage } from "${NAME}/producer";
      import { SessionLedger } from "${NAME}";
      export async function keepAlive(producer: SessionProducer, key: SessionKey): Promise<boolean> {
        try {
          await producer.touch(key);
          return true;
        } catch (error) {
          if (error instanceof SessionNotOpenError) return false;
          throw error;
        }
      }
      export const request: CloseRequestMessage = { tenantId: "t", userId: "u", sessionId: "s" };
      export type Ledger = SessionLedger;
      // @ts-expect-error touch takes a SessionKey
      export const wrong = (producer: SessionProducer) => producer.touch("not a key");
      `,
    );
    writeFileSync(
      join(consumer, "consumer.cts"),
      `
      import producerEntry = require("${NAME}/producer");
      import root = require("${NAME}");
      export const same: boolean = producerEntry.SessionProducer === root.SessionProducer;
      // @ts-expect-error the producer entry has no Sweeper
      export const none = producerEntry.Sweeper;
      `,
    );

    const compiled = await exec(process.execPath, [TSC, "-p", "tsconfig.json"], { cwd: consumer });

    expect(compiled.stdout + compiled.stderr).toBe("");
    expect(compiled.code).toBe(0);
  }, 60_000);
});

describe("the tarball", () => {
  const paths = (): string[] => packed.files.map((file) => file.path);

  it("holds the compiled library, the functions, the launcher and host.json", () => {
    const functions = readdirSync(join(ROOT, "functions")).filter((name) => name.endsWith(".ts"));
    expect(functions.length).toBeGreaterThan(0);

    expect(paths()).toEqual(
      expect.arrayContaining([
        ...functions.map((name) => `dist/functions/${name.replace(/\.ts$/, ".js")}`),
        "dist/src/index.js",
        "dist/src/index.d.ts",
        "dist/src/producer.js",
        "dist/src/producer.d.ts",
        "bin/workbook-session-sweeper.js",
        "host.json",
        "package.json",
        "README.md",
      ]),
    );
  });

  it("holds no sources, tests, benchmarks, CI scripts or source maps", () => {
    const shipped = paths();
    const unwanted = shipped.filter(
      (path) =>
        /^(test|bench|\.ci|scripts|src|functions|dist-bench)\//.test(path) || /\.map$/.test(path) || (path.endsWith(".ts") && !path.endsWith(".d.ts")),
    );
    expect(unwanted).toEqual([]);
    // And nothing new slips in unnoticed (tsconfig, local settings, editor files): only what runs.
    const allowed = /^(dist\/(src|functions)\/.+\.(js|d\.ts)|bin\/[^/]+\.js|host\.json|package\.json|README\.md|LICENSE(\.\w+)?)$/;
    expect(shipped.filter((path) => !allowed.test(path))).toEqual([]);
  });

  it("keeps main as the Functions host's glob, and every file it matches is installed", () => {
    const manifest = readPackageJson(installed);
    expect(manifest.main).toBe("dist/functions/*.js");

    const expected = readdirSync(join(ROOT, "functions"))
      .filter((name) => name.endsWith(".ts"))
      .map((name) => name.replace(/\.ts$/, ".js"))
      .sort();
    const matched = readdirSync(join(installed, "dist", "functions"))
      .filter((name) => name.endsWith(".js"))
      .sort();
    expect(matched).toEqual(expected);
  });
});

/** Writes `source` to `fileName` in the temporary project, runs it with plain node there, and parses its last stdout line. */
async function nodeScript(fileName: string, source: string): Promise<unknown> {
  writeFileSync(join(consumer, fileName), source);
  const run = await exec(process.execPath, [fileName], { cwd: consumer });
  expectSuccess(run, `node ${fileName}`);
  return JSON.parse(run.stdout.trimEnd().split("\n").at(-1) ?? "");
}

/** Matches a module path inside the package `name`, in any node_modules, with either separator. */
function packagePath(name: string): RegExp {
  return new RegExp(`[\\\\/]node_modules[\\\\/]${name.split("/").join("[\\\\/]")}[\\\\/]`);
}

function readPackageJson(dir: string): { version: string; main?: string } {
  return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version: string; main?: string };
}

function expectSuccess(run: Run, what: string): void {
  expect(run.code, `${what} failed:\n${run.stderr || run.stdout}`).toBe(0);
}
