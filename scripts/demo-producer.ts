/**
 * `npm run demo:producer`: why a producer records its sessions. Two producing services, each a
 * process of its own, work in a workbook session through `withWorkbookSession`: one finishes and
 * closes and releases its session itself; the other is killed with SIGKILL mid-work, its `finally`
 * never runs. The sweeper, sweeping every few seconds as its timer would, closes the dead one's
 * session once its lease has run out: within the lease plus one sweep. Storage is reached with a
 * connection string here (`npm run demo` shows the secretless set-up).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { OnBehalfOfCredential } from "@azure/identity";
import { createSweeperServices, loadConfig, SessionProducer, withWorkbookSession } from "../src";
import { GRAPH_RESOURCE, startStandIns, trustedCertificateOrRerun } from "../standins";

const TABLE = "DemoProducers";
const TENANT = "7d3f1c52-5a0b-4f3e-9d7e-2b6c1a0e4f11";
const CLIENT_ID = "c0ffee00-0000-4000-8000-00000000de70";
/** The shortest lease a row may have; heartbeats every quarter of it. */
const LEASE_MS = 10_000;
const SWEEP_EVERY_MS = 2_000;

/** What a producer process is given: where to record, the user, and the user's token source. */
interface ProducerJob {
  name: string;
  connectionString: string;
  publicKey: string;
  graphBaseUrl: string;
  authorityHost: string;
  clientSecret: string;
  userId: string;
  userAssertion: string;
  workbook: string;
  workMs: number;
}

/** A producing service: one workbook session around its work, the whole lifecycle in one call. */
async function producerProcess(job: ProducerJob): Promise<void> {
  const producer = SessionProducer.fromConnectionString(job.connectionString, TABLE, { assertionPublicKey: job.publicKey });
  const credentialOptions = {
    tenantId: TENANT,
    clientId: CLIENT_ID,
    clientSecret: job.clientSecret,
    userAssertionToken: job.userAssertion,
    authorityHost: job.authorityHost,
    disableInstanceDiscovery: true,
  };
  await withWorkbookSession(
    {
      producer,
      token: new OnBehalfOfCredential(credentialOptions),
      graphScope: `${GRAPH_RESOURCE}/Files.ReadWrite`,
      graphBaseUrl: job.graphBaseUrl,
      tenantId: TENANT,
      userId: job.userId,
      workbook: job.workbook,
      userAssertion: job.userAssertion,
      recordedBy: job.name,
      leaseMs: LEASE_MS,
    },
    async (session) => {
      process.stdout.write(`${JSON.stringify({ event: "working", sessionId: session.id })}\n`);
      await new Promise((resolve) => setTimeout(resolve, job.workMs));
    },
  );
  process.stdout.write(`${JSON.stringify({ event: "done" })}\n`);
}

function startProducer(job: ProducerJob): { child: ChildProcess; working: Promise<string>; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1, 2), "--producer"], {
    env: { ...process.env, DEMO_PRODUCER_JOB: JSON.stringify(job) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const working = new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n").find((l) => l.includes('"working"'));
      if (line) resolve((JSON.parse(line) as { sessionId: string }).sessionId);
    });
    child.on("exit", () => reject(new Error(`${job.name} ended before it started working`)));
  });
  working.catch(() => undefined);
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, working, exited };
}

