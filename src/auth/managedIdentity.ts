import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from "@azure/identity";
import { Codes } from "../core/codes";
import { SweeperError } from "../core/errors";

/** Which identity reaches the storage account: the Function app's managed identity, or the default chain. */
export type StorageIdentityOptions =
  | { readonly kind: "managedIdentity"; readonly clientId?: string; readonly resourceId?: string }
  | { readonly kind: "default"; readonly managedIdentityClientId?: string };

/**
 * The credential for an identity-based storage connection, as the Functions host builds its own:
 * `managedidentity` is the app's managed identity (a user-assigned one by client id or resource
 * id); without it, DefaultAzureCredential (a developer's sign-in locally, the managed identity on Azure).
 */
export function storageCredential(identity: StorageIdentityOptions): TokenCredential {
  if (identity.kind === "default") {
    return new DefaultAzureCredential(identity.managedIdentityClientId ? { managedIdentityClientId: identity.managedIdentityClientId } : {});
  }
  if (identity.resourceId) return new ManagedIdentityCredential({ resourceId: identity.resourceId });
  if (identity.clientId) return new ManagedIdentityCredential({ clientId: identity.clientId });
  return new ManagedIdentityCredential();
}

/** The managed identity could not give the token the on-behalf-of exchange proves the app with. */
export class ManagedIdentityUnavailableError extends SweeperError {
  readonly code = Codes.ManagedIdentityUnavailable;
}

export interface ManagedIdentityAssertionOptions {
  /** A user-assigned identity's client id. @default the system-assigned identity */
  clientId?: string;
  /** The audience the app registration's federated credential names, e.g. `api://AzureADTokenExchange`. */
  audience: string;
}

/**
 * The app registration's client assertion, taken from the Function app's managed identity: the app
 * registration trusts that identity as a federated credential, so no secret or certificate exists
 * anywhere. One credential for every user's exchange: it caches its token until shortly before
 * it expires. A failure throws ManagedIdentityUnavailableError (the cause's text is not kept: it may
 * quote the identity endpoint's answer).
 */
export function managedIdentityAssertion(options: ManagedIdentityAssertionOptions): () => Promise<string> {
  const credential = options.clientId ? new ManagedIdentityCredential({ clientId: options.clientId }) : new ManagedIdentityCredential();
  const scope = `${options.audience.replace(/\/+$/, "")}/.default`;
  const which = options.clientId ? `the user-assigned identity ${options.clientId}` : "the system-assigned identity";
  return async () => {
    let token;
    try {
      token = await credential.getToken(scope);
    } catch (error) {
      const name = error instanceof Error ? error.name : "Error";
      throw new ManagedIdentityUnavailableError(
        `The Function app's managed identity (${which}) gave no token for ${options.audience} (${name}): check that the identity is assigned to the app and AZURE_CLIENT_ASSERTION_IDENTITY names it.`,
      );
    }
    if (!token) throw new ManagedIdentityUnavailableError(`The Function app's managed identity (${which}) gave no token for ${options.audience}.`);
    return token.token;
  };
}
