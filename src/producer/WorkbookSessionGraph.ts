import type { TokenCredential } from "@azure/core-auth";
import { Codes } from "../core/codes";
import { SweeperError } from "../core/errors";
import { COOLDOWN_STATUSES, parseGraphErrorBody, retryAfterTime } from "../core/graphAnswer";
import { isSessionIdHeaderValue } from "../core/session";
import { parseWorkbookLocation, workbookItemPath } from "../core/workbookLocation";

/**
 * The user's delegated access to Graph, as the producing service holds it: a TokenCredential
 * (its on-behalf-of credential for the user) or a function that returns the user's access token.
 */
export type UserTokenSource = TokenCredential | (() => Promise<string>);

export interface WorkbookSessionGraphOptions {
  /** The user's delegated token, for Graph. */
  token: UserTokenSource;
  /** Graph's service root. @default "https://graph.microsoft.com/v1.0" */
  baseUrl?: string;
  /** The scope asked of a TokenCredential. @default "<Graph's origin>/Files.ReadWrite" */
  scope?: string;
  /** One Graph request, its answer included. @default 30_000 */
  requestTimeoutMs?: number;
  /** The longest a long-running createSession is polled for. @default 60_000 */
  createSessionTimeoutMs?: number;
  /** createSession's tries when Graph answers 429, 503 or 504 (Excel's busy answers). @default 3 */
  createSessionAttempts?: number;
}

/** Graph's answer to a workbook request that did not go as asked; `status` 0 when none came. */
export class WorkbookRequestError extends SweeperError {
  readonly code: string = Codes.WorkbookRequestFailed;
  /** Graph's Retry-After, when it gave one (seconds or an HTTP date, at most MAX_RETRY_AFTER_MS). */
  retryAfterMs?: number;
  constructor(
    message: string,
    readonly status: number,
    readonly graphCode?: string,
    readonly requestId?: string,
  ) {
    super(message);
  }
}

/** createSession did not give a session: its status, Graph's code and request-id say why. */
export class WorkbookSessionCreateError extends WorkbookRequestError {
  override readonly code = Codes.WorkbookSessionNotCreated;
}

const DEFAULT_BASE_URL = "https://graph.microsoft.com/v1.0";
/** Graph asks to poll a long-running operation; without a Retry-After, once a second. */
const DEFAULT_POLL_MS = 1_000;

/**
 * createSession, refreshSession and closeSession for one workbook with the user's delegated token,
 * and requests in a session. Every URL is built from a validated location under Graph's root, and
 * a URL Graph hands back (an operation to poll, its result) is followed only on that root, so the
 * user's token goes nowhere else.
 */
export class WorkbookSessionGraph {
  private readonly root: URL;
  private readonly workbookUrl: string;
  private readonly scope: string;
  private readonly timeoutMs: number;
  private readonly createTimeoutMs: number;

