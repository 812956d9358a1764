// What the test run's globalSetup hands to every test file through vitest's provide/inject.
import type {} from "vitest";

/** The run's second Azurite: https, bearer tokens accepted (`--oauth basic`), for identity-based connections. */
export interface OAuthStorage {
  accountName: string;
  /** Path-style https endpoints: `https://127.0.0.1:PORT/<accountName>`. */
  tableEndpoint: string;
  queueEndpoint: string;
  /** With the account key, for a fixture's own seeding and inspection only (never the app's). */
  connectionString: string;
  /** The account key (to register with the secret scan). */
  accountKey: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    storageConnectionString: string;
    azuriteAccountName: string;
    azuriteAccountKey: string;
    testCertificateDir: string;
    oauthStorage: OAuthStorage;
  }
}
