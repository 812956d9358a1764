/**
 * A fake Microsoft Entra ID authority, served over real HTTPS on 127.0.0.1, so that @azure/identity's
 * real `OnBehalfOfCredential` (MSAL underneath) runs its real discovery and token exchange against it.
 *
 * What it serves (everything else: 404, recorded in `otherRequests`):
 *   GET  /{tenant}/v2.0/.well-known/openid-configuration   (also /{tenant}/.well-known/openid-configuration)
 *   GET  /{tenant}/discovery/v2.0/keys  and  /common/discovery/keys      (JWKS with the real signing key)
 *   GET  /common/discovery/instance                                     (instance discovery, for completeness)
 *   POST /{tenant}/oauth2/v2.0/token    grant types: jwt-bearer (on-behalf-of) and client_credentials
 *
 * Faithfulness notes (Entra's observable behaviour, as documented or widely reported):
 *   - Client authentication errors are `invalid_client` with HTTP 401 (AADSTS7000215 wrong secret,
 *     AADSTS7000218 no credential, AADSTS700027 certificate not registered / bad signature,
 *     AADSTS700024 client assertion expired). An unknown client_id is AADSTS700016
 *     `unauthorized_client`, HTTP 400 (that is what Entra answers, not 7000215).
 *   - Grant errors are `invalid_grant`, HTTP 400: AADSTS500133 expired user assertion, AADSTS50013
 *     assertion signature / audience / tenant mismatch, AADSTS65001 scope not consented,
 *     AADSTS50173 grant revoked, AADSTS700082 refresh token expired by inactivity.
 *   - AADSTS90033 is `temporarily_unavailable`, HTTP 503 ("A transient error has occurred.").
 *   - A request for `https://graph.microsoft.com/.default` is answered with the expanded list of the
 *     client's consented Graph permissions in `scope` (never ".default"), as Entra does; MSAL files the
 *     token under that list, so a later `.default` lookup misses its cache. `scopeAnswer` changes this.
 *   - Error bodies: {error, error_description: "AADSTSn: ...\r\nTrace ID: ...\r\nCorrelation ID: ...\r\n
 *     Timestamp: ...", error_codes: [n], timestamp, trace_id, correlation_id, error_uri}.
 *
 * Tokens are RS256 JWTs signed with an RSA key generated for this instance only; no token, assertion
 * or secret is ever logged or recorded.
 */
import {
  createHash,
  generateKeyPair,
  randomBytes,
  randomUUID,
  sign as cryptoSign,
  timingSafeEqual,
  verify as cryptoVerify,
  X509Certificate,
  constants as cryptoConstants,
  type KeyObject,
} from "node:crypto";
import { LocalHttpsServer } from "./localHttpsServer";
import type { IncomingMessage, ServerResponse } from "node:http";
import { promisify } from "node:util";
import type { TestCertificate } from "./certificate";

export const GRAPH_RESOURCE = "https://graph.microsoft.com";
export const GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000";
const OIDC_SCOPES = new Set(["openid", "profile", "offline_access", "email"]);
const GRANT_OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_CLIENT_CREDENTIALS = "client_credentials";
const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

export interface GraphTokenClaims {
  tid: string;
  oid: string;
  aud: string;
  scp?: string;
  roles?: string[];
  appid: string;
  exp: number;
  iat: number;
}

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
  /** The client authentication used. */
  clientAuth: "secret" | "certificate" | "none";
  /** Arrival time (ms since epoch). */
  at: number;
  /** When the answer was sent (ms since epoch). */
  endedAt?: number;
}

export interface FailRule {
  /** How many matching token requests fail. Default 1. */
  count?: number;
  /** An AADSTS code ("AADSTS500133", ...) or an OAuth error name ("invalid_request"). */
  error: "AADSTS500133" | "AADSTS7000215" | "AADSTS90033" | "AADSTS50173" | "AADSTS700082" | string;
  /** Only requests whose user assertion belongs to this user. */
  userId?: string;
  /** Adds a Retry-After header (seconds) to the answer. */
  retryAfterSec?: number;
}

