import type { HttpRequest, HttpResponseInit, InvocationContext } from "@azure/functions";
import { ValidationError } from "../errors";
import { readBodyLimited } from "../triggers/readBody";
import { runLoggedSweep } from "../triggers/runSweep";
import { MAX_SWEEP_BODY_BYTES, parseSweepHttpBody } from "../triggers/sweepHttpRequest";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";

/** `POST /api/sweep` (function key): a manual sweep; the summary as JSON. */
export async function sweepHttp(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  const logger = invocationLogger(context);
  const services = appServices(logger);
  let sweepRequest;
  try {
    sweepRequest = parseSweepHttpBody(await readBodyLimited(request.body, MAX_SWEEP_BODY_BYTES));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    logger.warn("Manual sweep refused", { problems: error.problems });
    return { status: 400, jsonBody: { error: { code: error.code, message: "The sweep request is invalid.", problems: error.problems } } };
  }
  const summary = await runLoggedSweep(services, sweepRequest, logger, "http");
  return { status: summary.error ? 503 : 200, jsonBody: summary };
}
