/**
 * Runs one contender job and measures it: wall time, storage requests (counted by a pipeline
 * policy on its table client) and peak RSS. In `process` isolation the job runs in a child
 * process of its own (this file is its entry point), so its peak RSS is its own and not the
 * stand-ins'; `inline` runs it here and samples this process's RSS while it runs.
 */
import { fork } from "node:child_process";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { CONTENDERS, type ContenderOutcome, type JobName } from "./contenders";
import type { Isolation } from "./options";
import { PROJECT_ROOT } from "./projectRoot";

export interface JobRequest {
  job: JobName;
  settings: Record<string, string>;
  limit?: number;
  parallel?: number;
  /**
   * Set by runJobInChild when it has a gate: the child, once loaded, waits for the parent's word to
   * start, so jobs run together start together, not each as soon as its process has loaded.
   */
  startTogether?: boolean;
}

export interface StorageCounts {
  total: number;
  /** Filtered scans and listings (GET on the table with a query), one per page. */
  queries: number;
  /** Point reads (GET of one entity). */
  reads: number;
  /** Single-entity writes (Merge, Replace, insert, delete). */
  writes: number;
  /** Entity-group transactions (POST $batch), however many rows each carries. */
  transactions: number;
  /**
   * Requests per table, by the URL's last segment: a table's name, `Tables` (the table service:
   * create, delete, list) or `$batch` (a transaction names its table in its body).
   */
  byTable: Record<string, number>;
}

export interface JobResult {
  outcome: ContenderOutcome;
  wallMs: number;
  /**
   * When the job started and ended, in ms since the epoch on the high-resolution clock
   * (performance.timeOrigin + performance.now()): comparable between the jobs of several processes.
   */
  startedAtMs: number;
  endedAtMs: number;
  storage: StorageCounts;
  peakRssBytes: number;
  /** CPU time (user + system) the process running the job spent on it. */
  cpuMs: number;
  /** Event-loop delay while the job ran (ms): how long ready work waited for the loop (a busy loop delays every request). */
  eventLoopDelayMs: { mean: number; p99: number; max: number };
  /** Heap in use after a full GC at the end (child processes started with --expose-gc only): what the job kept alive. */
  liveHeapBytesAfterGc?: number;
  /** `process`: the child's own peak RSS over its life (getrusage); `shared`: sampled in the bench process, stand-ins included. */
  rssScope: "process" | "shared";
}

export function emptyStorageCounts(): StorageCounts {
  return { total: 0, queries: 0, reads: 0, writes: 0, transactions: 0, byTable: {} };
}

/** The requests of several clients together (the three scenario's workers). */
export function sumStorageCounts(counts: readonly StorageCounts[]): StorageCounts {
  const sum = emptyStorageCounts();
  for (const c of counts) {
    sum.total += c.total;
    sum.queries += c.queries;
    sum.reads += c.reads;
    sum.writes += c.writes;
    sum.transactions += c.transactions;
    for (const [table, n] of Object.entries(c.byTable)) sum.byTable[table] = (sum.byTable[table] ?? 0) + n;
  }
  return sum;
}

