// What the test run's globalSetup hands to every test file through vitest's provide/inject.
import type {} from "vitest";

declare module "vitest" {
  export interface ProvidedContext {
    storageConnectionString: string;
    azuriteAccountName: string;
    azuriteAccountKey: string;
    testCertificateDir: string;
  }
}
