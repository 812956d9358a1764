/**
 * The producers' contract for other languages (README, "Recording from another language"): the
 * row's JSON Schema (schema/session-row.schema.json), the sealing spec (docs/assertion-sealing.md)
 * and its vectors (test/vectors/h1-assertion-sealing.json). The vectors are checked against our
 * sealer and opener and against @hpke/core used from the spec alone; the schema against a row
 * SessionProducer.record wrote; and a row written by hand, from the spec only, is closed by a sweep.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { TableClient } from "@azure/data-tables";
import Ajv2020 from "ajv/dist/2020";
import { describe, expect, inject, it } from "vitest";
import { sealWithEphemeral, suite } from "../src/core/assertionFormat";
import { AssertionOpener, AssertionSealer } from "../src/core/assertionSealing";
import { Codes } from "../src/core/codes";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { CLIENT_ID, HOME_TENANT, newUserId, silence, useCloudFixture, type CloudFixture } from "./support/cloudFixture";
import { rawEntities } from "./support/reliability";
import { rejection } from "./support/rejection";

interface VectorCase {
  name: string;
  recipient: { privateKey: string; publicKey: string; keyId: string };
  ikmE: string;
  tenantId: string;
  userId: string;
  sessionId: string;
  partitionKey: string;
  rowKey: string;
  aad: string;
  assertion: string;
  sealed: string;
}

const vectors = JSON.parse(readFileSync(join(__dirname, "vectors", "h1-assertion-sealing.json"), "utf8")) as {
  suite: { kem_id: number; kdf_id: number; aead_id: number };
  info: string;
  cases: VectorCase[];
};
const schema = JSON.parse(readFileSync(join(__dirname, "..", "schema", "session-row.schema.json"), "utf8")) as Record<string, unknown>;

const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const fromBase64url = (text: string) => new Uint8Array(Buffer.from(text, "base64url"));
const base64url = (bytes: ArrayBuffer | Uint8Array) => Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString("base64url");

/** What the spec says, written out without our format module: for the hand-made seals below. */
const SPEC = {
  suite: new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() }),
  info: new TextEncoder().encode("workbook-session-sweeper/assertion/h1"),
  keyId: (publicKey: Uint8Array) => createHash("sha256").update(publicKey).digest().subarray(0, 9).toString("base64url"),
  partitionKey: (tenantId: string, userId: string) => `${userId.toLowerCase()}_${tenantId.toLowerCase()}`,
  rowKey: (sessionId: string) => createHash("sha256").update(sessionId, "utf8").digest("base64url"),
  async seal(publicKey: Uint8Array, assertion: string, row: { partitionKey: string; rowKey: string }, ikmE?: Uint8Array): Promise<string> {
    const recipientPublicKey = await this.suite.kem.deserializePublicKey(publicKey);
    const sender = await this.suite.createSenderContext({ recipientPublicKey, info: this.info, ...(ikmE && { ekm: ikmE }) });
    const ciphertext = await sender.seal(new TextEncoder().encode(assertion), new TextEncoder().encode(`${row.partitionKey}/${row.rowKey}`));
    return ["h1", this.keyId(publicKey), base64url(sender.enc), base64url(ciphertext)].join(".");
  },
};

/** The schema, checked as a validator that asserts formats would (draft 2020-12 leaves `format` an annotation). */
function schemaValidator() {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  ajv.addFormat("date-time", (text: string) => !Number.isNaN(Date.parse(text)));
  return ajv.compile(schema);
}

