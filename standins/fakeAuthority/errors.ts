/**
 * The fake authority's error answers: the AADSTS codes it knows, and the body Entra wraps them in.
 * Kept apart from the token endpoint so that what Entra answers (status, OAuth error, wording) can
 * be read, and checked against Entra's documentation, in one table.
 */

/** What Entra answers for one AADSTS code. `{name}` in a description is filled from the request. */
export interface KnownError {
  status: number;
  error: string;
  description: string;
}

/** Entra's answers for the codes tests ask for by name (descriptions follow Entra's wording). */
export const KNOWN_ERRORS: Readonly<Record<string, KnownError>> = {
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
  AADSTS7000222: {
    status: 401,
    error: "invalid_client",
    description: "The provided client secret keys for app '{clientId}' are expired. Visit the Azure portal to create new keys for your app.",
  },
  AADSTS7000112: { status: 400, error: "unauthorized_client", description: "Application '{clientId}' is disabled." },
  AADSTS90002: {
    status: 400,
    error: "invalid_request",
    description:
      "Tenant '{tenantId}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
  },
  AADSTS700024: { status: 401, error: "invalid_client", description: "Client assertion is not within its valid time range." },
  AADSTS700027: {
    status: 401,
    error: "invalid_client",
    description: "Client assertion failed signature validation.",
  },
  // Federated identity credentials (a client assertion issued by a trusted identity provider, e.g.
  // a managed identity's token for api://AzureADTokenExchange). The three specific codes are
  // invalid_client, as Entra answers them (AADSTS700211 reported with 401); the older general one is
  // invalid_request, HTTP 400. Matching is case-sensitive.
  AADSTS700211: {
    status: 401,
    error: "invalid_client",
    description:
      "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
  },
  AADSTS700212: {
    status: 401,
    error: "invalid_client",
    description:
      "No matching federated identity record found for presented assertion audience '{audience}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
  },
  AADSTS700213: {
    status: 401,
    error: "invalid_client",
    description:
      "No matching federated identity record found for presented assertion subject '{subject}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
  },
  AADSTS70021: {
    status: 400,
    error: "invalid_request",
    description:
      "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
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

/** The status of a plain OAuth error name a test injects (anything not listed: 400). */
const OAUTH_ERROR_STATUS: Readonly<Record<string, number>> = {
  invalid_client: 401,
  temporarily_unavailable: 503,
  server_error: 500,
};

/**
 * Thrown inside the token endpoint to answer with an Entra error: `code` is an AADSTS code or an
 * OAuth error name, `values` fill the description's `{name}`s, `extra` follows the description.
 */
export class AuthorityError extends Error {
  constructor(
    readonly code: string,
    readonly values: Record<string, string | undefined> = {},
    readonly extra = "",
  ) {
    super(code);
  }
}

/** What the token request was, for the description's `{name}`s and the trace lines. */
export interface ErrorContext {
  clientId: string;
  tenantId: string;
  grantType: string;
  method: string;
  traceId: string;
  correlationId: string;
  /** The authority's origin, for `error_uri`. */
  origin: string;
}

/** An error answer as Entra sends it, and what the authority records of it. */
export interface EntraErrorAnswer {
  status: number;
  /** The OAuth error ("invalid_grant"). */
  oauthError: string;
  /** What the request record says: the AADSTS code, or the OAuth error when there is none. */
  recordedError: string;
  body: Record<string, unknown>;
}

/**
 * Entra's error body: `{error, error_description: "AADSTSn: ...\r\nTrace ID: ...\r\nCorrelation ID:
 * ...\r\nTimestamp: ...", error_codes: [n], timestamp, trace_id, correlation_id, error_uri}`. MSAL
 * reads the code from `error_codes` and the description's prefix, so both carry it.
 */
export function entraErrorAnswer(e: AuthorityError, context: ErrorContext): EntraErrorAnswer {
  const known = KNOWN_ERRORS[e.code];
  const numeric = /^AADSTS(\d+)$/.exec(e.code);
  const status = known?.status ?? (numeric ? 400 : OAUTH_ERROR_STATUS[e.code] ?? 400);
  const oauthError = known?.error ?? (numeric ? "invalid_grant" : e.code);
  const { clientId, tenantId, grantType, method, traceId, correlationId } = context;
  const baseDescription = known
    ? fill(known.description, { clientId, tenantId, grantType, method, issued: entraTimestamp(new Date(Date.now() - 91 * 86400_000)), ...e.values })
    : "Simulated failure.";
  const timestamp = entraTimestamp();
  const prefix = numeric ? `${e.code}: ` : "";
  const description =
    `${prefix}${baseDescription}${e.extra ? ` ${e.extra}` : ""}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`;
  return {
    status,
    oauthError,
    recordedError: numeric ? e.code : oauthError,
    body: {
      error: oauthError,
      error_description: description,
      error_codes: numeric ? [Number(numeric[1])] : [],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      ...(numeric ? { error_uri: `${context.origin}/error?code=${numeric[1]}` } : {}),
    },
  };
}

/** Entra's timestamp form: "2026-11-23 12:00:00Z". */
function entraTimestamp(d = new Date()): string {
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fill(template: string, values: Record<string, string | undefined>): string {
  return template.replace(/\{(\w+)\}/g, (m, k: string) => values[k] ?? m);
}
