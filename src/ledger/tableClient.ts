import { TableClient, type TableServiceClientOptions } from "@azure/data-tables";
import { isRestError, type PipelinePolicy } from "@azure/core-rest-pipeline";

export interface LedgerClientOptions {
  /** Called once per HTTP request the table client sends (retries included): for request counts. */
  onRequest?: (request: { method: string; url: string }) => void;
}

/**
 * A TableClient for the ledger. Plain http is allowed only towards the local emulator on loopback
 * (Azurite); a real account is always https.
 */
export function createLedgerTableClient(connectionString: string, tableName: string, options: LedgerClientOptions = {}): TableClient {
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
  return TableClient.fromConnectionString(connectionString, tableName, clientOptions);
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
