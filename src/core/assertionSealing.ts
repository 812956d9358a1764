import { createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, webcrypto, type KeyObject } from "node:crypto";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { AssertionCipher, AssertionDecryptionError } from "./AssertionCipher";
import { SweeperError } from "./errors";
import { Codes } from "./codes";

/**
 * A stored assertion was sealed for a key id this sweeper holds no private key for: its key was
 * retired too early, or the producer was given another deployment's public key. `keyId` is not
 * secret: it is derived from a public key.
 */
export class AssertionKeyUnknownError extends SweeperError {
  readonly code = Codes.AssertionKeyUnknown;
  constructor(readonly keyId: string) {
    super(`The stored user assertion was sealed for key id ${keyId}, and neither ASSERTION_PRIVATE_KEY nor ASSERTION_PREVIOUS_PRIVATE_KEYS has a key with that id.`);
  }
}

/** A stored assertion is in the retired shared-key `a1.` format, and no legacy key was configured to read it. */
export class LegacyAssertionRefusedError extends SweeperError {
  readonly code = Codes.AssertionFormatRetired;
  constructor() {
    super(
      "The stored user assertion is in the retired a1 format (encrypted with the shared ASSERTION_ENCRYPTION_KEY). " +
        "To read such rows during the transition to public-key sealing, set ASSERTION_ENCRYPTION_KEY beside ASSERTION_PRIVATE_KEY until no a1 rows remain.",
    );
  }
}

type Row = { partitionKey: string; rowKey: string };

/**
 * HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, through
 * @hpke/core on Node's WebCrypto. Base mode: the sender is anonymous, so any producer holding the
 * public key can seal; only the holder of the private key can open.
 */
const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

const VERSION = "h1";
const LEGACY_VERSION = "a1";

/**
 * HPKE's `info`, bound into the key schedule. Fixed, and naming this app, this purpose and this
 * format version, so a value sealed with the same key for any other purpose (or a later format)
 * cannot be opened as an assertion here, and vice versa. It is not per row: the row is bound by the
 * associated data instead, which is what the a1 format bound too.
 */
const INFO = new TextEncoder().encode(`workbook-session-sweeper/assertion/${VERSION}`);

const KEY_BYTES = 32;
const ENC_BYTES = 32;
const TAG_BYTES = 16;
const KEY_ID = /^[A-Za-z0-9_-]{12}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const BASE64_OR_URL = /^[A-Za-z0-9+/_-]+={0,2}$/;
/** A PKCS#8 wrapper for a raw 32-byte X25519 private key (RFC 8410), as Node and WebCrypto import it. */
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/**
 * Seals user assertions for the sweeper: built from the sweeper's public key only, so a producer
 * that holds it can store assertions it can no longer read back, and a leaked producer setting does
 * not expose the assertions already stored.
 *
 * A sealed value is `h1.<keyId>.<enc>.<ciphertext>`, each part base64url: `enc` is HPKE's
 * encapsulated key (32 bytes), `ciphertext` carries the GCM tag. The associated data is
 * `${partitionKey}/${rowKey}`, as in the a1 format, so a value copied into another row does not open
 * (Table Storage keys cannot contain `/`, so no two rows share it).
 */
export class AssertionSealer {
  /**
   * Names the public key the value was sealed for, so the sweeper picks the private key to open it
   * with during a rotation. Derived from the public key (base64url of the first 9 bytes of its
   * SHA-256) rather than configured beside it, so producer and sweeper cannot disagree about it.
   * It needs no protection of its own: DHKEM binds the recipient's public key into the shared
   * secret, so a value whose key id was changed reaches a private key that cannot open it.
   */
  readonly keyId: string;
  /** The raw X25519 public key, base64url. Not secret. */
  readonly publicKey: string;
  readonly #publicKey: Uint8Array;
  #recipient: Promise<webcrypto.CryptoKey> | undefined;

  private constructor(publicKey: Uint8Array) {
    this.#publicKey = publicKey;
    this.publicKey = Buffer.from(publicKey).toString("base64url");
    this.keyId = keyIdOf(publicKey);
  }

