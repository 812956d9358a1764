import type { SweepLogger } from "../sweep/Sweeper";
import { formatLogLine } from "../utils/logLine";

/**
 * What the app logs to: the Functions host's InvocationContext has this shape. Typed structurally
 * so the application layer does not load `@azure/functions`.
 */
export interface LogTarget {
  log(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/** The app's structured logger: a message and its details, written as one line (`formatLogLine`). */
export interface AppLogger extends SweepLogger {
  error(message: string, details: Record<string, unknown>): void;
}

/**
 * A logger over an invocation's context. Each line reaches the host as one string, so the worker's
 * own formatting has nothing left to expand over several lines or cut short.
 */
export function invocationLogger(target: LogTarget): AppLogger {
  return {
    log: (message, details) => target.log(formatLogLine(message, details)),
    warn: (message, details) => target.warn(formatLogLine(message, details)),
    error: (message, details) => target.error(formatLogLine(message, details)),
  };
}
