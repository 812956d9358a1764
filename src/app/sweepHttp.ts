import type { HttpRequest, HttpResponseInit, InvocationContext } from "@azure/functions";
import { describeProblem, ValidationError } from "../core/errors";
import { readBodyLimited } from "./readBodyLimited";
import { runLoggedSweep } from "./runSweep";
import { MAX_SWEEP_BODY_BYTES, parseSweepHttpBody } from "./sweepRequest";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";

/**
 * Azure's front end drops an HTTP answer after 230 s on every plan, while a sweep may run for
 * SWEEP_TIME_BUDGET (4 min by default). A manual sweep stops taking rows after this, so that the
 * requests under way (up to GRAPH_REQUEST_TIMEOUT, 30 s) finish and the summary still reaches the
 * caller; what it left is taken by the next sweep.
 */
export const HTTP_SWEEP_MAX_MS = 180_000;

/**
 * `POST /api/sweep` (function key): a manual sweep; the summary as JSON. 503 when a storage fault
 * ended it or the app's own fault paused it (the summary's `error.code` names which).
 */
export async function sweepHttp(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const logger = invocationLogger(context);
  const services = appServices(logger);
  let sweepRequest;
  try {
    sweepRequest = parseSweepHttpBody(await readBodyLimited(request.body, MAX_SWEEP_BODY_BYTES));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    logger.warn("Manual sweep refused", { problems: error.problems });
    // The answer's problems are lines of text (README "HTTP"); the log line keeps their fields.
    return { status: 400, jsonBody: { error: { code: error.code, message: "The sweep request is invalid.", problems: error.problems.map(describeProblem) } } };
  }
  const summary = await runLoggedSweep(services, sweepRequest, logger, "http", { abortSignal: AbortSignal.timeout(HTTP_SWEEP_MAX_MS) });
  return { status: summary.error ? 503 : 200, jsonBody: summary };
}
