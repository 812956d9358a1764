/**
 * A local Microsoft Graph emulator for Excel workbook sessions, over real HTTPS on 127.0.0.1, so the
 * real `@microsoft/microsoft-graph-client` (with `customHosts: ["127.0.0.1"]`) talks to it unchanged.
 *
 * Routes (after `/v1.0`), each followed by `/workbook/createSession|refreshSession|closeSession` (POST),
 * `/workbook/operations/{operation-id}` (GET) or `/workbook/sessionInfoResource(key='{key}')` (GET):
 *   /me/drive/items/{item}   /users/{user}/drive/items/{item}   /drives/{drive}/items/{item}
 *   /sites/{site}/drive/items/{item}
 * `/me/...` and `/users/{token's oid}/...` are the same drive. Other drive addressings of one file (a
 * user's drive id under /drives/...) are NOT aliased: each form names its own workbook key.
 *
 * Order of decisions for one request (as a real front door would): fault rules, then Excel's budgets
 * (429: per app per tenant, and per app across tenants), then latency, then authentication (401),
 * authorization (403), method (405), the session semantics. What it answers, and why:
 *   - No/invalid/expired bearer token: 401 `InvalidAuthenticationToken` (Graph's code for this).
 *   - App-only token (roles, no scp): 403 `accessDenied` — workbook APIs document application
 *     permissions as not supported. A delegated token without Files.ReadWrite(.All): 403 `accessDenied`.
 *   - `/users/{other}/...` for another user than the token's: 403 `accessDenied`.
 *   - Path addressing (`/drive/root:/path:/workbook/...`): 403 `accessDenied` "Could not obtain a WAC
 *     access token." (reported for real Graph; item ids work).
 *   - A route not listed above (including `$batch`): 400 `invalidRequest`. A known route with a method
 *     other than POST: 405 `methodNotAllowed`.
 *   - createSession on any item: 201 `{id, persistChanges}` (the item is taken to exist). A missing
 *     `persistChanges` means `true` (Graph does not document a default).
 *   - createSession with `Prefer: respond-async`, Graph's documented long-running pattern (workbook-
 *     createsession, workbookoperation-get, workbook-best-practice): Graph *may* answer 202, so only
 *     when `createSessionAsync` is configured (otherwise 201 as above, as Graph does when the session
 *     opens within seconds). 202 `{}` with `Location: {origin}/v1.0/{item as requested}/workbook/
 *     operations/{operation-id}`. GET on it: 200 `{id, status}`, `notStarted`/`running` for the
 *     configured number of polls, then `succeeded` with `resourceLocation: {origin}/v1.0/{item}/
 *     workbook/sessionInfoResource(key='{operation-id}')?sessionId={base64 of the session id}` (the
 *     shape of the v1.0 reference's example; the key alone decides here), or `failed` with `error:
 *     {code, message, innerError}`; later polls repeat the final answer. The session opens (counts
 *     for the workbook, idles from then) at the poll that answers `succeeded`. GET on the
 *     resourceLocation: 200 `{id, persistChanges}`. Operations and their results are per tenant,
 *     workbook and user, as sessions are: unknown id, other workbook or tenant, or (for the resource)
 *     an operation not succeeded: 404 `itemNotFound`; another user's: 403 `accessDenied` /
 *     `invalidSessionAuthentication`, as for another user's session (undocumented, see below).
 *   - refreshSession/closeSession without `workbook-session-id`: 400 `invalidRequest`, inner code
 *     `badRequestUncategorized` (Graph answers 400, msgraph-sdk-dotnet #217).
 *   - refreshSession/closeSession on a workbook on which no session was ever opened (in this tenant):
 *     404 `itemNotFound` (innerError without a code, as OneDrive answers; "do not resend").
 *   - A session id that is expired, closed, unknown, or belongs to another workbook: 404 `notFound`
 *     with innerError code `invalidSessionReCreatable` ("does not exist or is invalid ... may be
 *     re-created", the documented session code; Graph says an expired session id gives 404).
 *   - A session that belongs to another user (same workbook): 403 `accessDenied` with innerError code
 *     `invalidSessionAuthentication`; the session stays open. Undocumented for real Graph; chosen so a
 *     caller that uses the wrong user's token does not mistake it for "session gone" (404).
 *   - Success: createSession 201, refreshSession 204 (bumps the idle timer), closeSession 204.
 * Errors use Graph's shape `{"error":{"code","message","innerError":{"code"?,"date","request-id",
 * "client-request-id"}}}` with `request-id`/`client-request-id` headers.
 *
 * Every request is recorded without its token. Sessions expire lazily after their idle time.
 */
import { randomBytes, randomInt, randomUUID } from "node:crypto";
import { LocalHttpsServer } from "./localHttpsServer";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TestCertificate } from "./certificate";
import type { FakeAuthority, GraphTokenClaims } from "./fakeAuthority";

/** `sessionOperation`: GET …/workbook/operations/{id}; `sessionInfoResource`: GET …/workbook/sessionInfoResource(key='…'). */
export type RequestKind = "createSession" | "refreshSession" | "closeSession" | "sessionOperation" | "sessionInfoResource" | "other";
/** A workbookOperation's `status`, as Graph spells it in answers. */
export type OperationStatus = "notStarted" | "running" | "succeeded" | "failed";
export type TokenKind = "delegated" | "app" | "none" | "invalid";
export type SessionState = "open" | "closed" | "expired" | "unknown";

export interface RecordedRequest {
  /** Order of arrival, from 1 (restarts at reset()). */
  seq: number;
  method: string;
  /** The request target exactly as received (undecoded, with any query). */
  path: string;
  kind: RequestKind;
  /** Canonical workbook: "/drives/d/items/i", "/sites/s/drive/items/i", "/users/{oid}/drive/items/i" (also for /me). */
  workbookKey?: string;
  /** The `workbook-session-id` header. */
  sessionId?: string;
  /** The request carried `Prefer: respond-async`. */
  respondAsync?: true;
  /** The long-running operation: the one a 202 started, the one polled, or the key of a sessionInfoResource. */
  operationId?: string;
  /** From a valid token only. */
  tenantId?: string;
  userId?: string;
  /** The token's `appid` (the client id of the app that called). */
  appId?: string;
  tokenKind: TokenKind;
  /** HTTP status answered; 0 when no answer was sent (reset, hang, or still pending). */
  status: number;
  /** Graph error code and inner code of an error answer made by the emulator. */
  errorCode?: string;
  innerErrorCode?: string;
  /** The `request-id` header answered. */
  requestId: string;
  startedAt: number;
  /** When the answer was sent or the connection ended; undefined while pending. */
  endedAt?: number;
  /** The latency drawn for it at arrival (set on every request the emulator records). A reset or
   *  hang fault answers without waiting it. */
  latencyMs?: number;
  /** Why the answer was not the emulator's own: a fault rule, the per-tenant budget ("budget", also
   *  when both budgets were over) or the app-wide one ("appBudget"). */
  fault?: "status" | "reset" | "hang" | "budget" | "appBudget";
}

