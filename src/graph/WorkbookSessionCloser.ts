import { AuthenticationHandler, AuthenticationHandlerOptions, Client, GraphError, ResponseType, TelemetryHandler, type AuthenticationProvider } from "@microsoft/microsoft-graph-client";
import { TokenCredentialAuthenticationProvider } from "@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials";
import type { TokenCredential } from "@azure/identity";
import type { WorkbookLocation } from "../core/workbookLocation";
import { backoffMs, type CloseAttempt, type CloseOutcome } from "../core/closeOutcome";
import { checkSessionIdHeader, closeSessionPath, graphRoot, UnsafeRequestError, type GraphRoot } from "./closeSessionUrl";
import { outcomeForResponse } from "./graphErrors";
import { parseGraphErrorBody } from "../core/graphAnswer";
import { CoreHttpMessageHandler } from "./CoreHttpMessageHandler";
import { TimedHttpsAgent } from "./TimedHttpsAgent";
import { Codes } from "../core/codes";

/**
 * What a failure to get the user's token (thrown by the credential inside the Graph client's
 * authentication step) means for the attempt. The token belongs to auth/, which knows the
 * authority's codes; the closer only tells such a failure apart from Graph's own answers.
 */
export type CredentialErrorOutcome = (error: unknown, context: { now: Date; retryAfterMs: number }) => Exclude<CloseOutcome, { kind: "closed" }>;

export interface WorkbookSessionCloserOptions {
  /** Graph's service root, e.g. `https://graph.microsoft.com/v1.0` (GRAPH_BASE_URL). */
  baseUrl: string;
  /** One closeSession call, connection included. @default 30_000 */
  requestTimeoutMs?: number;
  /**
   * The outcome of a token failure raised while sending.
   * @default every such failure is a retry with code `TokenError`
   */
  credentialErrorOutcome?: CredentialErrorOutcome;
  /** @default the system clock */
  clock?: () => Date;
}

export interface CloseRequest {
  workbook: WorkbookLocation;
  sessionId: string;
  /** The session owner's delegated credential (DelegatedCredentials.forRow). */
  credential: TokenCredential;
  /** The delegated scope the credential was asked for. */
  scope: string;
  /** Attempts so far, this one included: paces back-off where Graph gives no Retry-After. */
  attempts: number;
}

/** A request that passed every check: it can only reach `…/workbook/closeSession` under Graph's root. */
export interface CheckedCloseRequest extends CloseRequest {
  readonly path: string;
}

/** A provider for requests that arrive without their user's: it refuses instead of sending anything. */
/** The event loop's delay on the bench's busy 2 cores, p99: what may pass between a send and its connection being opened. */
const SEND_TO_CONNECT_MS = 250;

const NO_USER: AuthenticationProvider = {
  getAccessToken: () => Promise.reject(new Error("No user credential was given for this request.")),
};

/**
 * Sends closeSession for one session and says what came of it. Built on the Graph client with
 * the user's TokenCredentialAuthenticationProvider per request, through a middleware chain of our
 * choosing: authentication, the SDK's telemetry headers, and `CoreHttpMessageHandler` to send.
 * The SDK's RetryHandler is left out: it would sleep inside the call (up to 180 s per
 * Retry-After), retry an HTTP-date Retry-After early, and send requests the sweep's per-tenant
 * pacer never sees. A cooldown comes back as `retry` with its time instead, and the sweep waits
 * for it. Its RedirectHandler is left out too: closeSession has no reason to redirect, and a
 * redirect is reported as the answer it is rather than followed.
 */
export class WorkbookSessionCloser {
  private readonly client: Client;
  private readonly root: GraphRoot;
  private readonly timeoutMs: number;
  private readonly clock: () => Date;
  private readonly credentialErrorOutcome: CredentialErrorOutcome | undefined;
  private readonly providers = new WeakMap<TokenCredential, Map<string, AuthenticationProvider>>();
  private readonly agent = new TimedHttpsAgent();

  constructor(options: WorkbookSessionCloserOptions) {
    this.root = graphRoot(options.baseUrl);
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.clock = options.clock ?? (() => new Date());
    this.credentialErrorOutcome = options.credentialErrorOutcome;
    this.client = Client.initWithMiddleware({
      middleware: [new AuthenticationHandler(NO_USER), new TelemetryHandler(), new CoreHttpMessageHandler({ timeoutMs: this.timeoutMs, agent: this.agent })],
      baseUrl: this.root.baseUrl,
      defaultVersion: this.root.version,
      // The auth handler attaches tokens only to https URLs of Graph hosts or of these.
      customHosts: new Set([this.root.host]),
    });
  }

