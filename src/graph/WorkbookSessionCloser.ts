import { AuthenticationHandler, AuthenticationHandlerOptions, Client, GraphError, ResponseType, TelemetryHandler, type AuthenticationProvider } from "@microsoft/microsoft-graph-client";
import { TokenCredentialAuthenticationProvider } from "@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials";
import type { TokenCredential } from "@azure/identity";
import type { WorkbookLocation } from "../ledger/location";
import { classifyAuthorityError } from "../auth/authorityErrors";
import { backoffMs, type CloseAttempt, type CloseOutcome } from "./CloseOutcome";
import { checkSessionIdHeader, closeSessionPath, graphRoot, UnsafeRequestError, type GraphRoot } from "./closeSessionUrl";
import { outcomeForResponse, parseGraphErrorBody } from "./graphErrors";
import { CoreHttpMessageHandler } from "./CoreHttpMessageHandler";

export interface WorkbookSessionCloserOptions {
  /** Graph's service root, e.g. `https://graph.microsoft.com/v1.0` (GRAPH_BASE_URL). */
  baseUrl: string;
  /** One closeSession call, connection included. Default 30 s. */
  requestTimeoutMs?: number;
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
  /**
   * Called right before the request goes out (after every check): the sweep's per-tenant pacer.
   * Resolves to `send: false` with a time when the request must not go out now.
   */
  beforeSend?: () => Promise<{ send: true } | { send: false; retryAt: Date }>;
}

/** A provider for requests that arrive without their user's: it refuses instead of sending anything. */
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
  private readonly providers = new WeakMap<TokenCredential, Map<string, AuthenticationProvider>>();

  constructor(options: WorkbookSessionCloserOptions) {
    this.root = graphRoot(options.baseUrl);
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.clock = options.clock ?? (() => new Date());
    this.client = Client.initWithMiddleware({
      middleware: [new AuthenticationHandler(NO_USER), new TelemetryHandler(), new CoreHttpMessageHandler({ timeoutMs: this.timeoutMs })],
      baseUrl: this.root.baseUrl,
      defaultVersion: this.root.version,
      // The auth handler attaches tokens only to https URLs of Graph hosts or of these.
      customHosts: new Set([this.root.host]),
    });
  }

  async close(request: CloseRequest): Promise<CloseAttempt> {
    let path: string;
    try {
      path = closeSessionPath(this.root, request.workbook);
      checkSessionIdHeader(request.sessionId);
    } catch (error) {
      if (error instanceof UnsafeRequestError) return { outcome: { kind: "failed", code: error.code, message: error.message }, sent: false };
      throw error;
    }

    if (request.beforeSend) {
      const gate = await request.beforeSend();
      if (!gate.send) {
        return {
          outcome: { kind: "retry", retryAt: gate.retryAt, cooldown: false, code: "notSent", message: "Not sent: the tenant's request budget or cooldown outlasted this sweep." },
          sent: false,
        };
      }
    }

    let response: Response;
    try {
      response = await this.client
        .api(path)
        .header("workbook-session-id", request.sessionId)
        .responseType(ResponseType.RAW)
        .middlewareOptions([new AuthenticationHandlerOptions(this.providerFor(request))])
        .post(undefined);
    } catch (error) {
      return { outcome: this.outcomeForThrow(error, request.attempts), sent: true };
    }

    const requestId = response.headers.get("request-id") ?? undefined;
    if (response.status === 204) {
      await response.body?.cancel();
      return { outcome: { kind: "closed", status: 204, ...(requestId && { requestId }) }, sent: true };
    }
    const text = await response.text().catch(() => "");
    const outcome = outcomeForResponse(
      { status: response.status, retryAfter: response.headers.get("retry-after"), ...(requestId && { requestId }), body: parseGraphErrorBody(text) },
      { now: this.clock(), attempts: request.attempts },
    );
    return { outcome, sent: true };
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
      return { kind: "retry", retryAt, cooldown: false, code: "timeout", message: `closeSession did not answer within ${this.timeoutMs} ms.` };
    }
    if (/AADSTS|AuthenticationRequired|CredentialUnavailable/.test(`${name} ${message}`)) {
      return classifyAuthorityError(error, { now, retryAfterMs: backoffMs(attempts) });
    }
    return { kind: "retry", retryAt, cooldown: false, code: "networkError", message: "The connection to Graph failed before an answer." };
  }
}
