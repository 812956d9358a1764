/**
 * workbook-session-sweeper: the public API. Producing services use SessionProducer to record the
 * Excel sessions they open; the sweeper's functions, CLI and benchmarks use the rest.
 */
export * from "./ledger";
export { loadConfig, DEFAULT_SETTINGS, type SweeperConfig, type Settings } from "./config";
export {
  SweeperError,
  ConfigurationError,
  ValidationError,
  SessionNotFoundError,
  SessionNotOpenError,
  SessionAlreadyRecordedError,
  ConcurrentUpdateError,
  MalformedRowError,
} from "./errors";
export { parseDuration } from "./utils/duration";
export { createSweeperServices, type SweeperServices, type SweeperServicesOptions } from "./createSweeper";
export { Sweeper, describeFault, type SweeperSettings, type SweepLogger, type RunOptions } from "./sweep/Sweeper";
export type { SweepRequest, SweepSummary, SweepCandidate } from "./sweep/models";
export { closeRecordedSession, attemptClose, type CloseDependencies, type CloseReport } from "./sweep/closeRecordedSession";
export { WorkbookSessionCloser, type WorkbookSessionCloserOptions, type CloseRequest } from "./graph/WorkbookSessionCloser";
export type { CloseOutcome, CloseAttempt } from "./graph/CloseOutcome";
export { DelegatedCredentials, type DelegatedCredentialsOptions } from "./auth/DelegatedCredentials";
export { AssertionCipher, AssertionDecryptionError } from "./auth/AssertionCipher";
export { parseSweepHttpBody } from "./triggers/sweepHttpRequest";
export { parseCloseRequestMessage, formatCloseRequestMessage, type CloseRequestMessage } from "./triggers/closeRequestMessage";
export { runLoggedSweep, type SweepTrigger } from "./triggers/runSweep";
export { handleCloseRequest, type CloseRequestResult } from "./triggers/closeRequest";
export { readBodyLimited } from "./triggers/readBody";
export { MAX_SWEEP_BODY_BYTES, validateSweepRequest } from "./triggers/sweepHttpRequest";
