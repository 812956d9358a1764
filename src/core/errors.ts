import { Codes } from "./codes";
import type { PauseScope } from "./closeOutcome";

/**
 * A code and a message: why an attempt did not close a session (a row's `lastErrorCode` and
 * `lastErrorMessage`), or what ended a sweep. Never carries a token or an assertion.
 */
export interface ErrorInfo {
  readonly code: string;
  readonly message: string;
}

/**
 * Every error this package throws on purpose carries a stable `code`, so callers branch on the
 * code and never on message text. Messages name what was wrong and never carry tokens or secrets.
 */
export abstract class SweeperError extends Error {
  abstract readonly code: string;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * One or more settings are missing or malformed. `settings` names them as they appear in app
 * settings; the message lists every problem, so one start-up reports all of them.
 */
export class ConfigurationError extends SweeperError {
  readonly code = Codes.InvalidConfiguration;
  readonly settings: readonly string[];
  constructor(readonly problems: readonly { setting: string; message: string }[]) {
    super(`Invalid configuration: ${problems.map((p) => `${p.setting} ${p.message}`).join("; ")}`);
    this.settings = problems.map((p) => p.setting);
  }
}

/**
 * One thing wrong with an input: the field it concerns (`tenantId`, `workbook`; `body` or `message`
 * for the input as a whole) and what is wrong with it, as a phrase that follows the field's name.
 */
export interface InputProblem {
  readonly field: string;
  readonly message: string;
}

/** `tenantId must be the tenant's GUID`: a problem as one line of text. */
export function describeProblem(problem: InputProblem): string {
  return `${problem.field} ${problem.message}`;
}

/**
 * Input from outside (a producer call, a message, a request, CLI flags) does not have the expected
 * shape; `problems` names every field at fault.
 */
export class ValidationError extends SweeperError {
  readonly code: string = Codes.InvalidInput;
  constructor(readonly problems: readonly InputProblem[]) {
    super(problems.map(describeProblem).join("; "));
  }
}

/** The session's row does not exist (never recorded, or purged). */
export class SessionNotFoundError extends SweeperError {
  readonly code = Codes.SessionNotFound;
  constructor(readonly sessionId: string) {
    super("No recorded session with this id for this user.");
  }
}

/**
 * A producer tried to heartbeat or update a session the sweeper has already claimed or finished.
 * The producing service must stop using the session and open a new one.
 */
export class SessionNotOpenError extends SweeperError {
  readonly code = Codes.SessionNotOpen;
  constructor(readonly status: string) {
    super(`The session is ${status}; it can no longer be used or kept alive.`);
  }
}

/** A conditional write kept losing to concurrent writers; nothing was changed by this call. */
export class ConcurrentUpdateError extends SweeperError {
  readonly code = Codes.ConcurrentUpdate;
  constructor(attempts: number) {
    super(`The row changed under ${attempts} consecutive attempts; giving up.`);
  }
}

/** A producer recorded a session id that is already recorded for another workbook or is no longer open. */
export class SessionAlreadyRecordedError extends SweeperError {
  readonly code = Codes.SessionAlreadyRecorded;
  constructor(readonly status: string) {
    super(`This session id is already recorded (status ${status}) with different details.`);
  }
}

/** A ledger row could not be decoded; `problems` says what was wrong with it. */
export class MalformedRowError extends SweeperError {
  readonly code = Codes.MalformedRow;
  constructor(readonly problems: readonly string[]) {
    super(`The ledger row is malformed: ${problems.join("; ")}`);
  }
}

/**
 * The app's own settings or credential failed (a wrong client secret, scope or client id, the
 * authority out of reach), so sends paused: `code` names the cause (`ClientCredentialRejected`,
 * `InvalidGraphScope`, `AuthorityUnreachable` …). No row was marked for it and none spent an
 * attempt; once the settings are fixed the next sweep or retried message carries on. Thrown so
 * that the invocation fails with the cause (a queue message is retried, then poisoned).
 */
export class AppFaultError extends SweeperError {
  constructor(
    readonly code: string,
    message: string,
    readonly scope: PauseScope,
    /** The tenant the app could not act in (`scope: "tenant"`). */
    readonly tenantId?: string,
  ) {
    super(message);
  }
}