describe("h1 sealing vectors (test/vectors/h1-assertion-sealing.json)", () => {
  it("name the suite of the spec: base mode, KEM 0x0020, KDF 0x0001, AEAD 0x0002, and its info", () => {
    expect([vectors.suite.kem_id, vectors.suite.kdf_id, vectors.suite.aead_id]).toEqual([0x20, 0x01, 0x02]);
    expect([suite.kem.id, suite.kdf.id, suite.aead.id]).toEqual([0x20, 0x01, 0x02]);
    expect(vectors.info).toBe("workbook-session-sweeper/assertion/h1");
    expect(vectors.cases.length).toBeGreaterThanOrEqual(2);
  });

  for (const c of vectors.cases) {
    const row = { partitionKey: c.partitionKey, rowKey: c.rowKey };

    it(`${c.name}: the keys and the associated data follow from the ids`, () => {
      expect(partitionKeyFor(c.tenantId, c.userId)).toBe(c.partitionKey);
      expect(rowKeyFor(c.sessionId)).toBe(c.rowKey);
      expect(SPEC.partitionKey(c.tenantId, c.userId)).toBe(c.partitionKey);
      expect(SPEC.rowKey(c.sessionId)).toBe(c.rowKey);
      expect(c.aad).toBe(`${c.partitionKey}/${c.rowKey}`);
    });

    it(`${c.name}: sealing with the vector's public key and ephemeral key material gives exactly the expected value`, async () => {
      const sealer = AssertionSealer.fromPublicKey(c.recipient.publicKey);
      const recipientPublicKey = await suite.kem.deserializePublicKey(fromBase64url(c.recipient.publicKey));
      // The code path of AssertionSealer.seal, with the ephemeral key pair derived from ikmE.
      expect(await sealWithEphemeral(recipientPublicKey, sealer.keyId, c.assertion, row, fromHex(c.ikmE))).toBe(c.sealed);
      // And from the spec alone, with @hpke/core.
      expect(await SPEC.seal(fromBase64url(c.recipient.publicKey), c.assertion, row, fromHex(c.ikmE))).toBe(c.sealed);
    });

    it(`${c.name}: AssertionOpener with the vector's private key opens it to the assertion`, async () => {
      const opener = new AssertionOpener({ privateKeys: [c.recipient.privateKey] });
      expect(await opener.open(c.sealed, row)).toBe(c.assertion);
      // A fresh (random) seal of the same assertion differs, and opens the same.
      const fresh = await AssertionSealer.fromPublicKey(c.recipient.publicKey).seal(c.assertion, row);
      expect(fresh).not.toBe(c.sealed);
      expect(await opener.open(fresh, row)).toBe(c.assertion);
    });

    it(`${c.name}: the key id is the first 9 bytes of SHA-256 over the raw public key, base64url`, () => {
      expect(AssertionSealer.fromPublicKey(c.recipient.publicKey).keyId).toBe(c.recipient.keyId);
      expect(SPEC.keyId(fromBase64url(c.recipient.publicKey))).toBe(c.recipient.keyId);
      expect(new AssertionOpener({ privateKeys: [c.recipient.privateKey] }).keyIds).toEqual([c.recipient.keyId]);
      expect(c.sealed.split(".")[1]).toBe(c.recipient.keyId);
      // The public key may be given as base64 too.
      expect(AssertionSealer.fromPublicKey(Buffer.from(c.recipient.publicKey, "base64url").toString("base64")).keyId).toBe(c.recipient.keyId);
    });

    it(`${c.name}: mutated (another row, another key, another format) it does not open`, async () => {
      const opener = new AssertionOpener({ privateKeys: [c.recipient.privateKey] });
      const otherRow = { ...row, rowKey: rowKeyFor(`${c.sessionId}-other`) };
      expect((await rejection(opener.open(c.sealed, otherRow))).code).toBe(Codes.AssertionUnreadable);
      expect((await rejection(opener.open(c.sealed, { ...row, partitionKey: partitionKeyFor(HOME_TENANT, c.userId) }))).code).toBe(Codes.AssertionUnreadable);
      // Padding or another spelling of a part is refused, not decoded leniently.
      expect((await rejection(opener.open(`${c.sealed}=`, row))).code).toBe(Codes.AssertionUnreadable);
      const [, , enc, ciphertext] = c.sealed.split(".");
      const otherKey = vectors.cases.find((o) => o.recipient.keyId !== c.recipient.keyId)!.recipient;
      expect((await rejection(new AssertionOpener({ privateKeys: [otherKey.privateKey] }).open(c.sealed, row))).code).toBe(Codes.AssertionKeyUnknown);
      // Another key id on the same parts reaches a key that cannot open them.
      const both = new AssertionOpener({ privateKeys: [c.recipient.privateKey, otherKey.privateKey] });
      expect((await rejection(both.open(["h1", otherKey.keyId, enc, ciphertext].join("."), row))).code).toBe(Codes.AssertionUnreadable);
      expect((await rejection(opener.open(`a1.${enc}.${ciphertext}.AAAAAAAAAAAAAAAAAAAAAA`, row))).code).toBe(Codes.AssertionFormatRetired);
    });
  }
});

