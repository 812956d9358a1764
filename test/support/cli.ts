import { main, type CliIo } from "../../src/cli";
import type { Run } from "./exec";
import { captureLog } from "./secretScan";

/**
 * The operator CLI's `main()` called in process with captured streams, not on a terminal unless
 * `io` says so: what it wrote and its exit code.
 */
export async function runCli(argv: string[], io: Partial<CliIo> & Pick<CliIo, "env" | "cwd">): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, {
    isTTY: false,
    ...io,
    stdout: { write: (chunk: string) => (stdout += chunk) },
    stderr: { write: (chunk: string) => (stderr += chunk) },
  });
  // The secret scan of the calling file covers what the CLI wrote.
  captureLog(stdout, stderr);
  return { code, stdout, stderr };
}
