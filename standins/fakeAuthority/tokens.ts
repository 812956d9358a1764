/**
 * The fake authority's tokens: its RSA signing key, the JWTs it signs (user assertions, Graph
 * access tokens, ID tokens) and their verification, with node:crypto only. Every JWT it signs is
 * kept in `issuedTokens`, so a test can check that none of them ever reaches a log.
 *
 * Tokens are RS256 JWTs signed with an RSA key generated for one authority instance only, in the
 * shapes Entra issues: v2.0 assertions and ID tokens (`iss` = `{authority}/{tid}/v2.0`), v1.0 Graph
 * access tokens (`iss` = `{authority}/{tid}/`, `aud` = `https://graph.microsoft.com`), and a managed
 * identity's tokens: v1.0 Storage tokens (`iss` = `https://sts.windows.net/{tid}/`, the issuer
 * Azure Storage, and Azurite, accept) and v2.0 token-exchange assertions (`aud` =
 * `api://AzureADTokenExchange`, `iss` = `{authority}/{tid}/v2.0`) for federated client credentials.
 */
import {
  createHash,
  generateKeyPair,
  randomBytes,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from "node:crypto";
import { promisify } from "node:util";
import { AuthorityError } from "./errors";

export const GRAPH_RESOURCE = "https://graph.microsoft.com";
export const GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000";
/** Azure Storage's resource (its app id is e406a681-f3d4-42a8-90b6-c2b029497af1). */
export const STORAGE_RESOURCE = "https://storage.azure.com";
/** Azure Key Vault's resource: a v1.0 token for it is one Storage must refuse (audience). */
export const KEY_VAULT_RESOURCE = "https://vault.azure.net";
/** The audience of a managed identity's token used as a federated client assertion. */
export const TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange";

/** A managed identity as its tokens name it. */
export interface ManagedIdentityPrincipal {
  tenantId: string;
  clientId: string;
  objectId: string;
  resourceId: string;
}

/** What the Graph emulator reads from a valid Graph access token. */
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

export interface ParsedJwt {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  signingInput: Buffer;
  signature: Buffer;
}

/** The authority's key pair and its key id (`kid`, also sent as `x5t`). */
export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly kid: string;
}

/** A user, for an assertion as a front end's token for this app would carry it. */
export interface UserAssertionRequest {
  tenantId: string;
  userId: string;
  audience: string;
  lifetimeSec?: number;
}

/** A Graph access token: delegated when `userId` is given (with `scopes`), app-only otherwise (`roles`). */
export interface GraphTokenRequest {
  tenantId: string;
  clientId: string;
  userId?: string;
  scopes?: string[];
  roles?: string[];
}

export type GraphTokenVerification = { ok: true; claims: GraphTokenClaims } | { ok: false; reason: string };

const generateKeyPairAsync = promisify(generateKeyPair);

/** A fresh 2048-bit RSA key; its `kid` is the SHA-1 thumbprint of the public key, as Entra's are. */
export async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPairAsync("rsa", { modulusLength: 2048 });
  const kid = b64u(createHash("sha1").update(publicKey.export({ type: "spki", format: "der" })).digest());
  return { privateKey, publicKey, kid };
}

/** Signs and verifies the authority's JWTs, and remembers every one it signed. */
export class AuthorityTokens {
  /** Every JWT signed here (assertions and access tokens): none may appear in any log. */
  readonly issuedTokens = new Set<string>();

  /**
   * @param issuerOrigin - the authority's origin, known only once its server listens: issuers
   *   and audiences are built from it when a token is made or checked.
   */
  constructor(
    private readonly key: SigningKey,
    private readonly issuerOrigin: () => string,
    private readonly accessTokenLifetimeSec: number,
  ) {}

  /** The JWKS document: the one public signing key. */
  jwks(): { keys: Record<string, unknown>[] } {
    const jwk = this.key.publicKey.export({ format: "jwk" });
    return {
      keys: [{ kty: "RSA", use: "sig", kid: this.key.kid, x5t: this.key.kid, n: jwk.n, e: jwk.e, issuer: `${this.issuerOrigin()}/{tenantid}/v2.0` }],
    };
  }

