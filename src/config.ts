import { DEFAULT_CLOSE_QUEUE } from "./core/closeRequestMessage";
import { ConfigurationError } from "./core/errors";
import { MAX_DURATION_MS, parseDuration } from "./utils/duration";
import type { RequestBudget } from "./core/budget";

/**
 * How the app reaches the storage account that holds the ledger table and the close queue, read
 * from the same settings the Functions host reads for its own connection:
 * - `AzureWebJobsStorage`: a connection string (the account key or a SAS inside it);
 * - identity-based, when `AzureWebJobsStorage` is empty: `AzureWebJobsStorage__tableServiceUri` and
 *   `__queueServiceUri` (or `__accountName`, for the public cloud's endpoints), with `__credential`
 *   `managedidentity` and, for a user-assigned identity, `__clientId` or `__managedIdentityResourceId`.
 *   Without `__credential`, the default chain of @azure/identity (a developer's sign-in locally).
 */
export type StorageConnectionSettings =
  | { readonly kind: "connectionString"; readonly connectionString: string }
  | {
      readonly kind: "identity";
      readonly tableServiceUrl: string;
      readonly queueServiceUrl: string;
      readonly credential: StorageIdentity;
    };

/** Which identity an identity-based storage connection uses. */
export type StorageIdentity =
  | { readonly kind: "managedIdentity"; readonly clientId?: string; readonly resourceId?: string }
  | { readonly kind: "default"; readonly managedIdentityClientId?: string };

/** Everything the app reads from its settings, validated. Durations are milliseconds. */
export interface SweeperConfig {
  storage: {
    /** `AzureWebJobsStorage` (a connection string) or its identity-based form: the ledger table and the close queue live in this account. */
    connection: StorageConnectionSettings;
    /** `SESSIONS_TABLE` (default `WorkbookSessions`). */
    tableName: string;
    /** `CLOSE_QUEUE` (default `workbook-session-close`). */
    closeQueueName: string;
  };
  sweep: {
    /** `SWEEP_SCHEDULE`: NCRONTAB with seconds (default every minute: `0 * * * * *`). */
    schedule: string;
    /** `STALE_AFTER`: a session whose last heartbeat is older than this is closed (default PT2M). */
    staleAfterMs: number;
    /** `CLAIM_LEASE`: a row left `closing` longer than this by a dead sweeper is taken again (default PT5M). */
    claimLeaseMs: number;
    /** `MAX_ATTEMPTS`: close attempts before a row is `failed` (default 5). */
    maxAttempts: number;
    /** `SWEEP_TIME_BUDGET`: a sweep stops taking rows after this (default PT4M, under Consumption's 5 min). */
    timeBudgetMs: number;
    /**
     * `SWEEP_CONCURRENCY`: a safety cap on close calls in flight at once (default 1,500: the app's
     * budget at Graph's slowest usual 3 s). The sweep keeps each tenant's budget rate times Graph's
     * observed latency in flight; this bounds the memory and sockets that takes (~0.25 MB each).
     */
    concurrency: number;
    /** `TERMINAL_RETENTION`: closed/expired/failed rows are purged after this (default P7D). */
    terminalRetentionMs: number;
    /** `PURGE_SCHEDULE`: NCRONTAB of the purge of finished rows (default daily at 03:30). */
    purgeSchedule: string;
  };
  graph: {
    /** `GRAPH_BASE_URL` (default `https://graph.microsoft.com/v1.0`); a national cloud's Graph here. */
    baseUrl: string;
    /** `GRAPH_REQUEST_TIMEOUT`: one closeSession call (default PT30S; Graph itself gives up at ~30 s). */
    requestTimeoutMs: number;
    /** `EXCEL_BUDGET_REQUESTS` per `EXCEL_BUDGET_WINDOW` per tenant (default 1,500 per PT10S, Excel's own). */
    tenantBudget: RequestBudget;
    /** `EXCEL_APP_BUDGET_REQUESTS` per `EXCEL_APP_BUDGET_WINDOW` across tenants (default 5,000 per PT10S, Excel's own). */
    appBudget: RequestBudget;
  };
  auth: {
    /** `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`). */
    authorityHost: string;
    /** `AZURE_DISABLE_INSTANCE_DISCOVERY` (default false): true for an authority Microsoft does not list. */
    disableInstanceDiscovery: boolean;
    /** `AZURE_TENANT_ID`: the app registration's home tenant. */
    tenantId: string;
    /** `AZURE_CLIENT_ID`. */
    clientId: string;
    /**
     * How the app registration proves itself in the on-behalf-of exchange, exactly one of:
     * `AZURE_CLIENT_ASSERTION_IDENTITY` (a managed identity's token as a federated client assertion:
     * no secret anywhere), `AZURE_CLIENT_CERTIFICATE_PATH` (PEM with key) or `AZURE_CLIENT_SECRET`.
     */
    clientCredential: ClientCredentialSettings;
    /** The keys that open stored user assertions (producers seal them with the public key). */
    assertionKeys: {
      /** `ASSERTION_PRIVATE_KEY` first, then `ASSERTION_PREVIOUS_PRIVATE_KEYS`: raw X25519 private keys, base64/base64url. */
      privateKeys: string[];
      /** `ASSERTION_ENCRYPTION_KEY`: the retired shared key, set only while rows in its `a1.` format remain. */
      legacyKey?: Buffer;
    };
    /** `AZURE_ADDITIONALLY_ALLOWED_TENANTS`: other tenants whose users' sessions may be closed, comma separated; `*` for any. */
    additionallyAllowedTenants: string[];
    /**
     * `GRAPH_SCOPE`: the delegated permission asked for (default `Files.ReadWrite`, on the host of
     * GRAPH_BASE_URL). `Files.ReadWrite.All` where sessions are on SharePoint sites or others' drives.
     * A named permission, not `.default`: MSAL files tokens under the scopes Entra grants, so a
     * `.default` request never finds its cached token and every call would fetch a new one.
     */
    scope: string;
  };
}

