import { ConfigurationError } from "./errors";
import { MAX_DURATION_MS, parseDuration } from "./utils/duration";

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
     * `SWEEP_CONCURRENCY`: close calls in flight at once across workbooks (default 128). Graph answers
     * Excel calls in 1-3 s, so filling a tenant's 150 requests a second takes a few hundred in flight;
     * one request per workbook and the per-tenant pace are what protect Graph, not this number.
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
    tenantBudget: { requests: number; windowMs: number };
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

export const DEFAULT_SETTINGS = {
  SESSIONS_TABLE: "WorkbookSessions",
  CLOSE_QUEUE: "workbook-session-close",
  SWEEP_SCHEDULE: "0 * * * * *",
  STALE_AFTER: "PT2M",
  CLAIM_LEASE: "PT5M",
  MAX_ATTEMPTS: "5",
  SWEEP_TIME_BUDGET: "PT4M",
  SWEEP_CONCURRENCY: "128",
  TERMINAL_RETENTION: "P7D",
  PURGE_SCHEDULE: "0 30 3 * * *",
  GRAPH_BASE_URL: "https://graph.microsoft.com/v1.0",
  GRAPH_REQUEST_TIMEOUT: "PT30S",
  EXCEL_BUDGET_REQUESTS: "1500",
  EXCEL_BUDGET_WINDOW: "PT10S",
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
      tableName: reader.matching("SESSIONS_TABLE", TABLE_NAME, "a table name: 3-63 letters or digits, starting with a letter"),
      closeQueueName: reader.matching("CLOSE_QUEUE", QUEUE_NAME, "a queue name: 3-63 lowercase letters, digits and single hyphens"),
    },
    sweep: {
      schedule: reader.matching("SWEEP_SCHEDULE", NCRONTAB, "an NCRONTAB expression with six fields, e.g. '0 */5 * * * *'"),
      staleAfterMs: reader.duration("STALE_AFTER", { minMs: 1_000 }),
      claimLeaseMs: reader.duration("CLAIM_LEASE", { minMs: 1_000 }),
      maxAttempts: reader.integer("MAX_ATTEMPTS", 1, 100),
      timeBudgetMs: reader.duration("SWEEP_TIME_BUDGET", { minMs: 1_000 }),
      concurrency: reader.integer("SWEEP_CONCURRENCY", 1, 1_000),
      terminalRetentionMs: reader.duration("TERMINAL_RETENTION", { minMs: 0 }),
      purgeSchedule: reader.matching("PURGE_SCHEDULE", NCRONTAB, "an NCRONTAB expression with six fields, e.g. '0 30 3 * * *'"),
    },
    graph: {
      baseUrl: reader.httpsUrl("GRAPH_BASE_URL"),
      requestTimeoutMs: reader.duration("GRAPH_REQUEST_TIMEOUT", { minMs: 100 }),
      tenantBudget: {
        requests: reader.integer("EXCEL_BUDGET_REQUESTS", 1, 1_000_000),
        windowMs: reader.duration("EXCEL_BUDGET_WINDOW", { minMs: 100 }),
      },
    },
    auth: {
      authorityHost: reader.httpsUrl("AZURE_AUTHORITY_HOST"),
      disableInstanceDiscovery: reader.boolean("AZURE_DISABLE_INSTANCE_DISCOVERY"),
      tenantId: reader.required("AZURE_TENANT_ID"),
      clientId: reader.required("AZURE_CLIENT_ID"),
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

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9]{2,62}$/;
const QUEUE_NAME = /^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/;
const NCRONTAB = /^\S+(\s+\S+){5}$/;

class SettingsReader {
  private readonly problems: { setting: string; message: string }[] = [];

  constructor(private readonly settings: Settings) {}

  throwIfAnyProblem(): void {
    if (this.problems.length > 0) throw new ConfigurationError(this.problems);
  }

  private raw(name: string): string | undefined {
    const value = this.settings[name]?.trim();
    if (value) return value;
    return (DEFAULT_SETTINGS as Record<string, string>)[name];
  }

  private problem<T>(name: string, message: string, placeholder: T): T {
    this.problems.push({ setting: name, message });
    return placeholder;
  }

  required(name: string): string {
    return this.raw(name) ?? this.problem(name, "is required but not set", "");
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
    const key = /^[A-Za-z0-9+/]+={0,2}$/.test(value) ? Buffer.from(value, "base64") : Buffer.alloc(0);
    // The value is a secret: the message says what is wrong with it, never what it is.
    if (key.length !== bytes) return this.problem(name, `must be base64 of exactly ${bytes} bytes`, Buffer.alloc(0));
    return key;
  }

  clientCredential(): SweeperConfig["auth"]["clientCredential"] {
    const secret = this.settings.AZURE_CLIENT_SECRET?.trim();
    const certificatePath = this.settings.AZURE_CLIENT_CERTIFICATE_PATH?.trim();
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
