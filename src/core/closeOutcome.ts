/**
 * What one attempt to close one session came to. Only `closed` means Graph answered 204.
 * - `expired`: the session is gone already (Graph said so, or the user's assertion has run out,
 *   which outlives a session's 5-7 minute idle timeout).
 * - `retry`: a cooldown, a transient fault or a timeout; try again at `retryAt`.
 * - `failed`: it cannot be closed this way (authorization, a refused location, a Graph error that
 *   will not go away): not retried.
 * - `paused`: the app's own settings or credential failed (a wrong client secret, scope or client
 *   id, an authority it cannot reach): a fact about the app, not about the session. Nothing is sent
 *   and the row goes back as it was before the claim, its attempt not spent; sends stop for the
 *   row's tenant (`scope: "tenant"`: the app's standing there) or for everyone (`scope: "app"`).
 *   `code` is one of ours (`Codes`), named for the cause.
 */
export type CloseOutcome =
  | { readonly kind: "closed"; readonly status: 204; readonly requestId?: string }
  | { readonly kind: "expired"; readonly status?: number; readonly code: string; readonly message: string; readonly requestId?: string }
  | {
      readonly kind: "retry";
      readonly retryAt: Date;
      /** True when Graph asked for the cooldown (Retry-After): the workbook and tenant must wait. */
      readonly cooldown: boolean;
      readonly status?: number;
      readonly code: string;
      readonly message: string;
      readonly requestId?: string;
    }
  | { readonly kind: "failed"; readonly status?: number; readonly code: string; readonly message: string; readonly requestId?: string }
  | { readonly kind: "paused"; readonly scope: PauseScope; readonly code: string; readonly message: string };

export type CloseOutcomeKind = CloseOutcome["kind"];

/** Whose fault a pause is: the app's everywhere (its credential, its scope, the authority out of reach), or its standing in one tenant. */
export type PauseScope = "app" | "tenant";

/** An outcome that says nothing about the session: the app's own settings or credential failed. */
export type PausedOutcome = Extract<CloseOutcome, { kind: "paused" }>;

/** An outcome about the session itself, which the row's next state is decided from. */
export type SettledOutcome = Exclude<CloseOutcome, { kind: "paused" }>;

/** An outcome, and whether a request went to Graph to get it (not when it was refused before sending). */
export interface CloseAttempt {
  readonly outcome: CloseOutcome;
  readonly sent: boolean;
}

/** Back-off for retries Graph gave no time for: 30 s, 1, 2, 4 … minutes, at most 15. */
export function backoffMs(attempts: number): number {
  return Math.min(30_000 * 2 ** Math.max(0, attempts - 1), 15 * 60_000);
}