export type Settings = Readonly<Record<string, string | undefined>>;

/** The app registration's credential in the on-behalf-of exchange. */
export type ClientCredentialSettings =
  | { readonly kind: "secret"; readonly secret: string }
  | { readonly kind: "certificate"; readonly certificatePath: string }
  /**
   * A token of the Function app's managed identity (`clientId`: a user-assigned one; absent: the
   * system-assigned one) for `audience`, which the app registration trusts as a federated credential.
   */
  | { readonly kind: "managedIdentity"; readonly clientId?: string; readonly audience: string }
  /** Not read (`loadConfig(settings, { credentials: false })`, a dry run): no close can be sent. */
  | { readonly kind: "none" };

/**
 * The settings without a default: the app does not run until each is set. `AzureWebJobsStorage`
 * may be given in its identity-based form instead (`AzureWebJobsStorage__…`); the client credential
 * is one of CLIENT_CREDENTIAL_SETTINGS.
 */
export const REQUIRED_SETTINGS = ["AzureWebJobsStorage", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "ASSERTION_PRIVATE_KEY"] as const;

/** The ways to give the app registration's credential; exactly one is set. The secretless one first. */
export const CLIENT_CREDENTIAL_SETTINGS = ["AZURE_CLIENT_ASSERTION_IDENTITY", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_SECRET"] as const;

/** The identity-based form of `AzureWebJobsStorage`, as the Functions host reads it. */
export const STORAGE_IDENTITY_SETTINGS = [
  "AzureWebJobsStorage__accountName",
  "AzureWebJobsStorage__tableServiceUri",
  "AzureWebJobsStorage__queueServiceUri",
  "AzureWebJobsStorage__credential",
  "AzureWebJobsStorage__clientId",
  "AzureWebJobsStorage__managedIdentityResourceId",
] as const;

/** Optional settings with no default value: unset means not used. */
export const OPTIONAL_SETTINGS = ["ASSERTION_PREVIOUS_PRIVATE_KEYS", "ASSERTION_ENCRYPTION_KEY", "APPLICATIONINSIGHTS_CONNECTION_STRING"] as const;

export const DEFAULT_SETTINGS = {
  SESSIONS_TABLE: "WorkbookSessions",
  CLOSE_QUEUE: DEFAULT_CLOSE_QUEUE,
  SWEEP_SCHEDULE: "0 * * * * *",
  STALE_AFTER: "PT2M",
  CLAIM_LEASE: "PT5M",
  MAX_ATTEMPTS: "5",
  SWEEP_TIME_BUDGET: "PT4M",
  SWEEP_CONCURRENCY: "1500",
  TERMINAL_RETENTION: "P7D",
  PURGE_SCHEDULE: "0 30 3 * * *",
  GRAPH_BASE_URL: "https://graph.microsoft.com/v1.0",
  GRAPH_REQUEST_TIMEOUT: "PT30S",
  EXCEL_BUDGET_REQUESTS: "1500",
  EXCEL_BUDGET_WINDOW: "PT10S",
  EXCEL_APP_BUDGET_REQUESTS: "5000",
  EXCEL_APP_BUDGET_WINDOW: "PT10S",
  AZURE_AUTHORITY_HOST: "https://login.microsoftonline.com",
  AZURE_DISABLE_INSTANCE_DISCOVERY: "false",
  AZURE_ADDITIONALLY_ALLOWED_TENANTS: "",
  GRAPH_SCOPE: "Files.ReadWrite",
  AZURE_CLIENT_ASSERTION_AUDIENCE: "api://AzureADTokenExchange",
} as const;

/**
 * Reads and validates every setting at once. All problems are collected, so one run of the app
 * names every missing or malformed setting; the first one is thrown as a ConfigurationError whose
 * message lists them all.
 */
export interface LoadConfigOptions {
  /**
   * Whether the app's Entra ID credential and assertion keys are read. A dry run sends nothing and
   * opens no assertion, so the CLI's `--dry-run` reads without them; the services built from such a
   * configuration pause any real close (`CredentialsNotConfigured`) instead of sending it.
   * @default true
   */
  credentials?: boolean;
}

export function loadConfig(settings: Settings = process.env, options: LoadConfigOptions = {}): SweeperConfig {
  const reader = new SettingsReader(settings);
  const credentials = options.credentials ?? true;
  const ledger = readLedgerSettings(reader);
  const config: SweeperConfig = {
    storage: {
      connection: ledger.storage.connection,
      tableName: ledger.storage.tableName,
      closeQueueName: reader.matching("CLOSE_QUEUE", QUEUE_NAME, QUEUE_NAME_FORM),
    },
    sweep: {
      schedule: reader.schedule("SWEEP_SCHEDULE"),
      staleAfterMs: ledger.staleAfterMs,
      claimLeaseMs: reader.duration("CLAIM_LEASE", { minMs: 1_000 }),
      maxAttempts: reader.integer("MAX_ATTEMPTS", 1, 100),
      timeBudgetMs: reader.duration("SWEEP_TIME_BUDGET", { minMs: 1_000 }),
      concurrency: reader.integer("SWEEP_CONCURRENCY", 1, 10_000),
      terminalRetentionMs: reader.duration("TERMINAL_RETENTION", { minMs: 0 }),
      purgeSchedule: reader.schedule("PURGE_SCHEDULE"),
    },
    graph: {
      baseUrl: reader.httpsUrl("GRAPH_BASE_URL"),
      requestTimeoutMs: reader.duration("GRAPH_REQUEST_TIMEOUT", { minMs: 100 }),
      tenantBudget: {
        requests: reader.integer("EXCEL_BUDGET_REQUESTS", 1, 1_000_000),
        windowMs: reader.duration("EXCEL_BUDGET_WINDOW", { minMs: 100 }),
      },
      appBudget: {
        requests: reader.integer("EXCEL_APP_BUDGET_REQUESTS", 1, 10_000_000),
        windowMs: reader.duration("EXCEL_APP_BUDGET_WINDOW", { minMs: 100 }),
      },
    },
    auth: {
      authorityHost: reader.httpsUrl("AZURE_AUTHORITY_HOST"),
      disableInstanceDiscovery: reader.boolean("AZURE_DISABLE_INSTANCE_DISCOVERY"),
      tenantId: credentials ? reader.tenant("AZURE_TENANT_ID") : "",
      clientId: credentials ? reader.matching("AZURE_CLIENT_ID", GUID, "a GUID (the app registration's Application (client) ID)") : "",
      clientCredential: credentials ? reader.clientCredential() : { kind: "none" },
      assertionKeys: credentials ? reader.assertionKeys() : { privateKeys: [] },
      additionallyAllowedTenants: reader.list("AZURE_ADDITIONALLY_ALLOWED_TENANTS", /^([0-9a-f-]{36}|\*)$/i, "a tenant GUID or *"),
      scope: "",
    },
  };
  config.auth.scope = reader.scope("GRAPH_SCOPE", config.graph.baseUrl);
  reader.throwIfAnyProblem();
  return config;
}

/**
 * What reading the ledger takes (the status view: `workbook-session-sweeper status`, `GET
 * /api/status`): the storage account and the table, and STALE_AFTER (the lease of sessions that
 * carry none of their own; it has a default). Nothing of Entra ID or the assertion keys, so the
 * status answers while those settings are missing or wrong.
 */
export interface LedgerConfig {
  storage: Pick<SweeperConfig["storage"], "connection" | "tableName">;
  /** `STALE_AFTER` (default PT2M). */
  staleAfterMs: number;
}

/**
 * Reads and validates the settings `LedgerConfig` needs, by the same rules as `loadConfig`; throws
 * a ConfigurationError naming every one at fault.
 */
export function loadLedgerConfig(settings: Settings = process.env): LedgerConfig {
  const reader = new SettingsReader(settings);
  const config = readLedgerSettings(reader);
  reader.throwIfAnyProblem();
  return config;
}

/** The settings every reader of the ledger needs, read one way for the sweep and the status view. */
function readLedgerSettings(reader: SettingsReader): LedgerConfig {
  return {
    storage: {
      connection: reader.storageConnection("AzureWebJobsStorage"),
      // History tables add `History2026W49` (14 characters) to the name, within Table Storage's 63.
      tableName: reader.matching("SESSIONS_TABLE", TABLE_NAME, "a table name: 3-49 letters or digits, starting with a letter (its weeks of history add 14)"),
    },
    staleAfterMs: reader.duration("STALE_AFTER", { minMs: 1_000 }),
  };
}

/**
 * What the Functions host binds to its triggers: the timers' schedules and the close queue's name.
 * The registrations pass them to the host as plain values, read when the function files load: the
 * host resolves a setting named in a binding only from app settings, so a default that lives in
 * the app would never reach it, and a timer bound to an unset setting would never fire. Never throws: a malformed value is replaced by its default here (so every
 * function still registers and runs) and `problems` names it; `loadConfig` refuses the same
 * value, so each invocation then fails with the setting's name.
 */
export interface BindingSettings {
  /** SWEEP_SCHEDULE, or its default. */
  sweepSchedule: string;
  /** PURGE_SCHEDULE, or its default. */
  purgeSchedule: string;
  /** CLOSE_QUEUE, or its default. */
  closeQueueName: string;
  /** The binding settings that are malformed and were replaced by their defaults. */
  problems: readonly { setting: string; message: string }[];
}

export function readBindingSettings(settings: Settings = process.env): BindingSettings {
  const reader = new SettingsReader(settings);
  const orDefault = (name: keyof typeof DEFAULT_SETTINGS, read: () => string): string => {
    const before = reader.problemCount;
    const value = read();
    return reader.problemCount === before ? value : DEFAULT_SETTINGS[name];
  };
  return {
    sweepSchedule: orDefault("SWEEP_SCHEDULE", () => reader.schedule("SWEEP_SCHEDULE")),
    purgeSchedule: orDefault("PURGE_SCHEDULE", () => reader.schedule("PURGE_SCHEDULE")),
    closeQueueName: orDefault("CLOSE_QUEUE", () => reader.matching("CLOSE_QUEUE", QUEUE_NAME, QUEUE_NAME_FORM)),
    problems: reader.problemList,
  };
}

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9]{2,48}$/;
const QUEUE_NAME = /^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/;
const QUEUE_NAME_FORM = "a queue name: 3-63 lowercase letters, digits and single hyphens";
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A verified domain of a tenant (contoso.onmicrosoft.com, contoso.com): what Entra accepts in place of its GUID. */
const DOMAIN_NAME = /^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;
/** `<the app registration's tenant id>`: the sample's stand-in for a value that must be filled in. */
const PLACEHOLDER = /<[^<>]*>/;

