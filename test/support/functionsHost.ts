/**
 * What the Functions host hands a handler, made as the host makes it: InvocationContexts (their log
 * lines kept, and fed to the secret scan), timer information, HTTP requests to the sweep route.
 */
import { HttpRequest, InvocationContext, type Timer } from "@azure/functions";
import { captureLog } from "./secretScan";

export interface LogLine {
  level: string;
  args: unknown[];
}

/** An InvocationContext as the host makes one; its log lines are kept and fed to the secret scan. */
export function invocation(
  functionName: string,
  extra: Partial<ConstructorParameters<typeof InvocationContext>[0]> = {},
): { context: InvocationContext; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const context = new InvocationContext({
    functionName,
    invocationId: `test-${Math.random().toString(36).slice(2)}`,
    logHandler: (level, ...args) => {
      lines.push({ level, args });
      captureLog(level, ...args);
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
  };
}
