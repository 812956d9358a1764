import { ValidationError, type InputProblem } from "./errors";
import { MAX_SESSION_ID_LENGTH } from "./session";
import { isGuid } from "./keys";
import type { SessionKey } from "./session";

/**
 * A close request, as other services put it on the close queue (JSON):
 * `{ "tenantId": GUID, "userId": GUID, "sessionId": string, "requestedBy"?: string }`.
 */
export interface CloseRequestMessage extends SessionKey {
  requestedBy?: string;
}

/** The close queue's name unless CLOSE_QUEUE says otherwise: producers and the sweeper agree on it. */
export const DEFAULT_CLOSE_QUEUE = "workbook-session-close";

/** Queue messages are at most 64 KiB; a session id is at most 16,384 characters. */
const MAX_MESSAGE_CHARS = 65_536;
const FIELDS = ["tenantId", "userId", "sessionId", "requestedBy"];

/**
 * Reads a close request however the Functions host delivers it: an object (the host parsed the
 * JSON), JSON text, or Base64 of JSON text (senders using the default encoding of other SDKs).
 * Throws ValidationError saying what is wrong, so the host retries and then poisons the message.
 */
export function parseCloseRequestMessage(message: unknown): CloseRequestMessage {
  const value = typeof message === "string" || Buffer.isBuffer(message) ? fromText(message.toString()) : message;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ValidationError([{ field: "message", message: "must be a JSON object with tenantId, userId and sessionId" }]);
  }
  const fields = value as Record<string, unknown>;
  const problems: InputProblem[] = [];
  const unknown = Object.keys(fields).filter((key) => !FIELDS.includes(key));
  if (unknown.length > 0) problems.push({ field: "body", message: `has unknown field${unknown.length > 1 ? "s" : ""} ${unknown.slice(0, 5).map((k) => JSON.stringify(k.slice(0, 40))).join(", ")}; allowed: ${FIELDS.join(", ")}` });
  if (!isGuid(fields.tenantId)) problems.push({ field: "tenantId", message: "must be the tenant's GUID" });
  if (!isGuid(fields.userId)) problems.push({ field: "userId", message: "must be the user's Entra object id (a GUID)" });
  if (typeof fields.sessionId !== "string" || fields.sessionId.length === 0) problems.push({ field: "sessionId", message: "must be a non-empty string" });
  else if (fields.sessionId.length > MAX_SESSION_ID_LENGTH) problems.push({ field: "sessionId", message: `is longer than ${MAX_SESSION_ID_LENGTH} characters` });
  if (fields.requestedBy !== undefined && (typeof fields.requestedBy !== "string" || fields.requestedBy.length > 200)) {
    problems.push({ field: "requestedBy", message: "must be a string of at most 200 characters" });
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return {
    tenantId: (fields.tenantId as string).toLowerCase(),
    userId: (fields.userId as string).toLowerCase(),
    sessionId: fields.sessionId as string,
    ...(typeof fields.requestedBy === "string" && { requestedBy: fields.requestedBy }),
  };
}

/** The message text for a close request (what SessionProducer.requestClose sends). */
export function formatCloseRequestMessage(request: CloseRequestMessage): string {
  return JSON.stringify(request);
}

function fromText(text: string): unknown {
  if (text.length > MAX_MESSAGE_CHARS) throw new ValidationError([{ field: "message", message: `is longer than ${MAX_MESSAGE_CHARS} characters` }]);
  const trimmed = text.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[") || trimmed.startsWith('"')) {
    try {
      return JSON.parse(trimmed);
    } catch {
      throw new ValidationError([{ field: "message", message: "is not valid JSON" }]);
    }
  }
  if (/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) && trimmed.length % 4 === 0) {
    const decoded = Buffer.from(trimmed, "base64").toString("utf8");
    try {
      return JSON.parse(decoded);
    } catch {
      throw new ValidationError([{ field: "message", message: "is Base64, but not of JSON" }]);
    }
  }
  throw new ValidationError([{ field: "message", message: "is neither JSON nor Base64-encoded JSON" }]);
}
