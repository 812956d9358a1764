/**
 * The app registrations the fake authority knows, and how a client proves it is one of them at
 * the token endpoint: a client secret (`client_secret_post`), a certificate-signed client
 * assertion (`private_key_jwt`, RS256 or PS256, matched by `x5t` / `x5t#S256`), or a federated
 * client assertion (a token of an identity the registration trusts through a federated identity
 * credential, e.g. a managed identity's token for `api://AzureADTokenExchange`), with Entra's
 * `invalid_client` errors (HTTP 401) when it does not.
 */
import { constants as cryptoConstants, createHash, timingSafeEqual, verify as cryptoVerify, X509Certificate, type KeyObject } from "node:crypto";
import { AuthorityError } from "./errors";
import { b64u, decodeJwt, nowSec, num, str, TOKEN_EXCHANGE_AUDIENCE, type ParsedJwt } from "./tokens";

const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/**
 * A federated identity credential: the app registration accepts, as its client assertion, a token
 * whose `iss`, `sub` and `aud` are exactly these (case-sensitive, as Entra matches them). Only
 * tokens this authority signed can be verified here, so `issuer` is one of its own
 * (`{authorityHost}/{tenant}/v2.0`, what a managed identity's exchange token carries).
 */
export interface FederatedCredential {
  issuer: string;
  subject: string;
  /** Default `api://AzureADTokenExchange`. */
  audience?: string;
  /** A label, as the portal asks for one. */
  name?: string;
}

/** An app registration, as a test registers it. */
export interface ClientRegistration {
  clientId: string;
  /** None: the registration has no secret, and any secret presented is refused (AADSTS7000215). */
  clientSecret?: string;
  certificatePem?: string;
  /** Identities whose tokens it accepts as client assertions. */
  federatedCredentials?: FederatedCredential[];
  /** Consented delegated Graph permissions. Default ["Files.ReadWrite", "User.Read"]. */
  graphScopes?: string[];
  /** Application Graph permissions (client_credentials). Default ["Files.ReadWrite.All"]. */
  graphRoles?: string[];
}

/** An app registration, as the token endpoint checks requests against it. */
export interface RegisteredClient {
  clientId: string;
  clientSecret?: string;
  certificate?: { publicKey: KeyObject; x5t: string; x5tS256: string };
  federatedCredentials: Required<Omit<FederatedCredential, "name">>[];
  graphScopes: string[];
  graphRoles: string[];
}

/** Reads a registration: the certificate's public key and thumbprints, the permissions' defaults. */
export function registeredClient(client: ClientRegistration): RegisteredClient {
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
  return {
    clientId: client.clientId,
    ...(client.clientSecret !== undefined ? { clientSecret: client.clientSecret } : {}),
    ...(certificate ? { certificate } : {}),
    federatedCredentials: (client.federatedCredentials ?? []).map(federatedCredential),
    graphScopes: client.graphScopes ?? ["Files.ReadWrite", "User.Read"],
    graphRoles: client.graphRoles ?? ["Files.ReadWrite.All"],
  };
}

/** A federated identity credential as the token endpoint matches it (audience defaulted). */
export function federatedCredential(f: FederatedCredential): Required<Omit<FederatedCredential, "name">> {
  return { issuer: f.issuer, subject: f.subject, audience: f.audience ?? TOKEN_EXCHANGE_AUDIENCE };
}

/** How a token request authenticates its client: `iss` = the client id is a certificate's assertion. */
export function clientAuthKind(params: URLSearchParams): "secret" | "certificate" | "federated" | "none" {
  if (params.get("client_secret")) return "secret";
  const assertion = params.get("client_assertion");
  if (!assertion) return "none";
  const iss = str(decodeJwt(assertion)?.payload.iss);
  return iss !== undefined && iss !== params.get("client_id") ? "federated" : "certificate";
}

/**
 * Checks the client's credential in a token request, throwing Entra's error for the first failure:
 * wrong secret (or a secret for a registration without one) AADSTS7000215, none AADSTS7000218, an
 * unregistered certificate or a bad signature, issuer, subject or audience AADSTS700027, an expired
 * assertion AADSTS700024. An assertion whose `iss` is not the client id is a federated one: see
 * `authenticateFederated`.
 *
 * @param tokenEndpoint - this tenant's token endpoint: a client assertion's `aud` must name it (or
 *   the tenant's v2.0 issuer, which Entra also accepts).
 * @param signedByAuthority - whether the authority's own key signed a JWT (for federated assertions).
 */
export function authenticateClient(
  client: RegisteredClient,
  params: URLSearchParams,
  tokenEndpoint: { origin: string; tenantSegment: string },
  signedByAuthority: (jwt: ParsedJwt) => boolean,
): void {
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
  if (clientAuthKind(params) === "federated") return authenticateFederated(client, jwt, signedByAuthority);
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
  const { origin, tenantSegment } = tokenEndpoint;
  const audOk = aud === `${origin}/${tenantSegment}/oauth2/v2.0/token` || aud === `${origin}/${tenantSegment}/v2.0`;
  if (!audOk) throw new AuthorityError("AADSTS700027", {}, "[Reason - The audience of the client assertion is not this token endpoint.]");
  const exp = num(p.exp);
  const nbf = num(p.nbf);
  const now = nowSec();
  if (exp === undefined || exp <= now - 300 || (nbf !== undefined && nbf > now + 300)) throw new AuthorityError("AADSTS700024");
}

/**
 * A federated client assertion, checked as Entra does, first failure wins: a record with its
 * issuer (AADSTS700211), the issuer's signature (AADSTS700027: only this authority's key is known
 * here), its time with five minutes of skew (AADSTS700024), a record with its issuer and subject
 * (AADSTS700213), one with its issuer, subject and audience (AADSTS700212).
 */
function authenticateFederated(client: RegisteredClient, jwt: ParsedJwt, signedByAuthority: (jwt: ParsedJwt) => boolean): void {
  const p = jwt.payload;
  const issuer = str(p.iss) ?? "";
  const subject = str(p.sub) ?? "";
  const audiences = Array.isArray(p.aud) ? p.aud.filter((a): a is string => typeof a === "string") : [str(p.aud) ?? ""];
  const byIssuer = client.federatedCredentials.filter((f) => f.issuer === issuer);
  if (byIssuer.length === 0) throw new AuthorityError("AADSTS700211", { issuer });
  if (!signedByAuthority(jwt)) {
    throw new AuthorityError("AADSTS700027", {}, "[Reason - The key was not found.]");
  }
  const exp = num(p.exp);
  const nbf = num(p.nbf);
  const now = nowSec();
  if (exp === undefined || exp <= now - 300 || (nbf !== undefined && nbf > now + 300)) throw new AuthorityError("AADSTS700024");
  const bySubject = byIssuer.filter((f) => f.subject === subject);
  if (bySubject.length === 0) throw new AuthorityError("AADSTS700213", { subject });
  if (!bySubject.some((f) => audiences.includes(f.audience))) throw new AuthorityError("AADSTS700212", { audience: audiences.join(", ") });
}

/** Compares secrets in constant time (hashes first, so lengths do not leak through timing either). */
function safeEqual(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y) && a.length === b.length;
}
