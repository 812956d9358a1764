import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { join } from "node:path";

/** A running in-memory Azurite with an account and key of this run's own making. */
export interface AzuriteInstance {
  readonly accountName: string;
  readonly accountKey: string;
  readonly tableEndpoint: string;
  readonly queueEndpoint: string;
  /** A connection string for @azure/data-tables and @azure/storage-queue (plain http on loopback). */
  readonly connectionString: string;
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
}

export class AzuriteStartError extends Error {
  readonly code = "AzuriteStartFailed";
  constructor(message: string) {
    super(message);
    this.name = "AzuriteStartError";
  }
}

const LISTENING = /(Table|Queue) service is successfully listening at (http:\/\/127\.0\.0\.1:(\d+))/g;

/**
 * Starts Azurite from the npm package: in memory, telemetry off, on free ports unless told otherwise.
 * The child is tied to this process: it is killed when this process exits, so a crashed test run
 * does not leave it behind.
 */
export async function startAzurite(options: StartAzuriteOptions = {}): Promise<AzuriteInstance> {
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
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, AZURITE_ACCOUNTS: `${accountName}:${accountKey}` },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const ports = await waitForPorts(child, options.timeoutMs ?? 30_000);

  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const tableEndpoint = `http://127.0.0.1:${ports.table}/${accountName}`;
  const queueEndpoint = `http://127.0.0.1:${ports.queue}/${accountName}`;
  return {
    accountName,
    accountKey,
    tableEndpoint,
    queueEndpoint,
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${accountName};AccountKey=${accountKey};` +
      `TableEndpoint=${tableEndpoint};QueueEndpoint=${queueEndpoint};`,
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

function waitForPorts(child: ChildProcess, timeoutMs: number): Promise<{ table: number; queue: number }> {
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
      for (const match of output.matchAll(LISTENING)) found[match[1]!] = Number(match[3]);
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
