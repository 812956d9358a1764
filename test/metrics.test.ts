/**
 * Metrics (README "Metrics"): what one sweep records through OpenTelemetry, read back from an
 * in-memory exporter registered as this file's global MeterProvider; release latency from the
 * storage service's times, whatever a producer's or the sweeper's clock says; and Azure's distro,
 * loaded and started only when APPLICATIONINSIGHTS_CONNECTION_STRING is set (in child processes
 * running the built app, where nothing may connect beyond this machine).
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { metrics } from "@opentelemetry/api";
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type Histogram,
  type MetricData,
} from "@opentelemetry/sdk-metrics";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createSweeperServices, loadConfig } from "../src";
import { METER_NAME, MetricNames, recordSweepMetrics } from "../src/app/metrics";
import { LocalHttpsServer } from "../standins";
import { exec } from "./support/exec";
import { newUserId, openAndRecord, producerWithClock, silence, useCloudFixture, type CloudFixture, type TableFixture } from "./support/cloudFixture";

const ROOT = resolve(__dirname, "..");
const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
/** STALE_AFTER's default: the lease of a row recorded without one. */
const DEFAULT_LEASE_S = 120;

let cloud: CloudFixture;
useCloudFixture((started) => (cloud = started));

// Delta: each collection holds only what was recorded since the one before.
const exporter = new InMemoryMetricExporter(AggregationTemporality.DELTA);
// Collected by hand (forceFlush), never on a timer.
const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 24 * 3_600_000 });
const provider = new MeterProvider({ readers: [reader] });

beforeAll(() => {
  expect(metrics.setGlobalMeterProvider(provider)).toBe(true);
});
afterAll(async () => {
  metrics.disable();
  await provider.shutdown();
});
beforeEach(async () => {
  await collect();
});

/** The app's metrics recorded since the last call. */
async function collect(): Promise<MetricData[]> {
  await reader.forceFlush();
  const data = exporter
    .getMetrics()
    .flatMap((resource) => resource.scopeMetrics)
    .filter((scope) => scope.scope.name === METER_NAME)
    .flatMap((scope) => scope.metrics)
    .filter((metric) => metric.dataPoints.length > 0);
  exporter.reset();
  return data;
}

function metric(data: readonly MetricData[], name: string): MetricData {
  const found = data.filter((m) => m.descriptor.name === name);
  expect(found, name).toHaveLength(1);
  return found[0]!;
}

/** A counter's or a gauge's points, as `{ attributes, value }`, in a stable order. */
function values(data: readonly MetricData[], name: string): { attributes: Record<string, unknown>; value: number }[] {
  return metric(data, name)
    .dataPoints.map((p) => ({ attributes: { ...p.attributes }, value: p.value as number }))
    .sort((a, b) => JSON.stringify(a.attributes).localeCompare(JSON.stringify(b.attributes)));
}

function histogram(data: readonly MetricData[], name: string): { attributes: Record<string, unknown>; value: Histogram }[] {
  const m = metric(data, name);
  expect(m.dataPointType).toBe(DataPointType.HISTOGRAM);
  return m.dataPoints.map((p) => ({ attributes: { ...p.attributes }, value: p.value as Histogram }));
}

