/**
 * Starts the stand-ins one run of the app needs and wires them together through app settings
 * alone, as the app meets the real services: Azurite (Table and Queue Storage), the fake Entra ID
 * authority with one app registration, and the Graph workbook emulator trusting that authority.
 * The tests, the bench and the demo all start them here, so the three cannot drift apart.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import { startAzurite, type AzuriteInstance } from "./azurite";
import type { TestCertificate } from "./certificate";
import { GRAPH_RESOURCE, startFakeAuthority, type FakeAuthority, type FakeAuthorityOptions } from "./fakeAuthority";
import { startGraphEmulator, type GraphEmulator, type GraphEmulatorOptions } from "./graphEmulator";

export interface StandInsOptions {
  /**
   * The certificate the https stand-ins serve. This process must already trust it:
   * NODE_EXTRA_CA_CERTS is read only when a process starts (see `trustedCertificateOrRerun`).
   */
  certificate: TestCertificate;
  /** An Azurite (or storage account) already running, e.g. one shared by a whole test run. Default: start one, stopped by close(). */
  storageConnectionString?: string;
  /** The app's home tenant (AZURE_TENANT_ID). Default: a new GUID. */
  tenantId?: string;
  /** The app registration's client id (AZURE_CLIENT_ID). Default: a new GUID. */
  clientId?: string;
  /** The authority's behaviour (latency, token lifetime, scope answer). */
  authority?: Omit<FakeAuthorityOptions, "certificate">;
  /** The Graph emulator's behaviour (latency, idle times, tenant budget). */
  emulator?: Omit<GraphEmulatorOptions, "certificate" | "authority">;
}

export interface StandIns {
  readonly certificate: TestCertificate;
  /** The connection string the app's AzureWebJobsStorage gets. */
  readonly storageConnectionString: string;
  /** The Azurite started for these stand-ins; undefined when given a connection string. */
  readonly azurite: AzuriteInstance | undefined;
  readonly authority: FakeAuthority;
  readonly emulator: GraphEmulator;
  readonly tenantId: string;
  readonly clientId: string;
  /** The registered client's secret, random for each start. */
  readonly clientSecret: string;
  /**
   * The key pair assertions are sealed with, new for each start (raw X25519 keys, base64url): the
   * private key is the app's ASSERTION_PRIVATE_KEY, the public key what producers get.
   */
  readonly assertionKeys: { readonly privateKey: string; readonly publicKey: string };
  /**
   * The app settings that point the app at these stand-ins, as the Functions host passes them:
   * AzureWebJobsStorage, GRAPH_BASE_URL, GRAPH_SCOPE, AZURE_AUTHORITY_HOST,
   * AZURE_DISABLE_INSTANCE_DISCOVERY, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
   * AZURE_ADDITIONALLY_ALLOWED_TENANTS (`*`) and ASSERTION_PRIVATE_KEY; `overrides` last.
   */
  settings(overrides?: Record<string, string>): Record<string, string>;
  settings(overrides: Record<string, string | undefined>): Record<string, string | undefined>;
  /** Stops the emulator, the authority and the Azurite it started (a given one is left running). */
  close(): Promise<void>;
}

/** Starts Azurite (unless given one), the authority, the emulator, and registers the app's client. */
export async function startStandIns(options: StandInsOptions): Promise<StandIns> {
  const { certificate } = options;
  const started: { close(): Promise<void> }[] = [];
  // Stops, newest first, whatever had started, so a failed start leaves no process or port behind.
  const closeStarted = async () => {
    for (const standIn of started.splice(0).reverse()) await standIn.close();
  };
  try {
    let azurite: AzuriteInstance | undefined;
    if (options.storageConnectionString === undefined) {
      azurite = await startAzurite();
      started.push({ close: () => azurite!.stop() });
    }
    const storageConnectionString = options.storageConnectionString ?? azurite!.connectionString;
    const authority = await startFakeAuthority({ ...options.authority, certificate });
    started.push(authority);
    const emulator = await startGraphEmulator({ ...options.emulator, certificate, authority });
    started.push(emulator);

    const tenantId = options.tenantId ?? randomUUID();
    const clientId = options.clientId ?? randomUUID();
    // "cs-" makes a leaked secret recognisable in a failing test's output.
    const clientSecret = `cs-${randomBytes(24).toString("base64url")}`;
    const assertionKeys = newAssertionKeyPair();
    authority.registerClient({ clientId, clientSecret });

    const settings = (overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> => ({
      AzureWebJobsStorage: storageConnectionString,
      GRAPH_BASE_URL: emulator.baseUrl,
      GRAPH_SCOPE: `${GRAPH_RESOURCE}/Files.ReadWrite`,
      AZURE_AUTHORITY_HOST: authority.authorityHost,
      AZURE_DISABLE_INSTANCE_DISCOVERY: "true",
      AZURE_TENANT_ID: tenantId,
      AZURE_CLIENT_ID: clientId,
      AZURE_CLIENT_SECRET: clientSecret,
      AZURE_ADDITIONALLY_ALLOWED_TENANTS: "*",
      ASSERTION_PRIVATE_KEY: assertionKeys.privateKey,
      ...overrides,
    });

    return {
      certificate,
      storageConnectionString,
      azurite,
      authority,
      emulator,
      tenantId,
      clientId,
      clientSecret,
      assertionKeys,
      settings: settings as StandIns["settings"],
      close: closeStarted,
    };
  } catch (error) {
    await closeStarted();
    throw error;
  }
}

/** A new X25519 key pair as the app takes it: the raw keys, base64url (JWK's `d` and `x` are exactly that). */
export function newAssertionKeyPair(): { privateKey: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync("x25519");
  const jwk = privateKey.export({ format: "jwk" });
  return { privateKey: jwk.d!, publicKey: jwk.x! };
}
