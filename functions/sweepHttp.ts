import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from "@azure/functions";
import { MAX_SWEEP_BODY_BYTES, parseSweepHttpBody, readBodyLimited, runLoggedSweep, sweeperServicesFromEnvironment, ValidationError } from "../src";

const services = sweeperServicesFromEnvironment();

/** `POST /api/sweep` (function key): a manual sweep; the summary as JSON. */
export async function sweepHttp(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  let sweepRequest;
  try {
    sweepRequest = parseSweepHttpBody(await readBodyLimited(request.body, MAX_SWEEP_BODY_BYTES));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    context.warn("Manual sweep refused", { problems: error.problems });
    return { status: 400, jsonBody: { error: { code: error.code, message: "The sweep request is invalid.", problems: error.problems } } };
  }
  const summary = await runLoggedSweep(services, sweepRequest, context, "http");
  return { status: summary.error ? 503 : 200, jsonBody: summary };
}

app.http("sweep", { methods: ["POST"], authLevel: "function", route: "sweep", handler: sweepHttp });
