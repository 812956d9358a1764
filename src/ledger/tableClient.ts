import { TableClient, TableServiceClient, type TableServiceClientOptions } from "@azure/data-tables";
import { isRestError, type PipelinePolicy } from "@azure/core-rest-pipeline";
import type { ServiceClock } from "./serviceClock";
import { isLoopbackEmulator, type StorageConnection } from "./storageConnection";

export interface LedgerClientOptions {
  /** Learns the service's time from its answers' `Date` headers. @default none */
  serviceClock?: ServiceClock;
  /** Called once per HTTP request the table client sends (retries included): for request counts. */
  onRequest?: (request: { method: string; url: string }) => void;
}

/**
 * A TableClient for the ledger, over a connection string or the table service's URL and a
 * credential. Plain http is allowed only towards the local emulator on loopback (Azurite); a real
 * account is always https (and a bearer token is never sent over http).
 */
export function createLedgerTableClient(connection: StorageConnection, tableName: string, options: LedgerClientOptions = {}): TableClient {
  const clientOptions = ledgerClientOptions(connection, options);
  if (typeof connection === "string") return TableClient.fromConnectionString(connection, tableName, clientOptions);
  return new TableClient(connection.tableServiceUrl, tableName, connection.credential, clientOptions);
}

/** The account's table service, for the history tables' names; the same rules as the ledger's client. */
export function createLedgerServiceClient(connection: StorageConnection, options: LedgerClientOptions = {}): TableServiceClient {
  const clientOptions = ledgerClientOptions(connection, options);
  if (typeof connection === "string") return TableServiceClient.fromConnectionString(connection, clientOptions);
  return new TableServiceClient(connection.tableServiceUrl, connection.credential, clientOptions);
}

function ledgerClientOptions(connection: StorageConnection, options: LedgerClientOptions): TableServiceClientOptions {
  const clientOptions: TableServiceClientOptions = {
    allowInsecureConnection: isLoopbackEmulator(connection),
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

/** A paged query's pages; none when the table does not exist (a reader that must not create it). */
export async function* pagesIfTable<T>(pages: AsyncIterable<T>): AsyncIterableIterator<T> {
  try {
    yield* pages;
  } catch (error) {
    if (!isTableNotFound(error)) throw error;
  }
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