export interface FakeAuthority {
  readonly authorityHost: string;
  registerClient(client: {
    clientId: string;
    clientSecret?: string;
    certificatePem?: string;
    /** Consented delegated Graph permissions. Default ["Files.ReadWrite", "User.Read"]. */
    graphScopes?: string[];
    /** Application Graph permissions (client_credentials). Default ["Files.ReadWrite.All"]. */
    graphRoles?: string[];
  }): void;
  issueUserAssertion(u: { tenantId: string; userId: string; audience: string; lifetimeSec?: number }): string;
  issueAppOnlyToken(a: { tenantId: string; clientId: string }): string;
  verifyGraphToken(token: string): { ok: true; claims: GraphTokenClaims } | { ok: false; reason: string };
  readonly tokenRequests: TokenRequestRecord[];
  /** Every JWT this authority signed (assertions and access tokens): none may appear in any log. */
  readonly issuedTokens: ReadonlySet<string>;
  /** Discovery, JWKS and unknown requests: method, path (no query) and status. */
  readonly otherRequests: { method: string; path: string; status: number; at: number }[];
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
  /**
   * What `scope` says in a successful delegated answer:
   *  - "expanded" (default, as Entra): the consented Graph permissions, resource-qualified;
   *  - "expanded-and-default": the same plus "https://graph.microsoft.com/.default" when it was asked;
   *  - "as-requested": the requested resource scopes echoed back.
   */
  scopeAnswer?: "expanded" | "expanded-and-default" | "as-requested";
}

interface RegisteredClient {
  clientId: string;
  clientSecret?: string;
  certificate?: { publicKey: KeyObject; x5t: string; x5tS256: string };
  graphScopes: string[];
  graphRoles: string[];
}

interface KnownError {
  status: number;
  error: string;
  description: string;
}

/** Entra's answers for the codes tests ask for by name (descriptions follow Entra's wording). */
const KNOWN_ERRORS: Record<string, KnownError> = {
  AADSTS500133: {
    status: 400,
    error: "invalid_grant",
    description:
      "Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token.",
  },
  AADSTS7000215: {
    status: 401,
    error: "invalid_client",
    description:
      "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{clientId}'.",
  },
  AADSTS7000218: {
    status: 401,
    error: "invalid_client",
    description: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
  },
  AADSTS700016: {
    status: 400,
    error: "unauthorized_client",
    description:
      "Application with identifier '{clientId}' was not found in the directory '{tenantId}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
  },
  AADSTS700024: { status: 401, error: "invalid_client", description: "Client assertion is not within its valid time range." },
  AADSTS700027: {
    status: 401,
    error: "invalid_client",
    description: "Client assertion failed signature validation.",
  },
  AADSTS70002: { status: 401, error: "invalid_client", description: "Error validating credentials." },
  AADSTS90033: { status: 503, error: "temporarily_unavailable", description: "A transient error has occurred. Please try again." },
  AADSTS50173: {
    status: 400,
    error: "invalid_grant",
    description:
      "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
  },
  AADSTS700082: {
    status: 400,
    error: "invalid_grant",
    description: "The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive for 90.00:00:00.",
  },
  AADSTS50013: { status: 400, error: "invalid_grant", description: "Assertion failed signature validation." },
  AADSTS50027: { status: 400, error: "invalid_request", description: "JWT token is invalid or malformed." },
  AADSTS65001: {
    status: 400,
    error: "invalid_grant",
    description:
      "The user or administrator has not consented to use the application with ID '{clientId}'. Send an interactive authorization request for this user and resource.",
  },
  AADSTS70011: {
    status: 400,
    error: "invalid_scope",
    description: "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
  },
  AADSTS1002012: {
    status: 400,
    error: "invalid_scope",
    description:
      "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
  },
  AADSTS500011: {
    status: 400,
    error: "invalid_resource",
    description: "The resource principal named {resource} was not found in the tenant named {tenantId}.",
  },
  AADSTS70003: { status: 400, error: "unsupported_grant_type", description: "The app requested an unsupported grant type '{grantType}'." },
  AADSTS900144: { status: 400, error: "invalid_request", description: "The request body must contain the following parameter: '{parameter}'." },
  AADSTS900561: { status: 400, error: "invalid_request", description: "The endpoint only accepts POST, OPTIONS requests. Received a {method} request." },
};

