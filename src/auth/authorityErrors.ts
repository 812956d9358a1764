import type { CloseOutcome, PauseScope } from "../core/closeOutcome";
import { Codes } from "../core/codes";
import { ManagedIdentityUnavailableError } from "./managedIdentity";

/**
 * The user can no longer be represented, and by then the session has idled out on Graph too: an
 * assertion lives 60-90 minutes, a session 5-7 minutes without activity.
 */
const SESSION_OUTLIVED: Record<string, string> = {
  "500133": "The user's assertion has expired.",
  "700082": "The user's refresh token has expired from inactivity.",
  "50173": "The user's grant was revoked (for example by a password change).",
  "50078": "The user must complete multi-factor authentication again.",
  "50076": "The user must complete multi-factor authentication again.",
};

/** The authority had a passing problem; asking again later may work. */
const TRANSIENT = new Set(["90033", "90006", "90019", "90086", "50196", "900561"]);

/**
 * Answers about the app, not about a user or a session: its credential, its client id, the scope it
 * asks for, its standing in a tenant. Every row of that scope would get the same answer, and none of
 * them says anything about its session, so sends pause (for the tenant, or for everyone) and the
 * rows go back as they were until the settings are fixed. The message says what to fix; the
 * authority's code is kept in it, its text is not.
 */
const APP_FAULTS: Record<string, { scope: PauseScope; code: string; message: string }> = {
  "7000215": {
    scope: "app",
    code: Codes.ClientCredentialRejected,
    message: "The authority refused the app's client secret: set AZURE_CLIENT_SECRET to a current secret's value (not its id).",
  },
  "7000222": {
    scope: "app",
    code: Codes.ClientSecretExpired,
    message: "The app's client secret has expired: add a new secret to the app registration and set AZURE_CLIENT_SECRET to it.",
  },
  "7000218": {
    scope: "app",
    code: Codes.ClientCredentialRejected,
    message: "The authority received no client credential: set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH.",
  },
  "70002": {
    scope: "app",
    code: Codes.ClientCredentialRejected,
    message: "The authority could not validate the app's credential: check AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH.",
  },
  "700027": {
    scope: "app",
    code: Codes.ClientCredentialRejected,
    message: "The authority refused the app's certificate (not registered on the app, or its signature did not verify): check AZURE_CLIENT_CERTIFICATE_PATH.",
  },
  "700024": {
    scope: "app",
    code: Codes.ClientCredentialRejected,
    message: "The authority refused the app's client assertion as outside its valid time: check this host's clock and AZURE_CLIENT_CERTIFICATE_PATH.",
  },
  "70011": {
    scope: "app",
    code: Codes.InvalidGraphScope,
    message: "The authority refused the scope asked for: set GRAPH_SCOPE to a delegated Graph permission such as Files.ReadWrite.",
  },
  "500011": {
    scope: "app",
    code: Codes.InvalidGraphScope,
    message: "The resource GRAPH_SCOPE names was not found: a permission on Graph's host (GRAPH_BASE_URL) is needed.",
  },
  // The app registration's federated credential does not match the managed identity's token.
  "700211": {
    scope: "app",
    code: Codes.FederatedCredentialRejected,
    message: "The app registration has no federated credential for the managed identity's issuer: add one for the identity AZURE_CLIENT_ASSERTION_IDENTITY names.",
  },
  "700213": {
    scope: "app",
    code: Codes.FederatedCredentialRejected,
    message: "The app registration has no federated credential for this managed identity (its object id as subject): add one, or set AZURE_CLIENT_ASSERTION_IDENTITY to the identity it trusts.",
  },
  "700212": {
    scope: "app",
    code: Codes.FederatedCredentialRejected,
    message: "The app registration's federated credential names another audience: set AZURE_CLIENT_ASSERTION_AUDIENCE to it (api://AzureADTokenExchange on the public cloud).",
  },
  "70021": {
    scope: "app",
    code: Codes.FederatedCredentialRejected,
    message: "The authority found no federated credential matching the managed identity's token: check the app registration's federated credentials and AZURE_CLIENT_ASSERTION_IDENTITY.",
  },
  "65005": {
    scope: "app",
    code: Codes.GraphPermissionNotConfigured,
    message: "The app registration does not list the permission GRAPH_SCOPE asks for: add it as a delegated Graph permission and grant consent.",
  },
  "700016": {
    scope: "tenant",
    code: Codes.ClientNotInTenant,
    message: "The app (AZURE_CLIENT_ID) was not found in the session's tenant: check AZURE_CLIENT_ID, and that the tenant has consented to the app.",
  },
  "7000112": {
    scope: "tenant",
    code: Codes.ClientDisabled,
    message: "The app is disabled in the session's tenant (its enterprise application): enable it there.",
  },
  "70001": {
    scope: "tenant",
    code: Codes.ClientDisabled,
    message: "The app is disabled in the session's tenant (its enterprise application): enable it there.",
  },
  "90002": {
    scope: "tenant",
    code: Codes.TenantNotFound,
    message:
      "The authority does not know the session's tenant: check AZURE_AUTHORITY_HOST, or remove the tenant from AZURE_ADDITIONALLY_ALLOWED_TENANTS to have its sessions end failed.",
  },
};

/**
 * Maps what @azure/identity threw while exchanging a user's assertion to a close outcome. Every
 * authority error arrives as AuthenticationRequiredError (or CredentialUnavailableError) with the
 * AADSTS code only in its message, so the code is read from there. The outcome's message is ours:
 * the authority's text is not passed on, it may quote what was sent.
 */
export function classifyAuthorityError(error: unknown, context: { now: Date; retryAfterMs: number }): Exclude<CloseOutcome, { kind: "closed" }> {
  // The app's own identity gave no client assertion: nothing reached the authority.
  if (error instanceof ManagedIdentityUnavailableError) return { kind: "paused", scope: "app", code: error.code, message: error.message };
  const text = error instanceof Error ? `${error.name} ${error.message}` : String(error);
  const aadsts = /AADSTS(\d{4,7})/.exec(text)?.[1];
  const retryAt = new Date(context.now.getTime() + context.retryAfterMs);
  if (aadsts && SESSION_OUTLIVED[aadsts]) {
    return { kind: "expired", code: `AADSTS${aadsts}`, message: SESSION_OUTLIVED[aadsts]! };
  }
  if (aadsts && TRANSIENT.has(aadsts)) {
    return { kind: "retry", retryAt, cooldown: false, code: `AADSTS${aadsts}`, message: "The authority is temporarily unavailable." };
  }
  const appFault = aadsts ? APP_FAULTS[aadsts] : undefined;
  if (appFault) return { kind: "paused", scope: appFault.scope, code: appFault.code, message: `${appFault.message} (AADSTS${aadsts})` };
  if (aadsts) {
    return {
      kind: "failed",
      code: `AADSTS${aadsts}`,
      message: "The authority refused the on-behalf-of exchange for this user (check the user's consent and access to the app).",
    };
  }
  if (/endpoints_resolution_error|ENOTFOUND|ECONNREFUSED|ECONNRESET|ETIMEDOUT|fetch failed|socket|network|timeout/i.test(text)) {
    // No token can be had for anyone: nothing to learn about this session.
    return { kind: "paused", scope: "app", code: Codes.AuthorityUnreachable, message: "The authority could not be reached: check AZURE_AUTHORITY_HOST and the network." };
  }
  return { kind: "retry", retryAt, cooldown: false, code: Codes.TokenError, message: "The token request failed without an authority error code." };
}