let cloud: CloudFixture;
useCloudFixture((started) => (cloud = started));

type Wire = Record<string, unknown>;

/**
 * Every entity of `tableName` in the JSON the Table service takes and returns: each column's
 * value with its OData type annotation where one is needed (read with the SDK's type conversion
 * off, so an Int64 or a Double is not mistaken for an Int32). Without the service's Timestamp and ETag.
 */
async function wireRows(tableName: string): Promise<Wire[]> {
  const client = TableClient.fromConnectionString(inject("storageConnectionString"), tableName, { allowInsecureConnection: true });
  const rows: Wire[] = [];
  for await (const entity of client.listEntities<Record<string, unknown>>({ disableTypeConversion: true })) {
    const wire: Wire = { PartitionKey: entity.partitionKey, RowKey: entity.rowKey };
    for (const [name, typed] of Object.entries(entity)) {
      if (["partitionKey", "rowKey", "etag", "timestamp"].includes(name)) continue;
      const { value, type } = typed as { value: string; type: string };
      switch (type) {
        case "String":
          wire[name] = value;
          break;
        case "Boolean":
          wire[name] = String(value) === "true";
          break;
        case "Int32":
          wire[name] = Number(value);
          break;
        default:
          // DateTime, Int64, Double, Guid, Binary: as the service writes them, with their annotation.
          wire[name] = type === "Double" ? Number(value) : value;
          wire[`${name}@odata.type`] = `Edm.${type}`;
      }
    }
    rows.push(wire);
  }
  return rows;
}

/** The SDK's input for a row given in the service's JSON: annotated values as `{ value, type }`. */
function sdkEntityOf(wire: Wire): { partitionKey: string; rowKey: string } & Record<string, unknown> {
  const entity: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(wire)) {
    if (name.endsWith("@odata.type")) continue;
    const annotation = wire[`${name}@odata.type`] as string | undefined;
    const key = name === "PartitionKey" ? "partitionKey" : name === "RowKey" ? "rowKey" : name;
    entity[key] = annotation ? { value, type: annotation.replace(/^Edm\./, "") } : value;
  }
  return entity as { partitionKey: string; rowKey: string } & Record<string, unknown>;
}

describe("the row's JSON Schema (schema/session-row.schema.json)", () => {
  it("validates the row SessionProducer.record writes, and refuses broken ones", async () => {
    const validate = schemaValidator();
    const table = await cloud.newTable();
    const userId = newUserId();
    const recorded = await table.producer.record({
      tenantId: HOME_TENANT,
      userId,
      sessionId: `cluster=PS2&session=15.WUS2.${"Qx/+=".repeat(30)}`,
      workbook: "/drives/b!Xk3eR2pQ0U6lYw9nT4hJcA/items/01ABCDEFGHIJKLMNOPQRSTUVWXYZ",
      recordedBy: "contract-test",
      userAssertion: "eyJhbGciOiJub25lIn0.eyJjb250cmFjdCI6InRlc3QifQ.ZmFrZQ",
      leaseMs: 60_000,
    });
    expect(await rawEntities(table.services.ledger)).toHaveLength(1);
    const [row] = await wireRows(table.tableName);
    expect(row).toMatchObject({ PartitionKey: recorded.partitionKey, RowKey: recorded.rowKey, schemaVersion: 2, leaseSeconds: 60, status: "open", attempts: 0 });
    expect(row!["createdAt@odata.type"]).toBe("Edm.DateTime");
    expect(validate(row), JSON.stringify(validate.errors)).toBe(true);

    const broken: [string, Wire][] = [
      ["no assertion", { ...row, assertion: undefined }],
      ["no workbook", { ...row, workbook: undefined }],
      ["a tenantId that is not a GUID", { ...row, tenantId: "contoso.onmicrosoft.com" }],
      ["an upper-case userId", { ...row, userId: userId.toUpperCase() }],
      ["an assertion not in the h1 pattern", { ...row, assertion: "h1.tooshort.AAAA.AAAA" }],
      ["a retired a1 assertion", { ...row, assertion: "a1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA" }],
      ["an unsealed assertion", { ...row, assertion: "eyJhbGciOiJub25lIn0.eyJjb250cmFjdCI6InRlc3QifQ.ZmFrZQ" }],
      ["a date without its annotation", { ...row, "createdAt@odata.type": undefined }],
      ["an Int64 lease", { ...row, leaseSeconds: "60", "leaseSeconds@odata.type": "Edm.Int64" }],
      ["a lease under 10 s", { ...row, leaseSeconds: 5 }],
      ["a heartbeat that is not the end of time", { ...row, heartbeatSeenAt: new Date().toISOString() }],
      ["schema version 1", { ...row, schemaVersion: 1 }],
      ["a path-addressed workbook", { ...row, workbook: "/me/drive/root:/Book.xlsx:" }],
      ["a workbook id with '..'", { ...row, workbook: "/drives/a..b/items/c" }],
      ["a RowKey that is not a SHA-256", { ...row, RowKey: "session-1" }],
      ["a status other than open", { ...row, status: "closing" }],
      ["a sweeper's column", { ...row, nextAttemptAt: new Date().toISOString(), "nextAttemptAt@odata.type": "Edm.DateTime" }],
    ];
    for (const [what, entity] of broken) {
      const defined = Object.fromEntries(Object.entries(entity).filter(([, v]) => v !== undefined));
      expect(validate(defined), what).toBe(false);
    }
  });
});

