/**
 * What the Functions host hands a handler, made as the host makes it: InvocationContexts (their log
 * lines kept, and fed to the secret scan), timer information, HTTP requests to the sweep route.
 */
import { format } from "node:util";
import { HttpRequest, InvocationContext, type Timer } from "@azure/functions";
import { captureLog } from "./secretScan";

/** One log line as the worker receives it, and its two parts as the app writes them. */
export interface LogLine {
  level: string;
  /** The text the worker sends the host: @azure/functions passes the arguments through `util.format`. */
  message: string;
  /** The text before the JSON: `Sweep finished`. */
  event: string;
  /** The JSON after it, parsed. */
  details: Record<string, unknown>;
}

/**
 * Splits a line the app logged into its message and its JSON details, and fails unless it is one
 * line whose structured part is JSON: what Application Insights can store and query.
 */
export function parseLogLine(level: string, message: string): LogLine {
  if (/[\r\n\u2028\u2029]/.test(message)) throw new Error(`a log line spans several lines: ${JSON.stringify(message.slice(0, 300))}`);
  const brace = message.indexOf(" {");
  if (brace < 0) return { level, message, event: message, details: {} };
  let details: unknown;
  try {
    details = JSON.parse(message.slice(brace + 1));
  } catch {
    throw new Error(`a log line's structured part is not JSON: ${JSON.stringify(message.slice(0, 300))}`);
  }
  return { level, message, event: message.slice(0, brace), details: details as Record<string, unknown> };
}

/**
 * An InvocationContext as the host makes one. Its log lines are kept as the worker receives them
 * (`util.format` of the arguments, as @azure/functions' InvocationModel does; test/deployed.test.ts
 * checks the same through the library's own invocation path) and fed to the secret scan.
 */
export function invocation(
  functionName: string,
  extra: Partial<ConstructorParameters<typeof InvocationContext>[0]> = {},
): { context: InvocationContext; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const context = new InvocationContext({
    functionName,
    invocationId: `test-${Math.random().toString(36).slice(2)}`,
    logHandler: (level, ...args) => {
      const message = format(...args);
      captureLog(level, message);
      lines.push(parseLogLine(level, message));
    },
    ...extra,
  });
  return { context, lines };
}

export const timerInfo = (isPastDue = false): Timer => ({
  isPastDue,
  schedule: { adjustForDST: true },
  scheduleStatus: { last: "2026-11-23T12:00:00Z", next: "2026-11-23T12:01:00Z", lastUpdated: "2026-11-23T12:00:00Z" },
});

export function postSweep(body: string | Uint8Array | undefined, headers: Record<string, string> = { "content-type": "application/json" }): HttpRequest {
  return new HttpRequest({
    method: "POST",
    url: "http://localhost:7071/api/sweep",
    headers,
    ...(body !== undefined && { body: typeof body === "string" ? { string: body } : { bytes: body } }),
  });
}

/** The handlers of the files under functions/, as each file exports them. */
export interface FunctionHandlers {
  sweepTimer: typeof import("../../functions/sweepTimer").sweepTimer;
  purgeTimer: typeof import("../../functions/purgeTimer").purgeTimer;
  sweepHttp: typeof import("../../functions/sweepHttp").sweepHttp;
  closeRequest: typeof import("../../functions/closeRequest").closeRequest;
  statusHttp: typeof import("../../functions/status").statusHttp;
}

/**
 * Loads every function file and returns its handler. The files read app settings when they load,
 * so call this after the settings are in process.env (installAppSettings).
 */
export async function importHandlers(): Promise<FunctionHandlers> {
  return {
    sweepTimer: (await import("../../functions/sweepTimer")).sweepTimer,
    purgeTimer: (await import("../../functions/purgeTimer")).purgeTimer,
    sweepHttp: (await import("../../functions/sweepHttp")).sweepHttp,
    closeRequest: (await import("../../functions/closeRequest")).closeRequest,
    statusHttp: (await import("../../functions/status")).statusHttp,
  };
}
