/**
 * The app registrations the fake authority knows, and how a client proves it is one of them at
 * the token endpoint: a client secret (`client_secret_post`) or a certificate-signed client
 * assertion (`private_key_jwt`, RS256 or PS256, matched by `x5t` / `x5t#S256`), with Entra's
 * `invalid_client` errors (HTTP 401) when it does not.
 */
import { constants as cryptoConstants, createHash, timingSafeEqual, verify as cryptoVerify, X509Certificate, type KeyObject } from "node:crypto";
import { AuthorityError } from "./errors";
import { b64u, decodeJwt, nowSec, num, str } from "./tokens";

const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/** An app registration, as a test registers it. */
export interface ClientRegistration {
  clientId: string;
  clientSecret?: string;
  certificatePem?: string;
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
    graphScopes: client.graphScopes ?? ["Files.ReadWrite", "User.Read"],
    graphRoles: client.graphRoles ?? ["Files.ReadWrite.All"],
  };
}

/**
 * Checks the client's credential in a token request, throwing Entra's error for the first failure:
 * wrong secret AADSTS7000215, none AADSTS7000218, an unregistered certificate or a bad signature,
 * issuer, subject or audience AADSTS700027, an expired assertion AADSTS700024.
 *
 * @param tokenEndpoint - this tenant's token endpoint: a client assertion's `aud` must name it (or
 *   the tenant's v2.0 issuer, which Entra also accepts).
 */
export function authenticateClient(client: RegisteredClient, params: URLSearchParams, tokenEndpoint: { origin: string; tenantSegment: string }): void {
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
  const { origin, tenantSegment } = tokenEndpoint;
  const audOk = aud === `${origin}/${tenantSegment}/oauth2/v2.0/token` || aud === `${origin}/${tenantSegment}/v2.0`;
  if (!audOk) throw new AuthorityError("AADSTS700027", {}, "[Reason - The audience of the client assertion is not this token endpoint.]");
  const exp = num(p.exp);
  const nbf = num(p.nbf);
  const now = nowSec();
  if (exp === undefined || exp <= now - 300 || (nbf !== undefined && nbf > now + 300)) throw new AuthorityError("AADSTS700024");
}

/** Compares secrets in constant time (hashes first, so lengths do not leak through timing either). */
function safeEqual(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y) && a.length === b.length;
}
