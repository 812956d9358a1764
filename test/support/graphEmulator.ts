/**
 * A local Microsoft Graph emulator for Excel workbook sessions, over real HTTPS on 127.0.0.1, so the
 * real `@microsoft/microsoft-graph-client` (with `customHosts: ["127.0.0.1"]`) talks to it unchanged.
 *
 * Routes (after `/v1.0`), each followed by `/workbook/createSession|refreshSession|closeSession` (POST):
 *   /me/drive/items/{item}   /users/{user}/drive/items/{item}   /drives/{drive}/items/{item}
 *   /sites/{site}/drive/items/{item}
 * `/me/...` and `/users/{token's oid}/...` are the same drive. Other drive addressings of one file (a
 * user's drive id under /drives/...) are NOT aliased: each form names its own workbook key.
 *
 * Order of decisions for one request (as a real front door would): fault rules, then the per-tenant
 * budget (429), then latency, then authentication (401), authorization (403), method (405), the
 * session semantics. What it answers, and why:
 *   - No/invalid/expired bearer token: 401 `InvalidAuthenticationToken` (Graph's code for this).
 *   - App-only token (roles, no scp): 403 `accessDenied` — workbook APIs document application
 *     permissions as not supported. A delegated token without Files.ReadWrite(.All): 403 `accessDenied`.
 *   - `/users/{other}/...` for another user than the token's: 403 `accessDenied`.
 *   - Path addressing (`/drive/root:/path:/workbook/...`): 403 `accessDenied` "Could not obtain a WAC
 *     access token." (reported for real Graph; item ids work).
 *   - A route not listed above (including `$batch`): 400 `invalidRequest`. A known route with a method
 *     other than POST: 405 `methodNotAllowed`.
 *   - createSession on any item: 201 `{id, persistChanges}` (the item is taken to exist). A missing
 *     `persistChanges` means `true` (Graph does not document a default). `Prefer: respond-async` is
 *     not emulated.
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

export type RequestKind = "createSession" | "refreshSession" | "closeSession" | "other";
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
  /** From a valid token only. */
  tenantId?: string;
  userId?: string;
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
  /** Why the answer was not the emulator's own: a fault rule or the tenant budget. */
  fault?: "status" | "reset" | "hang" | "budget";
}

export interface EmulatorBehaviour {
  latencyMs: number;
  idleMs: { persistent: number; nonPersistent: number };
  /** Excel's limit is 1,500 requests per 10 s per app per tenant. null: no limit. */
  tenantBudget: { requests: number; windowMs: number } | null;
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
  latencyMs?: number;
  idleMs?: { persistent: number; nonPersistent: number };
  tenantBudget?: { requests: number; windowMs: number } | null;
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

export async function startGraphEmulator(options: GraphEmulatorOptions): Promise<GraphEmulator> {
  const emulator = new GraphEmulatorImpl(options);
  await emulator.listen();
  return emulator;
}

class GraphEmulatorImpl implements GraphEmulator {
  readonly requests: RecordedRequest[] = [];
  private behaviour: EmulatorBehaviour;
  private readonly sessions = new Map<string, Session>();
  /** Tenant-scoped workbook keys on which a session was ever opened. */
  private readonly workbooks = new Set<string>();
  private faults: ActiveFault[] = [];
  private readonly budgetWindows = new Map<string, number[]>();
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
    this.server = new LocalHttpsServer(options.certificate, (req, res) => this.handle(req, res));
  }

