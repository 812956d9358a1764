import type { SweeperServices } from "./sweeperServices";
import { SessionNotFoundError } from "../core/errors";
import { isTerminal } from "../core/session";
import { closeRecordedSession, type CloseReport } from "../sweep/closeRecordedSession";
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
  | { readonly result: "attempted"; readonly report: CloseReport };

/**
 * Closes one recorded session now, whatever its age. Throws SessionNotFoundError for a session
 * that is not recorded (the host retries the message, then keeps it in the poison queue) and
 * lets storage faults through for the host to retry.
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
    const report = await closeRecordedSession(row, dependencies);
    // A heartbeat or a sweep got in between: look again once, then it is theirs.
    if (report.result === "lostRace" && attempt < 2) continue;
    return { result: "attempted", report };
  }
}
