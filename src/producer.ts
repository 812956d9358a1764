/**
 * workbook-session-sweeper/producer: the entry point for the services that open Excel sessions and
 * record them in the ledger. It exists so that a producing service can depend on this package
 * without loading the sweeper itself: the package root also exports the Functions triggers, the
 * on-behalf-of credentials and the Graph client, and requiring it loads `@azure/functions`,
 * `@azure/identity` and `@microsoft/microsoft-graph-client` into every producer. Requiring this
 * entry loads only the storage clients the ledger and the close queue need
 * (`@azure/data-tables`, `@azure/storage-queue`); test/package.test.ts holds it to that.
 *
 * Everything here is the same object as in the package root (`SessionProducer`, the error classes),
 * so `instanceof` holds whichever entry a caller imported it from.
 */
export {
  SessionProducer,
  type SessionProducerOptions,
  type RecordSessionInput,
  type TouchOptions,
} from "./ledger/SessionProducer";
// The whole lifecycle in one call: create, record, heartbeat, close, release.
export {
  withWorkbookSession,
  HeartbeatLostError,
  WorkbookSessionLostError,
  type WithWorkbookSessionOptions,
  type WorkbookSession,
} from "./producer/withWorkbookSession";
export { WorkbookRequestError, WorkbookSessionCreateError, type UserTokenSource } from "./producer/WorkbookSessionGraph";
export type { LedgerClientOptions } from "./ledger/tableClient";
// A connection string, or the services' URLs with a TokenCredential (a managed identity: no storage key).
export type { StorageConnection, StorageServiceUrls } from "./ledger/storageConnection";
export type { SessionRecord } from "./ledger/models";
export type { SessionKey, SessionToClose, SessionStatus } from "./core/session";
export type { ErrorInfo, InputProblem } from "./core/errors";
// A producer validates a workbook location before it opens a session, not only when record refuses it.
export { WORKBOOK_FORMS, parseWorkbookLocation, formatWorkbookLocation, type WorkbookLocation } from "./core/workbookLocation";
// The shape of a close request on the close queue (what requestClose sends), for services that send their own.
export type { CloseRequestMessage } from "./core/closeRequestMessage";
// Every error SessionProducer throws on purpose; callers branch on `code` (or the class), never on message text.
export {
  SweeperError,
  ValidationError,
  SessionNotOpenError,
  SessionAlreadyRecordedError,
  ConcurrentUpdateError,
  SessionNotFoundError,
  MalformedRowError,
} from "./core/errors";
