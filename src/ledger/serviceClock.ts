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

export class ServiceClock {
  /** Service time minus this host's time at the last answer; undefined before any answer. */
  private offsetMs: number | undefined;

  constructor(private readonly localClock: () => Date = () => new Date()) {}

  /** A policy for the Tables client: every answer (errors included) carries the service's `Date`. */
  readonly policy: PipelinePolicy = {
    name: "serviceClock",
    sendRequest: async (request, next) => {
      const response = await next(request);
      this.observe(response.headers.get("date"));
      return response;
    },
  };

  get calibrated(): boolean {
    return this.offsetMs !== undefined;
  }

  observe(dateHeader: string | undefined | null): void {
    if (!dateHeader) return;
    const serviceTime = Date.parse(dateHeader);
    if (!Number.isFinite(serviceTime)) return;
    const sample = serviceTime - this.localClock().getTime();
    // Every sample is a lower bound (whole seconds, stamped before the answer travelled): keep the
    // tightest, so the estimate never steps back by the header's truncation. A sample far below it
    // means this host's clock was set forward: start again from it.
    if (this.offsetMs === undefined || sample > this.offsetMs || sample < this.offsetMs - MAX_JITTER_MS) this.offsetMs = sample;
  }

  /** The service's time now; before any answer, this host's own (call `calibrated` first where it matters). */
  now(): Date {
    return new Date(this.localClock().getTime() + (this.offsetMs ?? 0));
  }
}
