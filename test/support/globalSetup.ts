import type { TestProject } from "vitest/node";
import "./providedContext";
import { startAzurite, type AzuriteInstance } from "../../standins/azurite";
import { makeTestCertificate } from "../../standins/certificate";

let azurite: AzuriteInstance | undefined;
let oauthAzurite: AzuriteInstance | undefined;

/**
 * Once per test run: one certificate for the https stand-ins and two Azurites (tests isolate
 * themselves by table and queue name): the plain one the app reaches with a connection string, and
 * one in OAuth mode over https for identity-based connections (managed identity), started side by
 * side. NODE_EXTRA_CA_CERTS is read when a Node process starts, so it is set here, before the
 * worker processes (pool: forks) are spawned.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const certificate = makeTestCertificate();
  process.env.NODE_EXTRA_CA_CERTS = certificate.caBundlePath;
  process.env.WSS_TEST_CERT_DIR = certificate.dir;

  const [plain, oauth] = await Promise.allSettled([startAzurite(), startAzurite({ oauth: true, certificate })]);
  if (plain.status === "fulfilled") azurite = plain.value;
  if (oauth.status === "fulfilled") oauthAzurite = oauth.value;
  if (!azurite || !oauthAzurite) {
    await Promise.all([azurite?.stop(), oauthAzurite?.stop()]);
    throw plain.status === "rejected" ? plain.reason : (oauth as PromiseRejectedResult).reason;
  }
  project.provide("storageConnectionString", azurite.connectionString);
  project.provide("azuriteAccountName", azurite.accountName);
  project.provide("azuriteAccountKey", azurite.accountKey);
  project.provide("testCertificateDir", certificate.dir);
  project.provide("oauthStorage", {
    accountName: oauthAzurite.accountName,
    tableEndpoint: oauthAzurite.tableEndpoint,
    queueEndpoint: oauthAzurite.queueEndpoint,
    connectionString: oauthAzurite.connectionString,
    accountKey: oauthAzurite.accountKey,
  });

  return async () => {
    await Promise.all([azurite?.stop(), oauthAzurite?.stop()]);
  };
}
