/**
 * Public-key sealing of user assertions (src/core/assertionSealing.ts): first the HPKE suite it
 * uses against the RFC 9180 test vectors, then what the sealer and the opener promise.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { inspect } from "node:util";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { beforeAll, describe, expect, it } from "vitest";
import { AssertionCipher, AssertionDecryptionError } from "../src/core/AssertionCipher";
import {
  AssertionKeyUnknownError,
  AssertionOpener,
  AssertionSealer,
  generateAssertionKeyPair,
  LegacyAssertionRefusedError,
} from "../src/core/assertionSealing";
import { Codes } from "../src/core/codes";
import { rejection } from "./support/rejection";
import { registerSecrets } from "./support/secretScan";

interface Vector {
  mode: number;
  kem_id: number;
  kdf_id: number;
  aead_id: number;
  info: string;
  ikmR: string;
  ikmE: string;
  skRm: string;
  skEm: string;
  pkRm: string;
  pkEm: string;
  enc: string;
  base_nonce: string;
  encryptions: { aad: string; ct: string; nonce: string; pt: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}

const vectorFile = JSON.parse(readFileSync(join(__dirname, "vectors", "rfc9180-base-x25519-sha256-aes256gcm.json"), "utf8")) as {
  source: { file: string };
  vectors: Vector[];
};

const bytes = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const hex = (data: ArrayBuffer | Uint8Array) => Buffer.from(data instanceof Uint8Array ? data : new Uint8Array(data)).toString("hex");

/** base_nonce XOR the sequence number, big-endian in the nonce's last bytes (RFC 9180 §5.2). */
function nonceFor(baseNonce: string, sequence: number): string {
  const nonce = bytes(baseNonce);
  for (let i = nonce.length - 1, s = sequence; s > 0; i--, s = Math.floor(s / 256)) nonce[i]! ^= s & 0xff;
  return hex(nonce);
}

describe("RFC 9180 test vectors: base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM", () => {
  const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

  it("come from the CFRG file and hold the suite this app uses", () => {
    expect(vectorFile.source.file).toContain("cfrg/draft-irtf-cfrg-hpke");
    expect(vectorFile.vectors.length).toBeGreaterThan(0);
    for (const v of vectorFile.vectors) expect([v.mode, v.kem_id, v.kdf_id, v.aead_id]).toEqual([0, 0x20, 0x01, 0x02]);
    expect([suite.kem.id, suite.kdf.id, suite.aead.id]).toEqual([0x20, 0x01, 0x02]);
  });

  for (const [index, v] of vectorFile.vectors.entries()) {
    it(`vector ${index}: DeriveKeyPair(ikmR) and DeriveKeyPair(ikmE) give skRm/pkRm and skEm/pkEm`, async () => {
      const recipient = await suite.kem.deriveKeyPair(bytes(v.ikmR));
      expect(hex(await suite.kem.serializePrivateKey(recipient.privateKey))).toBe(v.skRm);
      expect(hex(await suite.kem.serializePublicKey(recipient.publicKey))).toBe(v.pkRm);
      const ephemeral = await suite.kem.deriveKeyPair(bytes(v.ikmE));
      expect(hex(await suite.kem.serializePrivateKey(ephemeral.privateKey))).toBe(v.skEm);
      expect(hex(await suite.kem.serializePublicKey(ephemeral.publicKey))).toBe(v.pkEm);
    });

    it(`vector ${index}: the sender (ephemeral key from ikmE) gives enc and every ciphertext in sequence, and the same exports`, async () => {
      const recipientPublicKey = await suite.kem.deserializePublicKey(bytes(v.pkRm));
      const sender = await suite.createSenderContext({ recipientPublicKey, info: bytes(v.info), ekm: bytes(v.ikmE) });
      expect(hex(sender.enc)).toBe(v.enc);
      // Each entry is the next sequence number: seal them all, in order, and compare each one.
      for (const [sequence, e] of v.encryptions.entries()) {
        expect(e.nonce, `nonce of encryption ${sequence}`).toBe(nonceFor(v.base_nonce, sequence));
        expect(hex(await sender.seal(bytes(e.pt), bytes(e.aad))), `ct of encryption ${sequence}`).toBe(e.ct);
      }
      for (const x of v.exports) expect(hex(await sender.export(bytes(x.exporter_context), x.L))).toBe(x.exported_value);
    });

    it(`vector ${index}: the recipient with skRm opens every ciphertext in sequence and gives the same exports`, async () => {
      const recipientKey = await suite.kem.deserializePrivateKey(bytes(v.skRm));
      const recipient = await suite.createRecipientContext({ recipientKey, enc: bytes(v.enc), info: bytes(v.info) });
      for (const [sequence, e] of v.encryptions.entries()) {
        expect(hex(await recipient.open(bytes(e.ct), bytes(e.aad))), `pt of encryption ${sequence}`).toBe(e.pt);
      }
      for (const x of v.exports) expect(hex(await recipient.export(bytes(x.exporter_context), x.L))).toBe(x.exported_value);
    });

    it(`vector ${index}: the opener derives from skRm the same key id the sealer derives from pkRm`, () => {
      const sealer = AssertionSealer.fromPublicKey(bytes(v.pkRm));
      expect(new AssertionOpener({ privateKeys: [bytes(v.skRm)] }).keyIds).toEqual([sealer.keyId]);
      expect(sealer.publicKey).toBe(Buffer.from(v.pkRm, "hex").toString("base64url"));
    });
  }
});