/**
 * Graph's latency has a long right tail, so a fixed delay hides what a sweeper does while a few
 * requests straggle. Given as median and p99 because that is how latency is measured and quoted;
 * sigma follows from them (z₀.₉₉ = 2.3263).
 */
export interface LognormalLatency {
  kind: "lognormal";
  medianMs: number;
  p99Ms: number;
  /** Clamps applied after the draw. */
  minMs?: number;
  maxMs?: number;
  /** PRNG seed, so a bench run can be repeated draw for draw. Default: a fixed seed. */
  seed?: number;
}

/** Milliseconds added to every request (as before), or a distribution drawn from once per request. */
export type LatencySpec = number | LognormalLatency;

export interface ExcelBudget {
  requests: number;
  windowMs: number;
}

export interface EmulatorBehaviour {
  latencyMs: LatencySpec;
  idleMs: { persistent: number; nonPersistent: number };
  /** Excel's limit is 1,500 requests per 10 s per app per tenant. null: no limit. */
  tenantBudget: ExcelBudget | null;
  /** Excel's limit is 5,000 requests per 10 s per app across all tenants. null: no limit. */
  appBudget: ExcelBudget | null;
  /** How a createSession with `Prefer: respond-async` is answered. null: 201 as without it. */
  createSessionAsync: CreateSessionAsync | null;
}

/**
 * Graph's long-running createSession. Each operation keeps the plan that was configured when its 202
 * was answered.
 */
export interface CreateSessionAsync {
  /** Polls of the operation answered before it is done (`notStarted`, then `running`). Default 2. */
  pollsUntilDone?: number;
  /** How many of those come first as `notStarted`. Default 0. */
  notStartedPolls?: number;
  /** Default "succeeded". */
  outcome?: "succeeded" | "failed";
  /** The `error` of a failed operation. Default: the one in Graph's documentation
   *  (`internalServerError` / `internalServerErrorUncategorized` / `GenericFileOpenError`). */
  error?: { code: string; message: string; innerError?: object };
  /** Answer the 202 with no body at all (Content-Length 0) instead of the documented `{}`. */
  emptyAcceptedBody?: boolean;
}

export interface FaultAnswer {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as is; an object as JSON; undefined: Graph's error body for the status (empty for 2xx/3xx). */
  body?: string | object;
}

export interface FaultRule {
  /** Match conditions; all given ones must hold. None given: every request. */
  sessionId?: string;
  /** Same forms as openSession ("/drives/d/items/i", "/me/drive/items/i" = that item on any user's drive). */
  workbook?: string;
  tenantId?: string;
  userId?: string;
  kind?: RequestKind;
  /** How many requests it answers. Default: unlimited. */
  times?: number;
  action: FaultAnswer | "reset" | "hang";
}

export interface EmulatorStats {
  maxConcurrentPerWorkbook: number;
  maxConcurrentPerSession: number;
  /** closeSession requests for a session whose close the emulator had already answered with 204. */
  closesAfterClosed: number;
  /** Most requests (recorded, with that tenant's valid token) that started within any windowMs. */
  maxTenantRequestsInWindow(tenantId: string, windowMs: number): number;
  /** Most requests (recorded, with a valid token of that app, any tenant) that started within any windowMs. */
  maxAppRequestsInWindow(appId: string, windowMs: number): number;
  nonCloseRequests: number;
}

export interface GraphEmulator {
  readonly origin: string;
  readonly baseUrl: string;
  openSession(s: { tenantId: string; userId: string; workbook: string; persistChanges?: boolean }): string;
  sessionState(sessionId: string): SessionState;
  expireSession(sessionId: string): void;
  readonly requests: RecordedRequest[];
  configure(b: Partial<EmulatorBehaviour>): void;
  addFault(rule: FaultRule): void;
  clearFaults(): void;
  stats(): EmulatorStats;
  /** Forgets requests, sessions, workbooks, faults and stats, answers hanging requests with a reset,
   *  and restores the behaviour given at start. */
  reset(): void;
  close(): Promise<void>;
}

export interface GraphEmulatorOptions {
  certificate: TestCertificate;
  authority: FakeAuthority;
  latencyMs?: LatencySpec;
  idleMs?: { persistent: number; nonPersistent: number };
  tenantBudget?: ExcelBudget | null;
  appBudget?: ExcelBudget | null;
  createSessionAsync?: CreateSessionAsync | null;
}

const DEFAULT_IDLE = { persistent: 5 * 60_000, nonPersistent: 7 * 60_000 };
const GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const FILE_SCOPES = new Set(["files.readwrite", "files.readwrite.all", "sites.readwrite.all"]);

const DEFAULT_ERRORS: Record<number, { code: string; message: string }> = {
  400: { code: "invalidRequest", message: "The request is malformed or incorrect." },
  401: { code: "InvalidAuthenticationToken", message: "Access token is empty." },
  403: { code: "accessDenied", message: "The caller doesn't have permission to perform the action." },
  404: { code: "itemNotFound", message: "The resource could not be found." },
  405: { code: "methodNotAllowed", message: "The HTTP method in the request is not allowed on the resource." },
  409: { code: "conflict", message: "The current state conflicts with what the request expects." },
  429: { code: "tooManyRequests", message: "The app or user has been throttled." },
  500: { code: "generalException", message: "An internal server error occurred while processing the request." },
  502: { code: "badGateway", message: "The server encountered a temporary error and couldn't complete your request." },
  503: { code: "serviceUnavailable", message: "The service is not available. Please try your request again." },
  504: { code: "gatewayTimeout", message: "The service wasn't able to complete the request within the time limit." },
};

/** The failed operation's error in Graph's workbookoperation-get and workbook-best-practice pages. */
const DEFAULT_OPERATION_ERROR = {
  code: "internalServerError",
  message: "An internal server error occurred while processing the request.",
  innerError: {
    code: "internalServerErrorUncategorized",
    message: "An unspecified error has occurred.",
    innerError: { code: "GenericFileOpenError", message: "The workbook cannot be opened." },
  },
};

