import { TableClient, TableServiceClient, type TableServiceClientOptions } from "@azure/data-tables";
import { isRestError, type PipelinePolicy } from "@azure/core-rest-pipeline";
import type { ServiceClock } from "./serviceClock";

export interface LedgerClientOptions {
  /** Learns the service's time from its answers' `Date` headers. @default none */
  serviceClock?: ServiceClock;
  /** Called once per HTTP request the table client sends (retries included): for request counts. */
  onRequest?: (request: { method: string; url: string }) => void;
}

/**
 * A TableClient for the ledger. Plain http is allowed only towards the local emulator on loopback
 * (Azurite); a real account is always https.
 */
export function createLedgerTableClient(connectionString: string, tableName: string, options: LedgerClientOptions = {}): TableClient {
  return TableClient.fromConnectionString(connectionString, tableName, ledgerClientOptions(connectionString, options));
}

/** The account's table service, for the history tables' names; the same rules as the ledger's client. */
export function createLedgerServiceClient(connectionString: string, options: LedgerClientOptions = {}): TableServiceClient {
  return TableServiceClient.fromConnectionString(connectionString, ledgerClientOptions(connectionString, options));
}

function ledgerClientOptions(connectionString: string, options: LedgerClientOptions): TableServiceClientOptions {
  const clientOptions: TableServiceClientOptions = {
    allowInsecureConnection: isLoopbackEmulator(connectionString),
  };
  if (options.onRequest) {
    const onRequest = options.onRequest;
    const counter: PipelinePolicy = {
      name: "ledgerRequestCounter",
      sendRequest(request, next) {
        onRequest({ method: request.method, url: request.url });
        return next(request);
      },
    };
    clientOptions.additionalPolicies = [{ policy: counter, position: "perRetry" }];
  }
  if (options.serviceClock) clientOptions.additionalPolicies = [...(clientOptions.additionalPolicies ?? []), { policy: options.serviceClock.policy, position: "perRetry" }];
  return clientOptions;
}

export function isLoopbackEmulator(connectionString: string): boolean {
  if (/UseDevelopmentStorage=true/i.test(connectionString)) return true;
  const endpoints = [...connectionString.matchAll(/(?:Table|Queue|Blob)Endpoint=([^;]+)/gi)].map((m) => m[1]!);
  return (
    endpoints.length > 0 &&
    endpoints.every((endpoint) => /^http:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(\/|$)/i.test(endpoint))
  );
}

/** The status of a storage RestError, or undefined for anything else (network errors included). */
export function storageStatus(error: unknown): number | undefined {
  return isRestError(error) ? error.statusCode : undefined;
}

/**
 * Whether a storage error says the table itself does not exist (as opposed to a missing row, which
 * is also a 404). Single operations carry the code in `x-ms-error-code` or the OData body; a
 * transaction's error carries it in `code`.
 */
export function isTableNotFound(error: unknown): boolean {
  if (!isRestError(error) || error.statusCode !== 404) return false;
  if (error.code === "TableNotFound") return true;
  if (error.response?.headers.get("x-ms-error-code") === "TableNotFound") return true;
  return /"code"\s*:\s*"TableNotFound"/.test(error.message);
}

/** Tables being created by this process: concurrent first writes share one create call. */
const creating = new WeakMap<TableClient, Promise<void>>();

/**
 * Runs a table operation; if the table does not exist yet (a new storage account, a new
 * SESSIONS_TABLE), creates it and runs the operation once more. Nothing is created up front and
 * nothing is asked on later calls: a deployment whose table exists pays no extra request, and a
 * credential that may write rows but not create tables works as long as the table is there.
 * Any other fault, and a table that still cannot be found after the create, is thrown.
 */
export async function withTable<T>(client: TableClient, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (!isTableNotFound(error)) throw error;
  }
  await createTable(client);
  return operation();
}

/** `withTable` for a paged query: a missing table is created and the query started again. */
export async function* pagesWithTable<T>(client: TableClient, pages: () => AsyncIterableIterator<T>): AsyncIterableIterator<T> {
  let iterator = pages();
  let first: IteratorResult<T>;
  try {
    first = await iterator.next();
  } catch (error) {
    if (!isTableNotFound(error)) throw error;
    await createTable(client);
    iterator = pages();
    first = await iterator.next();
  }
  if (first.done) return;
  yield first.value;
  yield* iterator;
}

function createTable(client: TableClient): Promise<void> {
  let pending = creating.get(client);
  if (!pending) {
    // createTable answers an existing table (409) quietly: another process may have just made it.
    pending = client.createTable().finally(() => creating.delete(client));
    creating.set(client, pending);
  }
  return pending;
}