/**
 * NCRONTAB's six fields (second minute hour day month day-of-week), each `*`, a number, a range
 * or a list of them, with an optional `/step`; months and days of the week also by name. The host
 * would put a timer whose schedule it cannot parse in error, so the app refuses one first.
 */
const NCRONTAB_FIELDS: readonly { name: string; min: number; max: number; names?: readonly string[] }[] = [
  { name: "second", min: 0, max: 59 },
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"] },
  { name: "day of week", min: 0, max: 6, names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] },
];

function ncrontabProblem(expression: string): string | undefined {
  const fields = expression.split(/\s+/);
  if (fields.length !== 6) return `has ${fields.length} fields, not six (second minute hour day month day-of-week)`;
  for (const [i, field] of fields.entries()) {
    const spec = NCRONTAB_FIELDS[i]!;
    const value = (text: string): number | undefined => {
      const named = spec.names?.indexOf(text.toLowerCase()) ?? -1;
      if (named >= 0) return spec.min + named;
      if (!/^\d{1,2}$/.test(text)) return undefined;
      const n = Number(text);
      return n >= spec.min && n <= spec.max ? n : undefined;
    };
    for (const item of field.split(",")) {
      const match = /^(\*|([^-/]+)(?:-([^-/]+))?)(?:\/(\d{1,2}))?$/.exec(item);
      const valid =
        match !== null &&
        (match[1] === "*" || (value(match[2]!) !== undefined && (match[3] === undefined || value(match[3]) !== undefined))) &&
        (match[4] === undefined || Number(match[4]) > 0);
      if (!valid) return `has '${item}' as its ${spec.name}, not *, a number from ${spec.min} to ${spec.max}, a range or a list, with an optional /step`;
    }
  }
  return undefined;
}