  /** `key`: the raw 32-byte X25519 public key, or its base64 / base64url. */
  static fromPublicKey(key: string | Uint8Array): AssertionSealer {
    const raw = keyBytes(key, "The assertion public key", "public");
    // Any 32 bytes parse as an X25519 public key; a low-order point would make every seal fail
    // (its shared secret is all zeros, which X25519 refuses). Refuse it here, where it is configured.
    try {
      const probe = generateKeyPairSync("x25519").privateKey;
      diffieHellman({ privateKey: probe, publicKey: createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" }) });
    } catch {
      throw new RangeError("The assertion public key is not a usable X25519 public key (a low-order point).");
    }
    return new AssertionSealer(raw);
  }

  async seal(assertion: string, row: Row): Promise<string> {
    const recipientPublicKey = await (this.#recipient ??= suite.kem.deserializePublicKey(this.#publicKey));
    const sender = await suite.createSenderContext({ recipientPublicKey, info: INFO });
    const ciphertext = await sender.seal(Buffer.from(assertion, "utf8"), aad(row));
    return [VERSION, this.keyId, Buffer.from(sender.enc).toString("base64url"), Buffer.from(ciphertext).toString("base64url")].join(".");
  }

  /** Short name for JSON output; the public key is not secret, but there is no reason to log it. */
  toJSON(): string {
    return "AssertionSealer";
  }
}

interface RecipientKey {
  readonly privateKey: KeyObject;
  readonly publicKey: Uint8Array;
  pair?: Promise<webcrypto.CryptoKeyPair>;
}

/**
 * Opens what AssertionSealer sealed, with the sweeper's private keys. Several keys serve a
 * rotation: list the new key first and the old one after it until no row sealed for the old one
 * remains. `legacyKey` (the old ASSERTION_ENCRYPTION_KEY) still opens `a1.` values during the
 * transition from the shared key; without it they are refused with AssertionFormatRetired.
 */
export class AssertionOpener {
  /** The key ids of `privateKeys`, in the order given. Not secret. */
  readonly keyIds: readonly string[];
  readonly #keys: ReadonlyMap<string, RecipientKey>;
  readonly #legacy: AssertionCipher | undefined;

  constructor(options: { privateKeys: readonly (string | Uint8Array)[]; legacyKey?: Buffer }) {
    const { privateKeys, legacyKey } = options;
    if (privateKeys.length === 0) throw new RangeError("At least one assertion private key is required.");
    const keys = new Map<string, RecipientKey>();
    privateKeys.forEach((key, index) => {
      const what = privateKeys.length === 1 ? "The assertion private key" : `Assertion private key ${index + 1} of ${privateKeys.length}`;
      const raw = keyBytes(key, what, "private");
      const privateKey = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
      const x = createPublicKey(privateKey).export({ format: "jwk" }).x;
      if (typeof x !== "string") throw new RangeError(`${what} is not a usable X25519 private key.`);
      const publicKey = new Uint8Array(Buffer.from(x, "base64url"));
      const keyId = keyIdOf(publicKey);
      if (keys.has(keyId)) throw new RangeError(`${what} is listed twice (key id ${keyId}).`);
      keys.set(keyId, { privateKey, publicKey });
    });
    this.#keys = keys;
    this.keyIds = Object.freeze([...keys.keys()]);
    this.#legacy = legacyKey === undefined ? undefined : new AssertionCipher(legacyKey);
  }

  /**
   * The assertion sealed into `stored` for this row. Throws AssertionDecryptionError
   * (AssertionUnreadable) when the value is malformed, tampered with or copied from another row,
   * AssertionKeyUnknownError when it names a key id none of the private keys has, and
   * LegacyAssertionRefusedError for an `a1.` value when no legacy key was given.
   */
  async open(stored: string, row: Row): Promise<string> {
    if (typeof stored !== "string") throw new AssertionDecryptionError();
    const [version, keyId, enc, ciphertext, ...rest] = stored.split(".");
    if (version === LEGACY_VERSION) {
      if (!this.#legacy) throw new LegacyAssertionRefusedError();
      return this.#legacy.decrypt(stored, row);
    }
    if (version !== VERSION || keyId === undefined || !KEY_ID.test(keyId) || rest.length > 0) throw new AssertionDecryptionError();
    const encBytes = canonicalBase64url(enc);
    const sealed = canonicalBase64url(ciphertext);
    if (encBytes?.length !== ENC_BYTES || !sealed || sealed.length < TAG_BYTES) throw new AssertionDecryptionError();
    const key = this.#keys.get(keyId);
    if (!key) throw new AssertionKeyUnknownError(keyId);
    const recipientKey = await (key.pair ??= importRecipientKey(key));
    try {
      const recipient = await suite.createRecipientContext({ recipientKey, enc: encBytes, info: INFO });
      return Buffer.from(await recipient.open(sealed, aad(row))).toString("utf8");
    } catch {
      throw new AssertionDecryptionError();
    }
  }

  /** Keeps the private keys out of JSON output (they are never properties: see AssertionCipher). */
  toJSON(): string {
    return "AssertionOpener";
  }
}

/** A new key pair for sealing assertions, each part base64url: the private key for the sweeper, the public key for producers. */
export async function generateAssertionKeyPair(): Promise<{ privateKey: string; publicKey: string; keyId: string }> {
  const pair = await suite.kem.generateKeyPair();
  const publicKey = new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey));
  const privateKey = new Uint8Array(await suite.kem.serializePrivateKey(pair.privateKey));
  return { privateKey: Buffer.from(privateKey).toString("base64url"), publicKey: Buffer.from(publicKey).toString("base64url"), keyId: keyIdOf(publicKey) };
}

/** The private key as a non-extractable WebCrypto key, with its public key (which HPKE binds into the shared secret). */
async function importRecipientKey(key: RecipientKey): Promise<webcrypto.CryptoKeyPair> {
  const der = key.privateKey.export({ format: "der", type: "pkcs8" });
  try {
    const privateKey = await webcrypto.subtle.importKey("pkcs8", der, { name: "X25519" }, false, ["deriveBits"]);
    const publicKey = await suite.kem.deserializePublicKey(key.publicKey);
    return { privateKey, publicKey };
  } finally {
    der.fill(0);
  }
}

function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest().subarray(0, 9).toString("base64url");
}

function aad(row: Row): Buffer {
  return Buffer.from(`${row.partitionKey}/${row.rowKey}`, "utf8");
}

/** The bytes of `part` if it is base64url in its one canonical spelling, so no altered text opens as the same value. */
function canonicalBase64url(part: string | undefined): Buffer | undefined {
  if (!part || !BASE64URL.test(part)) return undefined;
  const bytes = Buffer.from(part, "base64url");
  return bytes.toString("base64url") === part ? bytes : undefined;
}

/** The raw 32 bytes of a key given as bytes or as base64 / base64url text; the message never shows the key. */
function keyBytes(key: string | Uint8Array, what: string, kind: "public" | "private"): Uint8Array {
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
