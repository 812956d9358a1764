import { DEFAULT_CLOSE_QUEUE } from "./core/closeRequestMessage";
import { ConfigurationError } from "./core/errors";
import { MAX_DURATION_MS, parseDuration } from "./utils/duration";
import type { RequestBudget } from "./core/budget";

/** Everything the app reads from its settings, validated. Durations are milliseconds. */
export interface SweeperConfig {
  storage: {
    /** `AzureWebJobsStorage`: the ledger table and the close queue live in this account. */
    connectionString: string;
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
    /** `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` (PEM with key): exactly one. */
    clientCredential: { kind: "secret"; secret: string } | { kind: "certificate"; certificatePath: string };
    /** `ASSERTION_ENCRYPTION_KEY`: 32 bytes, base64; user assertions are stored encrypted with it. */
    assertionKey: Buffer;
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

/**
 * The settings without a default: the app does not run until each is set. The client credential is
 * one of AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH.
 */
export const REQUIRED_SETTINGS = ["AzureWebJobsStorage", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "ASSERTION_ENCRYPTION_KEY"] as const;

/** The two ways to give the app registration's credential; exactly one is set. */
export const CLIENT_CREDENTIAL_SETTINGS = ["AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"] as const;

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
} as const;

/**
 * Reads and validates every setting at once. All problems are collected, so one run of the app
 * names every missing or malformed setting; the first one is thrown as a ConfigurationError whose
 * message lists them all.
 */
export function loadConfig(settings: Settings = process.env): SweeperConfig {
  const reader = new SettingsReader(settings);
  const config: SweeperConfig = {
    storage: {
      connectionString: reader.connectionString("AzureWebJobsStorage"),
      // History tables add `History2026W49` (14 characters) to the name, within Table Storage's 63.
      tableName: reader.matching("SESSIONS_TABLE", TABLE_NAME, "a table name: 3-49 letters or digits, starting with a letter (its weeks of history add 14)"),
      closeQueueName: reader.matching("CLOSE_QUEUE", QUEUE_NAME, QUEUE_NAME_FORM),
    },
    sweep: {
      schedule: reader.schedule("SWEEP_SCHEDULE"),
      staleAfterMs: reader.duration("STALE_AFTER", { minMs: 1_000 }),
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
      tenantId: reader.tenant("AZURE_TENANT_ID"),
      clientId: reader.matching("AZURE_CLIENT_ID", GUID, "a GUID (the app registration's Application (client) ID)"),
      clientCredential: reader.clientCredential(),
      assertionKey: reader.key("ASSERTION_ENCRYPTION_KEY", 32),
      additionallyAllowedTenants: reader.list("AZURE_ADDITIONALLY_ALLOWED_TENANTS", /^([0-9a-f-]{36}|\*)$/i, "a tenant GUID or *"),
      scope: "",
    },
  };
  config.auth.scope = reader.scope("GRAPH_SCOPE", config.graph.baseUrl);
  reader.throwIfAnyProblem();
  return config;
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

  /** The setting's value, trimmed, or its default; a sample's `<…>` placeholder counts as a problem, not a value. */
  private raw(name: string): string | undefined {
    const value = this.settings[name]?.trim();
    if (value && PLACEHOLDER.test(value)) {
      this.problem(name, PLACEHOLDER_MESSAGE, undefined);
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

  key(name: string, bytes: number): Buffer {
    const value = this.settings[name]?.trim();
    if (!value) return this.problem(name, "is required but not set (base64 of 32 random bytes)", Buffer.alloc(0));
    if (PLACEHOLDER.test(value)) return this.problem(name, PLACEHOLDER_MESSAGE, Buffer.alloc(0));
    const key = /^[A-Za-z0-9+/]+={0,2}$/.test(value) ? Buffer.from(value, "base64") : Buffer.alloc(0);
    // The value is a secret: the message says what is wrong with it, never what it is.
    if (key.length !== bytes) return this.problem(name, `must be base64 of exactly ${bytes} bytes`, Buffer.alloc(0));
    return key;
  }

  clientCredential(): SweeperConfig["auth"]["clientCredential"] {
    const secret = this.settings.AZURE_CLIENT_SECRET?.trim();
    const certificatePath = this.settings.AZURE_CLIENT_CERTIFICATE_PATH?.trim();
    const placeholders = CLIENT_CREDENTIAL_SETTINGS.filter((name) => PLACEHOLDER.test(this.settings[name] ?? ""));
    if (placeholders.length > 0) {
      for (const name of placeholders) this.problem(name, PLACEHOLDER_MESSAGE, undefined);
      return { kind: "secret", secret: "" };
    }
    if (secret && certificatePath) {
      return this.problem("AZURE_CLIENT_SECRET", "and AZURE_CLIENT_CERTIFICATE_PATH are both set: set exactly one", {
        kind: "secret",
        secret: "",
      });
    }
    if (secret) return { kind: "secret", secret };
    if (certificatePath) return { kind: "certificate", certificatePath };
    return this.problem("AZURE_CLIENT_SECRET", "is required (or AZURE_CLIENT_CERTIFICATE_PATH) but not set", {
      kind: "secret",
      secret: "",
    });
  }
}