describe("a row written by hand from the spec, as another language would", () => {
  it("is closed by a sweep", async () => {
    const validate = schemaValidator();
    const table = await cloud.newTable();
    const tenantId = HOME_TENANT;
    const userId = newUserId();
    const workbook = "/me/drive/items/contract-book";
    const sessionId = cloud.emulator.openSession({ tenantId, userId, workbook, persistChanges: true });
    const userAssertion = cloud.authority.issueUserAssertion({ tenantId, userId, audience: CLIENT_ID });

    // Keys and seal per the spec, with @hpke/core directly (not our sealer) for the run's public key.
    const keys = { partitionKey: SPEC.partitionKey(tenantId, userId), rowKey: SPEC.rowKey(sessionId) };
    const assertion = await SPEC.seal(fromBase64url(cloud.assertionPublicKey), userAssertion, keys);
    const now = new Date().toISOString();
    const wire: Wire = {
      PartitionKey: keys.partitionKey,
      RowKey: keys.rowKey,
      schemaVersion: 2,
      tenantId,
      userId,
      sessionId,
      workbook,
      persistChanges: true,
      createdAt: now,
      "createdAt@odata.type": "Edm.DateTime",
      heartbeatSeenAt: "9999-12-31T00:00:00Z",
      "heartbeatSeenAt@odata.type": "Edm.DateTime",
      leaseSeconds: 0,
      updatedAt: now,
      "updatedAt@odata.type": "Edm.DateTime",
      status: "open",
      attempts: 0,
      recordedBy: "contract-test-by-hand",
      assertion,
    };
    expect(validate(wire), JSON.stringify(validate.errors)).toBe(true);

    const client = TableClient.fromConnectionString(inject("storageConnectionString"), table.tableName, { allowInsecureConnection: true });
    await client.createEntity(sdkEntityOf(wire));
    // Stored as the schema says (every type as written).
    const [stored] = await wireRows(table.tableName);
    expect(validate(stored), JSON.stringify(validate.errors)).toBe(true);
    // The sweeper reads it as the producer's own rows.
    expect((await table.services.ledger.get({ tenantId, userId, sessionId }))?.status).toBe("open");

    // Silent for 10 minutes by the service's clock, as cloudFixture's `silence` ages rows.
    await silence(client, keys, 10 * 60_000);
    const summary = await table.services.newSweeper().run();

    expect(summary).toMatchObject({ closed: 1, failed: 0, malformed: 0 });
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    expect((await table.services.ledger.get({ tenantId, userId, sessionId }))?.status).toBe("closed");
  });
});
