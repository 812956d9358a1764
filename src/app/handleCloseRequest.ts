import type { SweeperServices } from "./sweeperServices";
import { SessionNotFoundError } from "../core/errors";
import { isTerminal } from "../core/session";
import { closeRecordedSession, type CloseReport } from "../sweep/closeRecordedSession";
import { tenantLeaseMs } from "../sweep/Sweeper";
import { HeldLeases, type SendLog } from "../ledger/tenantLeases";
import { TenantPacer, takeSendSlot } from "../sweep/TenantPacer";
import type { SessionLedger } from "../ledger/SessionLedger";
import type { CloseRequestMessage } from "../core/closeRequestMessage";

/**
 * What a close request came to. `alreadyFinished`, `inProgress` and `scheduled` are no-ops: a
 * second message for the same session changes nothing, and a row waiting out a Graph cooldown is
 * not tried early (its retry is already scheduled).
 */
export type CloseRequestResult =
  | { readonly result: "alreadyFinished"; readonly status: string }
  | { readonly result: "inProgress" }
  | { readonly result: "scheduled"; readonly nextAttemptAt: string }
  /** Another sender holds the tenant (or took it before the request went): the row is due now, for that sender's next sweep. */
  | { readonly result: "handedOff" }
  | { readonly result: "attempted"; readonly report: CloseReport };

/** How long a close request waits for its tenant's lease before it hands the row to the holder. */
const LEASE_WAIT_MS = 2_000;
const LEASE_POLL_MS = 250;

/**
 * Closes one recorded session now, whatever its age. Throws SessionNotFoundError for a session
 * that is not recorded (the host retries the message, then keeps it in the poison queue),
 * AppFaultError when the app's own settings or credential failed (the row is given back as it
 * was, its attempt unspent), and lets storage faults through for the host to retry.
 */
export async function handleCloseRequest(services: SweeperServices, request: CloseRequestMessage, now?: Date): Promise<CloseRequestResult> {
  const { ledger } = services;
  const dependencies = services.closeDependencies();
  for (let attempt = 1; ; attempt++) {
    const row = await ledger.getToClose(request);
    if (!row) throw new SessionNotFoundError(request.sessionId);
    if (isTerminal(row.status)) return { result: "alreadyFinished", status: row.status };
    // A claim's lease is in the service's time (the sweep that holds it wrote it so).
    if (row.status === "closing" && row.leaseUntil && row.leaseUntil.getTime() > ledger.serviceNow().getTime()) return { result: "inProgress" };
    if (row.nextAttemptAt && row.nextAttemptAt.getTime() > (now ?? ledger.serviceNow()).getTime()) {
      return { result: "scheduled", nextAttemptAt: row.nextAttemptAt.toISOString() };
    }
    // One sender per tenant: only while this request holds the tenant's lease, and within the
    // tenant's Excel budget as the lease's previous holders left it.
    const pacer = new TenantPacer(services.config.graph.tenantBudget);
    const sends = pacer.sendLog(Date.now, () => ledger.serviceNow().getTime() - Date.now());
    const leases = await tenantLease(ledger, row.tenantId, tenantLeaseMs(dependencies.leaseMs), sends);
    if (!leases) {
      // Neither lost nor sent beside the holder's requests: due now, for the holder's next sweep.
      if ((await ledger.markDue(row)).written) return { result: "handedOff" };
      if (attempt < 2) continue;
      return { result: "handedOff" };
    }
    try {
      const report = await closeRecordedSession(row, dependencies, {
        waitForSendSlot: async () => {
          // No deadline: the budget's window frees within its length. Past the lease the request is
          // not sent (its slot then stays counted: one request fewer for the next holder, never one more).
          await takeSendSlot(pacer, row.tenantId, { now: Date.now });
          return leases.holds(row.tenantId) ? { send: true } : { send: false, retryAt: new Date() };
        },
      });
      // A heartbeat or a sweep got in between: look again once, then it is theirs.
      if (report.result === "lostRace" && attempt < 2) continue;
      if (report.result === "heldBack") {
        // The lease ran out before the request went: the row, given back as it was, is made due now
        // for the tenant's new holder, as when the lease was not free at all.
        const current = await ledger.getToClose(request);
        if (current && !isTerminal(current.status)) await ledger.markDue(current);
        return { result: "handedOff" };
      }
      return { result: "attempted", report };
    } finally {
      await leases.releaseAll();
    }
  }
}

/** The tenant's lease, held and renewed, if it comes free within LEASE_WAIT_MS; undefined otherwise. */
async function tenantLease(ledger: SessionLedger, tenantId: string, leaseMs: number, sends: SendLog): Promise<HeldLeases | undefined> {
  const deadline = Date.now() + LEASE_WAIT_MS;
  for (;;) {
    // A renewal that fails leaves the lease to run out: the close then is not sent.
    const leases = new HeldLeases(ledger.tenantLeases, leaseMs, { onError: () => undefined, sends });
    if (await leases.take(tenantId)) return leases;
    if (Date.now() + LEASE_POLL_MS > deadline) return undefined;
    await new Promise((resolve) => setTimeout(resolve, LEASE_POLL_MS));
  }
}