  /**
   * Checks a request before anything is sent: a location or session id that would send the
   * request (and the user's token) anywhere but `…/workbook/closeSession` is refused, and the
   * refusal is the attempt's outcome.
   */
  check(request: CloseRequest): { ok: true; request: CheckedCloseRequest } | { ok: false; outcome: Exclude<CloseOutcome, { kind: "closed" }> } {
    try {
      const path = closeSessionPath(this.root, request.workbook);
      checkSessionIdHeader(request.sessionId);
      return { ok: true, request: { ...request, path } };
    } catch (error) {
      if (error instanceof UnsafeRequestError) return { ok: false, outcome: { kind: "failed", code: error.code, message: error.message } };
      throw error;
    }
  }

  /**
   * How much later than sent a request sent `sentAgoMs` ago may have reached Graph: the longest
   * handshake of a connection opened as it was sent (0 on a warm connection). A request opens its
   * connection within a turn of the event loop of its send; SEND_TO_CONNECT_MS allows for a busy one.
   */
  sendDelayMs(sentAgoMs: number): number {
    return this.agent.handshakeDelayMs(sentAgoMs, SEND_TO_CONNECT_MS);
  }

  /** Checks, then sends at once: for callers that do not pace their requests. */
  async close(request: CloseRequest): Promise<CloseAttempt> {
    const checked = this.check(request);
    if (!checked.ok) return { outcome: checked.outcome, sent: false };
    return { outcome: await this.send(checked.request), sent: true };
  }

  /** Sends closeSession for a checked request and says what came of it. */
  async send(request: CheckedCloseRequest): Promise<CloseOutcome> {
    let response: Response;
    try {
      response = await this.client
        .api(request.path)
        .header("workbook-session-id", request.sessionId)
        .responseType(ResponseType.RAW)
        .middlewareOptions([new AuthenticationHandlerOptions(this.providerFor(request))])
        .post(undefined);
    } catch (error) {
      return this.outcomeForThrow(error, request.attempts);
    }

    const requestId = response.headers.get("request-id") ?? undefined;
    if (response.status === 204) {
      await response.body?.cancel();
      return { kind: "closed", status: 204, ...(requestId && { requestId }) };
    }
    const text = await response.text().catch(() => "");
    return outcomeForResponse(
      { status: response.status, retryAfter: response.headers.get("retry-after"), date: response.headers.get("date"), ...(requestId && { requestId }), body: parseGraphErrorBody(text) },
      { now: this.clock(), attempts: request.attempts },
    );
  }

  private providerFor(request: CloseRequest): AuthenticationProvider {
    let byScope = this.providers.get(request.credential);
    if (!byScope) this.providers.set(request.credential, (byScope = new Map()));
    let provider = byScope.get(request.scope);
    if (!provider) byScope.set(request.scope, (provider = new TokenCredentialAuthenticationProvider(request.credential, { scopes: [request.scope] })));
    return provider;
  }

  /** Nothing came back from Graph: a reset, a timeout, or the token could not be had. */
  private outcomeForThrow(error: unknown, attempts: number): CloseOutcome {
    const now = this.clock();
    const retryAt = new Date(now.getTime() + backoffMs(attempts));
    const name = error instanceof GraphError ? error.code : error instanceof Error ? error.name : "";
    const message = error instanceof Error ? error.message : String(error);
    if (name === "TimeoutError" || name === "AbortError") {
      return { kind: "retry", retryAt, cooldown: false, code: Codes.GraphRequestTimeout, message: `closeSession did not answer within ${this.timeoutMs} ms.` };
    }
    if (/AADSTS|AuthenticationRequired|CredentialUnavailable/.test(`${name} ${message}`)) {
      if (this.credentialErrorOutcome) return this.credentialErrorOutcome(error, { now, retryAfterMs: backoffMs(attempts) });
      return { kind: "retry", retryAt, cooldown: false, code: Codes.TokenError, message: "The user's token could not be had." };
    }
    return { kind: "retry", retryAt, cooldown: false, code: Codes.NetworkError, message: "The connection to Graph failed before an answer." };
  }
}