/** Throws at configure time, not as a 500 on some later request. */
function checkCreateSessionAsync(c: CreateSessionAsync | null): void {
  if (c === null) return;
  const count = (name: string, n: number | undefined) => {
    if (n !== undefined && !(Number.isInteger(n) && n >= 0)) throw new RangeError(`createSessionAsync: ${name} must be a whole number >= 0 (got ${n})`);
  };
  count("pollsUntilDone", c.pollsUntilDone);
  count("notStartedPolls", c.notStartedPolls);
  if (c.outcome !== undefined && c.outcome !== "succeeded" && c.outcome !== "failed") {
    throw new RangeError(`createSessionAsync: unknown outcome ${String(c.outcome)}`);
  }
}

/** Φ⁻¹(0.99): a log-normal's p99 lies this many sigmas above its median (in log space). */
const Z_99 = 2.3263478740408408;
/** Any fixed seed: a bench that names none still gets the same draws run after run. */
const DEFAULT_LATENCY_SEED = 0x5eed1a7e;

/** mulberry32: tiny and seedable, which node:crypto and Math.random are not. Uniform on [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One request's latency in ms. A fixed latency takes nothing from `random`, so it stays deterministic. */
export function drawLatency(spec: LatencySpec, random: () => number): number {
  if (typeof spec === "number") return spec;
  const sigma = Math.log(spec.p99Ms / spec.medianMs) / Z_99;
  // Box–Muller; 1 − u keeps the logarithm's argument in (0, 1].
  const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const ms = spec.medianMs * Math.exp(sigma * z);
  return Math.min(spec.maxMs ?? Number.POSITIVE_INFINITY, Math.max(spec.minMs ?? 0, ms));
}

/** Throws at configure time, not as a 500 on some later request. */
function checkLatency(spec: LatencySpec): void {
  if (typeof spec === "number") return;
  const { medianMs, p99Ms, minMs, maxMs } = spec;
  const finite = (n: number | undefined) => n === undefined || Number.isFinite(n);
  if (spec.kind !== "lognormal") throw new RangeError(`latency: unknown distribution ${String(spec.kind)}`);
  if (!(medianMs > 0) || !(p99Ms >= medianMs) || ![medianMs, p99Ms, minMs, maxMs].every(finite)) {
    throw new RangeError(`latency: need 0 < medianMs <= p99Ms, finite (got median ${medianMs}, p99 ${p99Ms})`);
  }
  if (minMs !== undefined && maxMs !== undefined && minMs > maxMs) throw new RangeError(`latency: minMs ${minMs} > maxMs ${maxMs}`);
}

function randomFor(spec: LatencySpec): () => number {
  return mulberry32(typeof spec === "number" ? DEFAULT_LATENCY_SEED : (spec.seed ?? DEFAULT_LATENCY_SEED));
}

/** Drops what left the window; then, when it is full, the seconds until its oldest leaves (at least 1). */
function retryAfterIn(window: number[], budget: ExcelBudget, now: number): number | undefined {
  while (window.length > 0 && window[0]! <= now - budget.windowMs) window.shift();
  if (window.length < budget.requests) return undefined;
  return Math.max(1, Math.ceil(((window[0] ?? now) + budget.windowMs - now) / 1000));
}