  /** A v2.0 access token for this app (`aud`), as a user's front end would present it for on-behalf-of. */
  issueUserAssertion(u: UserAssertionRequest): string {
    const now = nowSec();
    const lifetime = u.lifetimeSec ?? 3600;
    const exp = now + lifetime;
    const iat = Math.min(now, exp - 3600);
    return this.sign({
      aud: u.audience,
      iss: `${this.issuerOrigin()}/${u.tenantId}/v2.0`,
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

  /** A v1.0 Microsoft Graph access token, as the token endpoint answers it. */
  graphToken(t: GraphTokenRequest): string {
    const iat = nowSec();
    const payload: Record<string, unknown> = {
      aud: GRAPH_RESOURCE,
      iss: `${this.issuerOrigin()}/${t.tenantId}/`,
      iat,
      nbf: iat,
      exp: iat + this.accessTokenLifetimeSec,
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
    return this.sign(payload);
  }

  /** A v2.0 ID token, answered when `openid` was asked for. */
  idToken(tenantId: string, clientId: string, oid: string): string {
    const iat = nowSec();
    return this.sign({
      aud: clientId,
      iss: `${this.issuerOrigin()}/${tenantId}/v2.0`,
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

  /**
   * A managed identity's v1.0 access token for an Azure resource (Storage, Key Vault), as Entra
   * issues it to the identity endpoint: `aud` is the resource as asked (`https://storage.azure.com`
   * or with a slash), `iss` the public v1 issuer `https://sts.windows.net/{tid}/` (what Storage and
   * Azurite accept), `oid`/`sub` the identity's object id, `appid` its client id.
   */
  managedIdentityResourceToken(mi: ManagedIdentityPrincipal, audience: string, lifetimeSec: number): string {
    const iat = nowSec();
    return this.sign({
      aud: audience,
      iss: `https://sts.windows.net/${mi.tenantId}/`,
      iat,
      nbf: iat,
      exp: iat + lifetimeSec,
      aio: b64u(randomBytes(24)),
      appid: mi.clientId,
      appidacr: "2",
      idp: `https://sts.windows.net/${mi.tenantId}/`,
      idtyp: "app",
      oid: mi.objectId,
      rh: `0.${b64u(randomBytes(24))}.`,
      sub: mi.objectId,
      tid: mi.tenantId,
      uti: b64u(randomBytes(16)),
      ver: "1.0",
      xms_mirid: mi.resourceId,
    });
  }

  /**
   * A managed identity's token for `api://AzureADTokenExchange`: a v2.0 token from this authority
   * (`iss` = `{authority}/{tid}/v2.0`, `sub` = the identity's object id), which an app registration
   * trusting that identity (a federated identity credential) accepts as its client assertion.
   */
  managedIdentityExchangeToken(mi: ManagedIdentityPrincipal, lifetimeSec: number): string {
    const iat = nowSec();
    return this.sign({
      aud: TOKEN_EXCHANGE_AUDIENCE,
      iss: `${this.issuerOrigin()}/${mi.tenantId}/v2.0`,
      iat,
      nbf: iat,
      exp: iat + lifetimeSec,
      azp: mi.clientId,
      azpacr: "2",
      idtyp: "app",
      oid: mi.objectId,
      sub: mi.objectId,
      tid: mi.tenantId,
      uti: b64u(randomBytes(16)),
      ver: "2.0",
      xms_mirid: mi.resourceId,
    });
  }

  /** Whether this authority's key signed the JWT (RS256, its `kid`). */
  signedHere(jwt: ParsedJwt): boolean {
    return (
      jwt.header.alg === "RS256" &&
      jwt.header.kid === this.key.kid &&
      cryptoVerify("sha256", jwt.signingInput, this.key.publicKey, jwt.signature)
    );
  }

  /** What Graph checks of a bearer token: this key's signature, Graph's audience, this issuer, the time. */
  verifyGraphToken(token: string): GraphTokenVerification {
    const jwt = decodeJwt(token);
    if (!jwt) return { ok: false, reason: "malformed: not a JWT" };
    if (jwt.header.alg !== "RS256" || jwt.header.kid !== this.key.kid) return { ok: false, reason: "signature: unknown signing key" };
    if (!cryptoVerify("sha256", jwt.signingInput, this.key.publicKey, jwt.signature)) {
      return { ok: false, reason: "signature: invalid signature" };
    }
    const p = jwt.payload;
    const aud = str(p.aud);
    if (aud !== GRAPH_RESOURCE && aud !== GRAPH_APP_ID) return { ok: false, reason: "audience: not a Microsoft Graph token" };
    if (str(p.iss) !== `${this.issuerOrigin()}/${str(p.tid) ?? ""}/`) return { ok: false, reason: "issuer: unexpected issuer" };
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

  /**
   * What Entra checks of an on-behalf-of user assertion, throwing its error for the first failure:
   * this key's signature (AADSTS50013), the time with five minutes of skew (AADSTS500133), the
   * audience is the presenting client (AADSTS50013), the issuer, and the tenant it is presented to.
   */
  verifyUserAssertion(jwt: ParsedJwt | undefined, clientId: string, tenantSegment: string, isAlias: boolean): { oid: string; tid: string } {
    if (!jwt) throw new AuthorityError("AADSTS50027");
    const signatureOk =
      jwt.header.alg === "RS256" &&
      jwt.header.kid === this.key.kid &&
      cryptoVerify("sha256", jwt.signingInput, this.key.publicKey, jwt.signature);
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
    if (aud !== clientId && aud !== `api://${clientId}`) {
      throw new AuthorityError(
        "AADSTS50013",
        {},
        `Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '${aud}' and the expected audience is '${clientId}' or one of the Application Uris of this application with App ID '${clientId}'.`,
      );
    }
    const tid = str(p.tid) ?? "";
    const oid = str(p.oid) ?? "";
    if (!tid || !oid) throw new AuthorityError("AADSTS50027", {}, "The assertion has no tid or oid claim.");
    if (str(p.iss) !== `${this.issuerOrigin()}/${tid}/v2.0`) {
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

  private sign(payload: Record<string, unknown>): string {
    const header = { typ: "JWT", alg: "RS256", kid: this.key.kid, x5t: this.key.kid };
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
    const token = `${input}.${b64u(cryptoSign("sha256", Buffer.from(input), this.key.privateKey))}`;
    this.issuedTokens.add(token);
    return token;
  }
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

export function b64u(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/** A claim that is a string, or undefined. */
export function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** A claim that is a finite number, or undefined. */
export function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Seconds since the epoch, as JWT times are. */
export function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A stable GUID-shaped id derived from text (for service principal object ids). */
function guidFrom(text: string): string {
  const h = createHash("sha256").update(text).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
