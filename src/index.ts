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
export { parseDuration, formatDuration } from "./utils/duration";
