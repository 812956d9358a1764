/**
 * The operator CLI: `workbook-session-sweeper sweep [flags]` runs the same sweep as the timer and
 * the HTTP trigger, from a shell, with the same settings (environment, or local.settings.json);
 * `status` shows the ledger at a glance (the storage settings alone).
 *
 * Exit codes: 0 the sweep ran (even if some rows failed or will be retried), 1 the sweep was ended
 * by a storage fault or paused by the app's own fault (a wrong client secret, scope … named by the
 * summary's error code), or failed unexpectedly, 2 bad flags or bad configuration.
 */
import { parseArgs } from "node:util";
import { loadConfig, type Settings } from "./config";
import { createSweeperServices, type SweeperServices } from "./app/sweeperServices";
import { Codes } from "./core/codes";
import { describeProblem, ValidationError, type InputProblem } from "./core/errors";
import { generateAssertionKeyPair } from "./core/assertionSealing";
import { describeFault } from "./sweep/Sweeper";
import type { SweepRequest, SweepSummary } from "./sweep/models";
import { runLoggedSweep } from "./app/runSweep";
import { validateSweepRequest } from "./app/sweepRequest";
import { cliLogger, formatSummary, ProgressLine, redactingSink, type TextSink } from "./cli/output";
import { configOrFail, resolveSettings, secretValuesOf, SettingsFileError } from "./cli/settings";
import { runStatusCommand } from "./cli/status";

export const EXIT_OK = 0;
export const EXIT_SWEEP_FAULT = 1;
export const EXIT_USAGE = 2;

const PROGRAM = "workbook-session-sweeper";

export interface CliIo {
  stdout: TextSink;
  stderr: TextSink;
  env: Settings;
  cwd: string;
  /** Whether stderr is a terminal: the progress line is shown only then. */
  isTTY: boolean;
  /** Width of the terminal, to keep the progress line on one row. */
  columns?: number;
}

export const USAGE = `Usage: ${PROGRAM} [sweep] [options]
       ${PROGRAM} status [--json] [--settings <path>]
       ${PROGRAM} keys new
       ${PROGRAM} help

Closes the stale Excel workbook sessions recorded in the session ledger, as the timer does.
\`status\` shows the ledger at a glance: live sessions by state and idle age, the last 24 h's
outcomes and release latency, the last sweeps (needs only AzureWebJobsStorage and SESSIONS_TABLE).
\`keys new\` prints a new key pair for sealing user assertions: ASSERTION_PRIVATE_KEY for the
sweeper (keep it in Key Vault), ASSERTION_PUBLIC_KEY for the producing services.

Options:
  --dry-run             list what would be closed; claim, write and send nothing
  --older-than <dur>    close sessions idle longer than this: ISO-8601 (PT10M) or seconds (600);
                        default STALE_AFTER
  --user <guid>         only this user's sessions (Entra object id)
  --limit <n>           attempt at most n sessions (1 to 1000000)
  --json                print only the summary (or the status), as JSON, on the last line of stdout
  --settings <path>     a local.settings.json to read (default ./local.settings.json if present);
                        environment variables override its Values
  -v, --verbose         log the sweep's structured lines to stderr
  -h, --help            show this help

Exit codes: 0 the sweep ran (rows that failed or will be retried are in the summary),
            1 a storage fault ended the sweep, or the app's credential or settings were refused
              (sends paused; the summary's error code names the cause), 2 bad options or settings.
            status: 0 printed, 1 the ledger could not be read, 2 bad options or settings.
`;

