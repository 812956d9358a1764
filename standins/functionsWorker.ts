/**
 * Runs the built app under standins/functionsWorker.cjs, a stand-in for the Functions Node
 * worker, in a plain `node` process whose environment is the app settings: what the host indexes,
 * and what it receives from an invocation.
 */
import { fork, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { join, resolve } from "node:path";

export interface IndexedFunction {
  name: string;
  /** By binding name, as the worker reports them to the host (type, direction, schedule, queueName …). */
  bindings: Record<string, Record<string, unknown> & { type: string; direction: string }>;
}

/** A line the worker would send the host: RpcLog's level, category and message. */
export interface WorkerLog {
  level: string;
  category: string;
  message: string;
}

export interface InvocationOutcome {
  logs: WorkerLog[];
  /** The invocation's response (returned value, HTTP response) when it succeeded. */
  response?: { returnValue?: unknown; outputData?: unknown[] };
  /** What the function threw: the host records the invocation as failed with this message. */
  error?: { name?: string; code?: string; message: string };
}

export interface RunningWorker {
  readonly functions: readonly IndexedFunction[];
  /** Set when an entry point threw while loading. */
  readonly loadError: { message: string } | undefined;
  /** What the worker logged while indexing. */
  readonly indexingLogs: readonly WorkerLog[];
  invoke(functionName: string, input: { inputData?: { name?: string; data: unknown }[]; triggerMetadata?: Record<string, unknown> }): Promise<InvocationOutcome>;
  stop(): Promise<void>;
}

/** This repository (standins/ sits at its top): the default app, built into dist/. */
const PROJECT_ROOT = resolve(__dirname, "..");

/** Starts the stand-in worker over `appDirectory` (default: this project, built) with exactly `settings` as app settings. */
export async function startFunctionsWorker(settings: Record<string, string | undefined>, appDirectory = PROJECT_ROOT): Promise<RunningWorker> {
  // The host passes app settings as the worker's environment, and nothing else of ours.
  const env: Record<string, string> = { PATH: process.env.PATH ?? "", FUNCTIONS_WORKER_RUNTIME: "node" };
  if (process.env.NODE_EXTRA_CA_CERTS) env.NODE_EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;
  for (const [name, value] of Object.entries(settings)) if (value !== undefined) env[name] = value;
  const child: ChildProcess = fork(join(__dirname, "functionsWorker.cjs"), [appDirectory], { env, stdio: ["ignore", "pipe", "pipe", "ipc"] });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));

  const pending = new Map<number, (outcome: InvocationOutcome) => void>();
  let nextId = 1;
  const indexed = await new Promise<{ functions: IndexedFunction[]; loadError?: { message: string }; logs: WorkerLog[] }>((resolveIndexed, reject) => {
    const timer = setTimeout(() => reject(new Error(`the worker stand-in did not index in 20 s:\n${output.slice(-2000)}`)), 20_000);
    child.once("exit", (code) => reject(new Error(`the worker stand-in exited with ${code} before indexing:\n${output.slice(-2000)}`)));
    child.on("message", (message: { type: string; id?: number } & Record<string, unknown>) => {
      if (message.type === "indexed") {
        clearTimeout(timer);
        resolveIndexed(message as never);
      } else if (message.type === "invoked" && message.id !== undefined) {
        pending.get(message.id)?.(message as unknown as InvocationOutcome);
        pending.delete(message.id);
      }
    });
  });

  return {
    functions: indexed.functions,
    loadError: indexed.loadError,
    indexingLogs: indexed.logs,
    invoke(functionName, input) {
      const id = nextId++;
      return new Promise((resolveInvocation) => {
        pending.set(id, resolveInvocation);
        child.send({ type: "invoke", id, functionName, ...input });
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.disconnect();
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A timer's input as the host sends it (RpcTypedData json). */
export const timerInput = (isPastDue = false) => ({
  inputData: [{ data: { json: JSON.stringify({ Schedule: { AdjustForDST: true }, ScheduleStatus: null, IsPastDue: isPastDue }) } }],
});

/** A queue message as the host sends it, with the trigger metadata the queue extension adds. */
export const queueInput = (text: string, id = "message-1") => ({
  inputData: [{ data: { string: text } }],
  triggerMetadata: { DequeueCount: { json: "1" }, Id: { string: id } },
});

/** An HTTP request to the sweep route as the host sends it (RpcHttp). */
export const httpInput = (body: string) => ({
  inputData: [{ data: { http: { method: "POST", url: "http://localhost:7071/api/sweep", headers: { "content-type": "application/json" }, body: { string: body } } } }],
});
