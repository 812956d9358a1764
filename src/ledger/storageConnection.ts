import type { TokenCredential } from "@azure/core-auth";
import { QueueClient, type StoragePipelineOptions } from "@azure/storage-queue";

/**
 * Where the storage account is and how to reach it: a connection string (the account key or a SAS
 * inside it), or its services' URLs with a credential from @azure/identity (a managed identity),
 * for accounts whose shared-key access is disabled.
 */
export type StorageConnection = string | StorageServiceUrls;

export interface StorageServiceUrls {
  /** The table service, e.g. `https://<account>.table.core.windows.net`. */
  readonly tableServiceUrl: string;
  /** The queue service, e.g. `https://<account>.queue.core.windows.net`; needed only for close requests. */
  readonly queueServiceUrl?: string;
  readonly credential: TokenCredential;
}

/** The close queue's client, over either form of connection. */
export function createQueueClient(connection: StorageConnection, queueName: string, options: StoragePipelineOptions = {}): QueueClient {
  if (typeof connection === "string") return new QueueClient(connection, queueName, options);
  if (!connection.queueServiceUrl) throw new RangeError("The storage connection has no queueServiceUrl: the close queue cannot be reached.");
  return new QueueClient(`${connection.queueServiceUrl.replace(/\/+$/, "")}/${encodeURIComponent(queueName)}`, connection.credential, options);
}

/** A connection string or service URL that points at the local emulator on loopback (Azurite), where plain http is allowed. */
export function isLoopbackEmulator(connection: StorageConnection): boolean {
  if (typeof connection !== "string") return false;
  if (/UseDevelopmentStorage=true/i.test(connection)) return true;
  const endpoints = [...connection.matchAll(/(?:Table|Queue|Blob)Endpoint=([^;]+)/gi)].map((m) => m[1]!);
  return (
    endpoints.length > 0 &&
    endpoints.every((endpoint) => /^http:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(\/|$)/i.test(endpoint))
  );
}
