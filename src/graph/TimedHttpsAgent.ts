import { Agent, type AgentOptions, type RequestOptions } from "node:https";
import type { Duplex } from "node:stream";

/** Handshakes remembered: longer than any request is in flight. */
const REMEMBER_MS = 60_000;

interface Handshake {
  readonly startedAt: number;
  endedAt: number | undefined;
}

/**
 * A keep-alive https agent that times the handshakes of the connections it opens. A request sent
 * on a new connection reaches Graph only once the handshake is done: a few milliseconds on a quiet
 * machine, but hundreds when a sweep opens a few hundred connections at once on busy cores
 * (measured on the bench: 300-500 ms over the first seconds, against a few ms on warm
 * connections). Graph counts a request from its arrival, so the pacer counts it from there too
 * (TenantPacer.restamp).
 */
export class TimedHttpsAgent extends Agent {
  private handshakes: Handshake[] = [];

  constructor(options: AgentOptions = {}) {
    // Node keeps at most 256 idle sockets by default: a sweep with a few hundred requests in flight
    // would close and reopen connections all along (measured: 1,442 handshakes for 340 in flight).
    super({ keepAlive: true, maxFreeSockets: 10_000, ...options });
  }

  override createConnection(options: RequestOptions, callback?: (error: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const socket = super.createConnection(options, callback);
    if (socket) {
      const handshake: Handshake = { startedAt: performance.now(), endedAt: undefined };
      const end = () => (handshake.endedAt ??= performance.now());
      socket.once("secureConnect", end);
      socket.once("close", end);
      this.remember(handshake);
    }
    return socket;
  }

  /**
   * The longest handshake (or the time taken so far) of the connections opened within `windowMs`
   * after `sentAgoMs` ago: a request sent then on a new connection opened it right away, so this
   * is how much later than sent it may have reached the server. 0 when none was opened then.
   */
  handshakeDelayMs(sentAgoMs: number, windowMs: number): number {
    const now = performance.now();
    const from = now - sentAgoMs;
    let longest = 0;
    for (let i = this.handshakes.length - 1; i >= 0; i--) {
      const handshake = this.handshakes[i]!;
      if (handshake.startedAt < from) break;
      if (handshake.startedAt > from + windowMs) continue;
      longest = Math.max(longest, (handshake.endedAt ?? now) - handshake.startedAt);
    }
    return longest;
  }

  private remember(handshake: Handshake): void {
    const cutoff = handshake.startedAt - REMEMBER_MS;
    let forget = 0;
    while (forget < this.handshakes.length && this.handshakes[forget]!.startedAt < cutoff) forget++;
    if (forget > 0) this.handshakes = this.handshakes.slice(forget);
    this.handshakes.push(handshake);
  }
}