const row = { partitionKey: "4f0c9d1e-0000-4000-8000-000000000001_7d2c1a4b-0000-4000-8000-000000000002", rowKey: "Zm9vYmFyYmF6cXV4cXV1eGZvb2Jhcg" };
const ASSERTION = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzZWFsaW5nLXRlc3QtdXNlciJ9.c2lnbmF0dXJlLW9mLXRoZS1zZWFsaW5nLXRlc3Q";

type KeyPair = Awaited<ReturnType<typeof generateAssertionKeyPair>>;
let current: KeyPair;
let previous: KeyPair;

beforeAll(async () => {
  [current, previous] = await Promise.all([generateAssertionKeyPair(), generateAssertionKeyPair()]);
  // test/support/secretScan.ts fails this file if any of these shows up in its output.
  registerSecrets(
    [current, previous].flatMap((pair) => {
      const raw = Buffer.from(pair.privateKey, "base64url");
      return [pair.privateKey, raw.toString("base64"), raw.toString("hex")];
    }),
  );
  registerSecrets([ASSERTION]);
});

/** `text` with the character at `index` replaced by another base64url character. */
function replaceAt(text: string, index: number): string {
  const at = index < 0 ? text.length + index : index;
  return `${text.slice(0, at)}${text[at] === "A" ? "B" : "A"}${text.slice(at + 1)}`;
}

