import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { SweeperError } from "./errors";
import { Codes } from "./codes";

/** A stored assertion could not be decrypted: wrong key, tampered, or copied from another row. */
export class AssertionDecryptionError extends SweeperError {
  readonly code = Codes.AssertionUnreadable;
  constructor() {
    super("The stored user assertion cannot be decrypted with the configured key (rotated key, tampering, or a row copied from elsewhere).");
  }
}

const VERSION = "a1";

/**
 * Encrypts user assertions at rest with AES-256-GCM. The row's keys are the additional
 * authenticated data, so an assertion copied into another user's row does not decrypt there:
 * a row cannot borrow someone else's token.
 */
export class AssertionCipher {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new RangeError("The assertion key must be 32 bytes.");
    this.#key = Buffer.from(key);
  }

  encrypt(assertion: string, row: { partitionKey: string; rowKey: string }): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#key, iv);
    cipher.setAAD(aad(row));
    const sealed = Buffer.concat([cipher.update(assertion, "utf8"), cipher.final()]);
    return [VERSION, iv.toString("base64url"), sealed.toString("base64url"), cipher.getAuthTag().toString("base64url")].join(".");
  }

  decrypt(stored: string, row: { partitionKey: string; rowKey: string }): string {
    const [version, iv, sealed, tag, ...rest] = stored.split(".");
    if (version !== VERSION || !iv || !sealed || !tag || rest.length > 0) throw new AssertionDecryptionError();
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.#key, Buffer.from(iv, "base64url"));
      decipher.setAAD(aad(row));
      decipher.setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([decipher.update(Buffer.from(sealed, "base64url")), decipher.final()]).toString("utf8");
    } catch {
      throw new AssertionDecryptionError();
    }
  }

  /** Keeps the key out of console.log / util.inspect output. */
  toJSON(): string {
    return "AssertionCipher";
  }
}

function aad(row: { partitionKey: string; rowKey: string }): Buffer {
  return Buffer.from(`${row.partitionKey}/${row.rowKey}`, "utf8");
}