/** Most of `times` that fall within any windowMs. */
function maxInWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while (lo <= hi && sorted[hi]! - sorted[lo]! >= windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

interface WorkbookRef {
  form: "me" | "users" | "drives" | "sites";
  owner?: string;
  item: string;
  /** Segments after the item. */
  rest: string[];
}

/** Reads "/me/drive/items/X/...", "/users/U/drive/items/X/...", "/drives/D/items/X/...", "/sites/S/drive/items/X/...". */
function parseWorkbookRef(segments: string[]): WorkbookRef | undefined {
  const lower = segments.map((s) => s.toLowerCase());
  if (lower[0] === "me" && lower[1] === "drive" && lower[2] === "items" && segments[3]) {
    return { form: "me", item: segments[3], rest: segments.slice(4) };
  }
  if (lower[0] === "users" && segments[1] && lower[2] === "drive" && lower[3] === "items" && segments[4]) {
    return { form: "users", owner: segments[1].toLowerCase(), item: segments[4], rest: segments.slice(5) };
  }
  if (lower[0] === "drives" && segments[1] && lower[2] === "items" && segments[3]) {
    return { form: "drives", owner: segments[1], item: segments[3], rest: segments.slice(4) };
  }
  if (lower[0] === "sites" && segments[1] && lower[2] === "drive" && lower[3] === "items" && segments[4]) {
    return { form: "sites", owner: segments[1], item: segments[4], rest: segments.slice(5) };
  }
  return undefined;
}

function workbookKeyOf(ref: WorkbookRef, userId: string | undefined): string {
  switch (ref.form) {
    case "me":
      return userId ? `/users/${userId.toLowerCase()}/drive/items/${ref.item}` : `/me/drive/items/${ref.item}`;
    case "users":
      return `/users/${ref.owner ?? ""}/drive/items/${ref.item}`;
    case "drives":
      return `/drives/${ref.owner ?? ""}/items/${ref.item}`;
    case "sites":
      return `/sites/${ref.owner ?? ""}/drive/items/${ref.item}`;
  }
}

function splitPath(pathname: string): string[] | undefined {
  try {
    return pathname.split("/").filter((s) => s.length > 0).map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

/** Session ids shaped like Excel's: long, with "=", "&", "/", "+" in them. */
function newSessionId(): string {
  const b64 = (n: number) => randomBytes(n).toString("base64");
  const host = `SN${randomBytes(6).toString("hex").toUpperCase()}`;
  return (
    `cluster=PS${randomInt(1, 9)}&session=15.${host}.A${randomInt(10, 99)}.E${randomInt(100, 999)}.` +
    `${b64(96)}/${b64(30)}+${b64(16)}&usid=${randomUUID()}`
  );
}

function graphDate(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "");
}

interface Session {
  id: string;
  tenantId: string;
  userId: string;
  scopeKey: string;
  workbookKey: string;
  persistChanges: boolean;
  state: "open" | "closed" | "expired";
  lastActivity: number;
  /** When the emulator answered 204 to a closeSession for it. */
  closedAnsweredAt?: number;
}

/** A long-running createSession, from its 202 on. */
interface WorkbookOperation {
  id: string;
  tenantId: string;
  userId: string;
  scopeKey: string;
  workbookKey: string;
  /** The request's path up to and including `/workbook`, as received: Location and resourceLocation name the item as the caller did. */
  workbookPath: string;
  persistChanges: boolean;
  plan: { pollsUntilDone: number; notStartedPolls: number; outcome: "succeeded" | "failed"; error: object };
  /** Polls answered by the emulator itself (faulted or throttled ones do not count). */
  polls: number;
  status: OperationStatus;
  /** Once succeeded. */
  sessionId?: string;
}

interface ActiveFault {
  rule: FaultRule;
  remaining: number;
  matchWorkbook?: (workbookKey: string | undefined) => boolean;
}

interface AuthInfo {
  kind: TokenKind;
  claims?: GraphTokenClaims;
  reason?: string;
}

/** Stage 0: what the request asks, read from its method, path and headers alone. */
interface GraphRoute {
  method: string;
  /** The request target exactly as received (undecoded, with any query). */
  rawPath: string;
  pathname: string;
  /** Decoded path segments; undefined when one does not decode. */
  segments: string[] | undefined;
  kind: RequestKind;
  /** The workbook of a session route (undefined for any other route). */
  ref: WorkbookRef | undefined;
  /** A workbook route that addresses the file by path (`/root:/…:/workbook/…`). */
  pathAddressed: boolean;
  /** The `workbook-session-id` header. */
  sessionId: string | undefined;
  /** `Prefer: respond-async` was among the request's preferences. */
  respondAsync: boolean;
  /** The operation id of a sessionOperation route, or the key of a sessionInfoResource route. */
  operationId: string | undefined;
  /** The request's path up to and including `/workbook`, undecoded (a workbook route only). */
  workbookPath: string | undefined;
}

/** The workbook a request names, in the terms of its token's tenant and user. */
interface WorkbookTarget {
  workbookKey: string | undefined;
  /** `{tenant}|{workbookKey}`: sessions and the "ever opened" set are per tenant. */
  scopeKey: string | undefined;
  tenantId: string | undefined;
  userId: string | undefined;
  appId: string | undefined;
}

/** A request that passed authentication and authorization: a session operation by the token's user. */
interface SessionOperation {
  kind: Exclude<RequestKind, "other">;
  claims: GraphTokenClaims;
  workbookKey: string;
  scopeKey: string;
  sessionId: string | undefined;
  respondAsync: boolean;
  operationId: string | undefined;
  workbookPath: string;
}

type Authorization = { ok: true; operation: SessionOperation } | { ok: false; refusal: GraphErrorReply };

/** An answer of the emulator's own making. */
interface GraphSuccessReply {
  status: number;
  headers: Record<string, string>;
  body?: string;
}

/** An error answer, sent in Graph's error shape. `headers` are sent too (content-type is Graph's). */
interface GraphErrorReply {
  status: number;
  code: string;
  message: string;
  innerCode?: string;
  headers?: Record<string, string>;
}

type GraphReply = GraphSuccessReply | GraphErrorReply;

/** What Graph's front door adds to every answer; the same for each, so made once. */
const AGS_DIAGNOSTIC = JSON.stringify({ ServerInfo: { DataCenter: "Local", Slice: "E", Ring: "0", ScaleUnit: "000", RoleInstance: "EMULATOR" } });

function routeOf(req: IncomingMessage): GraphRoute {
  const rawPath = req.url ?? "/";
  const method = req.method ?? "GET";
  const pathname = rawPath.split("?")[0] ?? "/";
  const segments = splitPath(pathname);
  let kind: RequestKind = "other";
  let ref: WorkbookRef | undefined;
  let pathAddressed = false;
  let operationId: string | undefined;
  let workbookPath: string | undefined;
  if (segments && segments[0]?.toLowerCase() === "v1.0") {
    const rest = segments.slice(1);
    ref = parseWorkbookRef(rest);
    const after = ref && ref.rest[0]?.toLowerCase() === "workbook" ? ref.rest.slice(1) : [];
    const op = after.length === 1 ? after[0]!.toLowerCase() : undefined;
    const infoKey = after.length === 1 ? /^sessionInfoResource\(key='([^']+)'\)$/i.exec(after[0]!)?.[1] : undefined;
    if (op === "createsession") kind = "createSession";
    else if (op === "refreshsession") kind = "refreshSession";
    else if (op === "closesession") kind = "closeSession";
    else if (infoKey !== undefined) {
      kind = "sessionInfoResource";
      operationId = infoKey;
    } else if (after.length === 2 && after[0]!.toLowerCase() === "operations") {
      kind = "sessionOperation";
      operationId = after[1];
    } else ref = undefined;
    if (ref) {
      const raw = pathname.replace(/\/+$/, "").split("/");
      workbookPath = raw.slice(0, raw.length - after.length).join("/");
    }
    pathAddressed = kind === "other" && /\/root:/i.test(pathname) && /\/workbook(\/|$)/i.test(pathname);
  }
  const sessionHeader = req.headers["workbook-session-id"];
  const sessionId = Array.isArray(sessionHeader) ? sessionHeader[0] : sessionHeader;
  const respondAsync = prefersRespondAsync(req.headers.prefer);
  return { method, rawPath, pathname, segments, kind, ref, pathAddressed, sessionId, respondAsync, operationId, workbookPath };
}

/** RFC 7240: a comma-separated list of preferences, each `token[=value]` with `;` parameters. */
function prefersRespondAsync(header: string | string[] | undefined): boolean {
  const values = Array.isArray(header) ? header : header !== undefined ? [header] : [];
  return values.some((v) => v.split(",").some((p) => p.split(";")[0]!.split("=")[0]!.trim().toLowerCase() === "respond-async"));
}

function targetOf(route: GraphRoute, auth: AuthInfo): WorkbookTarget {
  const userId = auth.claims?.oid;
  const tenantId = auth.claims?.tid;
  const workbookKey = route.ref ? workbookKeyOf(route.ref, userId) : undefined;
  const scopeKey = workbookKey !== undefined ? `${tenantId ?? "?"}|${workbookKey}` : undefined;
  return { workbookKey, scopeKey, tenantId, userId, appId: auth.claims?.appid };
}

/** Stage 3: authentication (401), authorization (403), the route (400) and the method (405). */
function authorize(route: GraphRoute, auth: AuthInfo, target: WorkbookTarget): Authorization {
  const refuse = (status: number, code: string, message: string): Authorization => ({ ok: false, refusal: { status, code, message } });
  if (auth.kind === "none") return refuse(401, "InvalidAuthenticationToken", "Access token is empty.");
  if (auth.kind === "invalid") {
    const reason = auth.reason ?? "";
    const message = reason.startsWith("expired")
      ? "Access token has expired or is not yet valid."
      : reason.startsWith("malformed")
        ? "IDX14100: JWT is not well formed."
        : "Access token validation failure. Invalid audience or signature.";
    return refuse(401, "InvalidAuthenticationToken", message);
  }
  const claims = auth.claims!;
  if (auth.kind === "app") {
    return refuse(403, "accessDenied", "Application permissions are not supported for this API. Use a delegated token.");
  }
  const scopes = (claims.scp ?? "").split(" ").map((s) => s.toLowerCase());
  if (!scopes.some((s) => FILE_SCOPES.has(s))) {
    return refuse(403, "accessDenied", "The caller doesn't have permission to perform the action. Files.ReadWrite is required.");
  }
  if (route.pathAddressed) return refuse(403, "accessDenied", "Could not obtain a WAC access token.");
  const { workbookKey, scopeKey } = target;
  if (route.kind === "other" || !route.ref || workbookKey === undefined || scopeKey === undefined || route.workbookPath === undefined) {
    const segment = route.segments?.[route.segments.length - 1] ?? route.pathname;
    return refuse(400, "invalidRequest", `Invalid request: resource not found for the segment '${segment}'.`);
  }
  if (route.ref.form === "users" && route.ref.owner !== claims.oid.toLowerCase()) {
    return refuse(403, "accessDenied", "Access denied. The caller cannot access another user's drive.");
  }
  const method = route.kind === "sessionOperation" || route.kind === "sessionInfoResource" ? "GET" : "POST";
  if (route.method !== method) return refuse(405, "methodNotAllowed", "The HTTP method in the request is not allowed on the resource.");
  const { sessionId, respondAsync, operationId, workbookPath } = route;
  return { ok: true, operation: { kind: route.kind, claims, workbookKey, scopeKey, sessionId, respondAsync, operationId, workbookPath } };
}

/** createSession's `persistChanges` (missing: true), or the 400 for a body that is not what Graph takes. */
function persistChangesOf(body: string): boolean | GraphErrorReply {
  if (body.trim().length === 0) return true;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { status: 400, code: "invalidRequest", message: "The request body is not valid JSON.", innerCode: "badRequestUncategorized" };
  }
  const value = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>).persistChanges : undefined;
  if (value !== undefined && typeof value !== "boolean") {
    return { status: 400, code: "invalidRequest", message: "persistChanges must be a boolean.", innerCode: "badRequestUncategorized" };
  }
  return typeof value === "boolean" ? value : true;
}

