/**
 * `npm run bench`: parses flags, makes a certificate for the https stand-ins and re-runs itself in
 * a child process that trusts it (NODE_EXTRA_CA_CERTS is read only at process start), runs the
 * bench, prints the table and writes bench/results/latest.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { trustedCertificateOrRerun } from "../standins/certificate";
import { runBench } from "./bench";
import { parseBenchArgs, USAGE } from "./options";
import { PROJECT_ROOT } from "./projectRoot";
import { formatReport } from "./report";

async function main(): Promise<void> {
  let options;
  try {
    options = parseBenchArgs(process.argv.slice(2));
  } catch (error) {
    console.error((error as Error).message);
    process.exit(2);
  }
  if (options.help) {
    console.log(USAGE);
    return;
  }
  const certificate = trustedCertificateOrRerun();
  if (!certificate) return;

  const { out, help: _help, ...benchOptions } = options;
  const result = await runBench({ ...benchOptions, certificateDir: certificate.dir, log: (line) => console.log(line) });
  console.log("");
  console.log(formatReport(result));
  const file = resolve(out ?? join(PROJECT_ROOT, "bench", "results", "latest.json"));
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, (_key, value: unknown) => (value === Infinity ? null : value), 2)}\n`);
  console.log(`\nRaw figures and targets: ${file}`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exit(1);
});