const PLACEHOLDER_MESSAGE = "still holds a '<…>' placeholder from local.settings.sample.json; set the real value";
/**
 * App Service resolves `@Microsoft.KeyVault(...)` in an app setting before the app starts; a value
 * that still reads so was not resolved (the app's identity may not read the secret).
 */
const KEY_VAULT_REFERENCE = /^@Microsoft\.KeyVault\(/i;
const KEY_VAULT_MESSAGE =
  "is a Key Vault reference the platform did not resolve: give the Function app's identity the Key Vault Secrets User role on the vault, and check the reference's status in the app's Environment variables blade";
const ACCOUNT_NAME = /^[a-z0-9]{3,24}$/;
/** An Azure resource id of a user-assigned identity. */
const IDENTITY_RESOURCE_ID = /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.ManagedIdentity\/userAssignedIdentities\/[^/]+$/i;
const KEY_TEXT = /^[A-Za-z0-9+/_-]+={0,2}$/;

class SettingsReader {
  private readonly problems: { setting: string; message: string }[] = [];

  constructor(private readonly settings: Settings) {}

  throwIfAnyProblem(): void {
    if (this.problems.length > 0) throw new ConfigurationError(this.problems);
  }

  get problemCount(): number {
    return this.problems.length;
  }

  get problemList(): readonly { setting: string; message: string }[] {
    return [...this.problems];
  }

  /**
   * The setting's value, trimmed, or its default; a sample's `<…>` placeholder or a Key Vault
   * reference the platform left unresolved counts as a problem, not a value.
   */
  private raw(name: string): string | undefined {
    const value = this.settings[name]?.trim();
    if (value && PLACEHOLDER.test(value)) {
      this.problem(name, PLACEHOLDER_MESSAGE, undefined);
      return undefined;
    }
    if (value && KEY_VAULT_REFERENCE.test(value)) {
      this.problem(name, KEY_VAULT_MESSAGE, undefined);
      return undefined;
    }
    if (value) return value;
    return (DEFAULT_SETTINGS as Record<string, string>)[name];
  }

  private problem<T>(name: string, message: string, placeholder: T): T {
    this.problems.push({ setting: name, message });
    return placeholder;
  }

  required(name: string): string {
    const problems = this.problems.length;
    const value = this.raw(name);
    if (value !== undefined) return value;
    // A placeholder has been reported already, as what it is.
    return this.problems.length > problems ? "" : this.problem(name, "is required but not set", "");
  }

  /** The setting's value, or undefined when it is not set (or its value was a problem, reported). */
  optional(name: string): string | undefined {
    return this.raw(name);
  }

  /** The tenant's GUID or one of its verified domain names, the two forms Entra takes for a tenant. */
  tenant(name: string): string {
    const value = this.required(name);
    if (value && !GUID.test(value) && !DOMAIN_NAME.test(value)) {
      return this.problem(name, `is '${value.slice(0, 80)}', not a tenant's GUID or verified domain name (contoso.onmicrosoft.com)`, value);
    }
    return value;
  }

  schedule(name: string): string {
    const value = this.required(name);
    const problem = value ? ncrontabProblem(value) : undefined;
    if (problem) return this.problem(name, `is '${value.slice(0, 80)}', an NCRONTAB expression that ${problem}`, value);
    return value;
  }

  matching(name: string, pattern: RegExp, expected: string): string {
    const value = this.required(name);
    if (value && !pattern.test(value)) return this.problem(name, `is '${value}', not ${expected}`, value);
    return value;
  }

  duration(name: string, { minMs }: { minMs: number }): number {
    const value = this.required(name);
    if (!value) return 0;
    const ms = parseDuration(value);
    if (ms === undefined) {
      return this.problem(name, `is '${value}', not a duration: use ISO-8601 (PT10M) or a number of seconds (600)`, 0);
    }
    if (ms < minMs) return this.problem(name, `is '${value}', shorter than the minimum of ${minMs} ms`, ms);
    if (ms > MAX_DURATION_MS) return this.problem(name, `is '${value}', longer than ten years`, ms);
    return ms;
  }

  integer(name: string, min: number, max: number): number {
    const value = this.required(name);
    if (!value) return 0;
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      return this.problem(name, `is '${value}', not a whole number from ${min} to ${max}`, 0);
    }
    return Number(value);
  }

  boolean(name: string): boolean {
    const value = this.required(name).toLowerCase();
    if (value === "true" || value === "1") return true;
    if (value === "false" || value === "0") return false;
    return this.problem(name, `is '${value}', not true or false`, false);
  }

  httpsUrl(name: string): string {
    const value = this.required(name);
    if (!value) return value;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return this.problem(name, "is not a URL", value);
    }
    // Quote only what cannot be a secret: a URL's credentials, query or fragment may be one.
    const shown = `'${url.protocol}//${url.host}${url.pathname}'`;
    if (url.username || url.password || url.search || url.hash) {
      return this.problem(name, `(${shown}) carries credentials, a query or a fragment; give the bare https URL`, value);
    }
    // Tokens are sent to these hosts: plain http would put them on the wire in clear.
    if (url.protocol !== "https:") return this.problem(name, `is ${shown}, not an https:// URL`, value);
    return url.href.replace(/\/+$/, "");
  }

  /**
   * The storage account's connection: the connection string in `name` if it is set, else its
   * identity-based form (`<name>__…`), read by the names and rules the Functions host uses.
   */
  storageConnection(name: string): StorageConnectionSettings {
    const identitySettings = STORAGE_IDENTITY_SETTINGS.filter((setting) => this.settings[setting]?.trim());
    if (this.settings[name]?.trim() || identitySettings.length === 0) {
      const problems = this.problems.length;
      const connectionString = this.connectionString(name);
      const unset = this.problems.length > problems && this.problems.at(-1)!.message === "is required but not set";
      if (unset) {
        this.problems.at(-1)!.message =
          "is required but not set: a connection string, or for an identity-based connection AzureWebJobsStorage__accountName (or __tableServiceUri and __queueServiceUri) with __credential managedidentity";
      }
      return { kind: "connectionString", connectionString };
    }
    const accountName = this.optional(`${name}__accountName`);
    if (accountName !== undefined && !ACCOUNT_NAME.test(accountName)) {
      this.problem(`${name}__accountName`, `is '${accountName.slice(0, 80)}', not a storage account name (3-24 lowercase letters and digits)`, undefined);
    }
    const serviceUrl = (service: "table" | "queue"): string => {
      const setting = `${name}__${service}ServiceUri`;
      if (this.settings[setting]?.trim()) return this.httpsUrl(setting);
      if (accountName !== undefined) return `https://${accountName}.${service}.core.windows.net`;
      return this.problem(setting, `is required for an identity-based connection (or ${name}__accountName, for the public cloud's endpoints)`, "");
    };
    const tableServiceUrl = serviceUrl("table");
    const queueServiceUrl = serviceUrl("queue");
    const credential = this.optional(`${name}__credential`);
    const clientId = this.optional(`${name}__clientId`);
    const resourceId = this.optional(`${name}__managedIdentityResourceId`);
    if (clientId !== undefined && !GUID.test(clientId)) {
      this.problem(`${name}__clientId`, `is '${clientId.slice(0, 80)}', not a GUID (the user-assigned identity's client id)`, undefined);
    }
    if (resourceId !== undefined && !IDENTITY_RESOURCE_ID.test(resourceId)) {
      this.problem(`${name}__managedIdentityResourceId`, "is not the resource id of a user-assigned identity (/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/…)", undefined);
    }
    if (clientId !== undefined && resourceId !== undefined) {
      this.problem(`${name}__clientId`, `and ${name}__managedIdentityResourceId are both set: name the user-assigned identity one way`, undefined);
    }
    let identity: StorageIdentity;
    if (credential === undefined) {
      if (resourceId !== undefined) this.problem(`${name}__managedIdentityResourceId`, `takes effect only with ${name}__credential managedidentity; set it, or name the identity by ${name}__clientId`, undefined);
      identity = { kind: "default", ...(clientId !== undefined && { managedIdentityClientId: clientId }) };
    } else if (credential.toLowerCase() === "managedidentity") {
      identity = { kind: "managedIdentity", ...(clientId !== undefined && { clientId }), ...(resourceId !== undefined && { resourceId }) };
    } else {
      identity = this.problem(`${name}__credential`, `is '${credential.slice(0, 40)}', not managedidentity (or unset, for the default credential chain)`, { kind: "default" });
    }
    return { kind: "identity", tableServiceUrl, queueServiceUrl, credential: identity };
  }

  /** A storage connection string; its value holds the account key, so messages never quote it. */
  connectionString(name: string): string {
    const value = this.required(name);
    if (!value) return value;
    const parts = new Map(
      value
        .split(";")
        .map((part) => part.trim())
        .filter(Boolean)
        .map((part) => {
          const at = part.indexOf("=");
          return [part.slice(0, at).toLowerCase(), part.slice(at + 1)] as const;
        }),
    );
    const development = parts.get("usedevelopmentstorage")?.toLowerCase() === "true";
    const account = parts.has("accountname") && (parts.has("accountkey") || parts.has("sharedaccesssignature"));
    const sas = parts.has("sharedaccesssignature") && parts.has("tableendpoint");
    if (!development && !account && !sas) {
      return this.problem(name, "is not a storage connection string (AccountName=…;AccountKey=…, or UseDevelopmentStorage=true)", value);
    }
    return value;
  }

  list(name: string, item: RegExp, expected: string): string[] {
    const items = (this.raw(name) ?? "").split(",").map((s) => s.trim()).filter(Boolean);
    const bad = items.filter((i) => !item.test(i));
    if (bad.length > 0) this.problem(name, `has '${bad.join("', '")}', not ${expected}`, undefined);
    return items.filter((i) => item.test(i));
  }

  /** A permission name, made absolute on Graph's host: `Files.ReadWrite` → `https://graph.microsoft.com/Files.ReadWrite`. */
  scope(name: string, graphBaseUrl: string): string {
    const value = this.required(name);
    if (!value) return value;
    if (value.endsWith("/.default") || value === ".default") {
      return this.problem(name, "is '.default': name the delegated permission, e.g. Files.ReadWrite (see README)", value);
    }
    if (/^https:\/\/\S+\/[A-Za-z.]+$/.test(value)) return value;
    if (!/^[A-Za-z]+(\.[A-Za-z]+)+$/.test(value)) return this.problem(name, `is '${value}', not a permission name like Files.ReadWrite`, value);
    let origin = "https://graph.microsoft.com";
    try {
      origin = new URL(graphBaseUrl).origin;
    } catch {
      // GRAPH_BASE_URL's own problem is reported already.
    }
    return `${origin}/${value}`;
  }

  /** A key, base64 or base64url of exactly `bytes` bytes. The value is a secret: a message says what is wrong with it, never what it is. */
  key(name: string, bytes: number, value = this.settings[name]?.trim()): Buffer | undefined {
    if (!value) return undefined;
    if (PLACEHOLDER.test(value)) return this.problem(name, PLACEHOLDER_MESSAGE, undefined);
    if (KEY_VAULT_REFERENCE.test(value)) return this.problem(name, KEY_VAULT_MESSAGE, undefined);
    const key = KEY_TEXT.test(value) ? Buffer.from(value, "base64") : Buffer.alloc(0);
    if (key.length !== bytes) return this.problem(name, `must be the base64 (or base64url) of exactly ${bytes} bytes`, undefined);
    return key;
  }

  /**
   * The private keys that open stored assertions: ASSERTION_PRIVATE_KEY (required), then
   * ASSERTION_PREVIOUS_PRIVATE_KEYS (a comma-separated list, during a rotation); and the retired
   * ASSERTION_ENCRYPTION_KEY, only during the transition from the shared key.
   */
  assertionKeys(): SweeperConfig["auth"]["assertionKeys"] {
    const current = this.settings.ASSERTION_PRIVATE_KEY?.trim();
    const privateKeys: string[] = [];
    if (!current) this.problem("ASSERTION_PRIVATE_KEY", "is required but not set (a private key from `workbook-session-sweeper keys new`; producers get its public key)", undefined);
    else if (this.key("ASSERTION_PRIVATE_KEY", 32, current)) privateKeys.push(current);
    const previous = this.settings.ASSERTION_PREVIOUS_PRIVATE_KEYS?.trim();
    if (previous && KEY_VAULT_REFERENCE.test(previous)) this.problem("ASSERTION_PREVIOUS_PRIVATE_KEYS", KEY_VAULT_MESSAGE, undefined);
    else if (previous) {
      const keys = previous.split(",").map((key) => key.trim()).filter(Boolean);
      keys.forEach((key, i) => {
        if (this.key(`ASSERTION_PREVIOUS_PRIVATE_KEYS`, 32, key) === undefined) this.problems.at(-1)!.message = `has a key (the ${ordinal(i + 1)}) that ${this.problems.at(-1)!.message}`;
        else privateKeys.push(key);
      });
    }
    // The same key twice (a rotation half done) would leave the opener unbuildable: named here instead.
    const seen = new Set<string>();
    for (const key of privateKeys) {
      const bytes = Buffer.from(key, "base64").toString("hex");
      if (seen.has(bytes)) this.problem("ASSERTION_PREVIOUS_PRIVATE_KEYS", "lists a key that is already ASSERTION_PRIVATE_KEY or listed before it: each key once", undefined);
      seen.add(bytes);
    }
    const legacyKey = this.key("ASSERTION_ENCRYPTION_KEY", 32);
    return { privateKeys, ...(legacyKey && { legacyKey }) };
  }

  clientCredential(): ClientCredentialSettings {
    const given = CLIENT_CREDENTIAL_SETTINGS.filter((name) => this.settings[name]?.trim());
    const unusable = given.filter((name) => PLACEHOLDER.test(this.settings[name]!) || KEY_VAULT_REFERENCE.test(this.settings[name]!.trim()));
    const none = { kind: "secret", secret: "" } as const;
    if (unusable.length > 0) {
      for (const name of unusable) this.problem(name, PLACEHOLDER.test(this.settings[name]!) ? PLACEHOLDER_MESSAGE : KEY_VAULT_MESSAGE, undefined);
      return none;
    }
    if (given.length > 1) return this.problem(given[0]!, `and ${given.slice(1).join(" and ")} are ${given.length > 2 ? "all" : "both"} set: set exactly one`, none);
    const [name] = given;
    if (name === undefined) {
      return this.problem(
        "AZURE_CLIENT_ASSERTION_IDENTITY",
        "is required (or AZURE_CLIENT_CERTIFICATE_PATH, or AZURE_CLIENT_SECRET) but not set: the app registration's credential for the on-behalf-of exchange",
        none,
      );
    }
    const value = this.settings[name]!.trim();
    if (name === "AZURE_CLIENT_SECRET") return { kind: "secret", secret: value };
    if (name === "AZURE_CLIENT_CERTIFICATE_PATH") return { kind: "certificate", certificatePath: value };
    // The federated credential: the system-assigned identity, or a user-assigned one by client id.
    const audience = this.matching("AZURE_CLIENT_ASSERTION_AUDIENCE", /^api:\/\/AzureADTokenExchange[A-Za-z]*$|^https:\/\/\S+$/, "a federated credential's audience (api://AzureADTokenExchange, or a national cloud's)");
    if (value.toLowerCase() === "system") return { kind: "managedIdentity", audience };
    if (GUID.test(value)) return { kind: "managedIdentity", clientId: value, audience };
    return this.problem(name, `is '${value.slice(0, 80)}', not 'system' (the app's system-assigned identity) or the client id (a GUID) of a user-assigned identity`, none);
  }
}

function ordinal(n: number): string {
  return n === 1 ? "first" : n === 2 ? "second" : n === 3 ? "third" : `${n}th`;
}