/**
 * Stage 5: writes one request's answer with Graph's headers (`request-id`, `client-request-id`)
 * and error shape, and notes on the request's record what was answered. Nothing is written to a
 * connection already gone (a reset, or a hang answered by reset()).
 */
class GraphAnswer {
  constructor(
    private readonly res: ServerResponse,
    private readonly record: RecordedRequest,
    private readonly requestId: string,
    private readonly clientRequestId: string,
  ) {}

  reply(reply: GraphReply): void {
    if ("code" in reply) this.error(reply);
    else this.send(reply.status, reply.headers, reply.body);
  }

  private error(reply: GraphErrorReply): void {
    this.record.errorCode = reply.code;
    if (reply.innerCode !== undefined) this.record.innerErrorCode = reply.innerCode;
    const innerError: Record<string, string> = {};
    if (reply.innerCode !== undefined) innerError.code = reply.innerCode;
    innerError.date = graphDate();
    innerError["request-id"] = this.requestId;
    innerError["client-request-id"] = this.clientRequestId;
    const body = JSON.stringify({ error: { code: reply.code, message: reply.message, innerError } });
    this.send(reply.status, { ...(reply.headers ?? {}), "content-type": GRAPH_JSON }, body);
  }

  private send(status: number, headers: Record<string, string>, body?: string): void {
    if (this.res.destroyed || this.res.writableEnded) return;
    this.record.status = status;
    const all: Record<string, string | number> = {
      "request-id": this.requestId,
      "client-request-id": this.clientRequestId,
      "x-ms-ags-diagnostic": AGS_DIAGNOSTIC,
      "strict-transport-security": "max-age=31536000",
      "cache-control": "no-store",
      ...headers,
    };
    if (body !== undefined) all["content-length"] = Buffer.byteLength(body);
    else if (status !== 204 && status !== 304) all["content-length"] = 0;
    this.res.writeHead(status, all);
    this.res.end(body);
  }
}

export async function startGraphEmulator(options: GraphEmulatorOptions): Promise<GraphEmulator> {
  const emulator = new GraphEmulatorImpl(options);
  await emulator.listen();
  return emulator;
}

