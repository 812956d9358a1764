export { SessionLedger, DEFAULT_PAGE_SIZE, type SessionLedgerOptions, type ListStaleOptions, type TransitionRequest } from "./SessionLedger";
export { SessionProducer, type SessionProducerOptions, type RecordSessionInput, type TouchOptions } from "./SessionProducer";
export { createLedgerTableClient, type LedgerClientOptions } from "./tableClient";
export { partitionKeyFor, rowKeyFor, isGuid } from "./keys";
export {
  parseWorkbookLocation,
  formatWorkbookLocation,
  workbookKey,
  isSafeIdSegment,
  WORKBOOK_FORMS,
  type WorkbookLocation,
} from "./location";
export * from "./models";