const OPTIONS = {
  "dry-run": { type: "boolean" },
  "older-than": { type: "string" },
  user: { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
  settings: { type: "string" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

/** The flag each field of a sweep request comes from, for messages. */
const FLAG_OF_FIELD: Record<string, { flag: string; option: keyof typeof OPTIONS }> = {
  dryRun: { flag: "--dry-run", option: "dry-run" },
  olderThan: { flag: "--older-than", option: "older-than" },
  userId: { flag: "--user", option: "user" },
  limit: { flag: "--limit", option: "limit" },
};

/** The command line is not one the CLI takes: each problem names the flag, argument or command at fault. */
export class UsageError extends ValidationError {
  override readonly code: string = Codes.InvalidUsage;
}

interface Invocation {
  command: "sweep" | "help" | "keys" | "status";
  request: SweepRequest;
  json: boolean;
  verbose: boolean;
  settingsPath: string | undefined;
}

function parseInvocation(argv: readonly string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: true });
  } catch (error) {
    throw new UsageError([{ field: "arguments", message: argumentProblem(error) }]);
  }
  const { values, positionals } = parsed;
  const [command = "sweep", ...extra] = positionals;
  if (values.help || command === "help") return { command: "help", request: {}, json: false, verbose: false, settingsPath: undefined };
  if (command === "keys") {
    if (extra.length !== 1 || extra[0] !== "new") throw new UsageError([{ field: "arguments", message: "the keys command takes one argument: keys new" }]);
    return { command: "keys", request: {}, json: values.json ?? false, verbose: false, settingsPath: undefined };
  }
  if (command === "status") {
    if (extra.length > 0) throw new UsageError([{ field: "arguments", message: `unexpected argument${extra.length > 1 ? "s" : ""} ${extra.map((a) => `'${a}'`).join(", ")}` }]);
    const sweepFlags = Object.values(FLAG_OF_FIELD).filter(({ option }) => values[option] !== undefined).map(({ flag }) => flag);
    if (sweepFlags.length > 0) throw new UsageError([{ field: "arguments", message: `the status command does not take ${sweepFlags.join(", ")} (sweep options)` }]);
    return { command: "status", request: {}, json: values.json ?? false, verbose: false, settingsPath: values.settings };
  }
  if (command !== "sweep") throw new UsageError([{ field: "arguments", message: `unknown command '${command}'; the commands are sweep (the default), status, keys new and help` }]);
  if (extra.length > 0) throw new UsageError([{ field: "arguments", message: `unexpected argument${extra.length > 1 ? "s" : ""} ${extra.map((a) => `'${a}'`).join(", ")}` }]);

  // The flags become the same fields as the HTTP API's body, validated by the same function.
  const fields: Record<string, unknown> = {};
  if (values["dry-run"]) fields.dryRun = true;
  if (values["older-than"] !== undefined) fields.olderThan = values["older-than"];
  if (values.user !== undefined) fields.userId = values.user;
  if (values.limit !== undefined) fields.limit = /^\d+$/.test(values.limit) ? Number(values.limit) : values.limit;
  let request: SweepRequest;
  try {
    request = validateSweepRequest(fields);
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    throw new UsageError(error.problems.map((problem) => flagProblem(problem, values)));
  }
  return { command: "sweep", request, json: values.json ?? false, verbose: values.verbose ?? false, settingsPath: values.settings };
}

/** `olderThan must be …` → `--older-than must be … (got '10m')`: the request's field becomes the flag it came from. */
function flagProblem(problem: InputProblem, values: Partial<Record<keyof typeof OPTIONS, string | boolean>>): InputProblem {
  const source = FLAG_OF_FIELD[problem.field];
  if (!source) return problem;
  const given = values[source.option];
  return { field: source.flag, message: `${problem.message}${typeof given === "string" ? ` (got '${given.slice(0, 80)}')` : ""}` };
}

function argumentProblem(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const option = /option '([^']*)'/i.exec(message)?.[1];
    return `unknown option ${option ? `'${option}'` : ""}`.trim();
  }
  // Node's messages run over several lines with hints; the first line says what is wrong.
  return message.split("\n")[0]!.replace(/^Option /, "option ");
}

function defaultIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    isTTY: process.stderr.isTTY === true,
    ...(process.stderr.columns !== undefined && { columns: process.stderr.columns }),
  };
}

/**
 * Runs the CLI with these arguments (without `node` and the script) and returns the exit code.
 * Never throws; `io` defaults to the process's streams, environment and working directory.
 */