  constructor(
    workbook: string,
    private readonly options: WorkbookSessionGraphOptions,
  ) {
    const baseUrl = (options.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.root = new URL(`${baseUrl}/`);
    if (this.root.protocol !== "https:") throw new RangeError(`Graph's base URL must be https (got ${this.root.protocol}).`);
    this.workbookUrl = `${baseUrl}${workbookItemPath(parseWorkbookLocation(workbook))}/workbook`;
    this.scope = options.scope ?? `${this.root.origin}/Files.ReadWrite`;
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.createTimeoutMs = options.createSessionTimeoutMs ?? 60_000;
  }

  /**
   * Opens a session. Asks for Graph's long-running form (`Prefer: respond-async`): a 201 carries the
   * session; a 202 names an operation to poll until it succeeds, and its resource is the session.
   */
  async createSession(persistChanges: boolean, signal?: AbortSignal): Promise<string> {
    const attempts = this.options.createSessionAttempts ?? 3;
    for (let attempt = 1; ; attempt++) {
      let error: WorkbookRequestError;
      let wait: number | undefined;
      try {
        return await this.createSessionOnce(persistChanges, signal);
      } catch (caught) {
        // Only Graph's busy answers: a request that got no answer may have opened a session, and
        // another try would open a second one, recorded by nobody.
        if (!(caught instanceof WorkbookRequestError) || !COOLDOWN_STATUSES.has(caught.status)) throw caught;
        error = caught;
        wait = caught.retryAfterMs;
      }
      if (attempt >= attempts) throw error;
      // Excel's busy answers (504 MaxRequestDurationExceeded among them) pass; a second or two later it may not be.
      await sleep(wait ?? 1_000 * attempt, signal);
    }
  }

  private async createSessionOnce(persistChanges: boolean, signal?: AbortSignal): Promise<string> {
    const response = await this.send(`${this.workbookUrl}/createSession`, {
      method: "POST",
      headers: { "content-type": "application/json", prefer: "respond-async" },
      body: JSON.stringify({ persistChanges }),
      signal,
    });
    if (response.status === 201 || response.status === 200) return sessionIdOf(await response.json());
    if (response.status !== 202) throw await failure(response, "createSession", WorkbookSessionCreateError);
    const location = this.onGraph(response.headers.get("location"), "createSession's operation");
    const deadline = Date.now() + this.createTimeoutMs;
    for (let wait = retryAfterMs(response) ?? 0; ; ) {
      await sleep(wait, signal);
      const polled = await this.send(location, { method: "GET", signal });
      if (polled.status !== 200) throw await failure(polled, "createSession's operation", WorkbookSessionCreateError);
      const operation = (await polled.json()) as { status?: string; resourceLocation?: string; error?: { code?: string; message?: string } };
      if (operation.status === "succeeded") {
        const resource = await this.send(this.onGraph(operation.resourceLocation ?? null, "createSession's result"), { method: "GET", signal });
        if (resource.status !== 200) throw await failure(resource, "createSession's result", WorkbookSessionCreateError);
        return sessionIdOf(await resource.json());
      }
      if (operation.status === "failed") {
        throw new WorkbookSessionCreateError(`createSession's operation failed (${operation.error?.code ?? "no code"}).`, 200, operation.error?.code);
      }
      if (Date.now() >= deadline) throw new WorkbookSessionCreateError(`createSession's operation was still ${operation.status ?? "unknown"} after ${this.createTimeoutMs} ms.`, 200);
      wait = retryAfterMs(polled) ?? DEFAULT_POLL_MS;
    }
  }

  /** Resets Graph's own idle timer of the session. */
  async refreshSession(sessionId: string, signal?: AbortSignal): Promise<void> {
    const response = await this.request(sessionId, "/refreshSession", { method: "POST", signal });
    if (response.status !== 204 && response.status !== 200) throw await failure(response, "refreshSession", WorkbookRequestError);
  }

  /** Closes the session; only a 204 is proof it closed. */
  async closeSession(sessionId: string, signal?: AbortSignal): Promise<void> {
    const response = await this.request(sessionId, "/closeSession", { method: "POST", signal });
    if (response.status !== 204) throw await failure(response, "closeSession", WorkbookRequestError);
  }

  /** A request under the workbook (`path` after `…/workbook`), in the session. */
  async request(sessionId: string, path: string, init: RequestInit = {}): Promise<Response> {
    if (!isSessionIdHeaderValue(sessionId)) throw new RangeError("The session id is not printable ASCII, so it cannot be a Graph session id; nothing was sent.");
    const url = this.onGraph(`${this.workbookUrl}${path.startsWith("/") ? path : `/${path}`}`, "the request");
    if (!url.startsWith(`${this.workbookUrl}/`)) throw new RangeError(`The path ${JSON.stringify(path)} leaves the workbook.`);
    const headers = new Headers(init.headers);
    headers.set("workbook-session-id", sessionId);
    return this.send(url, { ...init, headers });
  }

  /** An absolute URL on Graph's root (the token is sent nowhere else), or a refusal. */
  private onGraph(url: string | null, what: string): string {
    let parsed: URL;
    try {
      parsed = new URL(url ?? "", this.root);
    } catch {
      throw new WorkbookRequestError(`Graph gave no usable URL for ${what}.`, 0, Codes.UnsafeLocation);
    }
    if (parsed.origin !== this.root.origin || !parsed.pathname.startsWith(this.root.pathname)) {
      throw new WorkbookRequestError(`Graph pointed ${what} away from its own root; not followed.`, 0, Codes.UnsafeLocation);
    }
    return parsed.href;
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await this.token()}`);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    try {
      return await fetch(url, { ...init, headers, signal, redirect: "manual" });
    } catch (error) {
      if (init.signal?.aborted) throw init.signal.reason;
      const name = error instanceof Error ? error.name : "Error";
      throw new WorkbookRequestError(`No answer from Graph (${timeout.aborted ? "timed out" : name}).`, 0, timeout.aborted ? Codes.GraphRequestTimeout : Codes.NetworkError);
    }
  }

  private async token(): Promise<string> {
    const source = this.options.token;
    if (typeof source === "function") return source();
    const token = await source.getToken(this.scope);
    if (!token) throw new WorkbookRequestError("The user's credential gave no token for Graph.", 0, Codes.NoToken);
    return token.token;
  }
}

function sessionIdOf(body: unknown): string {
  const id = (body as { id?: unknown } | null)?.id;
  if (typeof id !== "string" || id.length === 0) throw new WorkbookSessionCreateError("Graph's session info carries no session id.", 200);
  return id;
}

async function failure<E extends WorkbookRequestError>(
  response: Response,
  what: string,
  Kind: new (message: string, status: number, graphCode?: string, requestId?: string) => E,
): Promise<E> {
  const requestId = response.headers.get("request-id") ?? undefined;
  // A body that is not Graph's error JSON gives no code: the status says enough.
  const body = parseGraphErrorBody(await response.text().catch(() => ""));
  const graphCode = body.innerCode ?? body.code;
  const error = new Kind(`Graph answered ${what} with HTTP ${response.status}${graphCode ? ` (${graphCode})` : ""}.`, response.status, graphCode, requestId);
  const retryAfter = retryAfterMs(response);
  if (retryAfter !== undefined) error.retryAfterMs = retryAfter;
  return error;
}

function retryAfterMs(response: Response): number | undefined {
  const now = new Date();
  const at = retryAfterTime(response.headers.get("retry-after"), now, response.headers.get("date"));
  return at && at.getTime() - now.getTime();
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return signal?.aborted ? Promise.reject(signal.reason) : Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