const OAUTH_ERROR_STATUS: Record<string, number> = {
  invalid_client: 401,
  temporarily_unavailable: 503,
  server_error: 500,
};

const generateKeyPairAsync = promisify(generateKeyPair);

// ---------------------------------------------------------------------------------------------
// JWT helpers (node:crypto only)

function b64u(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

interface ParsedJwt {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  signingInput: Buffer;
  signature: Buffer;
}

/** Splits and decodes a compact JWT; undefined when it is not one. Does not verify anything. */
export function decodeJwt(token: string): ParsedJwt | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8")) as unknown;
    const payload = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as unknown;
    if (!isRecord(header) || !isRecord(payload)) return undefined;
    return {
      header,
      payload,
      signingInput: Buffer.from(`${parts[0]}.${parts[1]}`),
      signature: Buffer.from(parts[2]!, "base64url"),
    };
  } catch {
    return undefined;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** A stable GUID-shaped id derived from text (for service principal object ids). */
function guidFrom(text: string): string {
  const h = createHash("sha256").update(text).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function entraTimestamp(d = new Date()): string {
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

function fill(template: string, values: Record<string, string | undefined>): string {
  return template.replace(/\{(\w+)\}/g, (m, k: string) => values[k] ?? m);
}

function safeEqual(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y) && a.length === b.length;
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

class AuthorityError extends Error {
  constructor(
    readonly code: string,
    readonly values: Record<string, string | undefined> = {},
    readonly extra = "",
  ) {
    super(code);
  }
}

// ---------------------------------------------------------------------------------------------

export async function startFakeAuthority(options: FakeAuthorityOptions): Promise<FakeAuthority> {
  const { privateKey, publicKey } = await generateKeyPairAsync("rsa", { modulusLength: 2048 });
  const kid = b64u(createHash("sha1").update(publicKey.export({ type: "spki", format: "der" })).digest());
  const impl = new FakeAuthorityImpl(options, privateKey, publicKey, kid);
  await impl.listen();
  return impl;
}

class FakeAuthorityImpl implements FakeAuthority {
  readonly tokenRequests: TokenRequestRecord[] = [];
  readonly issuedTokens = new Set<string>();
  readonly otherRequests: { method: string; path: string; status: number; at: number }[] = [];
  private readonly clients = new Map<string, RegisteredClient>();
  private rules: (FailRule & { remaining: number })[] = [];
  private latencyMs: number;
  private seq = 0;
  private origin = "";
  private readonly server: LocalHttpsServer;
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly options: FakeAuthorityOptions,
    private readonly privateKey: KeyObject,
    private readonly publicKey: KeyObject,
    private readonly kid: string,
  ) {
    this.latencyMs = options.latencyMs ?? 0;
    this.server = new LocalHttpsServer(options.certificate, (req, res) => this.handle(req, res));
  }

  get authorityHost(): string {
    return this.origin;
  }

  async listen(): Promise<void> {
    this.origin = await this.server.listen();
  }

  registerClient(client: {
    clientId: string;
    clientSecret?: string;
    certificatePem?: string;
    graphScopes?: string[];
    graphRoles?: string[];
  }): void {
    let certificate: RegisteredClient["certificate"];
    if (client.certificatePem) {
      const match = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(client.certificatePem);
      if (!match) throw new Error("registerClient: certificatePem holds no PEM certificate");
      const x509 = new X509Certificate(match[0]);
      certificate = {
        publicKey: x509.publicKey,
        x5t: b64u(createHash("sha1").update(x509.raw).digest()),
        x5tS256: b64u(createHash("sha256").update(x509.raw).digest()),
      };
    }
    this.clients.set(client.clientId, {
      clientId: client.clientId,
      ...(client.clientSecret !== undefined ? { clientSecret: client.clientSecret } : {}),
      ...(certificate ? { certificate } : {}),
      graphScopes: client.graphScopes ?? ["Files.ReadWrite", "User.Read"],
      graphRoles: client.graphRoles ?? ["Files.ReadWrite.All"],
    });
  }

  issueUserAssertion(u: { tenantId: string; userId: string; audience: string; lifetimeSec?: number }): string {
    const now = nowSec();
    const lifetime = u.lifetimeSec ?? 3600;
    const exp = now + lifetime;
    const iat = Math.min(now, exp - 3600);
    return this.signJwt({
      aud: u.audience,
      iss: `${this.origin}/${u.tenantId}/v2.0`,
      iat,
      nbf: iat,
      exp,
      azp: guidFrom(`frontend:${u.tenantId}`),
      azpacr: "0",
      name: `User ${u.userId}`,
      oid: u.userId,
      preferred_username: `${u.userId}@example.test`,
      scp: "access_as_user",
      sub: guidFrom(`sub:${u.userId}:${u.audience}`),
      tid: u.tenantId,
      uti: b64u(randomBytes(16)),
      ver: "2.0",
    });
  }

  issueAppOnlyToken(a: { tenantId: string; clientId: string }): string {
    const roles = this.clients.get(a.clientId)?.graphRoles ?? ["Files.ReadWrite.All"];
    return this.graphToken({ tenantId: a.tenantId, clientId: a.clientId, roles });
  }

  verifyGraphToken(token: string): { ok: true; claims: GraphTokenClaims } | { ok: false; reason: string } {
    const jwt = decodeJwt(token);
    if (!jwt) return { ok: false, reason: "malformed: not a JWT" };
    if (jwt.header.alg !== "RS256" || jwt.header.kid !== this.kid) return { ok: false, reason: "signature: unknown signing key" };
    if (!cryptoVerify("sha256", jwt.signingInput, this.publicKey, jwt.signature)) {
      return { ok: false, reason: "signature: invalid signature" };
    }
    const p = jwt.payload;
    const aud = str(p.aud);
    if (aud !== GRAPH_RESOURCE && aud !== GRAPH_APP_ID) return { ok: false, reason: "audience: not a Microsoft Graph token" };
    if (str(p.iss) !== `${this.origin}/${str(p.tid) ?? ""}/`) return { ok: false, reason: "issuer: unexpected issuer" };
    const exp = num(p.exp);
    const iat = num(p.iat);
    const nbf = num(p.nbf) ?? iat;
    const now = nowSec();
    if (exp === undefined || iat === undefined) return { ok: false, reason: "malformed: no exp/iat" };
    if (exp <= now) return { ok: false, reason: "expired: token has expired" };
    if (nbf !== undefined && nbf > now + 300) return { ok: false, reason: "not yet valid: nbf in the future" };
    const tid = str(p.tid);
    const oid = str(p.oid);
    const appid = str(p.appid);
    if (!tid || !oid || !appid) return { ok: false, reason: "malformed: missing tid/oid/appid" };
    const claims: GraphTokenClaims = { tid, oid, aud, appid, exp, iat };
    const scp = str(p.scp);
    if (scp !== undefined) claims.scp = scp;
    if (Array.isArray(p.roles)) claims.roles = p.roles.filter((r): r is string => typeof r === "string");
    return { ok: true, claims };
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
    this.rules = [];
    this.seq = 0;
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

  private signJwt(payload: Record<string, unknown>): string {
    const header = { typ: "JWT", alg: "RS256", kid: this.kid, x5t: this.kid };
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
    const token = `${input}.${b64u(cryptoSign("sha256", Buffer.from(input), this.privateKey))}`;
    this.issuedTokens.add(token);
    return token;
  }

  private graphToken(t: { tenantId: string; clientId: string; userId?: string; scopes?: string[]; roles?: string[] }): string {
    const iat = nowSec();
    const lifetime = this.options.accessTokenLifetimeSec ?? 3599;
    const payload: Record<string, unknown> = {
      aud: GRAPH_RESOURCE,
      iss: `${this.origin}/${t.tenantId}/`,
      iat,
      nbf: iat,
      exp: iat + lifetime,
      app_displayname: `app ${t.clientId}`,
      appid: t.clientId,
      appidacr: "1",
      idtyp: t.userId ? "user" : "app",
      tid: t.tenantId,
      uti: b64u(randomBytes(16)),
      ver: "1.0",
    };
    if (t.userId) {
      payload.oid = t.userId;
      payload.sub = guidFrom(`graph-sub:${t.userId}:${t.clientId}`);
      payload.upn = `${t.userId}@example.test`;
      payload.scp = (t.scopes ?? []).join(" ");
    } else {
      payload.oid = guidFrom(`sp:${t.tenantId}:${t.clientId}`);
      payload.sub = payload.oid;
      payload.roles = t.roles ?? [];
    }
    return this.signJwt(payload);
  }

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

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.origin);
    const segments = url.pathname.split("/").filter((s) => s.length > 0).map((s) => decodeURIComponent(s));
    const method = req.method ?? "GET";
    const isToken = segments.length === 4 && segments[1] === "oauth2" && segments[2] === "v2.0" && segments[3] === "token";
    if (isToken) return this.handleToken(segments[0]!, method, req, res);

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
      const jwk = this.publicKey.export({ format: "jwk" });
      return this.sendJson(res, 200, {
        keys: [{ kty: "RSA", use: "sig", kid: this.kid, x5t: this.kid, n: jwk.n, e: jwk.e, issuer: `${this.origin}/{tenantid}/v2.0` }],
      });
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

  private async handleToken(tenantSegment: string, method: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const at = Date.now();
    const body = method === "POST" ? await readBody(req) : "";
    const params = new URLSearchParams(body);
    const grantType = params.get("grant_type") ?? "";
    const clientId = params.get("client_id") ?? "";
    const scope = params.get("scope") ?? "";
    const correlationId = req.headers["client-request-id"]?.toString() || params.get("client-request-id") || randomUUID();
    const assertion = grantType === GRANT_OBO ? params.get("assertion") ?? "" : "";
    const assertionJwt = assertion ? decodeJwt(assertion) : undefined;
    const assertionOid = assertionJwt ? str(assertionJwt.payload.oid) : undefined;
    const assertionTid = assertionJwt ? str(assertionJwt.payload.tid) : undefined;
    const isAlias = tenantSegment === "common" || tenantSegment === "organizations";
    const tenantId = isAlias && assertionTid ? assertionTid : tenantSegment;
    const clientAuth: TokenRequestRecord["clientAuth"] = params.get("client_secret")
      ? "secret"
      : params.get("client_assertion")
        ? "certificate"
        : "none";
    const record: TokenRequestRecord = {
      seq: ++this.seq,
      tenantId,
      clientId,
      ...(assertionOid !== undefined ? { userId: assertionOid } : {}),
      grantType,
      scope,
      status: 0,
      clientAuth,
      at,
    };
    this.tokenRequests.push(record);
    await this.delay();

    const traceId = randomUUID();
    const answerError = (e: AuthorityError, retryAfterSec?: number) => {
      const known = KNOWN_ERRORS[e.code];
      const numeric = /^AADSTS(\d+)$/.exec(e.code);
      const status = known?.status ?? (numeric ? 400 : OAUTH_ERROR_STATUS[e.code] ?? 400);
      const oauthError = known?.error ?? (numeric ? "invalid_grant" : e.code);
      const baseDescription = known
        ? fill(known.description, { clientId, tenantId, grantType, method, issued: entraTimestamp(new Date(Date.now() - 91 * 86400_000)), ...e.values })
        : "Simulated failure.";
      const timestamp = entraTimestamp();
      const prefix = numeric ? `${e.code}: ` : "";
      const description =
        `${prefix}${baseDescription}${e.extra ? ` ${e.extra}` : ""}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`;
      const errorCodes = numeric ? [Number(numeric[1])] : [];
      record.status = status;
      record.error = numeric ? e.code : oauthError;
      record.oauthError = oauthError;
      record.endedAt = Date.now();
      const headers: Record<string, string> = { "x-ms-request-id": traceId, "client-request-id": correlationId };
      if (retryAfterSec !== undefined) headers["retry-after"] = String(retryAfterSec);
      this.sendJson(
        res,
        status,
        {
          error: oauthError,
          error_description: description,
          error_codes: errorCodes,
          timestamp,
          trace_id: traceId,
          correlation_id: correlationId,
          ...(numeric ? { error_uri: `${this.origin}/error?code=${numeric[1]}` } : {}),
        },
        headers,
      );
    };

    try {
      if (method !== "POST") throw new AuthorityError("AADSTS900561");
      // Injected failures come first: they stand for what Entra decided, whatever the request held.
      const rule = this.rules.find((r) => r.remaining > 0 && (r.userId === undefined || r.userId === assertionOid));
      if (rule) {
        rule.remaining -= 1;
        this.rules = this.rules.filter((r) => r.remaining > 0);
        return answerError(new AuthorityError(rule.error), rule.retryAfterSec);
      }
      if (!grantType) throw new AuthorityError("AADSTS900144", { parameter: "grant_type" });
      if (grantType !== GRANT_OBO && grantType !== GRANT_CLIENT_CREDENTIALS) throw new AuthorityError("AADSTS70003");
      if (!clientId) throw new AuthorityError("AADSTS900144", { parameter: "client_id" });
      const client = this.clients.get(clientId);
      if (!client) throw new AuthorityError("AADSTS700016");
      this.authenticateClient(client, params, tenantSegment);

      const resourceScopes = scope.split(" ").filter((s) => s.length > 0 && !OIDC_SCOPES.has(s.toLowerCase()));
      if (grantType === GRANT_CLIENT_CREDENTIALS) {
        if (resourceScopes.length !== 1 || !/\/\.default$/.test(resourceScopes[0]!)) {
          throw new AuthorityError("AADSTS1002012", { scope });
        }
        this.checkResource(resourceScopes[0]!, tenantId);
        record.status = 200;
        record.endedAt = Date.now();
        const lifetime = this.options.accessTokenLifetimeSec ?? 3599;
        return this.sendJson(
          res,
          200,
          {
            token_type: "Bearer",
            expires_in: lifetime,
            ext_expires_in: lifetime,
            access_token: this.graphToken({ tenantId, clientId, roles: client.graphRoles }),
          },
          { "x-ms-request-id": traceId, "client-request-id": correlationId },
        );
      }

      // On-behalf-of.
      if (params.get("requested_token_use") !== "on_behalf_of") {
        throw new AuthorityError("AADSTS900144", { parameter: "requested_token_use" });
      }
      if (!assertion) throw new AuthorityError("AADSTS900144", { parameter: "assertion" });
      const user = this.validateUserAssertion(assertionJwt, client, tenantSegment, isAlias);
      const granted = this.grantScopes(resourceScopes, client, tenantId);
      const lifetime = this.options.accessTokenLifetimeSec ?? 3599;
      const answer: Record<string, unknown> = {
        token_type: "Bearer",
        scope: granted.answer,
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: this.graphToken({ tenantId, clientId, userId: user.oid, scopes: client.graphScopes }),
      };
      const requested = new Set(scope.split(" ").map((s) => s.toLowerCase()));
      if (requested.has("offline_access")) answer.refresh_token = `1.${b64u(randomBytes(48))}`;
      if (requested.has("openid")) answer.id_token = this.idToken(tenantId, clientId, user.oid);
      if (params.get("client_info") === "1") {
        answer.client_info = b64u(JSON.stringify({ uid: user.oid, utid: tenantId }));
      }
      record.status = 200;
      record.endedAt = Date.now();
      this.sendJson(res, 200, answer, { "x-ms-request-id": traceId, "client-request-id": correlationId });
    } catch (e) {
      if (e instanceof AuthorityError) return answerError(e);
      throw e;
    }
  }

  private authenticateClient(client: RegisteredClient, params: URLSearchParams, tenantSegment: string): void {
    const secret = params.get("client_secret");
    const assertion = params.get("client_assertion");
    if (secret) {
      if (client.clientSecret === undefined || !safeEqual(secret, client.clientSecret)) throw new AuthorityError("AADSTS7000215");
      return;
    }
    if (!assertion) throw new AuthorityError("AADSTS7000218");
    if (params.get("client_assertion_type") !== CLIENT_ASSERTION_TYPE) {
      throw new AuthorityError("AADSTS70002", {}, "The client_assertion_type is not supported.");
    }
    const jwt = decodeJwt(assertion);
    if (!jwt) throw new AuthorityError("AADSTS70002", {}, "The client assertion is not a valid JWT.");
    const cert = client.certificate;
    const x5tS256 = str(jwt.header["x5t#S256"]);
    const x5t = str(jwt.header.x5t);
    if (!cert || (x5tS256 !== undefined ? x5tS256 !== cert.x5tS256 : x5t !== cert.x5t)) {
      throw new AuthorityError(
        "AADSTS700027",
        {},
        "[Reason - The certificate with identifier used to sign the client assertion is not registered on application.]",
      );
    }
    const alg = str(jwt.header.alg);
    let valid = false;
    if (alg === "RS256") {
      valid = cryptoVerify("sha256", jwt.signingInput, cert.publicKey, jwt.signature);
    } else if (alg === "PS256") {
      valid = cryptoVerify(
        "sha256",
        jwt.signingInput,
        { key: cert.publicKey, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_AUTO },
        jwt.signature,
      );
    }
    if (!valid) throw new AuthorityError("AADSTS700027", {}, "[Reason - The provided signature value did not match the expected signature value.]");
    const p = jwt.payload;
    if (str(p.iss) !== client.clientId || str(p.sub) !== client.clientId) {
      throw new AuthorityError("AADSTS700027", {}, "[Reason - The issuer or subject of the client assertion is not the client id.]");
    }
    const aud = str(p.aud) ?? "";
    const audOk = aud === `${this.origin}/${tenantSegment}/oauth2/v2.0/token` || aud === `${this.origin}/${tenantSegment}/v2.0`;
    if (!audOk) throw new AuthorityError("AADSTS700027", {}, "[Reason - The audience of the client assertion is not this token endpoint.]");
    const exp = num(p.exp);
    const nbf = num(p.nbf);
    const now = nowSec();
    if (exp === undefined || exp <= now - 300 || (nbf !== undefined && nbf > now + 300)) throw new AuthorityError("AADSTS700024");
  }

  private validateUserAssertion(
    jwt: ParsedJwt | undefined,
    client: RegisteredClient,
    tenantSegment: string,
    isAlias: boolean,
  ): { oid: string; tid: string } {
    if (!jwt) throw new AuthorityError("AADSTS50027");
    const signatureOk =
      jwt.header.alg === "RS256" &&
      jwt.header.kid === this.kid &&
      cryptoVerify("sha256", jwt.signingInput, this.publicKey, jwt.signature);
    if (!signatureOk) throw new AuthorityError("AADSTS50013", {}, "[Reason - The key was not found.]");
    const p = jwt.payload;
    const exp = num(p.exp);
    const nbf = num(p.nbf);
    const now = nowSec();
    // Entra allows five minutes of clock skew on incoming assertions.
    if (exp === undefined || exp <= now - 300 || (nbf !== undefined && nbf > now + 300)) {
      throw new AuthorityError(
        "AADSTS500133",
        {},
        `Current time: ${new Date().toISOString()}, expiry time of assertion ${exp === undefined ? "none" : new Date(exp * 1000).toISOString()}.`,
      );
    }
    const aud = str(p.aud) ?? "";
    if (aud !== client.clientId && aud !== `api://${client.clientId}`) {
      throw new AuthorityError(
        "AADSTS50013",
        {},
        `Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '${aud}' and the expected audience is '${client.clientId}' or one of the Application Uris of this application with App ID '${client.clientId}'.`,
      );
    }
    const tid = str(p.tid) ?? "";
    const oid = str(p.oid) ?? "";
    if (!tid || !oid) throw new AuthorityError("AADSTS50027", {}, "The assertion has no tid or oid claim.");
    if (str(p.iss) !== `${this.origin}/${tid}/v2.0`) {
      throw new AuthorityError("AADSTS50013", {}, "[Reason - The assertion's issuer is not trusted.]");
    }
    if (!isAlias && tid !== tenantSegment) {
      throw new AuthorityError(
        "AADSTS50013",
        {},
        `[Reason - The assertion was issued by tenant '${tid}' but presented to tenant '${tenantSegment}'.]`,
      );
    }
    return { oid, tid };
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

  private idToken(tenantId: string, clientId: string, oid: string): string {
    const iat = nowSec();
    return this.signJwt({
      aud: clientId,
      iss: `${this.origin}/${tenantId}/v2.0`,
      iat,
      nbf: iat,
      exp: iat + 3600,
      name: `User ${oid}`,
      oid,
      preferred_username: `${oid}@example.test`,
      sub: guidFrom(`sub:${oid}:${clientId}`),
      tid: tenantId,
      ver: "2.0",
    });
  }
}
