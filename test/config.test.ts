import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigurationError, loadConfig } from "../src";
import { parseDuration } from "../src/utils/duration";
import { CLIENT_CREDENTIAL_SETTINGS, DEFAULT_SETTINGS, OPTIONAL_SETTINGS, readBindingSettings, REQUIRED_SETTINGS, STORAGE_IDENTITY_SETTINGS } from "../src/config";

const KEY = Buffer.alloc(32, 7).toString("base64");
const PRIVATE_KEY = Buffer.alloc(32, 5).toString("base64url");
const COMPLETE = {
  AzureWebJobsStorage: "UseDevelopmentStorage=true",
  AZURE_TENANT_ID: "7f1d3a1c-0000-4000-8000-000000000001",
  AZURE_CLIENT_ID: "5b0a7c2e-0000-4000-8000-000000000002",
  AZURE_CLIENT_SECRET: "s3cret-value-never-logged",
  ASSERTION_PRIVATE_KEY: PRIVATE_KEY,
};
const IDENTITY = "0c9d7a11-0000-4000-8000-0000000000aa";
/** The secretless form: identity-based storage, the managed identity's assertion, the private key. */
const SECRETLESS = {
  AZURE_TENANT_ID: COMPLETE.AZURE_TENANT_ID,
  AZURE_CLIENT_ID: COMPLETE.AZURE_CLIENT_ID,
  ASSERTION_PRIVATE_KEY: PRIVATE_KEY,
  AzureWebJobsStorage__accountName: "sweeperstore",
  AzureWebJobsStorage__credential: "managedidentity",
  AZURE_CLIENT_ASSERTION_IDENTITY: "system",
};

function configError(settings: Record<string, string | undefined>): ConfigurationError {
  try {
    loadConfig(settings);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    return error as ConfigurationError;
  }
  throw new Error("expected a ConfigurationError");
}

