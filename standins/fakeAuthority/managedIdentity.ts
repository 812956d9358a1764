/**
 * The App Service / Azure Functions managed-identity endpoint, as `IDENTITY_ENDPOINT` and
 * `IDENTITY_HEADER` point an app at it, served by the fake authority.
 *
 * What @azure/identity 4.13's ManagedIdentityCredential sends (it delegates to msal-node 5.x's
 * ManagedIdentityApplication; source `AppService`, chosen when both variables are set):
 *   GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource={resource}[&client_id=|&object_id=|&mi_res_id=]
 *   X-IDENTITY-HEADER: {IDENTITY_HEADER}
 * `resource` is the scope without `/.default`. What it reads of the answer: `access_token`,
 * `expires_on` (epoch seconds, number or string, or ISO 8601), `resource` (filed as the scope),
 * `token_type`; of an error: `error` (string or `{code, message}`), `message` or
 * `error_description`, `correlation_id`/`correlationId`.
 *
 * Faithful to App Service's documented answer for api-version 2019-08-01:
 * `200 {access_token, expires_on: "<epoch seconds>", resource, token_type: "Bearer", client_id}`,
 * and to its reported error for an identity it cannot find (a client id not assigned, or no
 * system-assigned identity when none is named): `400 {"statusCode":400,"message":"Unable to load
 * the proper Managed Identity.","correlationId":"…"}`. A missing or wrong `X-IDENTITY-HEADER` is
 * answered 401 (reported); the bodies of that and of the other errors (bad api-version, no resource,
 * an unknown resource) are this stand-in's own, in the same shape.
 *
 * Resources it serves: Azure Storage (`https://storage.azure.com`, with or without the slash) and
 * Key Vault (`https://vault.azure.net`: a well-formed token Storage must refuse), v1.0 tokens from
 * `https://sts.windows.net/{tid}/`; and `api://AzureADTokenExchange`, a v2.0 token from this
 * authority, the client assertion of an app registration that trusts the identity.
 *
 * Unlike App Service (plain http on a local port), it is served over https on the authority's
 * port: msal-node accepts either. Tokens live 24 h by default, as managed-identity tokens do.
 */
import { randomUUID } from "node:crypto";
import type { AuthorityTokens, ManagedIdentityPrincipal } from "./tokens";
import { KEY_VAULT_RESOURCE, STORAGE_RESOURCE, TOKEN_EXCHANGE_AUDIENCE } from "./tokens";

export const MANAGED_IDENTITY_PATH = "/msi/token";
export const APP_SERVICE_MSI_API_VERSION = "2019-08-01";

/** A managed identity as a test assigns it to the app. */
export interface ManagedIdentityRegistration {
  /** Default: a new GUID. */
  clientId?: string;
  /** The service principal's object (principal) id. Default: a new GUID. */
  objectId?: string;
  /** "system" (at most one: answered when no id is asked for) or "user" (the default). */
  principal?: "system" | "user";
  /** The tenant the identity lives in. Default: a new GUID. */
  tenantId?: string;
  /** Its ARM resource id (`mi_res_id`, `xms_mirid`). Default: made up from the client id. */
  resourceId?: string;
}

/** A managed identity assigned to the app. */
export interface ManagedIdentity extends ManagedIdentityPrincipal {
  readonly principal: "system" | "user";
}

/** The app settings App Service sets for its managed-identity endpoint. */
export interface ManagedIdentityEnvironment {
  IDENTITY_ENDPOINT: string;
  IDENTITY_HEADER: string;
}

/** One request to the identity endpoint. Never holds the header's value or a token. */
export interface ManagedIdentityRequestRecord {
  /** Order of arrival at the identity endpoint, from 1 (restarts at reset()). */
  seq: number;
  method: string;
  apiVersion: string | undefined;
  resource: string | undefined;
  /** The id asked for: `client_id`, `object_id`/`principal_id` or `mi_res_id`, if any. */
  requestedId?: { kind: "client_id" | "object_id" | "mi_res_id"; value: string };
  /** Whether X-IDENTITY-HEADER was present and right. */
  headerOk: boolean;
  /** The client id of the identity answered for. */
  identityClientId?: string;
  /** What was issued: a Storage or Key Vault access token, or an exchange token; undefined when refused. */
  tokenKind?: "storage" | "keyvault" | "exchange";
  status: number;
  /** The error message answered, if any. */
  error?: string;
  at: number;
}

export interface ManagedIdentityAnswer {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

/** The identities assigned to the app and the endpoint's answers. */
export class ManagedIdentityEndpoint {
  /** The secret App Service puts in IDENTITY_HEADER (rotated by the platform; fixed for one authority). */
  readonly identityHeader = randomUUID();
  private readonly identities: ManagedIdentity[] = [];

  constructor(
    private readonly tokens: AuthorityTokens,
    private readonly lifetimeSec: number,
  ) {}

