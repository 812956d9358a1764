/**
 * The fake Entra ID authority's HTTPS endpoints, and what a test sees and steers of them.
 *
 * What it serves (everything else: 404, recorded in `otherRequests`):
 *   GET  /{tenant}/v2.0/.well-known/openid-configuration   (also /{tenant}/.well-known/openid-configuration)
 *   GET  /{tenant}/discovery/v2.0/keys  and  /common/discovery/keys      (JWKS with the real signing key)
 *   GET  /common/discovery/instance                                     (instance discovery, for completeness)
 *   POST /{tenant}/oauth2/v2.0/token    grant types: jwt-bearer (on-behalf-of) and client_credentials
 *   GET  /msi/token                     the App Service managed-identity endpoint (managedIdentity.ts),
 *                                       recorded in `managedIdentityRequests`
 *
 * Faithfulness notes (Entra's observable behaviour, as documented or widely reported):
 *   - Client authentication errors are `invalid_client` with HTTP 401 (AADSTS7000215 wrong secret,
 *     AADSTS7000218 no credential, AADSTS700027 certificate not registered / bad signature,
 *     AADSTS700024 client assertion expired; for a federated assertion AADSTS700211 / 700213 /
 *     700212 when no federated identity credential has its issuer / subject / audience). A
 *     registration without a secret refuses any secret (AADSTS7000215). An unknown client_id is AADSTS700016
 *     `unauthorized_client`, HTTP 400 (that is what Entra answers, not 7000215).
 *   - Grant errors are `invalid_grant`, HTTP 400: AADSTS500133 expired user assertion, AADSTS50013
 *     assertion signature / audience / tenant mismatch, AADSTS65001 scope not consented,
 *     AADSTS50173 grant revoked, AADSTS700082 refresh token expired by inactivity.
 *   - A Graph permission Graph does not have (`Files.ReadWrite.Everything`) is AADSTS70011
 *     `invalid_scope`, HTTP 400 ("The scope '…' does not exist."), before consent is looked at.
 *   - AADSTS90033 is `temporarily_unavailable`, HTTP 503 ("A transient error has occurred.").
 *   - A request for `https://graph.microsoft.com/.default` is answered with the expanded list of the
 *     client's consented Graph permissions in `scope` (never ".default"), as Entra does; MSAL files the
 *     token under that list, so a later `.default` lookup misses its cache. `scopeAnswer` changes this.
 *   - Error bodies: see errors.ts.
 *
 * No token, assertion or secret is ever logged or recorded.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TestCertificate } from "../certificate";
import { LocalHttpsServer } from "../localHttpsServer";
import {
  authenticateClient,
  clientAuthKind,
  federatedCredential,
  registeredClient,
  type ClientRegistration,
  type FederatedCredential,
  type RegisteredClient,
} from "./clients";
import { AuthorityError, entraErrorAnswer, type ErrorContext } from "./errors";
import {
  MANAGED_IDENTITY_PATH,
  ManagedIdentityEndpoint,
  readManagedIdentityRequest,
  type ManagedIdentity,
  type ManagedIdentityEnvironment,
  type ManagedIdentityRegistration,
  type ManagedIdentityRequestRecord,
} from "./managedIdentity";
import {
  AuthorityTokens,
  b64u,
  decodeJwt,
  GRAPH_APP_ID,
  GRAPH_RESOURCE,
  str,
  TOKEN_EXCHANGE_AUDIENCE,
  type GraphTokenVerification,
  type ParsedJwt,
  type SigningKey,
  type UserAssertionRequest,
} from "./tokens";

const OIDC_SCOPES = new Set(["openid", "profile", "offline_access", "email"]);

/**
 * Delegated permissions Graph has, among those an app closing workbook sessions (or a test) asks
 * for: a name not here is a scope that does not exist (AADSTS70011), whatever was consented.
 */
const GRAPH_PERMISSIONS = new Set(
  [
    "Files.Read",
    "Files.Read.All",
    "Files.ReadWrite",
    "Files.ReadWrite.All",
    "Files.ReadWrite.AppFolder",
    "Files.Read.Selected",
    "Files.ReadWrite.Selected",
    "Sites.Read.All",
    "Sites.ReadWrite.All",
    "Sites.Manage.All",
    "Sites.FullControl.All",
    "Sites.Selected",
    "User.Read",
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite",
    "Mail.Read",
    "Mail.Send",
  ].map((p) => p.toLowerCase()),
);
const GRANT_OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_CLIENT_CREDENTIALS = "client_credentials";