describe("one sweep's metrics", () => {
  it("counts outcomes by code, requests by status, a tenant's 429 and cooldown, and times the sweep and each release", async () => {
    const table = await cloud.newTable({ SWEEP_TIME_BUDGET: "PT30S" });
    const closed = await Promise.all([1, 2, 3].map((i) => table.openSession({ userId: newUserId(), workbook: `/drives/m/items/closed${i}` })));
    const expired = await table.openSession({ userId: newUserId(), workbook: "/drives/m/items/expired" });
    cloud.emulator.expireSession(expired.sessionId);
    const forbidden = await table.openSession({ userId: newUserId(), workbook: "/drives/m/items/forbidden" });
    cloud.emulator.addFault({ sessionId: forbidden.sessionId, kind: "closeSession", action: { status: 403 } });
    const throttled = await table.openSession({ tenantId: OTHER_TENANT, userId: newUserId(), workbook: "/drives/o/items/throttled" });
    cloud.emulator.addFault({ tenantId: OTHER_TENANT, kind: "closeSession", times: 1, action: { status: 429, headers: { "Retry-After": "2" } } });

    const summary = await table.services.newSweeper().run();
    // What runLoggedSweep calls with the summary (its fields go on the `Sweep finished` line).
    const fields = recordSweepMetrics(summary, "timer");

    expect(summary).toMatchObject({ claimed: 6, closed: 3, expired: 1, failed: 1, retry: 1, graphRequests: 6, stale: 6, scanned: 6 });
    expect(await table.services.ledger.get(throttled.row)).toMatchObject({ status: "open", lastError: { code: "tooManyRequests" } });
    for (const { sessionId } of closed) expect(cloud.emulator.sessionState(sessionId)).toBe("closed");

    const data = await collect();
    expect(data.map((m) => m.descriptor.name).sort()).toEqual(Object.values(MetricNames).sort());
    expect(Object.fromEntries(data.map((m) => [m.descriptor.name, m.descriptor.unit]))).toEqual({
      [MetricNames.outcomes]: "{session}",
      [MetricNames.graphRequests]: "{request}",
      [MetricNames.throttles]: "{response}",
      [MetricNames.sweepDuration]: "s",
      [MetricNames.backlog]: "{session}",
      [MetricNames.releaseLatency]: "s",
    });

    expect(values(data, MetricNames.outcomes)).toEqual([
      { attributes: { outcome: "closed", code: "none" }, value: 3 },
      { attributes: { outcome: "expired", code: "invalidSessionReCreatable" }, value: 1 },
      { attributes: { outcome: "failed", code: "accessDenied" }, value: 1 },
      { attributes: { outcome: "retry", code: "tooManyRequests" }, value: 1 },
    ]);
    expect(values(data, MetricNames.graphRequests)).toEqual([
      { attributes: { status_code: "204" }, value: 3 },
      { attributes: { status_code: "403" }, value: 1 },
      { attributes: { status_code: "404" }, value: 1 },
      { attributes: { status_code: "429" }, value: 1 },
    ]);
    expect(values(data, MetricNames.throttles)).toEqual([{ attributes: { tenant_id: OTHER_TENANT, status_code: "429", cooldown: true }, value: 1 }]);

    const [duration, ...otherDurations] = histogram(data, MetricNames.sweepDuration);
    expect(otherDurations).toEqual([]);
    expect(duration!.attributes).toEqual({ trigger: "timer" });
    expect(duration!.value).toMatchObject({ count: 1, sum: summary.durationMs / 1_000 });

    expect(metric(data, MetricNames.backlog).dataPointType).toBe(DataPointType.GAUGE);
    expect(values(data, MetricNames.backlog)).toEqual([{ attributes: { trigger: "timer" }, value: 6 }]);

    // Three 204s, each for a session silent 10 minutes (the fixture's default) with a 2-minute lease:
    // 8 minutes past it, plus the sweep's own seconds, less the service clock's whole-second truncation.
    const [release, ...otherReleases] = histogram(data, MetricNames.releaseLatency);
    expect(otherReleases).toEqual([]);
    expect(release!.attributes).toEqual({});
    expect(release!.value.count).toBe(3);
    expect(release!.value.min).toBeGreaterThanOrEqual(600 - DEFAULT_LEASE_S - 2);
    expect(release!.value.max).toBeLessThanOrEqual(600 - DEFAULT_LEASE_S + 30);

    // The summary line's fields carry the metrics' names and the same values.
    expect(fields).toEqual({
      [MetricNames.sweepDuration]: summary.durationMs / 1_000,
      [MetricNames.backlog]: 6,
      [MetricNames.graphRequests]: 6,
      [MetricNames.outcomes]: { closed: 3, expired: 1, failed: 1, retry: 1 },
    });
  });

  it("a dry run records no row's metrics, only its duration and the backlog it found", async () => {
    const table = await cloud.newTable();
    await table.openSession({ userId: newUserId(), workbook: "/drives/m/items/dry" });
    const summary = await table.services.newSweeper().run({ dryRun: true });
    recordSweepMetrics(summary, "http");
    const data = await collect();
    expect(data.map((m) => m.descriptor.name).sort()).toEqual([MetricNames.backlog, MetricNames.sweepDuration].sort());
    expect(values(data, MetricNames.backlog)).toEqual([{ attributes: { trigger: "http" }, value: 1 }]);
    expect(cloud.emulator.requests.filter((r) => r.kind === "closeSession")).toEqual([]);
  });
});