  private initialBehaviour(): EmulatorBehaviour {
    return {
      latencyMs: this.options.latencyMs ?? 0,
      idleMs: { ...(this.options.idleMs ?? DEFAULT_IDLE) },
      tenantBudget: this.options.tenantBudget ?? null,
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
    this.behaviour = {
      latencyMs: b.latencyMs ?? this.behaviour.latencyMs,
      idleMs: b.idleMs ? { ...b.idleMs } : this.behaviour.idleMs,
      tenantBudget: b.tenantBudget !== undefined ? b.tenantBudget : this.behaviour.tenantBudget,
    };
    if (b.tenantBudget !== undefined) this.budgetWindows.clear();
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
        const times = records.filter((r) => r.tenantId === tenantId).map((r) => r.startedAt).sort((a, b) => a - b);
        let best = 0;
        let lo = 0;
        for (let hi = 0; hi < times.length; hi++) {
          while (times[hi]! - times[lo]! >= windowMs) lo++;
          best = Math.max(best, hi - lo + 1);
        }
        return best;
      },
    };
  }

  reset(): void {
    this.generation++;
    this.requests.length = 0;
    this.sessions.clear();
    this.workbooks.clear();
    this.faults = [];
    this.budgetWindows.clear();
    this.inflightWorkbook.clear();
    this.inflightSession.clear();
    this.maxWorkbook = 0;
    this.maxSession = 0;
    this.closesAfterClosed = 0;
    this.seq = 0;
    this.behaviour = this.initialBehaviour();
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

  /** Sliding-window budget per tenant; returns the Retry-After seconds when over budget. */
  private overBudget(tenantId: string | undefined, now: number): number | undefined {
    const budget = this.behaviour.tenantBudget;
    if (!budget || tenantId === undefined) return undefined;
    let window = this.budgetWindows.get(tenantId);
    if (!window) this.budgetWindows.set(tenantId, (window = []));
    while (window.length > 0 && window[0]! <= now - budget.windowMs) window.shift();
    if (window.length >= budget.requests) {
      return Math.max(1, Math.ceil((window[0]! + budget.windowMs - now) / 1000));
    }
    window.push(now);
    return undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const startedAt = Date.now();
    const generation = this.generation;
    const rawPath = req.url ?? "/";
    const method = req.method ?? "GET";
    const requestId = randomUUID();
    const clientRequestId = req.headers["client-request-id"]?.toString() || requestId;
    const pathname = rawPath.split("?")[0] ?? "/";
    const segments = splitPath(pathname);
    const auth = this.authenticate(req);
    const userId = auth.claims?.oid;

    let kind: RequestKind = "other";
    let ref: WorkbookRef | undefined;
    let pathAddressed = false;
    if (segments && segments[0]?.toLowerCase() === "v1.0") {
      const rest = segments.slice(1);
      ref = parseWorkbookRef(rest);
      const op = ref && ref.rest.length === 2 && ref.rest[0]!.toLowerCase() === "workbook" ? ref.rest[1]!.toLowerCase() : undefined;
      if (op === "createsession") kind = "createSession";
      else if (op === "refreshsession") kind = "refreshSession";
      else if (op === "closesession") kind = "closeSession";
      else ref = undefined;
      pathAddressed = kind === "other" && /\/root:/i.test(pathname) && /\/workbook(\/|$)/i.test(pathname);
    }
    const sessionHeader = req.headers["workbook-session-id"];
    const sessionId = Array.isArray(sessionHeader) ? sessionHeader[0] : sessionHeader;
    const workbookKey = ref ? workbookKeyOf(ref, userId) : undefined;
    const tenantId = auth.claims?.tid;
    const scopeKey = workbookKey !== undefined ? `${tenantId ?? "?"}|${workbookKey}` : undefined;

    const record: RecordedRequest = {
      seq: ++this.seq,
      method,
      path: rawPath,
      kind,
      ...(workbookKey !== undefined ? { workbookKey } : {}),
      ...(sessionId !== undefined ? { sessionId } : {}),
      ...(tenantId !== undefined ? { tenantId } : {}),
      ...(userId !== undefined ? { userId } : {}),
      tokenKind: auth.kind,
      status: 0,
      requestId,
      startedAt,
    };
    this.requests.push(record);

    // Concurrency accounting: from arrival until the answer is sent or the connection ends.
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
    res.on("finish", finish);
    res.on("close", finish);

    if (kind === "closeSession" && sessionId !== undefined) {
      const s = this.sessions.get(sessionId);
      if (s?.closedAnsweredAt !== undefined && s.closedAnsweredAt <= startedAt) this.closesAfterClosed++;
    }

    const baseHeaders: Record<string, string> = {
      "request-id": requestId,
      "client-request-id": clientRequestId,
      "x-ms-ags-diagnostic": JSON.stringify({ ServerInfo: { DataCenter: "Local", Slice: "E", Ring: "0", ScaleUnit: "000", RoleInstance: "EMULATOR" } }),
      "strict-transport-security": "max-age=31536000",
      "cache-control": "no-store",
    };
    const sendError = (status: number, code: string, message: string, innerCode?: string, extra: Record<string, string> = {}) => {
      record.errorCode = code;
      if (innerCode !== undefined) record.innerErrorCode = innerCode;
      const innerError: Record<string, string> = {};
      if (innerCode !== undefined) innerError.code = innerCode;
      innerError.date = graphDate();
      innerError["request-id"] = requestId;
      innerError["client-request-id"] = clientRequestId;
      send(status, { ...extra, "content-type": GRAPH_JSON }, JSON.stringify({ error: { code, message, innerError } }));
    };
    const send = (status: number, headers: Record<string, string>, body?: string) => {
      if (res.destroyed || res.writableEnded) return;
      record.status = status;
      const all: Record<string, string | number> = { ...baseHeaders, ...headers };
      if (body !== undefined) all["content-length"] = Buffer.byteLength(body);
      else if (status !== 204 && status !== 304) all["content-length"] = 0;
      res.writeHead(status, all);
      res.end(body);
    };

    // 1. Fault rules.
    const fault = this.findFault(record);
    if (fault) {
      const action = fault.rule.action;
      if (action === "reset") {
        record.fault = "reset";
        req.socket.destroy();
        return;
      }
      if (action === "hang") {
        record.fault = "hang";
        this.hung.add(res);
        req.resume();
        return;
      }
      record.fault = "status";
      await this.drain(req);
      await this.delay(this.behaviour.latencyMs);
      const headers = { ...(action.headers ?? {}) };
      const hasContentType = Object.keys(headers).some((h) => h.toLowerCase() === "content-type");
      let body: string | undefined;
      if (typeof action.body === "string") body = action.body;
      else if (action.body !== undefined) {
        body = JSON.stringify(action.body);
        if (!hasContentType) headers["content-type"] = GRAPH_JSON;
      } else if (action.status >= 400) {
        const d = DEFAULT_ERRORS[action.status] ?? { code: "generalException", message: "An error occurred." };
        return sendError(action.status, d.code, d.message, undefined, headers);
      }
      return send(action.status, headers, body);
    }

    // 2. Per-tenant budget (Excel: per app per tenant).
    const retryAfter = this.overBudget(tenantId, startedAt);
    if (retryAfter !== undefined) {
      record.fault = "budget";
      await this.drain(req);
      await this.delay(this.behaviour.latencyMs);
      return sendError(429, "tooManyRequests", "The app or user has been throttled.", "tooManyRequestsUncategorized", {
        "retry-after": String(retryAfter),
      });
    }

    const body = await this.drain(req);
    await this.delay(this.behaviour.latencyMs);
    if (res.destroyed) return;

    // 3. Authentication and authorization.
    if (auth.kind === "none") return sendError(401, "InvalidAuthenticationToken", "Access token is empty.");
    if (auth.kind === "invalid") {
      const reason = auth.reason ?? "";
      const message = reason.startsWith("expired")
        ? "Access token has expired or is not yet valid."
        : reason.startsWith("malformed")
          ? "IDX14100: JWT is not well formed."
          : "Access token validation failure. Invalid audience or signature.";
      return sendError(401, "InvalidAuthenticationToken", message);
    }
    const claims = auth.claims!;
    if (auth.kind === "app") {
      return sendError(403, "accessDenied", "Application permissions are not supported for this API. Use a delegated token.");
    }
    const scopes = (claims.scp ?? "").split(" ").map((s) => s.toLowerCase());
    if (!scopes.some((s) => FILE_SCOPES.has(s))) {
      return sendError(403, "accessDenied", "The caller doesn't have permission to perform the action. Files.ReadWrite is required.");
    }
    if (pathAddressed) return sendError(403, "accessDenied", "Could not obtain a WAC access token.");
    if (kind === "other" || !ref || workbookKey === undefined || scopeKey === undefined) {
      const segment = segments?.[segments.length - 1] ?? pathname;
      return sendError(400, "invalidRequest", `Invalid request: resource not found for the segment '${segment}'.`);
    }
    if (ref.form === "users" && ref.owner !== claims.oid.toLowerCase()) {
      return sendError(403, "accessDenied", "Access denied. The caller cannot access another user's drive.");
    }
    if (method !== "POST") return sendError(405, "methodNotAllowed", "The HTTP method in the request is not allowed on the resource.");

    // 4. Session semantics.
    if (kind === "createSession") {
      let persistChanges = true;
      if (body.trim().length > 0) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(body);
        } catch {
          return sendError(400, "invalidRequest", "The request body is not valid JSON.", "badRequestUncategorized");
        }
        const value = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>).persistChanges : undefined;
        if (value !== undefined && typeof value !== "boolean") {
          return sendError(400, "invalidRequest", "persistChanges must be a boolean.", "badRequestUncategorized");
        }
        if (typeof value === "boolean") persistChanges = value;
      }
      const session = this.createSession(claims.tid, claims.oid, workbookKey, persistChanges);
      return send(
        201,
        { "content-type": GRAPH_JSON },
        JSON.stringify({
          "@odata.context": `${this.baseUrl}/$metadata#microsoft.graph.workbookSessionInfo`,
          id: session.id,
          persistChanges: session.persistChanges,
        }),
      );
    }

    if (sessionId === undefined || sessionId.length === 0) {
      return sendError(400, "invalidRequest", "The request is malformed or incorrect: the workbook-session-id header is required.", "badRequestUncategorized");
    }
    if (!this.workbooks.has(scopeKey)) return sendError(404, "itemNotFound", "The resource could not be found.");
    const session = this.sessions.get(sessionId);
    if (!session || session.scopeKey !== scopeKey || this.stateOf(session) !== "open") {
      return sendError(
        404,
        "notFound",
        "The session specified in the request does not exist or is invalid due to a transient error.",
        "invalidSessionReCreatable",
      );
    }
    if (session.userId !== claims.oid.toLowerCase()) {
      return sendError(
        403,
        "accessDenied",
        "The session specified in the request is invalid due to an authentication error.",
        "invalidSessionAuthentication",
      );
    }
    if (kind === "refreshSession") {
      session.lastActivity = Date.now();
      return send(204, {});
    }
    session.state = "closed";
    session.closedAnsweredAt = Date.now();
    send(204, {});
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