export interface TokenRequestRecord {
  /** Order of arrival, from 1 (restarts at reset()). */
  seq: number;
  /** The tenant the request was made to (the path segment; for common/organizations the assertion's tid). */
  tenantId: string;
  clientId: string;
  /** The user assertion's `oid` (read before validation, so also set for rejected assertions). */
  userId?: string;
  grantType: string;
  /** The `scope` parameter exactly as requested. */
  scope: string;
  /** HTTP status answered (0 while pending). */
  status: number;
  /** The AADSTS code of an error answer, e.g. "AADSTS500133". */
  error?: string;
  /** The OAuth error of an error answer, e.g. "invalid_grant". */
  oauthError?: string;
  /** The client authentication used ("federated": a client assertion whose `iss` is not the client id). */
  clientAuth: "secret" | "certificate" | "federated" | "none";
  /** Arrival time (ms since epoch). */
  at: number;
  /** When the answer was sent (ms since epoch). */
  endedAt?: number;
}

/** A discovery, JWKS or unknown request: method, path (no query) and status. */
export interface OtherRequestRecord {
  method: string;
  path: string;
  status: number;
  at: number;
}

export interface FailRule {
  /** How many matching token requests fail. Default 1. */
  count?: number;
  /** An AADSTS code ("AADSTS500133", ...) or an OAuth error name ("invalid_request"). */
  error: "AADSTS500133" | "AADSTS7000215" | "AADSTS90033" | "AADSTS50173" | "AADSTS700082" | string;
  /** Only requests whose user assertion belongs to this user. */
  userId?: string;
  /** Only requests made in this tenant (the path segment; for common/organizations the assertion's tid). */
  tenantId?: string;
  /** Adds a Retry-After header (seconds) to the answer. */
  retryAfterSec?: number;
}

export interface FakeAuthority {
  readonly authorityHost: string;
  registerClient(client: ClientRegistration): void;
  /**
   * Assigns a managed identity to the app, served at `managedIdentityEnvironment()`'s endpoint:
   * tokens for Azure Storage and for `api://AzureADTokenExchange`.
   */
  registerManagedIdentity(identity?: ManagedIdentityRegistration): ManagedIdentity;
  /** IDENTITY_ENDPOINT and IDENTITY_HEADER, as App Service sets them for the app (the header is a secret). */
  managedIdentityEnvironment(): ManagedIdentityEnvironment;
  /**
   * Adds a federated identity credential to a registered client that accepts the identity's
   * exchange token: issuer `{authorityHost}/{identity tenant}/v2.0`, subject its object id,
   * audience `api://AzureADTokenExchange`. Returns the credential added.
   */
  trustManagedIdentity(clientId: string, identity: ManagedIdentity): Required<Omit<FederatedCredential, "name">>;
  issueUserAssertion(u: UserAssertionRequest): string;
  issueAppOnlyToken(a: { tenantId: string; clientId: string }): string;
  verifyGraphToken(token: string): GraphTokenVerification;
  readonly tokenRequests: TokenRequestRecord[];
  /** Every JWT this authority signed (assertions and access tokens): none may appear in any log. */
  readonly issuedTokens: ReadonlySet<string>;
  /** Discovery, JWKS and unknown requests: method, path (no query) and status. */
  readonly otherRequests: OtherRequestRecord[];
  /** Requests to the managed-identity endpoint (no header value, no token). */
  readonly managedIdentityRequests: ManagedIdentityRequestRecord[];
  failNext(rule: FailRule): void;
  setLatency(ms: number): void;
  reset(): void;
  close(): Promise<void>;
}

export interface FakeAuthorityOptions {
  certificate: TestCertificate;
  /** Delay before every answer. Default 0. */
  latencyMs?: number;
  /** Lifetime of issued Graph access tokens (expires_in). Default 3599. */
  accessTokenLifetimeSec?: number;
  /** Lifetime of managed-identity tokens (storage and exchange). Default 86399 (24 h, as Azure's). */
  managedIdentityTokenLifetimeSec?: number;
  /**
   * What `scope` says in a successful delegated answer:
   *  - "expanded" (default, as Entra): the consented Graph permissions, resource-qualified;
   *  - "expanded-and-default": the same plus "https://graph.microsoft.com/.default" when it was asked;
   *  - "as-requested": the requested resource scopes echoed back.
   */
  scopeAnswer?: "expanded" | "expanded-and-default" | "as-requested";
}

