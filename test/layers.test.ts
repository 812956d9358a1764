/**
 * The layers of src/ and which way their imports may point (README "Layout"). Imports are read with
 * TypeScript's own pre-processor, so every form counts: `import`, `export … from`, `import type`,
 * `import()` and `require()`.
 *
 *   functions/ ─► app/ ◄─ cli/           the ways in: the Functions host, the operator's shell
 *                  │                      the application: services, handlers, settings
 *                  ▼
 *                sweep/      producer/    one sweep: scheduling, pacing, outcomes; a producer's session lifecycle
 *            ┌─────┼─────┐      │
 *            ▼     ▼     ▼      ▼
 *        ledger/ graph/ auth/  ledger/    Table Storage, Graph's closeSession, on-behalf-of tokens
 *            └─────┼─────┘
 *                  ▼
 *                core/  ─► utils/         the shared vocabulary; small helpers
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const ROOT = resolve(__dirname, "..");

/** Each layer and the layers it may import (itself included). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  utils: ["utils"],
  core: ["core", "utils"],
  ledger: ["ledger", "core", "utils"],
  graph: ["graph", "core", "utils"],
  auth: ["auth", "core", "utils"],
  producer: ["producer", "ledger", "core", "utils"],
  sweep: ["sweep", "ledger", "graph", "auth", "core", "utils"],
  app: ["app", "sweep", "ledger", "graph", "auth", "core", "utils"],
  cli: ["cli", "app", "sweep", "ledger", "graph", "auth", "core", "utils"],
  // The public entries name what they export, from wherever it lives.
  entry: ["entry", "app", "sweep", "producer", "ledger", "graph", "auth", "core", "utils"],
  functions: ["app"],
};

/** Packages only some layers may load: the host's library stays in the ways in, the SDKs in their adapters. */
const PACKAGES: Record<string, readonly string[]> = {
  "@azure/functions": ["functions", "app"],
  "@azure/identity": ["auth", "graph"],
  "@microsoft/microsoft-graph-client": ["graph"],
  "@azure/data-tables": ["ledger"],
  "@azure/storage-queue": ["ledger"],
  "@hpke/core": ["core"],
  // Metrics are the application's: the sweep tells a SweepRecorder (sweep/SweepRecorder.ts) and
  // app/metrics.ts records into OpenTelemetry; only app/telemetry.ts loads Azure's distro, and only
  // when a connection string is set (test/metrics.test.ts checks it is not loaded otherwise).
  "@opentelemetry/api": ["app"],
  "@azure/monitor-opentelemetry": ["app"],
  // The SDK is the distro's (production) or a test's (its in-memory exporter): no layer builds one.
  "@opentelemetry/sdk-metrics": [],
};

function layerOf(file: string): string {
  const path = relative(ROOT, file).replace(/\\/g, "/");
  if (path.startsWith("functions/")) return "functions";
  if (path === "src/index.ts" || path === "src/producer.ts") return "entry";
  if (path === "src/config.ts") return "app";
  if (path === "src/cli.ts" || path.startsWith("src/cli/")) return "cli";
  const folder = /^src\/([^/]+)\//.exec(path)?.[1];
  if (!folder || !(folder in MAY_IMPORT)) throw new Error(`${path} is in no layer: put it in one of ${Object.keys(MAY_IMPORT).join(", ")}`);
  return folder;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.(ts|mts|cts)$/.test(name) && !name.endsWith(".d.ts") ? [path] : [];
  });
}

function resolveLocal(from: string, specifier: string): string {
  const base = resolve(dirname(from), specifier);
  for (const candidate of [`${base}.ts`, join(base, "index.ts"), base]) {
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // try the next form
    }
  }
  throw new Error(`${relative(ROOT, from)} imports ${specifier}, which does not resolve`);
}

interface Violation {
  file: string;
  imports: string;
  why: string;
}

function violations(): Violation[] {
  const found: Violation[] = [];
  for (const file of [...sourceFiles(join(ROOT, "src")), ...sourceFiles(join(ROOT, "functions"))]) {
    const layer = layerOf(file);
    const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    for (const { fileName: specifier } of importedFiles) {
      const shown = { file: relative(ROOT, file), imports: specifier };
      if (specifier.startsWith(".")) {
        const target = layerOf(resolveLocal(file, specifier));
        if (!MAY_IMPORT[layer]!.includes(target)) found.push({ ...shown, why: `${layer} may not import ${target}` });
        continue;
      }
      const pkg = Object.keys(PACKAGES).find((name) => specifier === name || specifier.startsWith(`${name}/`));
      if (pkg && !PACKAGES[pkg]!.includes(layer) && layer !== "entry") {
        found.push({ ...shown, why: `${pkg} belongs to ${PACKAGES[pkg]!.join(", ") || "no layer of src/ (tests only)"}` });
      }
    }
  }
  return found;
}

describe("layers", () => {
  it("every import points down the layers, and each SDK stays in its adapter", () => {
    expect(violations()).toEqual([]);
  });

  it("the check sees a wrong import", () => {
    // A file in core/ importing the ledger, as a resolved pair: the rule table refuses it.
    expect(MAY_IMPORT.core).not.toContain("ledger");
    expect(layerOf(join(ROOT, "src", "core", "keys.ts"))).toBe("core");
    expect(layerOf(join(ROOT, "functions", "sweepTimer.ts"))).toBe("functions");
    expect(ts.preProcessFile('import type { A } from "../ledger/models";\nconst b = require("./x");', true, true).importedFiles.map((f) => f.fileName)).toEqual([
      "../ledger/models",
      "./x",
    ]);
  });
});
