import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigurationError, loadConfig } from "../src";
import { parseDuration } from "../src/utils/duration";
import { CLIENT_CREDENTIAL_SETTINGS, DEFAULT_SETTINGS, readBindingSettings, REQUIRED_SETTINGS } from "../src/config";

const KEY = Buffer.alloc(32, 7).toString("base64");
const COMPLETE = {
  AzureWebJobsStorage: "UseDevelopmentStorage=true",
  AZURE_TENANT_ID: "7f1d3a1c-0000-4000-8000-000000000001",
  AZURE_CLIENT_ID: "5b0a7c2e-0000-4000-8000-000000000002",
  AZURE_CLIENT_SECRET: "s3cret-value-never-logged",
  ASSERTION_ENCRYPTION_KEY: KEY,
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
    expect(config.storage).toEqual({ connectionString: "UseDevelopmentStorage=true", tableName: "WorkbookSessions", closeQueueName: "workbook-session-close" });
    expect(config.sweep).toMatchObject({ schedule: "0 * * * * *", staleAfterMs: 120_000, claimLeaseMs: 300_000, maxAttempts: 5, concurrency: 1_500 });
    expect(config.graph).toEqual({ baseUrl: "https://graph.microsoft.com/v1.0", requestTimeoutMs: 30_000, tenantBudget: { requests: 1_500, windowMs: 10_000 }, appBudget: { requests: 5_000, windowMs: 10_000 } });
    expect(config.auth).toMatchObject({ authorityHost: "https://login.microsoftonline.com", disableInstanceDiscovery: false, clientCredential: { kind: "secret" } });
    expect(config.auth.assertionKey).toHaveLength(32);
  });

  it.each(["AzureWebJobsStorage", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "ASSERTION_ENCRYPTION_KEY", "AZURE_CLIENT_SECRET"])(
    "names the missing required setting %s",
    (name) => {
      const error = configError({ ...COMPLETE, [name]: undefined });
      expect(error.code).toBe("InvalidConfiguration");
      expect(error.settings).toEqual([name]);
      expect(error.message).toContain(name);
    },
  );

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
      expect.arrayContaining(["AzureWebJobsStorage", "STALE_AFTER", "GRAPH_BASE_URL", "SWEEP_SCHEDULE", "AZURE_TENANT_ID", "ASSERTION_ENCRYPTION_KEY"]),
    );
  });

  it("refuses non-https token endpoints, bad names, bad numbers and a short key without echoing the key", () => {
    expect(configError({ ...COMPLETE, AZURE_AUTHORITY_HOST: "http://login.example" }).settings).toEqual(["AZURE_AUTHORITY_HOST"]);
    expect(configError({ ...COMPLETE, SESSIONS_TABLE: "bad-name" }).settings).toEqual(["SESSIONS_TABLE"]);
    expect(configError({ ...COMPLETE, CLOSE_QUEUE: "Bad--Queue" }).settings).toEqual(["CLOSE_QUEUE"]);
    expect(configError({ ...COMPLETE, MAX_ATTEMPTS: "0" }).settings).toEqual(["MAX_ATTEMPTS"]);
    expect(configError({ ...COMPLETE, SWEEP_CONCURRENCY: "1.5" }).settings).toEqual(["SWEEP_CONCURRENCY"]);
    const shortKey = Buffer.alloc(16, 9).toString("base64");
    const keyError = configError({ ...COMPLETE, ASSERTION_ENCRYPTION_KEY: shortKey });
    expect(keyError.settings).toEqual(["ASSERTION_ENCRYPTION_KEY"]);
    expect(keyError.message).not.toContain(shortKey);
    const both = configError({ ...COMPLETE, AZURE_CLIENT_CERTIFICATE_PATH: "/tmp/cert.pem" });
    expect(both.settings).toEqual(["AZURE_CLIENT_SECRET"]);
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
  const every = [...REQUIRED_SETTINGS, ...CLIENT_CREDENTIAL_SETTINGS, ...Object.keys(DEFAULT_SETTINGS), ...Object.keys(HOST_SETTINGS)].sort();

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
    ["ASSERTION_ENCRYPTION_KEY", "<base64 of 32 random bytes>", /still holds a '<…>' placeholder/],
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