/** A token request as read from the form body, before anything in it is checked. */
interface TokenRequest {
  /** The tenant path segment: a tenant id, `common` or `organizations`. */
  tenantSegment: string;
  method: string;
  params: URLSearchParams;
  grantType: string;
  clientId: string;
  scope: string;
  correlationId: string;
  /** The on-behalf-of user assertion ("" for other grants), decoded but not verified. */
  assertion: string;
  assertionJwt: ParsedJwt | undefined;
  assertionOid: string | undefined;
  isAlias: boolean;
  /** The tenant it is made in: the segment, or the assertion's tid for an alias. */
  tenantId: string;
}

/** The fake authority: its HTTPS endpoints, its app registrations, and the records tests read. */
export class FakeAuthorityServer implements FakeAuthority {
  readonly tokenRequests: TokenRequestRecord[] = [];
  readonly otherRequests: OtherRequestRecord[] = [];
  readonly managedIdentityRequests: ManagedIdentityRequestRecord[] = [];
  private readonly clients = new Map<string, RegisteredClient>();
  private readonly tokens: AuthorityTokens;
  private rules: (FailRule & { remaining: number })[] = [];
  private latencyMs: number;
  private seq = 0;
  private managedIdentitySeq = 0;
  private readonly managedIdentity: ManagedIdentityEndpoint;
  private origin = "";
  private readonly server: LocalHttpsServer;
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly options: FakeAuthorityOptions,
    key: SigningKey,
  ) {
    this.latencyMs = options.latencyMs ?? 0;
    this.tokens = new AuthorityTokens(key, () => this.origin, options.accessTokenLifetimeSec ?? 3599);
    this.managedIdentity = new ManagedIdentityEndpoint(this.tokens, options.managedIdentityTokenLifetimeSec ?? 86_399);
    this.server = new LocalHttpsServer(options.certificate, (req, res) => this.handle(req, res));
  }

  get authorityHost(): string {
    return this.origin;
  }

  get issuedTokens(): ReadonlySet<string> {
    return this.tokens.issuedTokens;
  }

  async listen(): Promise<void> {
    this.origin = await this.server.listen();
  }

  registerClient(client: ClientRegistration): void {
    this.clients.set(client.clientId, registeredClient(client));
  }

  registerManagedIdentity(identity: ManagedIdentityRegistration = {}): ManagedIdentity {
    return this.managedIdentity.register(identity);
  }

  managedIdentityEnvironment(): ManagedIdentityEnvironment {
    if (!this.origin) throw new Error("managedIdentityEnvironment: the authority is not listening yet");
    return { IDENTITY_ENDPOINT: `${this.origin}${MANAGED_IDENTITY_PATH}`, IDENTITY_HEADER: this.managedIdentity.identityHeader };
  }

  trustManagedIdentity(clientId: string, identity: ManagedIdentity): Required<Omit<FederatedCredential, "name">> {
    const client = this.clients.get(clientId);
    if (!client) throw new Error(`trustManagedIdentity: no registered client ${clientId}`);
    const credential = federatedCredential({
      issuer: `${this.origin}/${identity.tenantId}/v2.0`,
      subject: identity.objectId,
      audience: TOKEN_EXCHANGE_AUDIENCE,
    });
    client.federatedCredentials.push(credential);
    return credential;
  }

  issueUserAssertion(u: UserAssertionRequest): string {
    return this.tokens.issueUserAssertion(u);
  }

  issueAppOnlyToken(a: { tenantId: string; clientId: string }): string {
    const roles = this.clients.get(a.clientId)?.graphRoles ?? ["Files.ReadWrite.All"];
    return this.tokens.graphToken({ tenantId: a.tenantId, clientId: a.clientId, roles });
  }

  verifyGraphToken(token: string): GraphTokenVerification {
    return this.tokens.verifyGraphToken(token);
  }

  failNext(rule: FailRule): void {
    this.rules.push({ ...rule, remaining: rule.count ?? 1 });
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  reset(): void {
    this.tokenRequests.length = 0;
    this.otherRequests.length = 0;
    this.managedIdentityRequests.length = 0;
    this.rules = [];
    this.seq = 0;
    this.managedIdentitySeq = 0;
    this.latencyMs = this.options.latencyMs ?? 0;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    return this.server.close();
  }

  // -------------------------------------------------------------------------------------------
  // Discovery

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.origin);
    const segments = url.pathname.split("/").filter((s) => s.length > 0).map((s) => decodeURIComponent(s));
    const method = req.method ?? "GET";
    const isToken = segments.length === 4 && segments[1] === "oauth2" && segments[2] === "v2.0" && segments[3] === "token";
    if (isToken) return this.handleToken(segments[0]!, method, req, res);
    if (url.pathname === MANAGED_IDENTITY_PATH) return this.handleManagedIdentity(method, url, req, res);

    const at = Date.now();
    await this.delay();
    const record = (status: number) => this.otherRequests.push({ method, path: url.pathname, status, at });
    const tenant = segments[0] ?? "";
    const rest = segments.slice(1).join("/");
    if (method === "GET" && (rest === "v2.0/.well-known/openid-configuration" || rest === ".well-known/openid-configuration")) {
      record(200);
      return this.sendJson(res, 200, this.openIdConfiguration(tenant));
    }
    if (method === "GET" && (rest === "discovery/v2.0/keys" || rest === "discovery/keys")) {
      record(200);
      return this.sendJson(res, 200, this.tokens.jwks());
    }
    if (method === "GET" && rest === "discovery/instance") {
      record(200);
      const host = url.host;
      return this.sendJson(res, 200, {
        tenant_discovery_endpoint: `${this.origin}/${tenant}/v2.0/.well-known/openid-configuration`,
        "api-version": "1.1",
        metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
      });
    }
    record(404);
    this.sendJson(res, 404, { error: "not_found", error_description: `No such endpoint on the fake authority: ${method} ${url.pathname}` });
  }

  private openIdConfiguration(tenant: string): Record<string, unknown> {
    const o = this.origin;
    return {
      token_endpoint: `${o}/${tenant}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
      jwks_uri: `${o}/${tenant}/discovery/v2.0/keys`,
      response_modes_supported: ["query", "fragment", "form_post"],
      subject_types_supported: ["pairwise"],
      id_token_signing_alg_values_supported: ["RS256"],
      response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
      scopes_supported: ["openid", "profile", "email", "offline_access"],
      issuer: `${o}/${tenant}/v2.0`,
      request_uri_parameter_supported: false,
      userinfo_endpoint: `${o}/oidc/userinfo`,
      authorization_endpoint: `${o}/${tenant}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${o}/${tenant}/oauth2/v2.0/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${o}/${tenant}/oauth2/v2.0/logout`,
      claims_supported: ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
      kerberos_endpoint: `${o}/${tenant}/kerberos`,
      tenant_region_scope: null,
      cloud_instance_name: "fake.local",
      cloud_graph_host_name: "graph.fake.local",
      msgraph_host: "graph.fake.local",
      rbac_url: `${o}/rbac`,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Managed-identity endpoint (App Service's IDENTITY_ENDPOINT)

  private async handleManagedIdentity(method: string, url: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Never recorded: the header's value (a secret) and the token answered.
    const record = readManagedIdentityRequest(++this.managedIdentitySeq, method, url, Date.now());
    this.managedIdentityRequests.push(record);
    await this.delay();
    const header = req.headers["x-identity-header"];
    const answer = this.managedIdentity.answer(method, Array.isArray(header) ? header[0] : header, record);
    this.sendJson(res, answer.status, answer.body, answer.headers);
  }

  // -------------------------------------------------------------------------------------------
  // Token endpoint

  private async handleToken(tenantSegment: string, method: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const at = Date.now();
    const body = method === "POST" ? await readBody(req) : "";
    const request = readTokenRequest(tenantSegment, method, req, body);
    const record: TokenRequestRecord = {
      seq: ++this.seq,
      tenantId: request.tenantId,
      clientId: request.clientId,
      ...(request.assertionOid !== undefined ? { userId: request.assertionOid } : {}),
      grantType: request.grantType,
      scope: request.scope,
      status: 0,
      clientAuth: clientAuthKind(request.params),
      at,
    };
    this.tokenRequests.push(record);
    await this.delay();

    const traceId = randomUUID();
    const { clientId, tenantId, grantType, correlationId } = request;
    const errorContext: ErrorContext = { clientId, tenantId, grantType, method, traceId, correlationId, origin: this.origin };
    const headers = { "x-ms-request-id": traceId, "client-request-id": correlationId };
    try {
      if (method !== "POST") throw new AuthorityError("AADSTS900561");
      // Injected failures come first: they stand for what Entra decided, whatever the request held.
      const rule = this.takeFailRule(request.assertionOid, request.tenantId);
      if (rule) return this.answerError(res, record, new AuthorityError(rule.error), errorContext, rule.retryAfterSec);
      const answer = this.grant(request);
      record.status = 200;
      record.endedAt = Date.now();
      this.sendJson(res, 200, answer, headers);
    } catch (e) {
      if (e instanceof AuthorityError) return this.answerError(res, record, e, errorContext);
      throw e;
    }
  }

  /** The first fail rule this request matches, counted down (and dropped when used up). */
  private takeFailRule(assertionOid: string | undefined, tenantId: string): FailRule | undefined {
    const rule = this.rules.find(
      (r) => r.remaining > 0 && (r.userId === undefined || r.userId === assertionOid) && (r.tenantId === undefined || r.tenantId.toLowerCase() === tenantId.toLowerCase()),
    );
    if (!rule) return undefined;
    rule.remaining -= 1;
    this.rules = this.rules.filter((r) => r.remaining > 0);
    return rule;
  }

  /** Checks the grant type and the client, then answers the grant; throws Entra's error otherwise. */
  private grant(request: TokenRequest): Record<string, unknown> {
    const { grantType, clientId } = request;
    if (!grantType) throw new AuthorityError("AADSTS900144", { parameter: "grant_type" });
    if (grantType !== GRANT_OBO && grantType !== GRANT_CLIENT_CREDENTIALS) throw new AuthorityError("AADSTS70003");
    if (!clientId) throw new AuthorityError("AADSTS900144", { parameter: "client_id" });
    const client = this.clients.get(clientId);
    if (!client) throw new AuthorityError("AADSTS700016");
    authenticateClient(client, request.params, { origin: this.origin, tenantSegment: request.tenantSegment }, (jwt) => this.tokens.signedHere(jwt));

    const resourceScopes = request.scope.split(" ").filter((s) => s.length > 0 && !OIDC_SCOPES.has(s.toLowerCase()));
    return grantType === GRANT_CLIENT_CREDENTIALS
      ? this.clientCredentialsGrant(request, client, resourceScopes)
      : this.onBehalfOfGrant(request, client, resourceScopes);
  }

  /** An app-only Graph token: one `{resource}/.default` scope, the client's application permissions. */
  private clientCredentialsGrant(request: TokenRequest, client: RegisteredClient, resourceScopes: string[]): Record<string, unknown> {
    if (resourceScopes.length !== 1 || !/\/\.default$/.test(resourceScopes[0]!)) {
      throw new AuthorityError("AADSTS1002012", { scope: request.scope });
    }
    this.checkResource(resourceScopes[0]!, request.tenantId);
    const lifetime = this.options.accessTokenLifetimeSec ?? 3599;
    return {
      token_type: "Bearer",
      expires_in: lifetime,
      ext_expires_in: lifetime,
      access_token: this.tokens.graphToken({ tenantId: request.tenantId, clientId: request.clientId, roles: client.graphRoles }),
    };
  }

  /** A delegated Graph token for the user of a valid assertion, with the scopes the client was consented. */
  private onBehalfOfGrant(request: TokenRequest, client: RegisteredClient, resourceScopes: string[]): Record<string, unknown> {
    const { params, tenantId, clientId, scope } = request;
    if (params.get("requested_token_use") !== "on_behalf_of") {
      throw new AuthorityError("AADSTS900144", { parameter: "requested_token_use" });
    }
    if (!request.assertion) throw new AuthorityError("AADSTS900144", { parameter: "assertion" });
    const user = this.tokens.verifyUserAssertion(request.assertionJwt, client.clientId, request.tenantSegment, request.isAlias);
    const granted = this.grantScopes(resourceScopes, client, tenantId);
    const lifetime = this.options.accessTokenLifetimeSec ?? 3599;
    const answer: Record<string, unknown> = {
      token_type: "Bearer",
      scope: granted.answer,
      expires_in: lifetime,
      ext_expires_in: lifetime,
      access_token: this.tokens.graphToken({ tenantId, clientId, userId: user.oid, scopes: client.graphScopes }),
    };
    const requested = new Set(scope.split(" ").map((s) => s.toLowerCase()));
    if (requested.has("offline_access")) answer.refresh_token = `1.${b64u(randomBytes(48))}`;
    if (requested.has("openid")) answer.id_token = this.tokens.idToken(tenantId, clientId, user.oid);
    if (params.get("client_info") === "1") {
      answer.client_info = b64u(JSON.stringify({ uid: user.oid, utid: tenantId }));
    }
    return answer;
  }

  private checkResource(scope: string, tenantId: string): void {
    const resource = scope.includes("/") ? scope.slice(0, scope.lastIndexOf("/")) : GRAPH_RESOURCE;
    const r = resource.replace(/\/+$/, "").toLowerCase();
    if (r !== GRAPH_RESOURCE && r !== GRAPH_APP_ID) throw new AuthorityError("AADSTS500011", { resource, tenantId });
  }

  /** Decides the delegated scopes of an OBO answer, or throws the Entra error for the request. */
  private grantScopes(resourceScopes: string[], client: RegisteredClient, tenantId: string): { answer: string } {
    if (resourceScopes.length === 0) throw new AuthorityError("AADSTS70011");
    const names: string[] = [];
    let askedDefault = false;
    for (const s of resourceScopes) {
      this.checkResource(s, tenantId);
      const name = s.includes("/") ? s.slice(s.lastIndexOf("/") + 1) : s;
      if (name === ".default") askedDefault = true;
      else names.push(name);
    }
    if (askedDefault && names.length > 0) {
      throw new AuthorityError("AADSTS70011", {}, "The scope '.default' cannot be combined with resource-specific scopes.");
    }
    const unknown = names.filter((n) => !GRAPH_PERMISSIONS.has(n.toLowerCase()));
    if (unknown.length > 0) throw new AuthorityError("AADSTS70011", {}, `The scope '${unknown.join(" ")}' does not exist.`);
    const consented = new Set(client.graphScopes.map((s) => s.toLowerCase()));
    const missing = names.filter((n) => !consented.has(n.toLowerCase()));
    if (missing.length > 0) throw new AuthorityError("AADSTS65001", {}, `Missing consent for: ${missing.join(" ")}.`);
    const expanded = client.graphScopes.map((s) => `${GRAPH_RESOURCE}/${s}`);
    switch (this.options.scopeAnswer ?? "expanded") {
      case "as-requested":
        return { answer: resourceScopes.join(" ") };
      case "expanded-and-default":
        return { answer: [...expanded, ...(askedDefault ? [`${GRAPH_RESOURCE}/.default`] : [])].join(" ") };
      case "expanded":
        return { answer: expanded.join(" ") };
    }
  }

  private answerError(res: ServerResponse, record: TokenRequestRecord, e: AuthorityError, context: ErrorContext, retryAfterSec?: number): void {
    const answer = entraErrorAnswer(e, context);
    record.status = answer.status;
    record.error = answer.recordedError;
    record.oauthError = answer.oauthError;
    record.endedAt = Date.now();
    const headers: Record<string, string> = { "x-ms-request-id": context.traceId, "client-request-id": context.correlationId };
    if (retryAfterSec !== undefined) headers["retry-after"] = String(retryAfterSec);
    this.sendJson(res, answer.status, answer.body, headers);
  }

  // -------------------------------------------------------------------------------------------

  private delay(): Promise<void> {
    if (this.latencyMs <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, this.latencyMs);
      this.timers.add(t);
    });
  }

  private sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.destroyed || res.writableEnded) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store, no-cache",
      pragma: "no-cache",
      "x-ms-request-id": headers["x-ms-request-id"] ?? randomUUID(),
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  }
}

/** Reads the form body's parameters and what the record needs, checking nothing yet. */
function readTokenRequest(tenantSegment: string, method: string, req: IncomingMessage, body: string): TokenRequest {
  const params = new URLSearchParams(body);
  const grantType = params.get("grant_type") ?? "";
  const assertion = grantType === GRANT_OBO ? params.get("assertion") ?? "" : "";
  const assertionJwt = assertion ? decodeJwt(assertion) : undefined;
  const assertionTid = assertionJwt ? str(assertionJwt.payload.tid) : undefined;
  const isAlias = tenantSegment === "common" || tenantSegment === "organizations";
  return {
    tenantSegment,
    method,
    params,
    grantType,
    clientId: params.get("client_id") ?? "",
    scope: params.get("scope") ?? "",
    correlationId: req.headers["client-request-id"]?.toString() || params.get("client-request-id") || randomUUID(),
    assertion,
    assertionJwt,
    assertionOid: assertionJwt ? str(assertionJwt.payload.oid) : undefined,
    isAlias,
    tenantId: isAlias && assertionTid ? assertionTid : tenantSegment,
  };
}

function readBody(req: IncomingMessage, limit = 256 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new Error("body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}
