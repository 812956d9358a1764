import type { TestProject } from "vitest/node";
import "./providedContext";
import { startAzurite, type AzuriteInstance } from "../../standins/azurite";
import { makeTestCertificate } from "../../standins/certificate";

let azurite: AzuriteInstance | undefined;

/**
 * Once per test run: one Azurite (tests isolate themselves by table name) and one certificate for
 * the https stand-ins. NODE_EXTRA_CA_CERTS is read when a Node process starts, so it is set here,
 * before the worker processes (pool: forks) are spawned.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const certificate = makeTestCertificate();
  process.env.NODE_EXTRA_CA_CERTS = certificate.caBundlePath;
  process.env.WSS_TEST_CERT_DIR = certificate.dir;

  azurite = await startAzurite();
  project.provide("storageConnectionString", azurite.connectionString);
  project.provide("azuriteAccountName", azurite.accountName);
  project.provide("azuriteAccountKey", azurite.accountKey);
  project.provide("testCertificateDir", certificate.dir);

  return async () => {
    await azurite?.stop();
  };
}
