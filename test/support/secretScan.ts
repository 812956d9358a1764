/**
 * Runs in every test file (vitest setupFiles): captures everything the file writes (console,
 * stdout, stderr, and the log lines of InvocationContexts handed to `captureLog`) and, after the
 * file's tests, fails if any registered secret (client secrets, encryption keys, and every token
 * and assertion the fake authority issued) appears in it.
 */
import { afterAll, expect } from "vitest";
import { inspect } from "node:util";

const captured: string[] = [];
const secretSources: Iterable<string>[] = [];

export function registerSecrets(secrets: Iterable<string>): void {
  secretSources.push(secrets);
}

/** Adds log output that does not pass through the console (e.g. InvocationContext's logHandler). */
export function captureLog(...parts: unknown[]): void {
  captured.push(parts.map((p) => (typeof p === "string" ? p : inspect(p, { depth: 8 }))).join(" "));
}

export function capturedText(): string {
  return captured.join("\n");
}

for (const method of ["log", "info", "warn", "error", "debug", "trace"] as const) {
  const original = console[method].bind(console);
  console[method] = (...args: unknown[]) => {
    captureLog(...args);
    original(...args);
  };
}
for (const stream of [process.stdout, process.stderr]) {
  const original = stream.write.bind(stream) as (...args: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    captured.push(typeof chunk === "string" ? chunk : Buffer.isBuffer(chunk) ? chunk.toString("utf8") : String(chunk));
    return original(chunk, ...rest);
  }) as typeof stream.write;
}

afterAll(() => {
  const text = capturedText();
  const leaked: string[] = [];
  for (const source of secretSources) {
    for (const secret of source) {
      if (secret.length >= 8 && text.includes(secret)) leaked.push(`${secret.slice(0, 6)}… (${secret.length} chars)`);
      // A JWT's signature alone identifies it too.
      const signature = secret.split(".")[2];
      if (signature && signature.length >= 16 && text.includes(signature)) leaked.push(`signature of ${secret.slice(0, 6)}…`);
    }
  }
  expect(leaked, "secrets found in captured log output").toEqual([]);
});