async function main(): Promise<void> {
  const certificate = trustedCertificateOrRerun();
  if (!certificate) return;
  console.log("Starting the local stand-ins: Azurite, Entra ID authority, Graph emulator…");
  const standIns = await startStandIns({ certificate, tenantId: TENANT, clientId: CLIENT_ID, emulator: { latencyMs: 20 } });
  const { authority, emulator } = standIns;
  const started = Date.now();
  const at = () => `${((Date.now() - started) / 1_000).toFixed(1).padStart(5)} s`;
  try {
    const settings = standIns.settings({ SESSIONS_TABLE: TABLE, AZURE_ADDITIONALLY_ALLOWED_TENANTS: "" });
    const services = createSweeperServices(loadConfig(settings));
    await services.ledger.ensureTable();
    const job = (name: string, workMs: number): ProducerJob => {
      const userId = randomUUID();
      return {
        name,
        connectionString: standIns.storageConnectionString,
        publicKey: standIns.assertionKeys.publicKey,
        graphBaseUrl: emulator.baseUrl,
        authorityHost: authority.authorityHost,
        clientSecret: standIns.clientSecret,
        userId,
        userAssertion: authority.issueUserAssertion({ tenantId: TENANT, userId, audience: CLIENT_ID }),
        workbook: `/drives/b!reports/items/${name.toUpperCase()}`,
        workMs,
      };
    };

    console.log(`\nTwo producer processes open a session each with withWorkbookSession (lease ${LEASE_MS / 1_000} s, a heartbeat every ${LEASE_MS / 4_000} s):`);
    const finisher = startProducer(job("finisher", 4_000));
    const crasher = startProducer(job("crasher", 10 * 60_000));
    const [finished, crashed] = await Promise.all([finisher.working, crasher.working]);
    console.log(`${at()}  finisher working in session …${finished.slice(-12)}`);
    console.log(`${at()}  crasher working in session …${crashed.slice(-12)}`);

    await new Promise((resolve) => setTimeout(resolve, 3_000));
    crasher.child.kill("SIGKILL");
    const killedAt = Date.now();
    await crasher.exited;
    console.log(`${at()}  crasher killed with SIGKILL mid-work: its finally never runs, its session stays open on Graph`);

    // The sweeper's timer, every SWEEP_EVERY_MS, until the dead producer's session is closed.
    let sweeps = 0;
    while (emulator.sessionState(crashed) === "open") {
      await new Promise((resolve) => setTimeout(resolve, SWEEP_EVERY_MS));
      const summary = await services.newSweeper().run();
      sweeps++;
      if (summary.closed > 0 || sweeps % 3 === 0) console.log(`${at()}  sweep ${sweeps}: ${summary.stale} stale, ${summary.closed} closed`);
      if (Date.now() - killedAt > 4 * LEASE_MS) throw new Error("the crashed producer's session was not closed");
    }
    const closedAfterMs = Date.now() - killedAt;
    await finisher.exited;

    console.log("\nWhat Graph received:");
    for (const request of emulator.requests) {
      const who = request.sessionId === crashed ? "crasher" : request.sessionId === finished ? "finisher" : "";
      console.log(`  ${request.kind.padEnd(14)} ${String(request.status).padEnd(4)} ${who}`);
    }
    const rows = new Map<string, string>();
    for await (const page of services.ledger.listAll()) for (const row of page.rows) rows.set(row.sessionId, `${row.status}${row.closedBy ? ` by ${row.closedBy}` : ""}`);
    console.log("\nThe ledger:");
    console.log(`  finisher: ${rows.get(finished)} (closed and released by its own process)`);
    console.log(`  crasher:  ${rows.get(crashed)} (its process was killed)`);
    console.log(
      `\nThe killed producer's session was closed ${(closedAfterMs / 1_000).toFixed(1)} s after the kill: within its lease (${LEASE_MS / 1_000} s) plus one sweep (${SWEEP_EVERY_MS / 1_000} s): ${closedAfterMs <= LEASE_MS + SWEEP_EVERY_MS + 1_000 ? "yes" : "no"}.`,
    );
  } finally {
    await standIns.close();
    console.log("Stopped Azurite, the authority and the Graph emulator.");
  }
}

const jobText = process.argv.includes("--producer") ? process.env.DEMO_PRODUCER_JOB : undefined;
(jobText ? producerProcess(JSON.parse(jobText) as ProducerJob) : main()).catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : error);
  process.exit(1);
});
