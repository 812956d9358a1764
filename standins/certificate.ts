import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A self-signed certificate for 127.0.0.1 / localhost, made for one test or demo run. */
export interface TestCertificate {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: string;
  readonly key: string;
  /** A CA bundle: the bundle this process already trusted plus this certificate. */
  readonly caBundlePath: string;
}

/** Makes the certificate with openssl (~10 ms). Nothing here turns TLS checking off. */
export function makeTestCertificate(dir = mkdtempSync(join(tmpdir(), "wss-cert-"))): TestCertificate {
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-keyout", keyPath, "-out", certPath,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const cert = readFileSync(certPath, "utf8");
  const key = readFileSync(keyPath, "utf8");
  // NODE_EXTRA_CA_CERTS replaces what was there, and this machine already points it at the system
  // bundle: keep that bundle's contents and add ours.
  const previous = process.env.NODE_EXTRA_CA_CERTS;
  const inherited = previous && existsSync(previous) ? readFileSync(previous, "utf8") : "";
  const caBundlePath = join(dir, "ca-bundle.pem");
  writeFileSync(caBundlePath, `${inherited}\n${cert}`);
  return { dir, certPath, keyPath, cert, key, caBundlePath };
}

/** Reads back a certificate made earlier in this run (paths travel to workers through the environment). */
export function loadTestCertificate(dir: string): TestCertificate {
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  return {
    dir,
    certPath,
    keyPath,
    cert: readFileSync(certPath, "utf8"),
    key: readFileSync(keyPath, "utf8"),
    caBundlePath: join(dir, "ca-bundle.pem"),
  };
}

const TRUSTED_CERT_DIR = "WSS_TRUSTED_CERT_DIR";

/**
 * For a script that talks to the https stand-ins: the certificate this process trusts, or
 * undefined after re-running the script in a child that trusts a new one (the caller then returns;
 * this process exits with the child's code). NODE_EXTRA_CA_CERTS is read only when a process
 * starts, and TLS checks are never switched off instead.
 */
export function trustedCertificateOrRerun(): TestCertificate | undefined {
  const dir = process.env[TRUSTED_CERT_DIR];
  if (dir) return loadTestCertificate(dir);
  const certificate = makeTestCertificate();
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, NODE_EXTRA_CA_CERTS: certificate.caBundlePath, [TRUSTED_CERT_DIR]: certificate.dir },
  });
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
  return undefined;
}