  register(r: ManagedIdentityRegistration = {}): ManagedIdentity {
    const principal = r.principal ?? "user";
    if (principal === "system" && this.identities.some((i) => i.principal === "system")) {
      throw new Error("registerManagedIdentity: an app has at most one system-assigned identity");
    }
    const clientId = r.clientId ?? randomUUID();
    if (this.identities.some((i) => i.clientId.toLowerCase() === clientId.toLowerCase())) {
      throw new Error(`registerManagedIdentity: client id ${clientId} is already assigned`);
    }
    const tenantId = r.tenantId ?? randomUUID();
    const identity: ManagedIdentity = {
      principal,
      clientId,
      objectId: r.objectId ?? randomUUID(),
      tenantId,
      resourceId:
        r.resourceId ??
        (principal === "system"
          ? `/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/standins/providers/Microsoft.Web/sites/app-${clientId.slice(0, 8)}`
          : `/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/standins/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-${clientId.slice(0, 8)}`),
    };
    this.identities.push(identity);
    return identity;
  }

  /** Answers one request to the endpoint (as `readManagedIdentityRequest` read it into `record`), filling `record`. */
  answer(method: string, identityHeader: string | undefined, record: ManagedIdentityRequestRecord): ManagedIdentityAnswer {
    const correlationId = randomUUID();
    const fail = (status: number, message: string): ManagedIdentityAnswer => {
      record.status = status;
      record.error = message;
      return { status, body: { statusCode: status, message, correlationId }, headers: { "x-correlation-id": correlationId } };
    };
    if (method !== "GET") return fail(405, `The requested resource does not support http method '${method}'.`);
    if (identityHeader === undefined || identityHeader !== this.identityHeader) return fail(401, "Unauthorized request. The X-IDENTITY-HEADER is missing or invalid.");
    record.headerOk = true;
    if (record.apiVersion !== APP_SERVICE_MSI_API_VERSION) {
      return fail(400, `The api-version '${record.apiVersion ?? ""}' is not supported by this endpoint; use ${APP_SERVICE_MSI_API_VERSION}.`);
    }
    const resource = record.resource;
    if (!resource) return fail(400, "The request is missing the required parameter 'resource'.");
    const identity = this.find(record.requestedId);
    if (!identity) return fail(400, "Unable to load the proper Managed Identity.");
    record.identityClientId = identity.clientId;

    let token: string;
    const normalized = resource.replace(/\/+$/, "");
    if (normalized.toLowerCase() === STORAGE_RESOURCE) {
      record.tokenKind = "storage";
      token = this.tokens.managedIdentityResourceToken(identity, resource, this.lifetimeSec);
    } else if (normalized.toLowerCase() === KEY_VAULT_RESOURCE) {
      record.tokenKind = "keyvault";
      token = this.tokens.managedIdentityResourceToken(identity, resource, this.lifetimeSec);
    } else if (normalized === TOKEN_EXCHANGE_AUDIENCE) {
      record.tokenKind = "exchange";
      token = this.tokens.managedIdentityExchangeToken(identity, this.lifetimeSec);
    } else {
      return fail(
        400,
        `AADSTS500011: The resource principal named ${resource} was not found in the tenant named ${identity.tenantId}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`,
      );
    }
    const payload = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString("utf8")) as { exp: number };
    record.status = 200;
    return {
      status: 200,
      body: { access_token: token, expires_on: String(payload.exp), resource, token_type: "Bearer", client_id: identity.clientId },
      headers: { "x-correlation-id": correlationId },
    };
  }

  /** The identity asked for: by id, or the system-assigned one when none is named. */
  private find(requested: ManagedIdentityRequestRecord["requestedId"]): ManagedIdentity | undefined {
    if (!requested) return this.identities.find((i) => i.principal === "system");
    const value = requested.value.toLowerCase();
    return this.identities.find((i) =>
      requested.kind === "client_id"
        ? i.clientId.toLowerCase() === value
        : requested.kind === "object_id"
          ? i.objectId.toLowerCase() === value
          : i.resourceId.toLowerCase() === value,
    );
  }
}

/** Reads what the record keeps of a request to the endpoint (nothing secret). */
export function readManagedIdentityRequest(seq: number, method: string, url: URL, at: number): ManagedIdentityRequestRecord {
  const q = url.searchParams;
  const clientId = q.get("client_id");
  const objectId = q.get("object_id") ?? q.get("principal_id");
  const resourceId = q.get("mi_res_id");
  const requestedId: ManagedIdentityRequestRecord["requestedId"] = clientId
    ? { kind: "client_id", value: clientId }
    : objectId
      ? { kind: "object_id", value: objectId }
      : resourceId
        ? { kind: "mi_res_id", value: resourceId }
        : undefined;
  return {
    seq,
    method,
    apiVersion: q.get("api-version") ?? undefined,
    resource: q.get("resource") ?? undefined,
    ...(requestedId ? { requestedId } : {}),
    headerOk: false,
    status: 0,
    at,
  };
}
