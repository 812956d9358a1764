/**
 * A fake Microsoft Entra ID authority, served over real HTTPS on 127.0.0.1, so that @azure/identity's
 * real `OnBehalfOfCredential` (MSAL underneath) runs its real discovery and token exchange against it.
 *
 * One job a file: tokens.ts signs and verifies the JWTs (and remembers every one it signed),
 * errors.ts holds the AADSTS catalogue and Entra's error body, clients.ts the app registrations
 * and client authentication (secret, certificate, federated identity credentials),
 * managedIdentity.ts the App Service managed-identity endpoint, server.ts the endpoints
 * (discovery, JWKS, the token endpoint with on-behalf-of and client credentials, the identity
 * endpoint) and what tests read and steer.
 */
import { FakeAuthorityServer, type FakeAuthority, type FakeAuthorityOptions } from "./server";
import { generateSigningKey } from "./tokens";

export type { ClientRegistration, FederatedCredential } from "./clients";
export {
  APP_SERVICE_MSI_API_VERSION,
  MANAGED_IDENTITY_PATH,
  type ManagedIdentity,
  type ManagedIdentityEnvironment,
  type ManagedIdentityRegistration,
  type ManagedIdentityRequestRecord,
} from "./managedIdentity";
export type { FailRule, FakeAuthority, FakeAuthorityOptions, OtherRequestRecord, TokenRequestRecord } from "./server";
export { decodeJwt, GRAPH_APP_ID, GRAPH_RESOURCE, KEY_VAULT_RESOURCE, STORAGE_RESOURCE, TOKEN_EXCHANGE_AUDIENCE, type GraphTokenClaims, type GraphTokenVerification, type UserAssertionRequest } from "./tokens";

/** Starts an authority with a signing key of its own, listening on a free port. */
export async function startFakeAuthority(options: FakeAuthorityOptions): Promise<FakeAuthority> {
  const authority = new FakeAuthorityServer(options, await generateSigningKey());
  await authority.listen();
  return authority;
}
