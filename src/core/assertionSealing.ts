import { createPrivateKey, createPublicKey, webcrypto, type KeyObject } from "node:crypto";
import { AssertionCipher, AssertionDecryptionError } from "./AssertionCipher";
import { SweeperError } from "./errors";
import { Codes } from "./codes";
import { aad, canonicalBase64url, ENC_BYTES, INFO, KEY_ID, keyBytes, keyIdOf, LEGACY_VERSION, suite, TAG_BYTES, VERSION, X25519_PKCS8_PREFIX, type Row } from "./assertionFormat";

// The producers' side lives in its own module, so the producer entry never loads an opener.
export { AssertionSealer } from "./AssertionSealer";

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