describe("AssertionSealer and AssertionOpener", () => {
  it("round-trips, in the h1 format, differently each time", async () => {
    const sealer = AssertionSealer.fromPublicKey(current.publicKey);
    const opener = new AssertionOpener({ privateKeys: [current.privateKey] });
    const a = await sealer.seal(ASSERTION, row);
    const b = await sealer.seal(ASSERTION, row);
    expect(a).toMatch(/^h1\.[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]+$/);
    expect(a.split(".")[1]).toBe(sealer.keyId);
    expect(sealer.keyId).toBe(current.keyId);
    expect(opener.keyIds).toEqual([current.keyId]);
    expect(a).not.toBe(b);
    expect(a).not.toContain(ASSERTION.split(".")[1]);
    expect(await opener.open(a, row)).toBe(ASSERTION);
    expect(await opener.open(b, row)).toBe(ASSERTION);
    const text = "naïve ✓ — 日本語 🔑";
    expect(await opener.open(await sealer.seal(text, row), row)).toBe(text);
    expect(await opener.open(await sealer.seal("", row), row)).toBe("");
  });

  it("is plain HPKE: @hpke/core opens a sealed value with the documented info and associated data", async () => {
    const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
    const [, , enc, ciphertext] = (await AssertionSealer.fromPublicKey(current.publicKey).seal(ASSERTION, row)).split(".");
    const recipient = await suite.createRecipientContext({
      recipientKey: await suite.kem.deserializePrivateKey(Buffer.from(current.privateKey, "base64url")),
      enc: Buffer.from(enc!, "base64url"),
      info: Buffer.from("workbook-session-sweeper/assertion/h1", "utf8"),
    });
    const opened = await recipient.open(Buffer.from(ciphertext!, "base64url"), Buffer.from(`${row.partitionKey}/${row.rowKey}`, "utf8"));
    expect(Buffer.from(opened).toString("utf8")).toBe(ASSERTION);
  });

  it("accepts keys as base64url, base64 (with padding) or raw bytes, all with the same key id", async () => {
    const publicRaw = Buffer.from(current.publicKey, "base64url");
    const privateRaw = Buffer.from(current.privateKey, "base64url");
    for (const form of [current.publicKey, publicRaw.toString("base64"), ` ${publicRaw.toString("base64")}\n`, new Uint8Array(publicRaw)]) {
      expect(AssertionSealer.fromPublicKey(form).keyId).toBe(current.keyId);
    }
    for (const form of [current.privateKey, privateRaw.toString("base64"), new Uint8Array(privateRaw)]) {
      expect(new AssertionOpener({ privateKeys: [form] }).keyIds).toEqual([current.keyId]);
    }
  });

  it("the sealer holds nothing but the public key and its id; neither holds a key in JSON or inspection", async () => {
    const sealer = AssertionSealer.fromPublicKey(current.publicKey);
    await sealer.seal(ASSERTION, row);
    expect(Object.keys(sealer).sort()).toEqual(["keyId", "publicKey"]);
    expect(Object.values(sealer).sort()).toEqual([current.keyId, current.publicKey].sort());
    expect(Object.getOwnPropertySymbols(sealer)).toEqual([]);
    expect(JSON.stringify({ sealer })).toBe('{"sealer":"AssertionSealer"}');

    const opener = new AssertionOpener({ privateKeys: [current.privateKey, previous.privateKey], legacyKey: randomBytes(32) });
    await opener.open(await sealer.seal(ASSERTION, row), row);
    expect(Object.keys(opener)).toEqual(["keyIds"]);
    expect(Object.values(opener)).toEqual([[current.keyId, previous.keyId]]);
    expect(JSON.stringify({ opener })).toBe('{"opener":"AssertionOpener"}');

    const shown = [inspect(sealer, { showHidden: true, depth: 10 }), inspect(opener, { showHidden: true, depth: 10 }), String(sealer), String(opener)].join("\n");
    for (const pair of [current, previous]) {
      const raw = Buffer.from(pair.privateKey, "base64url");
      for (const form of [pair.privateKey, raw.toString("base64"), raw.toString("hex")]) expect(shown).not.toContain(form);
    }
  });

  it("does not open a value copied into another row", async () => {
    const sealed = await AssertionSealer.fromPublicKey(current.publicKey).seal(ASSERTION, row);
    const opener = new AssertionOpener({ privateKeys: [current.privateKey] });
    for (const other of [
      { ...row, rowKey: "b3RoZXItc2Vzc2lvbg" },
      { ...row, partitionKey: "5e1d8c2f-0000-4000-8000-000000000003_7d2c1a4b-0000-4000-8000-000000000002" },
    ]) {
      const error = await rejection(opener.open(sealed, other));
      expect(error).toBeInstanceOf(AssertionDecryptionError);
      expect(error.code).toBe(Codes.AssertionUnreadable);
    }
  });

  it("refuses every tampered part as AssertionUnreadable, saying nothing of the value", async () => {
    const sealed = await AssertionSealer.fromPublicKey(current.publicKey).seal(ASSERTION, row);
    // Holding both keys: a key id changed to the other key's id reaches the wrong private key.
    const opener = new AssertionOpener({ privateKeys: [current.privateKey, previous.privateKey] });
    const [version, keyId, enc, ciphertext] = sealed.split(".") as [string, string, string, string];
    const tampered = {
      version: ["h2", keyId, enc, ciphertext].join("."),
      "key id (another held key)": [version, previous.keyId, enc, ciphertext].join("."),
      "enc (first character)": [version, keyId, replaceAt(enc, 0), ciphertext].join("."),
      "enc (middle)": [version, keyId, replaceAt(enc, 20), ciphertext].join("."),
      "enc (non-canonical last character, same bytes)": [version, keyId, `${enc.slice(0, -1)}${String.fromCharCode(enc.charCodeAt(42) + 1)}`, ciphertext].join("."),
      "enc (truncated)": [version, keyId, enc.slice(0, 40), ciphertext].join("."),
      "ciphertext (first character)": [version, keyId, enc, replaceAt(ciphertext, 0)].join("."),
      "ciphertext (middle)": [version, keyId, enc, replaceAt(ciphertext, Math.floor(ciphertext.length / 2))].join("."),
      "ciphertext (tag)": [version, keyId, enc, replaceAt(ciphertext, -3)].join("."),
      "ciphertext (truncated)": [version, keyId, enc, ciphertext.slice(0, -4)].join("."),
      "ciphertext (shorter than a tag)": [version, keyId, enc, ciphertext.slice(0, 20)].join("."),
      "an extra part": `${sealed}.AAAA`,
      "a missing part": [version, keyId, enc].join("."),
      "not base64url": [version, keyId, enc, `${ciphertext.slice(0, -2)}+/`].join("."),
      empty: "",
      garbage: "garbage",
      "a malformed key id": [version, "short", enc, ciphertext].join("."),
    };
    for (const [what, value] of Object.entries(tampered)) {
      expect(value, what).not.toBe(sealed);
      const error = await rejection(opener.open(value, row));
      expect(error, what).toBeInstanceOf(AssertionDecryptionError);
      expect(error.code, what).toBe(Codes.AssertionUnreadable);
      expect(error.message).not.toContain(ciphertext.slice(0, 16));
      expect(error.message).not.toContain(enc.slice(0, 16));
    }
    // And the untouched value still opens.
    expect(await opener.open(sealed, row)).toBe(ASSERTION);
  });

  it("names a key id it holds no key for (AssertionKeyUnknown)", async () => {
    const sealed = await AssertionSealer.fromPublicKey(previous.publicKey).seal(ASSERTION, row);
    const error = await rejection(new AssertionOpener({ privateKeys: [current.privateKey] }).open(sealed, row));
    expect(error).toBeInstanceOf(AssertionKeyUnknownError);
    expect(error.code).toBe(Codes.AssertionKeyUnknown);
    expect((error as AssertionKeyUnknownError).keyId).toBe(previous.keyId);
    expect(error.message).toContain(previous.keyId);
    expect(error.message).not.toContain(sealed.split(".")[2]!.slice(0, 16));
  });

  it("rotates: an opener holding [new, old] opens values sealed for either", async () => {
    const opener = new AssertionOpener({ privateKeys: [current.privateKey, previous.privateKey] });
    expect(opener.keyIds).toEqual([current.keyId, previous.keyId]);
    const sealedNew = await AssertionSealer.fromPublicKey(current.publicKey).seal("new", row);
    const sealedOld = await AssertionSealer.fromPublicKey(previous.publicKey).seal("old", row);
    expect(await opener.open(sealedNew, row)).toBe("new");
    expect(await opener.open(sealedOld, row)).toBe("old");
    // Once the old key is dropped, its values are named, not mistaken for tampering.
    expect((await rejection(new AssertionOpener({ privateKeys: [current.privateKey] }).open(sealedOld, row))).code).toBe(Codes.AssertionKeyUnknown);
  });

  it("opens a1 values only with the legacy key, and refuses them with AssertionFormatRetired without it", async () => {
    const legacyKey = randomBytes(32);
    registerSecrets([legacyKey.toString("base64"), legacyKey.toString("base64url"), legacyKey.toString("hex")]);
    const a1 = new AssertionCipher(legacyKey).encrypt(ASSERTION, row);
    expect(a1.startsWith("a1.")).toBe(true);

    const transitional = new AssertionOpener({ privateKeys: [current.privateKey], legacyKey });
    expect(await transitional.open(a1, row)).toBe(ASSERTION);
    expect(await transitional.open(await AssertionSealer.fromPublicKey(current.publicKey).seal("h1 too", row), row)).toBe("h1 too");
    // The a1 format's own protections still hold.
    expect((await rejection(transitional.open(a1, { ...row, rowKey: "b3RoZXI" }))).code).toBe(Codes.AssertionUnreadable);
    expect((await rejection(new AssertionOpener({ privateKeys: [current.privateKey], legacyKey: randomBytes(32) }).open(a1, row))).code).toBe(Codes.AssertionUnreadable);

    const error = await rejection(new AssertionOpener({ privateKeys: [current.privateKey] }).open(a1, row));
    expect(error).toBeInstanceOf(LegacyAssertionRefusedError);
    expect(error.code).toBe(Codes.AssertionFormatRetired);
    expect(error.message).toMatch(/retired/);
    expect(error.message).toContain("ASSERTION_ENCRYPTION_KEY");
    expect(error.message).toContain("ASSERTION_PRIVATE_KEY");
    expect(error.message).not.toContain(a1.split(".")[2]!.slice(0, 12));
  });

  it("refuses bad keys with a RangeError that does not print the key", () => {
    const publicRaw = Buffer.from(current.publicKey, "base64url");
    const privateRaw = Buffer.from(current.privateKey, "base64url");
    const bad: [string, string | Uint8Array, RegExp][] = [
      ["empty", "", /empty/],
      ["not base64", `${current.privateKey.slice(0, 40)}!?*`, /not base64/],
      ["a hex key", privateRaw.toString("hex"), /64 bytes|48 bytes/],
      ["16 bytes of base64", privateRaw.subarray(0, 16).toString("base64"), /decodes to 16 bytes/],
      ["33 bytes of base64url", Buffer.concat([privateRaw, Buffer.from([7])]).toString("base64url"), /decodes to 33 bytes/],
      ["31 raw bytes", new Uint8Array(privateRaw.subarray(0, 31)), /is 31 bytes/],
      ["33 raw bytes", new Uint8Array(Buffer.concat([publicRaw, Buffer.from([7])])), /is 33 bytes/],
    ];
    for (const [what, key, message] of bad) {
      for (const attempt of [() => AssertionSealer.fromPublicKey(key), () => new AssertionOpener({ privateKeys: [key] })]) {
        let error: unknown;
        try {
          attempt();
        } catch (caught) {
          error = caught;
        }
        expect(error, what).toBeInstanceOf(RangeError);
        const text = (error as RangeError).message;
        expect(text, what).toMatch(message);
        expect(text, what).toMatch(/32-byte X25519 (public|private) key/);
        if (typeof key === "string" && key.length >= 8) expect(text, what).not.toContain(key.slice(0, 8));
        for (const secret of [current.privateKey, privateRaw.toString("hex").slice(0, 16)]) expect(text, what).not.toContain(secret);
      }
    }
    expect(() => AssertionSealer.fromPublicKey(Buffer.alloc(32))).toThrow(/low-order/);
    expect(() => new AssertionOpener({ privateKeys: [] })).toThrow(RangeError);
    expect(() => new AssertionOpener({ privateKeys: [current.privateKey, previous.privateKey, current.privateKey] })).toThrow(/key 3 of 3 is listed twice/);
    expect(() => new AssertionOpener({ privateKeys: [current.privateKey], legacyKey: Buffer.alloc(16) })).toThrow(RangeError);
  });

  it("generates key pairs whose parts agree", async () => {
    const pair = await generateAssertionKeyPair();
    registerSecrets([pair.privateKey]);
    expect(pair.privateKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(pair.publicKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(pair.keyId).toMatch(/^[A-Za-z0-9_-]{12}$/);
    expect(AssertionSealer.fromPublicKey(pair.publicKey).keyId).toBe(pair.keyId);
    expect(new AssertionOpener({ privateKeys: [pair.privateKey] }).keyIds).toEqual([pair.keyId]);
    expect(pair.keyId).not.toBe(current.keyId);
  });
});
