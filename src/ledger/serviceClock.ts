import type { PipelinePolicy } from "@azure/core-rest-pipeline";

/**
 * The storage service's time, as this process can know it: the `Date` header of the service's
 * last answer, carried forward by this host's clock. Liveness is judged by it, never by one host's
 * clock alone: a sweeper whose clock runs ten minutes fast sees the same service time as one whose
 * clock is right, because only the time elapsed since the answer comes from its own clock.
 *
 * The header has whole seconds and is stamped before the answer travels, so the estimate is never
 * later than the service's real time: a session is judged stale a second late, never early.
 */
/** How far a later sample may fall below the kept offset before it is taken as a clock change. */
const MAX_JITTER_MS = 2_000;
/**
 * How long the tightest upper bound is kept before a fresh answer's replaces it, tighter or not:
 * this host's clock and the service's drift apart (~100 ppm at worst, 6 ms a minute), and a bound
 * kept for hours would fall below the service's time.
 */
const UPPER_BOUND_MAX_AGE_MS = 60_000;

export class ServiceClock {
  /** Service time minus this host's time at the last answer; undefined before any answer. */
  private offsetMs: number | undefined;
  /**
   * The most the service's time can be, less `monotonic()`: the service stamped its `Date` after
   * the request left, within the header's second. Kept against a monotonic clock, so a step of this
   * host's clock cannot make it fall below the service's time.
   */
  private latestOffsetMs: number | undefined;
  private latestSampledAt = 0;

  constructor(
    private readonly localClock: () => Date = () => new Date(),
    private readonly monotonic: () => number = () => performance.now(),
  ) {}

  /** A policy for the Tables client: every answer (errors included) carries the service's `Date`. */
  readonly policy: PipelinePolicy = {
    name: "serviceClock",
    sendRequest: async (request, next) => {
      const sentAt = this.monotonic();
      const response = await next(request);
      this.observe(response.headers.get("date"), sentAt);
      return response;
    },
  };

  get calibrated(): boolean {
    return this.offsetMs !== undefined;
  }

  /** Learns from one answer's `Date`; `sentAt` (`monotonic()` as the request left) bounds it from above. */
  observe(dateHeader: string | undefined | null, sentAt?: number): void {
    if (!dateHeader) return;
    const serviceTime = Date.parse(dateHeader);
    if (!Number.isFinite(serviceTime)) return;
    const sample = serviceTime - this.localClock().getTime();
    // Every sample is a lower bound (whole seconds, stamped before the answer travelled): keep the
    // tightest, so the estimate never steps back by the header's truncation. A sample far below it
    // means this host's clock was set forward: start again from it.
    if (this.offsetMs === undefined || sample > this.offsetMs || sample < this.offsetMs - MAX_JITTER_MS) this.offsetMs = sample;
    if (sentAt === undefined) return;
    const latest = serviceTime + 1_000 - sentAt;
    const at = this.monotonic();
    // The tightest upper bound of the last minute: older ones may have drifted below the truth.
    if (this.latestOffsetMs === undefined || latest < this.latestOffsetMs || at - this.latestSampledAt > UPPER_BOUND_MAX_AGE_MS) {
      this.latestOffsetMs = latest;
      this.latestSampledAt = at;
    }
  }

  /** The service's time now; before any answer, this host's own (call `calibrated` first where it matters). */
  now(): Date {
    return new Date(this.localClock().getTime() + (this.offsetMs ?? 0));
  }

  /**
   * The latest the service's time can be now (`now()` is the earliest). A holder judges its own
   * lease by it, so it stops before the lease can have run out, whatever the header's truncation.
   * Before an answer with its send time, `now()` and a second.
   */
  latest(): Date {
    const earliest = this.now().getTime();
    if (this.latestOffsetMs === undefined) return new Date(earliest + 1_000);
    // Never below the earliest (this host's clock set forward since the last answer moves that up).
    return new Date(Math.max(earliest, this.monotonic() + this.latestOffsetMs));
  }
}
