import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { join } from "node:path";
import type { TestCertificate } from "./certificate";

/** A running in-memory Azurite with an account and key of this run's own making. */
export interface AzuriteInstance {
  readonly accountName: string;
  readonly accountKey: string;
  /** Path-style: `http(s)://127.0.0.1:PORT/<accountName>`. */
  readonly tableEndpoint: string;
  readonly queueEndpoint: string;
  /**
   * A connection string for @azure/data-tables and @azure/storage-queue, with the account key
   * (plain http on loopback, or https when started with a certificate). In OAuth mode Azurite still
   * accepts the key: the string is for a fixture's own seeding and inspection, not for the app.
   */
  readonly connectionString: string;
  /** True when started with `oauth: true`: bearer tokens are accepted (and checked) on https. */
  readonly oauth: boolean;
  readonly pid: number;
  stop(): Promise<void>;
}

export interface StartAzuriteOptions {
  /** How long to wait for both services to listen. Default 30 s. */
  timeoutMs?: number;
  /** Fixed ports (to restart on the same address after a stop). Default: free ports. */
  tablePort?: number;
  queuePort?: number;
  /** Reuse an account (to restart the same "storage account"). Default: a new random one. */
  account?: { name: string; key: string };
  /**
   * Serve Table and Queue over https with this certificate (`--cert`/`--key`). The process that
   * talks to Azurite must trust it already (NODE_EXTRA_CA_CERTS, see certificate.ts).
   */
  certificate?: TestCertificate;
  /**
   * Accept bearer tokens (`--oauth basic`), as a storage account accessed with Entra ID
   * (managed identity) is. Needs `certificate`: Azurite takes bearer tokens over https only.
   * Basic mode checks a token's nbf/iat/exp, issuer prefix (`https://sts.windows.net/` ...) and
   * audience (`https://storage.azure.com[/]` or the account's URL), not its signature.
   */
  oauth?: boolean;
}

export class AzuriteStartError extends Error {
  readonly code = "AzuriteStartFailed";
  constructor(message: string) {
    super(message);
    this.name = "AzuriteStartError";
  }
}

const LISTENING = /(Table|Queue) service is successfully listening at (https?:\/\/127\.0\.0\.1:(\d+))/g;

/**
 * Starts Azurite from the npm package: in memory, telemetry off, on free ports unless told otherwise.
 * The child is tied to this process: it is killed when this process exits, so a crashed test run
 * does not leave it behind.
 */
export async function startAzurite(options: StartAzuriteOptions = {}): Promise<AzuriteInstance> {
  const { certificate } = options;
  const oauth = options.oauth ?? false;
  if (oauth && !certificate) throw new AzuriteStartError("startAzurite: oauth needs a certificate (Azurite accepts bearer tokens over https only)");
  const accountName = options.account?.name ?? `wss${randomBytes(4).toString("hex")}`;
  const accountKey = options.account?.key ?? randomBytes(64).toString("base64");
  const args = [
    join(__dirname, "azuriteChild.cjs"),
    "--inMemoryPersistence",
    "--disableTelemetry",
    "--skipApiVersionCheck",
    "--silent",
    "--loose",
    "--blobPort", "0",
    "--tablePort", String(options.tablePort ?? 0),
    "--queuePort", String(options.queuePort ?? 0),
    ...(certificate ? ["--cert", certificate.certPath, "--key", certificate.keyPath] : []),
    ...(oauth ? ["--oauth", "basic"] : []),
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, AZURITE_ACCOUNTS: `${accountName}:${accountKey}` },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const protocol = certificate ? "https" : "http";
  const ports = await waitForPorts(child, protocol, options.timeoutMs ?? 30_000);

  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const tableEndpoint = `${protocol}://127.0.0.1:${ports.table}/${accountName}`;
  const queueEndpoint = `${protocol}://127.0.0.1:${ports.queue}/${accountName}`;
  return {
    accountName,
    accountKey,
    tableEndpoint,
    queueEndpoint,
    connectionString:
      `DefaultEndpointsProtocol=${protocol};AccountName=${accountName};AccountKey=${accountKey};` +
      `TableEndpoint=${tableEndpoint};QueueEndpoint=${queueEndpoint};`,
    oauth,
    pid: child.pid ?? -1,
    async stop() {
      process.removeListener("exit", killOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function waitForPorts(child: ChildProcess, protocol: "http" | "https", timeoutMs: number): Promise<{ table: number; queue: number }> {
  return new Promise((resolve, reject) => {
    let output = "";
    const found: Record<string, number> = {};
    const fail = (why: string) => {
      cleanup();
      child.kill("SIGKILL");
      reject(
        new AzuriteStartError(
          `Azurite did not start (${why}). Is the 'azurite' dev dependency installed (npm ci)? Output:\n${output.slice(-2000)}`,
        ),
      );
    };
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      for (const match of output.matchAll(LISTENING)) {
        if (!match[2]!.startsWith(`${protocol}:`)) return fail(`${match[1]} listens on ${match[2]}, expected ${protocol}`);
        found[match[1]!] = Number(match[3]);
      }
      if (found.Table && found.Queue) {
        cleanup();
        resolve({ table: found.Table, queue: found.Queue });
      }
    };
    const onExit = (code: number | null, signal: string | null) => fail(`exited with ${signal ?? code}`);
    const onError = (err: Error) => fail(err.message);
    const timer = setTimeout(() => fail(`no listening ports after ${timeoutMs} ms`), timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      child.off("error", onError);
      // Keep draining so a chatty child never blocks on a full pipe.
      child.stdout?.resume();
      child.stderr?.resume();
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
    child.once("error", onError);
  });
}
