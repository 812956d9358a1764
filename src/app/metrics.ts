import { metrics, type Counter, type Gauge, type Histogram, type MeterProvider } from "@opentelemetry/api";
import type { SweepSummary } from "../sweep/models";
import type { AttemptRecord, SweepRecorder } from "../sweep/SweepRecorder";
import type { SweepTrigger } from "./runSweep";

/**
 * The app's metrics, through OpenTelemetry's API: recorded into whatever MeterProvider is
 * registered globally (Azure Monitor's, once startTelemetry has run; a test's in-memory one), and
 * into nothing when none is. Names are OpenTelemetry's style: lower-case, dotted, under one
 * namespace; units in UCUM; attributes in snake_case. The sweep's summary line carries the same
 * names (`sweepMetricFields`), so a trace and a chart say the same thing. README "Metrics".
 */
export const METER_NAME = "workbook-session-sweeper";

export const MetricNames = {
  /** Counter, `{session}`: rows tried to an outcome; `outcome`, `code`. */
  outcomes: "workbook_session.outcomes",
  /** Counter, `{request}`: closeSession requests sent to Graph; `status_code`. */
  graphRequests: "workbook_session.graph.requests",
  /** Counter, `{response}`: Graph's 429s, and answers that asked a tenant to wait (Retry-After); `tenant_id`, `status_code`, `cooldown`. */
  throttles: "workbook_session.graph.throttles",
  /** Histogram, `s`: one sweep, start to summary; `trigger`. */
  sweepDuration: "workbook_session.sweep.duration",
  /** Gauge, `{session}`: live rows past their lease that a sweep found; `trigger`. */
  backlog: "workbook_session.backlog",
  /** Histogram, `s`: how long a closed session stayed open past its lease before Graph's 204, by the storage service's clock. */
  releaseLatency: "workbook_session.release.latency",
} as const;

/** The `code` of an outcome that has none (`closed`), and the `status_code` of a request Graph never answered. */
const NONE = "none";

interface Instruments {
  readonly outcomes: Counter;
  readonly graphRequests: Counter;
  readonly throttles: Counter;
  readonly sweepDuration: Histogram;
  readonly backlog: Gauge;
  readonly releaseLatency: Histogram;
}

/** A sweep runs up to SWEEP_TIME_BUDGET (4 min by default); a manual one stops taking rows at 3. */
const SWEEP_DURATION_BUCKETS_S = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 180, 240, 300, 600];
/** A timer sweep every minute finds a session within a minute of its lease; a backlog, hours later. */
const RELEASE_LATENCY_BUCKETS_S = [1, 5, 15, 30, 60, 120, 300, 600, 1_800, 3_600, 7_200, 21_600];

let cached: { provider: MeterProvider; instruments: Instruments } | undefined;

/**
 * The instruments of the MeterProvider registered now. OpenTelemetry's API has no proxy for
 * metrics: a meter taken before a provider is registered stays a no-op, so the instruments are
 * made again whenever the global provider is another one (telemetry started after the services
 * were built; a test that registers its own).
 */
function instruments(): Instruments {
  const provider = metrics.getMeterProvider();
  if (cached?.provider === provider) return cached.instruments;
  const meter = provider.getMeter(METER_NAME);
  const made: Instruments = {
    outcomes: meter.createCounter(MetricNames.outcomes, {
      unit: "{session}",
      description: "Sessions the sweep tried to an outcome (closed, expired, failed, retry), by outcome and the row's lastErrorCode.",
    }),
    graphRequests: meter.createCounter(MetricNames.graphRequests, {
      unit: "{request}",
      description: "closeSession requests sent to Graph, by the HTTP status Graph answered (none: no answer).",
    }),
    throttles: meter.createCounter(MetricNames.throttles, {
      unit: "{response}",
      description: "Graph's 429 answers and answers with Retry-After (a cooldown for the tenant), by tenant.",
    }),
    sweepDuration: meter.createHistogram(MetricNames.sweepDuration, {
      unit: "s",
      description: "How long one sweep took, by trigger.",
      advice: { explicitBucketBoundaries: SWEEP_DURATION_BUCKETS_S },
    }),
    backlog: meter.createGauge(MetricNames.backlog, {
      unit: "{session}",
      description: "Live sessions past their lease that a sweep found: the ones it took up and the ones it left for later.",
    }),
    releaseLatency: meter.createHistogram(MetricNames.releaseLatency, {
      unit: "s",
      description: "How long a closed session stayed open past its lease before Graph's 204, by the storage service's clock.",
      advice: { explicitBucketBoundaries: RELEASE_LATENCY_BUCKETS_S },
    }),
  };
  cached = { provider, instruments: made };
  return made;
}

/** The sweep's per-row recorder over OpenTelemetry (SweeperOptions.recorder). */
export const openTelemetryRecorder: SweepRecorder = {
  attempted(attempt: AttemptRecord): void {
    const m = instruments();
    // Codes are Graph's inner codes, AADSTS codes or the app's own: a small set. Capped as the ledger caps lastErrorCode.
    m.outcomes.add(1, { outcome: attempt.outcome, code: attempt.code?.slice(0, 200) ?? NONE });
    if (attempt.sent) m.graphRequests.add(1, { status_code: statusCode(attempt.status) });
    if (attempt.status === 429 || attempt.cooldown) {
      m.throttles.add(1, { tenant_id: attempt.tenantId, status_code: statusCode(attempt.status), cooldown: attempt.cooldown });
    }
    if (attempt.pastLeaseMs !== undefined) m.releaseLatency.record(attempt.pastLeaseMs / 1_000);
  },
};

function statusCode(status: number | undefined): string {
  return status === undefined ? NONE : String(status);
}

/**
 * Live rows past their lease that the sweep read: those it took up (`stale`) and those it left
 * (not due yet, over its limit or time, deferred, paused, another sender's, lost to a heartbeat),
 * i.e. every row read less the malformed and the finished ones it moved. A sweep reads as it
 * goes: one stopped early (time budget, limit) did not read what lies behind, so its value is a
 * lower bound.
 */
function backlogOf(summary: SweepSummary): number {
  return Math.max(0, summary.scanned - summary.malformed - summary.moved);
}

/**
 * The sweep's own metrics, named as they are recorded, for its summary line: add them to the
 * `Sweep finished` details so the line and the chart speak one language.
 */
function sweepMetricFields(summary: SweepSummary): Record<string, number | Record<string, number>> {
  return {
    [MetricNames.sweepDuration]: summary.durationMs / 1_000,
    [MetricNames.backlog]: backlogOf(summary),
    [MetricNames.graphRequests]: summary.graphRequests,
    [MetricNames.outcomes]: { closed: summary.closed, expired: summary.expired, failed: summary.failed, retry: summary.retry },
  };
}

/**
 * Records what a finished sweep measures as a whole (its duration, the backlog it found), with
 * the trigger it came from, and returns `sweepMetricFields(summary)` for its summary line. Call
 * it once per sweep, where the summary is logged (runLoggedSweep). The per-row metrics were
 * recorded as the sweep went (openTelemetryRecorder).
 */
export function recordSweepMetrics(summary: SweepSummary, trigger: SweepTrigger): ReturnType<typeof sweepMetricFields> {
  const m = instruments();
  m.sweepDuration.record(summary.durationMs / 1_000, { trigger });
  m.backlog.record(backlogOf(summary), { trigger });
  return sweepMetricFields(summary);
}
