/**
 * Every code this app gives: the `code` of its errors, the `lastErrorCode` it writes to a row, the
 * codes in its summaries and answers. One catalogue, in one casing (PascalCase, as Azure's services
 * spell theirs), so a caller branches on a name from here and never on a message. The codes Graph
 * and the authority send (`tooManyRequests`, `invalidSessionReCreatable`, `AADSTS500133`) are
 * recorded as they came: they are theirs, and their documentation names them so.
 */
export const Codes = {
  // Errors the package throws on purpose (SweeperError's subclasses).
  InvalidConfiguration: "InvalidConfiguration",
  InvalidInput: "InvalidInput",
  InvalidUsage: "InvalidUsage",
  SettingsFileUnreadable: "SettingsFileUnreadable",
  SessionNotFound: "SessionNotFound",
  SessionNotOpen: "SessionNotOpen",
  // withWorkbookSession: the producer's side of a session's lifecycle.
  WorkbookSessionNotCreated: "WorkbookSessionNotCreated",
  WorkbookRequestFailed: "WorkbookRequestFailed",
  WorkbookSessionLost: "WorkbookSessionLost",
  HeartbeatLost: "HeartbeatLost",
  SessionAlreadyRecorded: "SessionAlreadyRecorded",
  ConcurrentUpdate: "ConcurrentUpdate",
  MalformedRow: "MalformedRow",
  UnsupportedSchemaVersion: "UnsupportedSchemaVersion",
  AssertionUnreadable: "AssertionUnreadable",
  AssertionKeyUnknown: "AssertionKeyUnknown",
  AssertionFormatRetired: "AssertionFormatRetired",
  // Why a close attempt ended without Graph's 204, when Graph gave no code of its own.
  UnsafeLocation: "UnsafeLocation",
  GraphRequestTimeout: "GraphRequestTimeout",
  NetworkError: "NetworkError",
  TokenError: "TokenError",
  NoToken: "NoToken",
  AuthorityUnreachable: "AuthorityUnreachable",
  TenantNotAllowed: "TenantNotAllowed",
  MissingAssertion: "MissingAssertion",
  AssertionUserMismatch: "AssertionUserMismatch",
  GoneAfterInterruptedClose: "GoneAfterInterruptedClose",
  // The app's own settings or credential failed: sends pause (for one tenant or for all), rows are
  // given back as they were, and the invocation fails with one of these (AppFaultError).
  ClientCredentialRejected: "ClientCredentialRejected",
  FederatedCredentialRejected: "FederatedCredentialRejected",
  ManagedIdentityUnavailable: "ManagedIdentityUnavailable",
  CredentialsNotConfigured: "CredentialsNotConfigured",
  StorageCredentialUnavailable: "StorageCredentialUnavailable",
  ClientSecretExpired: "ClientSecretExpired",
  InvalidGraphScope: "InvalidGraphScope",
  GraphPermissionNotConfigured: "GraphPermissionNotConfigured",
  ClientNotInTenant: "ClientNotInTenant",
  ClientDisabled: "ClientDisabled",
  TenantNotFound: "TenantNotFound",
} as const;

export type Code = (typeof Codes)[keyof typeof Codes];

/** Graph answered this status with no code in its body: `Http503`. */
export function httpStatusCode(status: number): string {
  return `Http${status}`;
}

/** Graph answered a success other than closeSession's documented 204: `Unexpected200`. */
export function unexpectedSuccessCode(status: number): string {
  return `Unexpected${status}`;
}