class GraphEmulatorImpl implements GraphEmulator {
  readonly requests: RecordedRequest[] = [];
  private behaviour: EmulatorBehaviour;
  private readonly sessions = new Map<string, Session>();
  /** Long-running createSessions, by lower-cased operation id. */
  private readonly operations = new Map<string, WorkbookOperation>();
  /** Tenant-scoped workbook keys on which a session was ever opened. */
  private readonly workbooks = new Set<string>();
  private faults: ActiveFault[] = [];
  /** Arrival times counted against each budget, by tenant id and by app id. */
  private readonly tenantWindows = new Map<string, number[]>();
  private readonly appWindows = new Map<string, number[]>();
  /** Reseeded whenever the latency is set, so the same configuration replays the same draws. */
  private random: () => number;
  private readonly inflightWorkbook = new Map<string, number>();
  private readonly inflightSession = new Map<string, number>();
  private maxWorkbook = 0;
  private maxSession = 0;
  private closesAfterClosed = 0;
  private generation = 0;
  private seq = 0;
  private originValue = "";
  private readonly server: LocalHttpsServer;
  private readonly hung = new Set<ServerResponse>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly options: GraphEmulatorOptions) {
    this.behaviour = this.initialBehaviour();
    this.random = randomFor(this.behaviour.latencyMs);
    this.server = new LocalHttpsServer(options.certificate, (req, res) => this.handle(req, res));
  }

  private initialBehaviour(): EmulatorBehaviour {
    const latencyMs = this.options.latencyMs ?? 0;
    checkLatency(latencyMs);
    const createSessionAsync = this.options.createSessionAsync ?? null;
    checkCreateSessionAsync(createSessionAsync);
    return {
      latencyMs,
      idleMs: { ...(this.options.idleMs ?? DEFAULT_IDLE) },
      tenantBudget: this.options.tenantBudget ?? null,
      appBudget: this.options.appBudget ?? null,
      createSessionAsync: createSessionAsync && { ...createSessionAsync },
    };
  }

  get origin(): string {
    return this.originValue;
  }

  get baseUrl(): string {
    return `${this.originValue}/v1.0`;
  }

  async listen(): Promise<void> {
    this.originValue = await this.server.listen();
  }

  // ---------------------------------------------------------------------------------------------
  // Test-facing API

  openSession(s: { tenantId: string; userId: string; workbook: string; persistChanges?: boolean }): string {
    const segments = splitPath(s.workbook.replace(/^\/?v1\.0(?=\/)/i, ""));
    const ref = segments ? parseWorkbookRef(segments) : undefined;
    if (!ref || ref.rest.length > 0) throw new Error(`openSession: not a workbook item path: ${s.workbook}`);
    const workbookKey = workbookKeyOf(ref, s.userId);
    return this.createSession(s.tenantId, s.userId, workbookKey, s.persistChanges ?? true).id;
  }

  sessionState(sessionId: string): SessionState {
    const session = this.sessions.get(sessionId);
    return session ? this.stateOf(session) : "unknown";
  }

  expireSession(sessionId: string): void {
    const session = this.sessions.get(sessionId);
    if (session && session.state === "open") session.state = "expired";
  }

  configure(b: Partial<EmulatorBehaviour>): void {
    if (b.latencyMs !== undefined) checkLatency(b.latencyMs);
    if (b.createSessionAsync !== undefined) checkCreateSessionAsync(b.createSessionAsync);
    this.behaviour = {
      latencyMs: b.latencyMs ?? this.behaviour.latencyMs,
      idleMs: b.idleMs ? { ...b.idleMs } : this.behaviour.idleMs,
      tenantBudget: b.tenantBudget !== undefined ? b.tenantBudget : this.behaviour.tenantBudget,
      appBudget: b.appBudget !== undefined ? b.appBudget : this.behaviour.appBudget,
      createSessionAsync: b.createSessionAsync !== undefined ? b.createSessionAsync && { ...b.createSessionAsync } : this.behaviour.createSessionAsync,
    };
    if (b.latencyMs !== undefined) this.random = randomFor(b.latencyMs);
    if (b.tenantBudget !== undefined) this.tenantWindows.clear();
    if (b.appBudget !== undefined) this.appWindows.clear();
  }

  addFault(rule: FaultRule): void {
    const active: ActiveFault = { rule, remaining: rule.times ?? Number.POSITIVE_INFINITY };
    if (rule.workbook !== undefined) {
      const segments = splitPath(rule.workbook.replace(/^\/?v1\.0(?=\/)/i, ""));
      const ref = segments ? parseWorkbookRef(segments) : undefined;
      if (!ref) throw new Error(`addFault: not a workbook item path: ${rule.workbook}`);
      if (ref.form === "me") {
        const suffix = `/drive/items/${ref.item}`;
        active.matchWorkbook = (key) => key !== undefined && (key.startsWith("/users/") || key.startsWith("/me/")) && key.endsWith(suffix);
      } else {
        const want = workbookKeyOf(ref, undefined);
        active.matchWorkbook = (key) => key === want;
      }
    }
    this.faults.push(active);
  }

  clearFaults(): void {
    this.faults = [];
  }

  stats(): EmulatorStats {
    const records = this.requests.slice();
    return {
      maxConcurrentPerWorkbook: this.maxWorkbook,
      maxConcurrentPerSession: this.maxSession,
      closesAfterClosed: this.closesAfterClosed,
      nonCloseRequests: records.filter((r) => r.kind !== "closeSession").length,
      maxTenantRequestsInWindow(tenantId: string, windowMs: number): number {
        return maxInWindow(records.filter((r) => r.tenantId === tenantId).map((r) => r.startedAt), windowMs);
      },
      maxAppRequestsInWindow(appId: string, windowMs: number): number {
        return maxInWindow(records.filter((r) => r.appId === appId).map((r) => r.startedAt), windowMs);
      },
    };
  }

  reset(): void {
    this.generation++;
    this.requests.length = 0;
    this.sessions.clear();
    this.operations.clear();
    this.workbooks.clear();
    this.faults = [];
    this.tenantWindows.clear();
    this.appWindows.clear();
    this.inflightWorkbook.clear();
    this.inflightSession.clear();
    this.maxWorkbook = 0;
    this.maxSession = 0;
    this.closesAfterClosed = 0;
    this.seq = 0;
    this.behaviour = this.initialBehaviour();
    this.random = randomFor(this.behaviour.latencyMs);
    for (const res of this.hung) res.destroy();
    this.hung.clear();
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    return this.server.close();
  }

  // ---------------------------------------------------------------------------------------------

  private createSession(tenantId: string, userId: string, workbookKey: string, persistChanges: boolean): Session {
    const scopeKey = `${tenantId}|${workbookKey}`;
    const session: Session = {
      id: newSessionId(),
      tenantId,
      userId: userId.toLowerCase(),
      scopeKey,
      workbookKey,
      persistChanges,
      state: "open",
      lastActivity: Date.now(),
    };
    this.sessions.set(session.id, session);
    this.workbooks.add(scopeKey);
    return session;
  }

  private stateOf(session: Session): "open" | "closed" | "expired" {
    if (session.state === "open") {
      const idle = session.persistChanges ? this.behaviour.idleMs.persistent : this.behaviour.idleMs.nonPersistent;
      if (Date.now() - session.lastActivity >= idle) session.state = "expired";
    }
    return session.state;
  }

  private authenticate(req: IncomingMessage): AuthInfo {
    const header = req.headers.authorization;
    if (!header) return { kind: "none" };
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) return { kind: "invalid", reason: "malformed: not a Bearer token" };
    const verified = this.options.authority.verifyGraphToken(match[1]!);
    if (!verified.ok) return { kind: "invalid", reason: verified.reason };
    const { claims } = verified;
    const isApp = claims.scp === undefined && (claims.roles?.length ?? 0) > 0;
    return { kind: isApp ? "app" : "delegated", claims };
  }

  private delay(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private findFault(record: RecordedRequest): ActiveFault | undefined {
    for (const f of this.faults) {
      const r = f.rule;
      if (f.remaining <= 0) continue;
      if (r.sessionId !== undefined && r.sessionId !== record.sessionId) continue;
      if (r.tenantId !== undefined && r.tenantId !== record.tenantId) continue;
      if (r.userId !== undefined && r.userId.toLowerCase() !== record.userId?.toLowerCase()) continue;
      if (r.kind !== undefined && r.kind !== record.kind) continue;
      if (f.matchWorkbook && !f.matchWorkbook(record.workbookKey)) continue;
      f.remaining -= 1;
      if (f.remaining <= 0) this.faults = this.faults.filter((x) => x !== f);
      return f;
    }
    return undefined;
  }

  /**
   * Excel's two sliding windows, per app per tenant and per app across tenants, counted at arrival.
   * A request is counted in both or in neither: one refused by either never ran, so it must not use
   * up the other's room.
   */
  private overBudget(target: WorkbookTarget, now: number): { fault: "budget" | "appBudget"; retryAfter: number } | undefined {
    const windowOf = (windows: Map<string, number[]>, key: string | undefined): number[] | undefined => {
      if (key === undefined) return undefined;
      let window = windows.get(key);
      if (!window) windows.set(key, (window = []));
      return window;
    };
    const { tenantBudget, appBudget } = this.behaviour;
    const tenantWindow = tenantBudget ? windowOf(this.tenantWindows, target.tenantId) : undefined;
    const appWindow = appBudget ? windowOf(this.appWindows, target.appId) : undefined;
    const tenantWait = tenantWindow && tenantBudget ? retryAfterIn(tenantWindow, tenantBudget, now) : undefined;
    const appWait = appWindow && appBudget ? retryAfterIn(appWindow, appBudget, now) : undefined;
    if (tenantWait === undefined && appWait === undefined) {
      tenantWindow?.push(now);
      appWindow?.push(now);
      return undefined;
    }
    // When both are full, the earliest the request could pass is when both have room.
    return { fault: tenantWait !== undefined ? "budget" : "appBudget", retryAfter: Math.max(tenantWait ?? 0, appWait ?? 0) };
  }

  /**
   * One request, in the order a real front door decides (see the file's comment): route it,
   * authenticate it, record it, then answer from the first stage that decides: a fault rule, Excel's
   * budgets, authentication and authorization, the workbook action.
   */
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const startedAt = Date.now();
    const generation = this.generation;
    const requestId = randomUUID();
    // Drawn for every request, faulted or not, so a fault rule does not shift later draws.
    const latencyMs = drawLatency(this.behaviour.latencyMs, this.random);
    const route = routeOf(req);
    const auth = this.authenticate(req);
    const target = targetOf(route, auth);
    const record = this.recordRequest(route, auth, target, requestId, startedAt, latencyMs);
    this.trackInFlight(res, record, target.scopeKey, route.sessionId, generation);
    this.countCloseAfterClosed(route, startedAt);
    const answer = new GraphAnswer(res, record, requestId, req.headers["client-request-id"]?.toString() || requestId);

    if (await this.applyFault(req, res, record, answer, latencyMs)) return;
    if (await this.applyBudget(req, record, answer, target, startedAt, latencyMs)) return;

    const body = await this.drain(req);
    await this.delay(latencyMs);
    if (res.destroyed) return;

    const authorization = authorize(route, auth, target);
    if (!authorization.ok) return answer.reply(authorization.refusal);
    answer.reply(this.workbookAction(authorization.operation, body, record));
  }

  private recordRequest(route: GraphRoute, auth: AuthInfo, target: WorkbookTarget, requestId: string, startedAt: number, latencyMs: number): RecordedRequest {
    const { workbookKey, tenantId, userId, appId } = target;
    const { sessionId, operationId } = route;
    const record: RecordedRequest = {
      seq: ++this.seq,
      method: route.method,
      path: route.rawPath,
      kind: route.kind,
      ...(workbookKey !== undefined ? { workbookKey } : {}),
      ...(sessionId !== undefined ? { sessionId } : {}),
      ...(route.respondAsync ? { respondAsync: true as const } : {}),
      ...(operationId !== undefined ? { operationId } : {}),
      ...(tenantId !== undefined ? { tenantId } : {}),
      ...(userId !== undefined ? { userId } : {}),
      ...(appId !== undefined ? { appId } : {}),
      tokenKind: auth.kind,
      status: 0,
      requestId,
      startedAt,
      latencyMs,
    };
    this.requests.push(record);
    return record;
  }

  /** Concurrency accounting: from arrival until the answer is handed over or the connection ends. */
  private trackInFlight(res: ServerResponse, record: RecordedRequest, scopeKey: string | undefined, sessionId: string | undefined, generation: number): void {
    const bump = (map: Map<string, number>, key: string | undefined, delta: number): number => {
      if (key === undefined) return 0;
      const n = (map.get(key) ?? 0) + delta;
      if (n <= 0) map.delete(key);
      else map.set(key, n);
      return n;
    };
    this.maxWorkbook = Math.max(this.maxWorkbook, bump(this.inflightWorkbook, scopeKey, 1));
    this.maxSession = Math.max(this.maxSession, bump(this.inflightSession, sessionId, 1));
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      record.endedAt = Date.now();
      this.hung.delete(res);
      if (generation !== this.generation) return;
      bump(this.inflightWorkbook, scopeKey, -1);
      bump(this.inflightSession, sessionId, -1);
    };
    // Done when the answer is handed over, not at 'finish' (which can fire after the client already
    // has the answer and sent its next request: an overlap that never was).
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    res.end = ((...args: unknown[]) => {
      finish();
      return end(...args);
    }) as typeof res.end;
    res.on("close", finish);
  }

  private countCloseAfterClosed(route: GraphRoute, startedAt: number): void {
    if (route.kind !== "closeSession" || route.sessionId === undefined) return;
    const s = this.sessions.get(route.sessionId);
    if (s?.closedAnsweredAt !== undefined && s.closedAnsweredAt <= startedAt) this.closesAfterClosed++;
  }

  /** Stage 1: a fault rule that matches answers instead of the emulator. True when it did. */
  private async applyFault(req: IncomingMessage, res: ServerResponse, record: RecordedRequest, answer: GraphAnswer, latencyMs: number): Promise<boolean> {
    const fault = this.findFault(record);
    if (!fault) return false;
    const action = fault.rule.action;
    if (action === "reset") {
      record.fault = "reset";
      req.socket.destroy();
      return true;
    }
    if (action === "hang") {
      record.fault = "hang";
      this.hung.add(res);
      req.resume();
      return true;
    }
    record.fault = "status";
    await this.drain(req);
    await this.delay(latencyMs);
    const headers = { ...(action.headers ?? {}) };
    const hasContentType = Object.keys(headers).some((h) => h.toLowerCase() === "content-type");
    let body: string | undefined;
    if (typeof action.body === "string") body = action.body;
    else if (action.body !== undefined) {
      body = JSON.stringify(action.body);
      if (!hasContentType) headers["content-type"] = GRAPH_JSON;
    } else if (action.status >= 400) {
      const d = DEFAULT_ERRORS[action.status] ?? { code: "generalException", message: "An error occurred." };
      answer.reply({ status: action.status, code: d.code, message: d.message, headers });
      return true;
    }
    answer.reply({ status: action.status, headers, ...(body !== undefined ? { body } : {}) });
    return true;
  }

  /** Stage 2: Excel's budgets (per app per tenant, per app). True when it answered 429. */
  private async applyBudget(req: IncomingMessage, record: RecordedRequest, answer: GraphAnswer, target: WorkbookTarget, startedAt: number, latencyMs: number): Promise<boolean> {
    const over = this.overBudget(target, startedAt);
    if (over === undefined) return false;
    const { fault, retryAfter } = over;
    record.fault = fault;
    await this.drain(req);
    await this.delay(latencyMs);
    answer.reply({
      status: 429,
      code: "tooManyRequests",
      message: "The app or user has been throttled.",
      innerCode: "tooManyRequestsUncategorized",
      headers: { "retry-after": String(retryAfter) },
    });
    return true;
  }

  /** Stage 4: the session semantics of an authorized request: createSession (201 or 202),
   *  refreshSession, closeSession, and the long-running createSession's operation and result. */
  private workbookAction(operation: SessionOperation, body: string, record: RecordedRequest): GraphReply {
    const { claims, workbookKey, scopeKey, sessionId } = operation;
    if (operation.kind === "createSession") {
      const persistChanges = persistChangesOf(body);
      if (typeof persistChanges !== "boolean") return persistChanges;
      const async = this.behaviour.createSessionAsync;
      if (operation.respondAsync && async) return this.startOperation(operation, persistChanges, async, record);
      const session = this.createSession(claims.tid, claims.oid, workbookKey, persistChanges);
      return this.sessionInfoReply(201, session.id, session.persistChanges);
    }
    if (operation.kind === "sessionOperation" || operation.kind === "sessionInfoResource") {
      const op = this.operations.get((operation.operationId ?? "").toLowerCase());
      if (!op || op.scopeKey !== scopeKey || (operation.kind === "sessionInfoResource" && op.status !== "succeeded")) {
        return { status: 404, code: "itemNotFound", message: "The resource could not be found." };
      }
      if (op.userId !== claims.oid.toLowerCase()) {
        return {
          status: 403,
          code: "accessDenied",
          message: "The session specified in the request is invalid due to an authentication error.",
          innerCode: "invalidSessionAuthentication",
        };
      }
      if (operation.kind === "sessionInfoResource") return this.sessionInfoReply(200, op.sessionId!, op.persistChanges);
      return this.pollOperation(op);
    }

    if (sessionId === undefined || sessionId.length === 0) {
      return {
        status: 400,
        code: "invalidRequest",
        message: "The request is malformed or incorrect: the workbook-session-id header is required.",
        innerCode: "badRequestUncategorized",
      };
    }
    if (!this.workbooks.has(scopeKey)) return { status: 404, code: "itemNotFound", message: "The resource could not be found." };
    const session = this.sessions.get(sessionId);
    if (!session || session.scopeKey !== scopeKey || this.stateOf(session) !== "open") {
      return {
        status: 404,
        code: "notFound",
        message: "The session specified in the request does not exist or is invalid due to a transient error.",
        innerCode: "invalidSessionReCreatable",
      };
    }
    if (session.userId !== claims.oid.toLowerCase()) {
      return {
        status: 403,
        code: "accessDenied",
        message: "The session specified in the request is invalid due to an authentication error.",
        innerCode: "invalidSessionAuthentication",
      };
    }
    if (operation.kind === "refreshSession") {
      session.lastActivity = Date.now();
      return { status: 204, headers: {} };
    }
    session.state = "closed";
    session.closedAnsweredAt = Date.now();
    return { status: 204, headers: {} };
  }

  private sessionInfoReply(status: number, id: string, persistChanges: boolean): GraphSuccessReply {
    return {
      status,
      headers: { "content-type": GRAPH_JSON },
      body: JSON.stringify({ "@odata.context": `${this.baseUrl}/$metadata#microsoft.graph.workbookSessionInfo`, id, persistChanges }),
    };
  }

  /** 202 Accepted with the operation's URL in `Location`; the session opens when a poll finds it done. */
  private startOperation(operation: SessionOperation, persistChanges: boolean, async: CreateSessionAsync, record: RecordedRequest): GraphReply {
    const { claims } = operation;
    const pollsUntilDone = async.pollsUntilDone ?? 2;
    const op: WorkbookOperation = {
      id: randomUUID(),
      tenantId: claims.tid,
      userId: claims.oid.toLowerCase(),
      scopeKey: operation.scopeKey,
      workbookKey: operation.workbookKey,
      workbookPath: operation.workbookPath,
      persistChanges,
      plan: {
        pollsUntilDone,
        notStartedPolls: Math.min(async.notStartedPolls ?? 0, pollsUntilDone),
        outcome: async.outcome ?? "succeeded",
        error: async.error ?? DEFAULT_OPERATION_ERROR,
      },
      polls: 0,
      status: "notStarted",
    };
    this.operations.set(op.id, op);
    record.operationId = op.id;
    const location = `${this.originValue}${op.workbookPath}/operations/${op.id}`;
    if (async.emptyAcceptedBody) return { status: 202, headers: { location } };
    return { status: 202, headers: { location, "content-type": GRAPH_JSON }, body: "{}" };
  }

  /** One poll: not done for the plan's number of polls, then done for good. */
  private pollOperation(op: WorkbookOperation): GraphReply {
    if (op.status !== "succeeded" && op.status !== "failed") {
      op.polls++;
      if (op.polls <= op.plan.pollsUntilDone) op.status = op.polls <= op.plan.notStartedPolls ? "notStarted" : "running";
      else if (op.plan.outcome === "failed") op.status = "failed";
      else {
        op.sessionId = this.createSession(op.tenantId, op.userId, op.workbookKey, op.persistChanges).id;
        op.status = "succeeded";
      }
    }
    const answer: Record<string, unknown> = { id: op.id, status: op.status };
    if (op.status === "succeeded") {
      // As in the v1.0 reference's example: the key is the operation id, the session id rides along in base64.
      const encoded = Buffer.from(op.sessionId!, "utf8").toString("base64");
      answer.resourceLocation = `${this.originValue}${op.workbookPath}/sessionInfoResource(key='${op.id}')?sessionId=${encoded}`;
    }
    if (op.status === "failed") answer.error = op.plan.error;
    return { status: 200, headers: { "content-type": GRAPH_JSON }, body: JSON.stringify(answer) };
  }

  private drain(req: IncomingMessage): Promise<string> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size <= 1024 * 1024) chunks.push(c);
      });
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", () => resolve(""));
      req.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
    });
  }
}
