/**
 * A producing service in a process of its own, for the kill test: it releases the sessions its plan
 * names (as a service does after closing them itself), four at a time, and prints `released <id>`
 * once a release has returned. It loads the built producer entry, as an installed package would.
 * The plan is a JSON file, { tableName, sessions: SessionKey[] }; the secrets come as a service gets
 * them, in its environment (STORAGE_CONNECTION_STRING, ASSERTION_PUBLIC_KEY: a producer holds only the public key).
 */
const { readFileSync } = require("node:fs");
const { join } = require("node:path");
const { SessionProducer } = require(join(__dirname, "..", "..", "dist", "src", "producer.js"));

async function main() {
  const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
  const producer = SessionProducer.fromConnectionString(process.env.STORAGE_CONNECTION_STRING, plan.tableName, {
    assertionPublicKey: process.env.ASSERTION_PUBLIC_KEY,
  });
  process.stdout.write("ready\n");
  const queue = [...plan.sessions];
  async function worker() {
    for (let key = queue.shift(); key; key = queue.shift()) {
      await producer.release(key);
      process.stdout.write(`released ${key.sessionId}\n`);
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
}

main().catch((error) => {
  process.stderr.write(`${error && error.code ? error.code : "Error"}: ${error && error.message}\n`);
  process.exit(1);
});