describe("release latency", () => {
  /** Records a session with `producerClock`, then makes it silent for `idleMs` by the service's clock. */
  async function recordWith(table: TableFixture, producerClock: () => Date, idleMs: number, leaseMs?: number): Promise<string> {
    const userId = newUserId();
    const producer = producerWithClock(cloud, table.tableName, producerClock);
    const { row, sessionId } = await openAndRecord(cloud, producer, { userId, workbook: `/drives/skew/items/${userId}`, recordedBy: "skewed", leaseMs });
    await silence(producer.client, row, idleMs);
    return sessionId;
  }

  async function releaseLatencies(): Promise<Histogram> {
    const [release] = histogram(await collect(), MetricNames.releaseLatency);
    return release!.value;
  }

  it("is read from the service's times: producers' clocks hours off, or a sweeper's, do not change it", async () => {
    const table = await cloud.newTable();
    const idleMs = 5 * 60_000;
    const hours = (h: number) => () => new Date(Date.now() + h * 3_600_000);
    // By the service's clock all three went silent 5 minutes ago; their producers' clocks say otherwise.
    for (const clock of [() => new Date(), hours(3), hours(-3)]) await recordWith(table, clock, idleMs);
    expect((await table.services.newSweeper().run()).closed).toBe(3);
    const onTime = await releaseLatencies();
    expect(onTime.count).toBe(3);
    const expected = idleMs / 1_000 - DEFAULT_LEASE_S;
    expect(onTime.min).toBeGreaterThanOrEqual(expected - 2);
    expect(onTime.max).toBeLessThanOrEqual(expected + 20);
    expect(onTime.max! - onTime.min!).toBeLessThan(10);

    // A sweeper whose own clock runs 20 minutes fast learns the service's time from its answers.
    for (const clock of [hours(2), hours(-2)]) await recordWith(table, clock, idleMs);
    const fastSweeper = createSweeperServices(loadConfig(cloud.settings({ SESSIONS_TABLE: table.tableName })), {
      tokenMaxRetries: 0,
      clock: () => new Date(Date.now() + 20 * 60_000),
    });
    expect((await fastSweeper.newSweeper().run()).closed).toBe(2);
    const fast = await releaseLatencies();
    expect(fast.count).toBe(2);
    expect(fast.min).toBeGreaterThanOrEqual(expected - 2);
    expect(fast.max).toBeLessThanOrEqual(expected + 20);
  });

  it("counts from the row's own lease", async () => {
    const table = await cloud.newTable();
    await recordWith(table, () => new Date(Date.now() - 7 * 60_000), 5 * 60_000, 60_000);
    expect((await table.services.newSweeper().run()).closed).toBe(1);
    const latency = await releaseLatencies();
    expect(latency.count).toBe(1);
    expect(latency.sum).toBeGreaterThanOrEqual(240 - 2);
    expect(latency.sum).toBeLessThanOrEqual(240 + 20);
  });
});