export async function main(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const full: CliIo = { ...defaultIo(), ...io };
  const secrets: string[] = [];
  const stdout = redactingSink(full.stdout, () => secrets);
  const stderr = redactingSink(full.stderr, () => secrets);
  const fail = (message: string) => stderr.write(`${PROGRAM}: ${message}\n`);
  try {
    return await run(argv, full, { stdout, stderr, fail, secrets });
  } catch (error) {
    const fault = describeFault(error);
    fail(`unexpected error: ${fault.code}: ${fault.message}`);
    return EXIT_SWEEP_FAULT;
  }
}

interface Output {
  stdout: TextSink;
  stderr: TextSink;
  fail(message: string): void;
  /** Filled once the settings are known; everything written is redacted of these. */
  secrets: string[];
}

async function run(argv: readonly string[], full: CliIo, { stdout, stderr, fail, secrets }: Output): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = parseInvocation(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    for (const problem of error.problems) fail(problem.field === "arguments" ? problem.message : describeProblem(problem));
    stderr.write(`\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (invocation.command === "help") {
    stdout.write(USAGE);
    return EXIT_OK;
  }
  if (invocation.command === "keys") {
    // Written to stdout unredacted: printing a new key is this command's whole purpose.
    const pair = await generateAssertionKeyPair();
    full.stdout.write(
      invocation.json
        ? `${JSON.stringify({ ASSERTION_PRIVATE_KEY: pair.privateKey, ASSERTION_PUBLIC_KEY: pair.publicKey, keyId: pair.keyId })}\n`
        : `ASSERTION_PRIVATE_KEY=${pair.privateKey}\nASSERTION_PUBLIC_KEY=${pair.publicKey}\n# key id ${pair.keyId}: the private key goes to the sweeper only (a Key Vault secret); the public key to every producer.\n`,
    );
    return EXIT_OK;
  }

  let settings: Settings;
  let settingsFile: string | undefined;
  try {
    ({ settings, file: settingsFile } = resolveSettings(full.env, full.cwd, invocation.settingsPath));
  } catch (error) {
    if (!(error instanceof SettingsFileError)) throw error;
    fail(error.message);
    return EXIT_USAGE;
  }
  secrets.push(...secretValuesOf(settings));
  const from = settingsFile ? `the environment and ${settingsFile}` : "the environment (no local.settings.json)";
  if (invocation.command === "status") return runStatusCommand(settings, { json: invocation.json, settingsFrom: from }, { stdout, fail });

  // A dry run sends nothing and opens no assertion: it needs none of the Entra or key settings.
  const config = configOrFail(() => loadConfig(settings, { credentials: !invocation.request.dryRun }), fail, from);
  if (!config) return EXIT_USAGE;

  const services: SweeperServices = createSweeperServices(config);

  const progress = full.isTTY && !invocation.json ? new ProgressLine(stderr, full.columns) : undefined;
  const logger = cliLogger(stderr, { verbose: invocation.verbose, ...(progress && { progress }) });
  if (invocation.verbose) logger.log("Settings read", { from: settingsFile ?? "environment", table: config.storage.tableName, request: invocation.request });

  // Ctrl-C ends the sweep cleanly: untried rows are given back rather than left `closing`.
  const interrupt = new AbortController();
  const onSigint = () => {
    fail("interrupted: finishing the requests under way and giving back untried rows (Ctrl-C again to quit now)");
    interrupt.abort();
    process.once("SIGINT", () => process.exit(130));
  };
  process.once("SIGINT", onSigint);
  let summary: SweepSummary;
  try {
    summary = await runLoggedSweep(services, invocation.request, logger, "cli", {
      abortSignal: interrupt.signal,
      ...(progress && { onProgress: (s: Readonly<SweepSummary>) => progress.update(s) }),
    });
  } catch (error) {
    progress?.clear();
    const fault = describeFault(error);
    fail(`the sweep failed: ${fault.code}: ${fault.message}`);
    return EXIT_SWEEP_FAULT;
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
  progress?.clear();

  stdout.write(invocation.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary, config.storage.tableName));
  return summary.error ? EXIT_SWEEP_FAULT : EXIT_OK;
}
