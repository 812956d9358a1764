import { createHash, type webcrypto } from "node:crypto";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";

/**
 * What the sealer (producers) and the opener (the sweeper) share about the `h1.` format: the HPKE
 * suite, the fixed `info`, the associated data, the key id, and how keys and parts are written.
 */

export type Row = { partitionKey: string; rowKey: string };

/**
 * HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, through
 * @hpke/core on Node's WebCrypto. Base mode: the sender is anonymous, so any producer holding the
 * public key can seal; only the holder of the private key can open.
 */
export const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

export const VERSION = "h1";
export const LEGACY_VERSION = "a1";

/**
 * HPKE's `info`, bound into the key schedule. Fixed, and naming this app, this purpose and this
 * format version, so a value sealed with the same key for any other purpose (or a later format)
 * cannot be opened as an assertion here, and vice versa. It is not per row: the row is bound by the
 * associated data instead, which is what the a1 format bound too.
 */
export const INFO = new TextEncoder().encode(`workbook-session-sweeper/assertion/${VERSION}`);

export const KEY_BYTES = 32;
export const ENC_BYTES = 32;
export const TAG_BYTES = 16;
export const KEY_ID = /^[A-Za-z0-9_-]{12}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const BASE64_OR_URL = /^[A-Za-z0-9+/_-]+={0,2}$/;
/** A PKCS#8 wrapper for a raw 32-byte X25519 private key (RFC 8410), as Node and WebCrypto import it. */
export const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

export function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest().subarray(0, 9).toString("base64url");
}

export function aad(row: Row): Buffer {
  return Buffer.from(`${row.partitionKey}/${row.rowKey}`, "utf8");
}

/**
 * Seals `assertion` for `row` as `h1.<keyId>.<enc>.<ciphertext>`: what AssertionSealer.seal does,
 * in one place. `ekm` is for test vectors only (docs/assertion-sealing.md): the ephemeral key
 * material the sender's key pair is derived from (HPKE's DeriveKeyPair(ikmE)), so a seal is
 * reproducible. Without it, as in every real seal, the key pair is fresh and random.
 * @internal
 */
export async function sealWithEphemeral(recipientPublicKey: webcrypto.CryptoKey, keyId: string, assertion: string, row: Row, ekm?: Uint8Array): Promise<string> {
  const sender = await suite.createSenderContext({ recipientPublicKey, info: INFO, ...(ekm !== undefined && { ekm }) });
  const ciphertext = await sender.seal(Buffer.from(assertion, "utf8"), aad(row));
  return [VERSION, keyId, Buffer.from(sender.enc).toString("base64url"), Buffer.from(ciphertext).toString("base64url")].join(".");
}

/** The bytes of `part` if it is base64url in its one canonical spelling, so no altered text opens as the same value. */
export function canonicalBase64url(part: string | undefined): Buffer | undefined {
  if (!part || !BASE64URL.test(part)) return undefined;
  const bytes = Buffer.from(part, "base64url");
  return bytes.toString("base64url") === part ? bytes : undefined;
}

/** The raw 32 bytes of a key given as bytes or as base64 / base64url text; the message never shows the key. */
export function keyBytes(key: string | Uint8Array, what: string, kind: "public" | "private"): Uint8Array {
  const expected = `the base64 or base64url of a raw ${KEY_BYTES}-byte X25519 ${kind} key`;
  let bytes: Uint8Array;
  if (typeof key === "string") {
    const text = key.trim();
    if (!text) throw new RangeError(`${what} is empty; it must be ${expected}.`);
    if (!BASE64_OR_URL.test(text)) throw new RangeError(`${what} is not base64 or base64url; it must be ${expected}.`);
    bytes = Buffer.from(text, "base64");
  } else if (key instanceof Uint8Array) {
    bytes = key;
  } else {
    throw new RangeError(`${what} must be ${expected}, or those ${KEY_BYTES} bytes.`);
  }
  if (bytes.length !== KEY_BYTES) throw new RangeError(`${what} ${typeof key === "string" ? "decodes to" : "is"} ${bytes.length} bytes; it must be ${expected}.`);
  return new Uint8Array(bytes);
}
