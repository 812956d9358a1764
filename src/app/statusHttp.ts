import type { HttpRequest, HttpResponseInit, InvocationContext } from "@azure/functions";
import { describeFault } from "../sweep/Sweeper";
import { invocationLogger } from "./logging";
import { readStatus, statusServices } from "./statusServices";

/**
 * `GET /api/status` (function key): the ledger at a glance, the same JSON object as
 * `workbook-session-sweeper status --json`. Needs only the storage settings. 503 with the fault
 * when storage cannot be read.
 */
export async function statusHttp(_request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const logger = invocationLogger(context);
  const services = statusServices(logger);
  const headers = { "content-type": "application/json", "cache-control": "no-store" };
  try {
    return { status: 200, headers, jsonBody: await readStatus(services) };
  } catch (error) {
    const fault = describeFault(error);
    logger.warn("Status could not be read", { ...fault });
    return { status: 503, headers, jsonBody: { error: fault } };
  }
}
