import { createHash } from "node:crypto";

/**
 * PartitionKey: one partition per user (`{userObjectId}_{tenantId}`). Closing needs the user's own
 * delegated token, so a sweep works user by user: the rows it reads together, the credential it
 * reuses and the outcomes it writes back (a transaction needs one partition) all line up on the
 * user. Producers' heartbeats are point writes to a key they can compute. The stale query is a
 * filtered scan either way: staleness is a time, not a key. The user's id comes first because query
 * results come in key order: random user ids interleave the tenants, so every page holds work for
 * every tenant's Excel budget (tenant first would read one tenant's backlog while the others idle).
 */
export function partitionKeyFor(tenantId: string, userId: string): string {
  return `${userId.toLowerCase()}_${tenantId.toLowerCase()}`;
}

/**
 * RowKey: base64url of the SHA-256 of the raw session id. Graph session ids are long and contain
 * `/`, `+`, `=`, `&` and more; Table Storage forbids `/ \ # ?` and control characters in keys and
 * limits them to 1 KiB. The hash fits any id, is fixed length, and is the same for every producer
 * that records the same session, so a second record of it conflicts instead of duplicating.
 */
export function rowKeyFor(sessionId: string): string {
  return createHash("sha256").update(sessionId, "utf8").digest("base64url");
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Entra tenant ids and user object ids are GUIDs. */
export function isGuid(value: unknown): value is string {
  return typeof value === "string" && GUID.test(value);
}