describe("loadConfig", () => {
  it("reads a complete configuration with documented defaults", () => {
    const config = loadConfig(COMPLETE);
    expect(config.storage).toEqual({
      connection: { kind: "connectionString", connectionString: "UseDevelopmentStorage=true" },
      tableName: "WorkbookSessions",
      closeQueueName: "workbook-session-close",
    });
    expect(config.sweep).toMatchObject({ schedule: "0 * * * * *", staleAfterMs: 120_000, claimLeaseMs: 300_000, maxAttempts: 5, concurrency: 1_500 });
    expect(config.graph).toEqual({ baseUrl: "https://graph.microsoft.com/v1.0", requestTimeoutMs: 30_000, tenantBudget: { requests: 1_500, windowMs: 10_000 }, appBudget: { requests: 5_000, windowMs: 10_000 } });
    expect(config.auth).toMatchObject({ authorityHost: "https://login.microsoftonline.com", disableInstanceDiscovery: false, clientCredential: { kind: "secret" } });
    expect(config.auth.assertionKeys).toEqual({ privateKeys: [PRIVATE_KEY] });
  });

  it.each([
    ["AzureWebJobsStorage", "AzureWebJobsStorage"],
    ["AZURE_TENANT_ID", "AZURE_TENANT_ID"],
    ["AZURE_CLIENT_ID", "AZURE_CLIENT_ID"],
    ["ASSERTION_PRIVATE_KEY", "ASSERTION_PRIVATE_KEY"],
    // No credential at all: the secretless one is named first, the others beside it.
    ["AZURE_CLIENT_SECRET", "AZURE_CLIENT_ASSERTION_IDENTITY"],
  ])("names the missing required setting %s", (missing, named) => {
    const error = configError({ ...COMPLETE, [missing]: undefined });
    expect(error.code).toBe("InvalidConfiguration");
    expect(error.settings).toEqual([named]);
    expect(error.message).toContain(named);
  });

  it("treats a blank setting as missing", () => {
    expect(configError({ ...COMPLETE, AZURE_CLIENT_ID: "   " }).settings).toEqual(["AZURE_CLIENT_ID"]);
  });

  it.each(["STALE_AFTER", "CLAIM_LEASE", "SWEEP_TIME_BUDGET", "TERMINAL_RETENTION", "GRAPH_REQUEST_TIMEOUT", "EXCEL_BUDGET_WINDOW"])(
    "names the malformed duration %s",
    (name) => {
      for (const bad of ["ten minutes", "PT", "P1Y", "-5", "PT10X", "10m"]) {
        const error = configError({ ...COMPLETE, [name]: bad });
        expect(error.settings).toEqual([name]);
        expect(error.message).toContain(`'${bad}'`);
      }
    },
  );

  it("names every problem at once", () => {
    const error = configError({ STALE_AFTER: "soon", GRAPH_BASE_URL: "http://graph.example", SWEEP_SCHEDULE: "*/5 * * * *" });
    expect(error.settings).toEqual(
      expect.arrayContaining(["AzureWebJobsStorage", "STALE_AFTER", "GRAPH_BASE_URL", "SWEEP_SCHEDULE", "AZURE_TENANT_ID", "ASSERTION_PRIVATE_KEY"]),
    );
  });

  it("refuses non-https token endpoints, bad names, bad numbers and a short key without echoing the key", () => {
    expect(configError({ ...COMPLETE, AZURE_AUTHORITY_HOST: "http://login.example" }).settings).toEqual(["AZURE_AUTHORITY_HOST"]);
    expect(configError({ ...COMPLETE, SESSIONS_TABLE: "bad-name" }).settings).toEqual(["SESSIONS_TABLE"]);
    expect(configError({ ...COMPLETE, CLOSE_QUEUE: "Bad--Queue" }).settings).toEqual(["CLOSE_QUEUE"]);
    expect(configError({ ...COMPLETE, MAX_ATTEMPTS: "0" }).settings).toEqual(["MAX_ATTEMPTS"]);
    expect(configError({ ...COMPLETE, SWEEP_CONCURRENCY: "1.5" }).settings).toEqual(["SWEEP_CONCURRENCY"]);
    const shortKey = Buffer.alloc(16, 9).toString("base64");
    for (const name of ["ASSERTION_PRIVATE_KEY", "ASSERTION_ENCRYPTION_KEY"]) {
      const keyError = configError({ ...COMPLETE, [name]: shortKey });
      expect(keyError.settings).toEqual([name]);
      expect(keyError.message).not.toContain(shortKey);
    }
    const both = configError({ ...COMPLETE, AZURE_CLIENT_CERTIFICATE_PATH: "/tmp/cert.pem" });
    expect(both.settings).toEqual(["AZURE_CLIENT_CERTIFICATE_PATH"]);
    expect(both.message).toContain("AZURE_CLIENT_SECRET");
    expect(both.message).not.toContain(COMPLETE.AZURE_CLIENT_SECRET);
  });

  it("refuses a storage connection string that is not one, without quoting it", () => {
    const error = configError({ ...COMPLETE, AzureWebJobsStorage: "AccountName=x;Key=secretish" });
    expect(error.settings).toEqual(["AzureWebJobsStorage"]);
    expect(error.message).not.toContain("secretish");
    expect(loadConfig({ ...COMPLETE, AzureWebJobsStorage: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=a2V5;EndpointSuffix=core.windows.net" }).storage.tableName).toBe("WorkbookSessions");
  });

  it("accepts a certificate instead of a secret and https national-cloud hosts", () => {
    const config = loadConfig({
      ...COMPLETE,
      AZURE_CLIENT_SECRET: undefined,
      AZURE_CLIENT_CERTIFICATE_PATH: "/etc/sweeper/client.pem",
      GRAPH_BASE_URL: "https://graph.microsoft.us/v1.0/",
      AZURE_AUTHORITY_HOST: "https://login.microsoftonline.us",
    });
    expect(config.auth.clientCredential).toEqual({ kind: "certificate", certificatePath: "/etc/sweeper/client.pem" });
    expect(config.graph.baseUrl).toBe("https://graph.microsoft.us/v1.0");
  });
});

describe("secretless settings", () => {
  it("reads identity-based storage by the host's names: an account name gives the public cloud's endpoints", () => {
    const config = loadConfig(SECRETLESS);
    expect(config.storage.connection).toEqual({
      kind: "identity",
      tableServiceUrl: "https://sweeperstore.table.core.windows.net",
      queueServiceUrl: "https://sweeperstore.queue.core.windows.net",
      credential: { kind: "managedIdentity" },
    });
    expect(config.auth.clientCredential).toEqual({ kind: "managedIdentity", audience: "api://AzureADTokenExchange" });
  });

  it("takes service URIs, a user-assigned identity by client id or resource id, any case of managedidentity, or the default chain", () => {
    const uris = {
      ...SECRETLESS,
      AzureWebJobsStorage__accountName: undefined,
      AzureWebJobsStorage__tableServiceUri: "https://store.table.core.usgovcloudapi.net/",
      AzureWebJobsStorage__queueServiceUri: "https://store.queue.core.usgovcloudapi.net",
      AzureWebJobsStorage__credential: "ManagedIdentity",
      AzureWebJobsStorage__clientId: IDENTITY,
      AZURE_CLIENT_ASSERTION_IDENTITY: IDENTITY,
      AZURE_CLIENT_ASSERTION_AUDIENCE: "api://AzureADTokenExchangeUSGov",
    };
    const config = loadConfig(uris);
    expect(config.storage.connection).toEqual({
      kind: "identity",
      tableServiceUrl: "https://store.table.core.usgovcloudapi.net",
      queueServiceUrl: "https://store.queue.core.usgovcloudapi.net",
      credential: { kind: "managedIdentity", clientId: IDENTITY },
    });
    expect(config.auth.clientCredential).toEqual({ kind: "managedIdentity", clientId: IDENTITY, audience: "api://AzureADTokenExchangeUSGov" });
    const resourceId = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/sweeper";
    expect(loadConfig({ ...SECRETLESS, AzureWebJobsStorage__managedIdentityResourceId: resourceId }).storage.connection).toMatchObject({ credential: { kind: "managedIdentity", resourceId } });
    expect(loadConfig({ ...SECRETLESS, AzureWebJobsStorage__credential: undefined, AzureWebJobsStorage__clientId: IDENTITY }).storage.connection).toMatchObject({
      credential: { kind: "default", managedIdentityClientId: IDENTITY },
    });
    // A connection string, when set, is what the host uses too.
    expect(loadConfig({ ...SECRETLESS, AzureWebJobsStorage: "UseDevelopmentStorage=true" }).storage.connection.kind).toBe("connectionString");
  });

  it.each([
    [{ AzureWebJobsStorage__accountName: "Not_A_Name" }, "AzureWebJobsStorage__accountName", /not a storage account name/],
    [{ AzureWebJobsStorage__accountName: undefined, AzureWebJobsStorage__tableServiceUri: "https://s.table.core.windows.net" }, "AzureWebJobsStorage__queueServiceUri", /is required for an identity-based connection/],
    [{ AzureWebJobsStorage__tableServiceUri: "http://s.table.core.windows.net" }, "AzureWebJobsStorage__tableServiceUri", /not an https:\/\/ URL/],
    [{ AzureWebJobsStorage__credential: "password" }, "AzureWebJobsStorage__credential", /not managedidentity/],
    [{ AzureWebJobsStorage__clientId: "sweeper" }, "AzureWebJobsStorage__clientId", /not a GUID/],
    [{ AzureWebJobsStorage__clientId: IDENTITY, AzureWebJobsStorage__managedIdentityResourceId: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u" }, "AzureWebJobsStorage__clientId", /both set/],
    [{ AZURE_CLIENT_ASSERTION_IDENTITY: "mine" }, "AZURE_CLIENT_ASSERTION_IDENTITY", /not 'system'.*or the client id/],
    [{ AZURE_CLIENT_ASSERTION_AUDIENCE: "AzureADTokenExchange" }, "AZURE_CLIENT_ASSERTION_AUDIENCE", /federated credential's audience/],
    [{ AZURE_CLIENT_SECRET: "also-a-secret" }, "AZURE_CLIENT_ASSERTION_IDENTITY", /AZURE_CLIENT_SECRET are both set: set exactly one/],
  ])("%j is refused, naming %s", (overrides, setting, message) => {
    const error = configError({ ...SECRETLESS, ...overrides });
    expect(error.settings).toEqual([setting]);
    expect(error.message).toMatch(message);
  });

  it("names a Key Vault reference the platform did not resolve, for any setting, without taking it for a value", () => {
    const reference = "@Microsoft.KeyVault(SecretUri=https://vault.vault.azure.net/secrets/sweeper-key/)";
    for (const name of ["ASSERTION_PRIVATE_KEY", "ASSERTION_PREVIOUS_PRIVATE_KEYS", "AZURE_CLIENT_ASSERTION_IDENTITY", "AZURE_TENANT_ID"]) {
      const error = configError({ ...SECRETLESS, [name]: reference });
      expect(error.settings, name).toEqual([name]);
      expect(error.message).toMatch(/Key Vault reference the platform did not resolve/);
    }
    const secret = configError({ ...COMPLETE, AZURE_CLIENT_SECRET: reference });
    expect(secret.settings).toEqual(["AZURE_CLIENT_SECRET"]);
    expect(secret.message).toMatch(/Key Vault reference/);
  });

  it("refuses a key listed twice (a rotation half done), in either spelling, naming the setting", () => {
    const again = Buffer.from(PRIVATE_KEY, "base64url").toString("base64");
    const error = configError({ ...SECRETLESS, ASSERTION_PREVIOUS_PRIVATE_KEYS: again });
    expect(error.settings).toEqual(["ASSERTION_PREVIOUS_PRIVATE_KEYS"]);
    expect(error.message).toMatch(/each key once/);
    expect(error.message).not.toContain(again);
  });

  it("refuses a user-assigned identity's resource id without __credential managedidentity, which would quietly use another identity", () => {
    const resourceId = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/sweeper";
    const error = configError({ ...SECRETLESS, AzureWebJobsStorage__credential: undefined, AzureWebJobsStorage__managedIdentityResourceId: resourceId });
    expect(error.settings).toEqual(["AzureWebJobsStorage__managedIdentityResourceId"]);
  });

  it("holds the current private key first, then the previous ones; a bad one is named by its place, never quoted", () => {
    const previous = [Buffer.alloc(32, 1).toString("base64url"), Buffer.alloc(32, 2).toString("base64")];
    const legacy = Buffer.alloc(32, 3).toString("base64");
    const config = loadConfig({ ...SECRETLESS, ASSERTION_PREVIOUS_PRIVATE_KEYS: ` ${previous.join(" , ")} `, ASSERTION_ENCRYPTION_KEY: legacy });
    expect(config.auth.assertionKeys.privateKeys).toEqual([PRIVATE_KEY, ...previous]);
    expect(config.auth.assertionKeys.legacyKey?.toString("base64")).toBe(legacy);
    const bad = "c2hvcnQta2V5LXNlY3JldA";
    const error = configError({ ...SECRETLESS, ASSERTION_PREVIOUS_PRIVATE_KEYS: `${previous[0]},${bad}` });
    expect(error.settings).toEqual(["ASSERTION_PREVIOUS_PRIVATE_KEYS"]);
    expect(error.message).toMatch(/the second/);
    expect(error.message).not.toContain(bad);
  });
});

describe("parseDuration", () => {
  it.each([
    ["PT10M", 600_000],
    ["600", 600_000],
    ["0.5", 500],
    ["PT1H30M", 5_400_000],
    ["P1D", 86_400_000],
    ["P1W", 604_800_000],
    ["PT0.25S", 250],
    ["pt2m", 120_000],
  ])("%s is %d ms", (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(["", "P", "PT", "P1M", "P1Y", "10m", "-1", "1e3", "PT1H2", "abc"])("refuses %j", (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe("one table of settings", () => {
  const root = join(__dirname, "..");
  const sample = (JSON.parse(readFileSync(join(root, "local.settings.sample.json"), "utf8")) as { Values: Record<string, string> }).Values;
  /** The README's settings table: one row per setting, `name` | default (in backticks, or a note in parentheses). */
  const readme = (() => {
    const text = readFileSync(join(root, "README.md"), "utf8");
    const section = text.slice(text.indexOf("\n## Settings"), text.indexOf("\n### host.json"));
    const rows = new Map<string, string>();
    for (const line of section.split("\n")) {
      const cells = /^\| `([^`]+)` \| ([^|]+) \|/.exec(line);
      if (cells) rows.set(cells[1]!, cells[2]!.trim());
    }
    return rows;
  })();
  const HOST_SETTINGS = { FUNCTIONS_WORKER_RUNTIME: "node" };
  const every = [
    ...REQUIRED_SETTINGS,
    ...CLIENT_CREDENTIAL_SETTINGS,
    ...STORAGE_IDENTITY_SETTINGS,
    ...OPTIONAL_SETTINGS,
    ...Object.keys(DEFAULT_SETTINGS),
    ...Object.keys(HOST_SETTINGS),
  ].sort();

  it("names the same settings in the code, the sample and the README", () => {
    expect(Object.keys(sample).sort()).toEqual(every);
    expect([...readme.keys()].sort()).toEqual(every);
  });

  it("gives the same defaults in all three", () => {
    for (const [name, value] of Object.entries({ ...DEFAULT_SETTINGS, ...HOST_SETTINGS })) {
      expect(sample[name], `${name} in local.settings.sample.json`).toBe(value);
      expect(readme.get(name), `${name} in README`).toBe(value === "" ? "(none)" : `\`${value}\``);
    }
    for (const name of [...REQUIRED_SETTINGS, ...CLIENT_CREDENTIAL_SETTINGS]) expect(readme.get(name), name).toMatch(/^\(required/);
    for (const name of [...STORAGE_IDENTITY_SETTINGS, ...OPTIONAL_SETTINGS]) {
      expect(readme.get(name), `${name} in README`).toBe("(none)");
      expect(sample[name], `${name} in local.settings.sample.json`).toBe("");
    }
  });
});

describe("settings checked for form", () => {
  it.each([
    ["AZURE_TENANT_ID", "<the app registration's tenant id>", /still holds a '<…>' placeholder/],
    ["AZURE_TENANT_ID", "my tenant", /not a tenant's GUID or verified domain name/],
    ["AZURE_TENANT_ID", "common", /not a tenant's GUID or verified domain name/],
    ["AZURE_CLIENT_ID", "<the app registration's client id>", /still holds a '<…>' placeholder/],
    ["AZURE_CLIENT_ID", "sweeper-app", /not a GUID/],
    ["AZURE_CLIENT_ID", "5b0a7c2e-0000-4000-8000-00000000002", /not a GUID/],
    ["AZURE_CLIENT_SECRET", "<a client secret>", /still holds a '<…>' placeholder/],
    ["ASSERTION_PRIVATE_KEY", "<ASSERTION_PRIVATE_KEY from: npx workbook-session-sweeper keys new>", /still holds a '<…>' placeholder/],
    ["AzureWebJobsStorage", "<connection string>", /still holds a '<…>' placeholder/],
    ["SWEEP_SCHEDULE", "*/5 * * * *", /has 5 fields, not six/],
    ["SWEEP_SCHEDULE", "0 */x * * * *", /has '\*\/x' as its minute/],
    ["PURGE_SCHEDULE", "0 30 25 * * *", /has '25' as its hour/],
    ["PURGE_SCHEDULE", "0 30 3 * * Funday", /as its day of week/],
    ["SWEEP_SCHEDULE", "0 */0 * * * *", /as its minute/],
  ])("%s = %j is refused", (name, value, message) => {
    const error = configError({ ...COMPLETE, [name]: value });
    expect(error.settings).toEqual([name]);
    expect(error.message).toMatch(message);
  });

  it.each([
    ["AZURE_TENANT_ID", "contoso.onmicrosoft.com"],
    ["AZURE_TENANT_ID", "CONTOSO.com"],
    ["SWEEP_SCHEDULE", "*/30 * * * * *"],
    ["SWEEP_SCHEDULE", "0 0-59/5 8-18 * * Mon-Fri"],
    ["PURGE_SCHEDULE", "0 30 3 1,15 Jan,Jul *"],
  ])("%s = %j is accepted", (name, value) => {
    expect(() => loadConfig({ ...COMPLETE, [name]: value })).not.toThrow();
  });

  it("never quotes a secret that is a placeholder-looking value", () => {
    const secret = "abc<def>ghi-secret";
    const error = configError({ ...COMPLETE, AZURE_CLIENT_SECRET: secret });
    expect(error.message).not.toContain(secret);
  });

  it("reads the binding settings without throwing, falling back to the defaults", () => {
    expect(readBindingSettings({})).toEqual({ sweepSchedule: "0 * * * * *", purgeSchedule: "0 30 3 * * *", closeQueueName: "workbook-session-close", problems: [] });
    const bad = readBindingSettings({ SWEEP_SCHEDULE: "soon", CLOSE_QUEUE: "Bad_Queue", PURGE_SCHEDULE: "0 0 4 * * *" });
    expect(bad).toMatchObject({ sweepSchedule: "0 * * * * *", purgeSchedule: "0 0 4 * * *", closeQueueName: "workbook-session-close" });
    expect(bad.problems.map((p) => p.setting)).toEqual(["SWEEP_SCHEDULE", "CLOSE_QUEUE"]);
  });
});
