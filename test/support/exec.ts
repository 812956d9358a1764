import { spawn } from "node:child_process";

/** What a finished process said, and its exit code (-1 when a signal ended it). */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end and collects its output. On Windows a shell runs it, since npm is a
 * .cmd there. @param options.env @default this process's environment
 */
export function exec(command: string, args: readonly string[], options: { cwd: string; env?: Record<string, string | undefined> }): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, [...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      shell: process.platform === "win32",
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolvePromise({ code: code ?? -1, stdout, stderr }));
  });
}
