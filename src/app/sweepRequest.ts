import { ValidationError, type InputProblem } from "../core/errors";
import { isGuid } from "../core/keys";
import type { SweepRequest } from "../sweep/models";
import { MAX_DURATION_MS, parseDuration, secondsToMs } from "../utils/duration";

/** The largest body `POST /api/sweep` accepts; its four fields fit in far less. */
export const MAX_SWEEP_BODY_BYTES = 4_096;
const MAX_LIMIT = 1_000_000;
const FIELDS = ["dryRun", "olderThan", "userId", "limit"] as const;

/**
 * Validates the body of a manual sweep: `{ dryRun?: boolean, olderThan?: "PT10M" | seconds,
 * userId?: GUID, limit?: positive whole number }`. An empty body is a default sweep. Throws
 * ValidationError listing every problem; never anything else for any input.
 */
export function parseSweepHttpBody(text: string): SweepRequest {
  if (Buffer.byteLength(text, "utf8") > MAX_SWEEP_BODY_BYTES) {
    throw new ValidationError([{ field: "body", message: `is larger than ${MAX_SWEEP_BODY_BYTES} bytes` }]);
  }
  if (text.trim() === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ValidationError([{ field: "body", message: "is not JSON" }]);
  }
  return validateSweepRequest(body);
}

/**
 * Validates the fields of a sweep request from any source (an HTTP body, CLI flags). Throws
 * ValidationError listing every problem.
 */
export function validateSweepRequest(body: unknown): SweepRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ValidationError([{ field: "body", message: "must be a JSON object" }]);
  }
  const fields = body as Record<string, unknown>;
  const problems: InputProblem[] = [];
  const unknown = Object.keys(fields).filter((key) => !(FIELDS as readonly string[]).includes(key));
  if (unknown.length > 0) problems.push({ field: "body", message: `has unknown field${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => JSON.stringify(k.slice(0, 40))).join(", ")}; allowed: ${FIELDS.join(", ")}` });

  const request: SweepRequest = {};
  if (fields.dryRun !== undefined) {
    if (typeof fields.dryRun === "boolean") request.dryRun = fields.dryRun;
    else problems.push({ field: "dryRun", message: "must be true or false" });
  }
  if (fields.olderThan !== undefined) {
    const ms = typeof fields.olderThan === "string" ? parseDuration(fields.olderThan) : secondsToMs(fields.olderThan);
    if (ms === undefined) problems.push({ field: "olderThan", message: "must be an ISO-8601 duration (\"PT10M\") or a number of seconds" });
    else if (ms < 1_000) problems.push({ field: "olderThan", message: "must be at least one second" });
    else if (ms > MAX_DURATION_MS) problems.push({ field: "olderThan", message: "must be at most ten years (P3660D)" });
    else request.olderThanMs = ms;
  }
  if (fields.userId !== undefined) {
    if (isGuid(fields.userId)) request.userId = fields.userId.toLowerCase();
    else problems.push({ field: "userId", message: "must be a user's Entra object id (a GUID)" });
  }
  if (fields.limit !== undefined) {
    if (typeof fields.limit === "number" && Number.isInteger(fields.limit) && fields.limit >= 1 && fields.limit <= MAX_LIMIT) request.limit = fields.limit;
    else problems.push({ field: "limit", message: `must be a whole number from 1 to ${MAX_LIMIT}` });
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return request;
}
