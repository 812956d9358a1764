import { createPublicKey, diffieHellman, generateKeyPairSync, webcrypto } from "node:crypto";
import { keyBytes, keyIdOf, sealWithEphemeral, suite, type Row } from "./assertionFormat";

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
    return sealWithEphemeral(recipientPublicKey, this.keyId, assertion, row);
  }

  /** Short name for JSON output; the public key is not secret, but there is no reason to log it. */
  toJSON(): string {
    return "AssertionSealer";
  }
}