describe("Azure's distro", () => {
  /** Ingestion and Live Metrics stand-in: answers what the exporter expects, records who called. */
  let ingestion: LocalHttpsServer;
  const received: string[] = [];

  beforeAll(async () => {
    // `npm test` builds before vitest runs; a bare `vitest run` may not have.
    if (!existsSync(resolve(ROOT, "dist/src/app/appServices.js"))) {
      const built = await exec(process.execPath, [resolve(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], { cwd: ROOT });
      expect(built.code, built.stdout).toBe(0);
    }
    ingestion = new LocalHttpsServer(cloud.certificate, async (req, res) => {
      received.push(`${req.method} ${req.url}`);
      for await (const _chunk of req) void _chunk;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ itemsReceived: 0, itemsAccepted: 0, errors: [] }));
    });
    await ingestion.listen();
  });
  afterAll(async () => {
    await ingestion?.close();
  });

  /**
   * Runs the built app's services (appServices: the Functions handlers' way in) and one sweep in a
   * child process where every connection beyond loopback is refused and noted, and says what it
   * loaded, which MeterProvider was registered, what the sweep closed and what it logged as errors.
   */
  async function runBuiltApp(env: Record<string, string | undefined>) {
    const script = `
      const net = require("node:net");
      const outside = [];
      const connect = net.Socket.prototype.connect;
      net.Socket.prototype.connect = function (...args) {
        let options = Array.isArray(args[0]) ? args[0][0] : args[0];
        if (typeof options !== "object" || options === null) options = { port: args[0], host: args[1] };
        const host = options.path ? "localhost" : String(options.host ?? "localhost");
        if (!["localhost", "127.0.0.1", "::1"].includes(host)) {
          outside.push(host);
          process.nextTick(() => this.destroy(new Error("connections beyond this machine are refused here: " + host)));
          return this;
        }
        return connect.apply(this, args);
      };
      const { appServices } = require("./dist/src/app/appServices.js");
      const { recordSweepMetrics } = require("./dist/src/app/metrics.js");
      const errors = [];
      const logger = { log() {}, warn() {}, error: (message, details) => errors.push({ message, details }) };
      (async () => {
        const services = appServices(logger);
        const again = appServices(logger);
        const summary = await services.newSweeper().run();
        recordSweepMetrics(summary, "timer");
        const loaded = Object.keys(require.cache).map((p) => p.replace(/\\\\/g, "/"));
        console.log(JSON.stringify({
          distro: loaded.filter((p) => p.includes("/node_modules/@azure/monitor-opentelemetry/")).length,
          sdk: loaded.filter((p) => p.includes("/node_modules/@opentelemetry/sdk-")).length,
          provider: require("@opentelemetry/api").metrics.getMeterProvider().constructor.name,
          sameServices: services === again,
          closed: summary.closed,
          errors,
          outside,
        }));
        // Exports are not waited for.
        process.exit(0);
      })().catch((error) => { console.error(error); process.exit(1); });
    `;
    const run = await exec(process.execPath, ["-e", script], { cwd: ROOT, env });
    expect(run.code, run.stderr).toBe(0);
    return JSON.parse(run.stdout.trim().split("\n").at(-1)!) as {
      distro: number;
      sdk: number;
      provider: string;
      sameServices: boolean;
      closed: number;
      errors: unknown[];
      outside: string[];
    };
  }

  async function appEnv(connectionString: string | undefined): Promise<Record<string, string | undefined>> {
    const table = await cloud.newTable();
    await table.openSession({ userId: newUserId(), workbook: "/drives/child/items/book" });
    const env: Record<string, string | undefined> = { ...process.env, ...cloud.settings({ SESSIONS_TABLE: table.tableName }) };
    delete env.APPLICATIONINSIGHTS_CONNECTION_STRING;
    if (connectionString !== undefined) env.APPLICATIONINSIGHTS_CONNECTION_STRING = connectionString;
    // Statsbeat (the SDK's own usage telemetry) has its endpoints built in: off.
    env.APPLICATION_INSIGHTS_NO_STATSBEAT = "true";
    env.APPLICATIONINSIGHTS_STATSBEAT_DISABLED = "true";
    return env;
  }

  it("is never loaded without APPLICATIONINSIGHTS_CONNECTION_STRING: metrics go nowhere, the sweep runs", async () => {
    const result = await runBuiltApp(await appEnv(undefined));
    expect(result).toEqual({ distro: 0, sdk: 0, provider: "NoopMeterProvider", sameServices: true, closed: 1, errors: [], outside: [] });
  });

  it("is loaded and started once with it, exporting to the connection string's endpoint, and the sweep runs", async () => {
    const origin = ingestion.origin;
    const connectionString = `InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=${origin}/;LiveEndpoint=${origin}/`;
    const result = await runBuiltApp(await appEnv(connectionString));
    expect(result).toMatchObject({ provider: "MeterProvider", sameServices: true, closed: 1, errors: [] });
    expect(result.distro).toBeGreaterThan(0);
    expect(result.sdk).toBeGreaterThan(0);
    // Nothing left this machine but the Azure VM resource detector's try of the link-local instance metadata endpoint.
    expect(result.outside.filter((host) => host !== "169.254.169.254")).toEqual([]);
  });

  it("a connection string it refuses is logged once, and the app runs on without exporting", async () => {
    const result = await runBuiltApp(await appEnv("not a connection string"));
    expect(result).toMatchObject({ sameServices: true, closed: 1, errors: [{ message: "Telemetry could not start; metrics are not exported" }] });
    expect(result.outside.filter((host) => host !== "169.254.169.254")).toEqual([]);
  });
});
