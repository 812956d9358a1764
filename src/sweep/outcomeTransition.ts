import type { SettledOutcome } from "../core/closeOutcome";
import type { RowTransition, SessionToClose } from "../core/session";
import type { ErrorInfo } from "../core/errors";

/**
 * The row's next state for an attempt's outcome. `row` is the claimed row, its attempts counting
 * this one; when they reach `maxAttempts`, a retry becomes `failed` with the last reason. A
 * `paused` outcome has no transition: the row is given back as it was (`ledger.releaseClaims`).
 */
export function transitionFor(outcome: SettledOutcome, row: SessionToClose, maxAttempts: number): RowTransition {
  switch (outcome.kind) {
    case "closed":
      return { to: "closed" };
    case "expired":
      return { to: "expired", error: errorOf(outcome) };
    case "failed":
      return { to: "failed", error: errorOf(outcome) };
    case "retry":
      if (row.attempts >= maxAttempts) {
        return { to: "failed", error: { code: outcome.code, message: `Gave up after ${row.attempts} attempts: ${outcome.message}` } };
      }
      return { to: "retry", at: outcome.retryAt, error: errorOf(outcome) };
  }
}

function errorOf(outcome: Exclude<SettledOutcome, { kind: "closed" }>): ErrorInfo {
  const status = outcome.status !== undefined ? ` (HTTP ${outcome.status}${outcome.requestId ? `, request-id ${outcome.requestId}` : ""})` : "";
  return { code: outcome.code, message: `${outcome.message}${status}` };
}