export function countStorageRequest(counts: StorageCounts, request: { method: string; url: string }): void {
  counts.total++;
  const path = new URL(request.url).pathname;
  const table = decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)).replace(/\(.*$/s, "");
  counts.byTable[table] = (counts.byTable[table] ?? 0) + 1;
  if (request.method === "POST" && path.endsWith("/$batch")) counts.transactions++;
  else if (request.method === "GET" && /\(\s*PartitionKey=/.test(decodeURIComponent(path))) counts.reads++;
  else if (request.method === "GET") counts.queries++;
  else counts.writes++;
}

/**
 * Runs the job in this process. Sampling RSS costs the job CPU (process.memoryUsage reads /proc),
 * so only a job that shares its process samples it; a worker process reads its peak from
 * getrusage afterwards.
 */
export async function runJobInline(request: JobRequest, sampleRss = true): Promise<JobResult> {
  const storage = emptyStorageCounts();
  let peak = process.memoryUsage.rss();
  const sampler = sampleRss
    ? setInterval(() => {
        peak = Math.max(peak, process.memoryUsage.rss());
      }, 20)
    : undefined;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const started = performance.now();
  const cpu = process.cpuUsage();
  try {
    const outcome = await CONTENDERS[request.job]({
      settings: request.settings,
      onStorageRequest: (r) => countStorageRequest(storage, r),
      ...(request.limit !== undefined && { limit: request.limit }),
      ...(request.parallel !== undefined && { parallel: request.parallel }),
    });
    const ended = performance.now();
    const wallMs = ended - started;
    peak = Math.max(peak, process.memoryUsage.rss());
    const used = process.cpuUsage(cpu);
    loop.disable();
    const eventLoopDelayMs = { mean: loop.mean / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 };
    return {
      outcome,
      wallMs,
      startedAtMs: performance.timeOrigin + started,
      endedAtMs: performance.timeOrigin + ended,
      storage,
      peakRssBytes: peak,
      cpuMs: (used.user + used.system) / 1000,
      eventLoopDelayMs,
      rssScope: "shared",
    };
  } finally {
    loop.disable();
    if (sampler) clearInterval(sampler);
  }
}

/**
 * Holds jobs run together until every one of their processes has loaded (Node, the SDKs, the app),
 * so that they start their work at the same moment. A party that fails before it is ready leaves
 * the gate, so the others are not held forever.
 */
export class StartGate {
  private waiting: number;
  private readonly opened: Promise<void>;
  private open!: () => void;

  constructor(parties: number) {
    this.waiting = parties;
    this.opened = new Promise((resolve) => (this.open = resolve));
    if (parties <= 0) this.open();
  }

  /** This party is ready: resolves when every party is. */
  arrive(): Promise<void> {
    this.leave();
    return this.opened;
  }

  /** This party will never be ready. */
  leave(): void {
    if (--this.waiting <= 0) this.open();
  }
}

/**
 * Runs the job in a child process (this file as entry), which exits after it. The child runs as
 * this process was loaded: compiled JavaScript under plain Node for `npm run bench`, as the
 * Functions host runs the app, or TypeScript through tsx's CommonJS hook under vitest.
 */
export interface ChildOptions {
  /** Write a V8 CPU profile of the child here. */
  cpuProfileDir?: string;
  /** More Node flags for the child (e.g. `--max-old-space-size=96`). */
  nodeArgs?: string[];
  /** The child, once loaded, starts its job only when every party of this gate has loaded (runJobsTogether). */
  gate?: StartGate;
}

/** Children forked so far: jobs started together in one millisecond still get profiles of their own. */
let childrenForked = 0;

export function runJobInChild(request: JobRequest, options: ChildOptions = {}): Promise<JobResult> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, [], {
      // From TypeScript, tsx's CommonJS hook only (the package is CommonJS): `--import tsx` would
      // add an off-thread ESM loader, ~30 MB of RSS that is the bench's, not the contender's.
      execArgv: [
        ...(__filename.endsWith(".ts") ? ["--require", require.resolve("tsx/cjs")] : []),
        ...(options.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`, `--cpu-prof-name=${request.job}-${Date.now()}-${++childrenForked}.cpuprofile`] : []),
        ...(options.nodeArgs ?? []),
      ],
      cwd: PROJECT_ROOT,
      env: { ...process.env, WSS_BENCH_WORKER: "1" },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      serialization: "advanced",
    });
    let settled = false;
    // Whether this child has arrived at its gate or left it: it counts there once.
    let counted = false;
    const gone = () => {
      settled = true;
      // Failed before it was ready: the other jobs of its gate must not wait for it.
      if (!counted) options.gate?.leave();
      counted = true;
    };
    child.on("message", (message: WorkerMessage) => {
      if ("ready" in message) {
        counted = true;
        void (options.gate?.arrive() ?? Promise.resolve()).then(() => child.send({ start: true }));
        return;
      }
      gone();
      if (message.ok) resolve(message.result);
      else reject(new Error(`bench worker (${request.job}) failed: ${message.error}`));
    });
    child.on("error", (error) => {
      if (!settled) reject(error);
      gone();
    });
    child.on("exit", (code, signal) => {
      if (!settled) reject(new Error(`bench worker (${request.job}) exited with ${signal ?? code} before answering`));
      gone();
    });
    child.send({ ...request, startTogether: options.gate !== undefined });
  });
}

/** What a worker process tells the bench: it has loaded and waits to start, or its job's end. */
type WorkerMessage = { ready: true } | { ok: true; result: JobResult } | { ok: false; error: string };

export function runJob(request: JobRequest, isolation: Isolation, options: ChildOptions = {}): Promise<JobResult> {
  return isolation === "process" ? runJobInChild(request, options) : runJobInline(request);
}

/**
 * Runs the jobs at the same time, as separate processes would run them: in `process` isolation
 * each in a child process of its own, started together once all have loaded; `inline`, all in
 * this process, started in the same turn.
 */
export function runJobsTogether(requests: readonly JobRequest[], isolation: Isolation, options: Omit<ChildOptions, "gate"> = {}): Promise<JobResult[]> {
  if (isolation === "inline") return Promise.all(requests.map((request) => runJobInline(request)));
  const gate = new StartGate(requests.length);
  return Promise.all(requests.map((request) => runJobInChild(request, { ...options, gate })));
}

function nextMessage<T>(): Promise<T> {
  return new Promise<T>((resolve) => process.once("message", (m) => resolve(m as T)));
}

async function workerMain(): Promise<void> {
  const request = await nextMessage<JobRequest>();
  if (request.startTogether) {
    process.send!({ ready: true } satisfies WorkerMessage);
    await nextMessage<{ start: true }>();
  }
  try {
    const result = await runJobInline(request, false);
    // getrusage's maxrss: the most this process ever had resident, module loading included.
    result.peakRssBytes = Math.max(result.peakRssBytes, process.resourceUsage().maxRSS * 1024);
    result.rssScope = "process";
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc) {
      gc();
      result.liveHeapBytesAfterGc = process.memoryUsage().heapUsed;
    }
    process.send!({ ok: true, result }, () => process.exit(0));
  } catch (error) {
    process.send!({ ok: false, error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) }, () => process.exit(1));
  }
}

if (process.env.WSS_BENCH_WORKER === "1" && require.main === module) void workerMain();
