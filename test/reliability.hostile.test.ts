/**
 * Reliability: hostile input, property-based (fast-check).
 *
 * - Queue messages (wrong types, huge, non-JSON, non-Base64, extra fields), through
 *   parseCloseRequestMessage and the queue function: a valid request or a ValidationError listing
 *   the problems (SessionNotFoundError for a well-formed message about an unrecorded session),
 *   never another exception, never a Graph request.
 * - HTTP sweep bodies, through parseSweepHttpBody and the HTTP function: 200 with a summary or 400
 *   with the problems, never a throw or a 5xx.
 * - Ledger rows written by a buggy producer straight into the table (missing fields, wrong types,
 *   absurd dates, path tricks in ids, hostile session ids, foreign assertions, keys that do not
 *   match), many to one table and one sweep: the sweep does not crash, every row it reads gets a
 *   clear outcome (`failed` with the reason, or the normal outcome of a row that happens to be
 *   valid), and Graph's log holds only POSTs to `/v1.0/…/workbook/closeSession`, each with the
 *   token of the row's own user.
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { SessionNotFoundError, ValidationError, type SweepSummary } from "../src";
import { parseSweepHttpBody } from "../src/app/sweepRequest";
import { randomBytes } from "node:crypto";
import { AssertionCipher } from "../src/core/AssertionCipher";
import { AssertionSealer } from "../src/core/assertionSealing";
import { newAssertionKeyPair } from "../standins";
import { parseCloseRequestMessage } from "../src/core/closeRequestMessage";
import { partitionKeyFor, rowKeyFor } from "../src/core/keys";
import { parseDuration } from "../src/utils/duration";
import { mapConcurrent } from "../src/utils/concurrency";
import { installAppSettings, useCloudFixture, CLIENT_ID, HOME_TENANT, newUserId, type CloudFixture, type TableFixture } from "./support/cloudFixture";
import { importHandlers, type FunctionHandlers } from "./support/functionsHost";
import { expectClosedOnlyWith204, expectConsistentRows, invocation, postSweep, rawEntities, sampleSize, SOAK, type RawEntity } from "./support/reliability";

const OTHER_TENANT = "22222222-2222-4222-8222-222222222222";
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let cloud: CloudFixture;
/** The handlers' table: holds a few real sessions, so valid close requests can find something. */
let table: TableFixture;
let handlers: FunctionHandlers;
const queueName = `hostile-${Math.random().toString(36).slice(2, 10)}`;

useCloudFixture((started) => (cloud = started));
beforeAll(async () => {
  ({ table } = await installAppSettings(cloud, { CLOSE_QUEUE: queueName }));
  handlers = await importHandlers();
});

function expectValidationError(error: unknown): asserts error is ValidationError {
  if (!(error instanceof ValidationError)) throw new Error(`expected a ValidationError, got ${String(error)} (${(error as Error)?.stack ?? ""})`);
  expect(error.problems.length).toBeGreaterThan(0);
  for (const problem of error.problems) {
    expect(typeof problem.field).toBe("string");
    expect(problem.field.length).toBeGreaterThan(0);
    expect(problem.message.length).toBeGreaterThan(0);
    // Problems quote at most a short piece of the input, never all of a huge one.
    expect(problem.message.length).toBeLessThan(1_000);
  }
}

// ------------------------------------------------------------------------------------------------
// Queue messages

const guid = fc.uuid().map((g) => g.toLowerCase());
const validMessage = fc.record(
  {
    tenantId: fc.oneof(guid, guid.map((g) => g.toUpperCase())),
    userId: fc.oneof(guid, guid.map((g) => g.toUpperCase())),
    sessionId: fc.string({ minLength: 1, maxLength: 300, unit: "grapheme" }),
    requestedBy: fc.string({ maxLength: 200 }),
  },
  { requiredKeys: ["tenantId", "userId", "sessionId"] },
);

/** A message as a sender may encode it: the object, JSON text, Base64 of JSON, a Buffer, padded. */
function encodings(value: unknown): fc.Arbitrary<unknown> {
  const json = JSON.stringify(value) ?? "null";
  return fc.constantFrom(
    value,
    json,
    Buffer.from(json, "utf8").toString("base64"),
    Buffer.from(json, "utf8"),
    ` \n${json}\t `,
  );
}

const hostileValue = fc.oneof(
  fc.anything(),
  fc.string({ unit: "binary" }),
  fc.constantFrom("", " ", "../../me", "%2e%2e", "a\r\nb", "{}", "[]", "null", "\u0000", "😀".repeat(100), "x".repeat(20_000)),
  fc.double(),
  fc.bigInt().map((b) => b.toString()),
);

const corruptedMessage = fc
  .tuple(validMessage, fc.constantFrom("tenantId", "userId", "sessionId", "requestedBy", "extra", "__proto__", "constructor"), hostileValue, fc.boolean())
  .map(([message, field, value, remove]) => {
    const copy: Record<string, unknown> = { ...message };
    if (remove) delete copy[field];
    else Object.defineProperty(copy, field, { value, enumerable: true, configurable: true, writable: true });
    return copy;
  });

const rawText = fc.oneof(
  fc.string({ unit: "binary", maxLength: 500 }),
  fc.string({ unit: "grapheme", maxLength: 500 }),
  fc.base64String({ maxLength: 400 }),
  fc.json(),
  fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "", "utf8").toString("base64")),
  fc.uint8Array({ maxLength: 400 }).map((bytes) => Buffer.from(bytes)),
  fc.uint8Array({ maxLength: 400 }).map((bytes) => Buffer.from(bytes).toString("base64")),
  fc.integer({ min: 65_000, max: 140_000 }).map((n) => "x".repeat(n)),
  fc.integer({ min: 16_000, max: 70_000 }).map((n) => JSON.stringify({ tenantId: HOME_TENANT, userId: HOME_TENANT, sessionId: "s".repeat(n) })),
  fc.integer({ min: 1, max: 50_000 }).map((n) => "[".repeat(n) + "]".repeat(n)),
);

const anyMessage: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: validMessage.chain(encodings), weight: 2 },
  { arbitrary: corruptedMessage.chain(encodings), weight: 3 },
  { arbitrary: rawText, weight: 3 },
  { arbitrary: fc.anything({ withBigInt: true, withDate: true, withTypedArray: true, withNullPrototype: true, withMap: true, withSet: true }), weight: 2 },
);

function expectWellFormedRequest(request: ReturnType<typeof parseCloseRequestMessage>): void {
  expect(Object.keys(request).every((k) => ["tenantId", "userId", "sessionId", "requestedBy"].includes(k))).toBe(true);
  expect(request.tenantId).toMatch(GUID);
  expect(request.userId).toMatch(GUID);
  expect(typeof request.sessionId).toBe("string");
  expect(request.sessionId.length).toBeGreaterThan(0);
  expect(request.sessionId.length).toBeLessThanOrEqual(16_384);
  if (request.requestedBy !== undefined) expect(request.requestedBy.length).toBeLessThanOrEqual(200);
}

describe("queue messages", () => {
  it("parseCloseRequestMessage: a well-formed request or a ValidationError with problems, for anything", () => {
    fc.assert(
      fc.property(anyMessage, (message) => {
        let request;
        try {
          request = parseCloseRequestMessage(message);
        } catch (error) {
          expectValidationError(error);
          return;
        }
        expectWellFormedRequest(request);
      }),
      { numRuns: sampleSize(3_000, 30_000) },
    );
  });

  it("a valid message reads the same in every encoding; one bad field is named", () => {
    fc.assert(
      fc.property(validMessage, fc.nat(4), (message, which) => {
        const encoded = [message, JSON.stringify(message), Buffer.from(JSON.stringify(message)).toString("base64"), Buffer.from(JSON.stringify(message)), ` ${JSON.stringify(message)}\n`][which];
        expect(parseCloseRequestMessage(encoded)).toEqual({
          tenantId: message.tenantId.toLowerCase(),
          userId: message.userId.toLowerCase(),
          sessionId: message.sessionId,
          ...(message.requestedBy !== undefined && { requestedBy: message.requestedBy }),
        });
      }),
      { numRuns: sampleSize(1_000, 10_000) },
    );
    fc.assert(
      fc.property(validMessage, fc.constantFrom("tenantId", "userId", "sessionId", "requestedBy"), fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string()), fc.string({ minLength: 201, maxLength: 300 }).filter((s) => !GUID.test(s))), (message, field, value) => {
        const error = (() => {
          try {
            parseCloseRequestMessage({ ...message, [field]: value });
          } catch (e) {
            return e;
          }
          return undefined;
        })();
        // A long string is fine as a session id (up to 16,384 characters).
        if (field === "sessionId" && typeof value === "string") return;
        expectValidationError(error);
        expect(error.problems.map((p) => p.field)).toContain(field);
      }),
      { numRuns: sampleSize(1_000, 10_000) },
    );
    fc.assert(
      fc.property(validMessage, fc.string({ minLength: 1, maxLength: 30 }).filter((k) => !["tenantId", "userId", "sessionId", "requestedBy"].includes(k)), (message, extra) => {
        let error: unknown;
        try {
          parseCloseRequestMessage(JSON.stringify({ ...message, [extra]: 1 }));
        } catch (e) {
          error = e;
        }
        expectValidationError(error);
        expect(error.message).toMatch(/unknown field/);
      }),
      { numRuns: sampleSize(500, 5_000) },
    );
  });

  it("the queue function: ValidationError (logged with its problems) or SessionNotFoundError, nothing else, nothing sent", async () => {
    const recorded = await table.openSession({ userId: newUserId(), workbook: "/drives/q/items/kept", idleMinutes: 0 });
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(anyMessage, validMessage.map((m) => ({ ...m, tenantId: recorded.row.tenantId, userId: recorded.row.userId.toUpperCase(), sessionId: `${recorded.sessionId}x` }))),
        async (message) => {
          runs++;
          const { context, lines } = invocation("closeRequest", { triggerMetadata: { dequeueCount: 1, id: `m-${runs}` } });
          const error = await handlers.closeRequest(message, context).then(
            () => undefined,
            (e: unknown) => e,
          );
          if (error instanceof ValidationError) {
            expectValidationError(error);
            const logged = lines.find((l) => l.level === "error");
            expect(logged?.details).toMatchObject({ problems: error.problems, messageId: `m-${runs}` });
          } else {
            // A well-formed message: no such row in this table.
            expect(error).toBeInstanceOf(SessionNotFoundError);
            expectWellFormedRequest(parseCloseRequestMessage(message));
          }
        },
      ),
      { numRuns: sampleSize(300, 3_000) },
    );
    expect(cloud.emulator.requests).toHaveLength(0);
    expect(cloud.emulator.sessionState(recorded.sessionId)).toBe("open");
    await table.producer.release(recorded.row);
  });
});

// ------------------------------------------------------------------------------------------------
// HTTP sweep bodies

/**
 * Known bug (test/reliability.pending.test.ts.txt): an `olderThan` so large that now minus it is not
 * a date passes validation and the sweep then fails (503). Kept out of the generated bodies here.
 */
function outOfDateRange(body: Record<string, unknown>): boolean {
  const value = body.olderThan;
  const ms = typeof value === "number" ? value * 1000 : typeof value === "string" ? parseDuration(value) : undefined;
  return ms !== undefined && ms > 1e15;
}

const sweepField = fc.oneof(
  fc.record(
    {
      dryRun: fc.oneof(fc.boolean(), hostileValue),
      olderThan: fc.oneof(
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.double({ min: -1e6, max: 1e9, noNaN: false }),
        fc.constantFrom("PT10M", "PT0.5S", "P1D", "PT", "P", "10", "-5", "PT-1M", "ten minutes", "P1Y", "PT1H30M", "1e3", ""),
        hostileValue,
      ),
      userId: fc.oneof(guid, guid.map((g) => g.toUpperCase()), hostileValue),
      limit: fc.oneof(fc.integer({ min: -5, max: 2_000_000 }), fc.double(), hostileValue),
    },
    { requiredKeys: [] },
  ),
  fc.dictionary(fc.string({ maxLength: 12 }), hostileValue, { maxKeys: 5 }),
);

const sweepBody: fc.Arbitrary<string> = fc
  .oneof(
    { arbitrary: sweepField.filter((b) => !outOfDateRange(b)).map((b) => JSON.stringify(b)), weight: 5 },
    { arbitrary: fc.json().filter((j) => !/olderThan/.test(j)), weight: 1 },
    { arbitrary: fc.string({ unit: "grapheme", maxLength: 300 }), weight: 1 },
    { arbitrary: fc.string({ unit: "binary", maxLength: 300 }), weight: 1 },
    { arbitrary: fc.integer({ min: 3_000, max: 9_000 }).map((n) => JSON.stringify({ dryRun: true, pad: "x".repeat(n) })), weight: 1 },
    { arbitrary: fc.constantFrom("", " ", "null", "[]", "{}", '{"dryRun":true}', "\uFEFF{}", '{"dryRun":true,"dryRun":false}'), weight: 1 },
  )
  .filter((text) => text.length < 20_000);

function expectWellFormedSweepRequest(request: ReturnType<typeof parseSweepHttpBody>): void {
  expect(Object.keys(request).every((k) => ["dryRun", "olderThanMs", "userId", "limit"].includes(k))).toBe(true);
  if (request.dryRun !== undefined) expect(typeof request.dryRun).toBe("boolean");
  if (request.olderThanMs !== undefined) {
    expect(Number.isFinite(request.olderThanMs)).toBe(true);
    expect(request.olderThanMs).toBeGreaterThanOrEqual(1_000);
  }
  if (request.userId !== undefined) expect(request.userId).toMatch(GUID);
  if (request.limit !== undefined) {
    expect(Number.isInteger(request.limit)).toBe(true);
    expect(request.limit).toBeGreaterThanOrEqual(1);
    expect(request.limit).toBeLessThanOrEqual(1_000_000);
  }
}

describe("HTTP sweep bodies", () => {
  it("parseSweepHttpBody: a well-formed request or a ValidationError with problems", () => {
    fc.assert(
      fc.property(fc.oneof(sweepBody, fc.string({ unit: "binary" }), sweepField.filter((b) => !outOfDateRange(b)).map((b) => JSON.stringify(b))), (text) => {
        let request;
        try {
          request = parseSweepHttpBody(text);
        } catch (error) {
          expectValidationError(error);
          return;
        }
        expectWellFormedSweepRequest(request);
      }),
      { numRuns: sampleSize(3_000, 30_000) },
    );
  });

  it("the HTTP function answers 200 with a summary or 400 with the problems, never anything else", async () => {
    const body = fc.oneof(
      { arbitrary: sweepBody.map((text) => ({ text, bytes: undefined as Uint8Array | undefined })), weight: 6 },
      { arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ text: undefined as string | undefined, bytes })), weight: 1 },
      { arbitrary: fc.constant({ text: undefined, bytes: undefined }), weight: 1 },
    );
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(body, async ({ text, bytes }) => {
        const response = await handlers.sweepHttp(postSweep(text ?? bytes), invocation("sweep").context);
        statuses.set(response.status ?? 200, (statuses.get(response.status ?? 200) ?? 0) + 1);
        if (response.status === 400) {
          const error = (response.jsonBody as { error: { code: string; problems: string[] } }).error;
          expect(error.code).toBe("InvalidInput");
          expect(error.problems.length).toBeGreaterThan(0);
        } else {
          expect(response.status).toBe(200);
          const summary = response.jsonBody as SweepSummary;
          expect(summary.error).toBeUndefined();
          expect(typeof summary.scanned).toBe("number");
        }
      }),
      { numRuns: sampleSize(250, 2_500) },
    );
    // Both answers happened, and no sweep found anything to close (the table's one session is live).
    expect(statuses.get(200)).toBeGreaterThan(0);
    expect(statuses.get(400)).toBeGreaterThan(0);
    expect(cloud.emulator.requests).toHaveLength(0);
  });
});

// ------------------------------------------------------------------------------------------------
// Ledger rows written by a buggy producer

interface Person {
  tenantId: string;
  userId: string;
  assertion: string;
}

type Mutation = { name: string; benign: boolean };
/** A producer still on the retired shared key, and one given another deployment's public key. */
const LEGACY_CIPHER = new AssertionCipher(randomBytes(32));
const OTHER_KEY_SEALER = AssertionSealer.fromPublicKey(newAssertionKeyPair().publicKey);
const MUTATIONS: Mutation[] = [
  // Still a valid row: defaults apply, case is ignored where it should be, extra columns are ignored,
  // and so are bad values in columns a sweeper does not read (it closes the session all the same).
  ...["userUpper", "attemptsMissing", "attemptsHigh", "persistMissing", "updatedMissing", "recordedByNumber", "ancientActivity", "createdFuture", "nextPast", "nextFuture", "activityFuture", "closingLeasePast", "closingLeaseFuture", "terminal", "extraColumn", "junkErrorColumns", "otherUsersDrive", "persistString", "createdMissing", "createdString", "closedAtString"].map((name) => ({ name, benign: true })),
  // Broken.
  ...["tenantMissing", "tenantNotGuid", "tenantNumber", "userNotGuid", "userOther", "sessionMissing", "sessionNumber", "sessionBinary", "sessionHeaderInjection", "sessionUnicode", "sessionTooLong", "workbookTrick", "workbookMissing", "workbookNumber", "statusWrongCase", "statusUnknown", "statusNumber", "attemptsNegative", "attemptsFraction", "attemptsString", "attemptsInt64", "activityMissing", "activityString", "activityNumber", "nextString", "leaseString", "partitionOther", "rowKeyOther", "assertionOtherUser", "assertionOtherRow", "assertionGarbage", "assertionLegacy", "assertionOtherKey", "assertionPlain", "assertionEmpty", "assertionMissing", "tenantGuidTyped"].map((name) => ({ name, benign: false })),
];

const KEY_SAFE = (s: string) => s.length > 0 && s.length <= 512 && !/[/\\#?\u0000-\u001f\u007f-\u009f]/.test(s);
const SAFE_WORKBOOK = /^\/(me\/drive\/items\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*|users\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*\/drive\/items\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*|drives\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*\/items\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*|sites\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*\/drive\/items\/[A-Za-z0-9][A-Za-z0-9!._,=@+$-]*)$/;

/** The independent oracle: one of the four forms, plain ids of at most 400 characters, no '..'. */
function isSafeWorkbook(text: string): boolean {
  return text.length <= 1_000 && SAFE_WORKBOOK.test(text) && !text.includes("..") && text.split("/").every((segment) => segment.length <= 400);
}

/** Path tricks in one id segment, or a whole location that is not one of the four forms. */
const workbookTricks = fc.oneof(
  fc
    .tuple(
      fc.constantFrom("/me/drive/items/{}", "/users/{}/drive/items/i", "/drives/{}/items/i", "/drives/d/items/{}", "/sites/{}/drive/items/i"),
      fc.constantFrom("..", ".", "%2e%2e", "%2E%2E", "a?b=c", "a#frag", "@evil.example", "u@evil.example:443", "//evil.example", "\\..\\x", "a\\b", "ü", "😀", "a b", "a\tb", "a\r\nb", "x".repeat(401), "..%2f..", "%2f", "a%00b", ":", "a..b", ".hidden", "~", "a;b", "a&b", "a'b", "a\"b"),
    )
    .map(([form, id]) => form.replace("{}", id)),
  fc.constantFrom(
    "/drives/d/items/i/../../me/messages",
    "/drives/d/items/i/workbook/closeSession",
    "https://evil.example/v1.0/drives/d/items/i",
    "//evil.example/drives/d/items/i",
    "/me/drive/root:/Book.xlsx:",
    "/drives/d/items/i?x=1",
    "/drives/d/items/i#x",
    "/groups/g/drive/items/i",
    "drives/d/items/i",
    "/DRIVES/d/items/i",
    "/drives/d/items/i/",
    "/v1.0/drives/d/items/i",
    "\\drives\\d\\items\\i",
    "/drives/%2e%2e/items/i",
    "/drives//items/i",
    "/me/drive/items/" + "a".repeat(2_000),
    "",
    " /drives/d/items/i",
  ),
  fc.string({ unit: "grapheme", maxLength: 60 }),
  fc.webPath(),
).filter((trick) => !isSafeWorkbook(trick));

const rowSpec = fc.record({
  person: fc.nat(5),
  real: fc.boolean(),
  item: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9!._,=@+$-]{0,12}$/).filter((s) => !s.includes("..")),
  form: fc.constantFrom("me", "users", "drives", "sites"),
  mutations: fc.oneof(
    { arbitrary: fc.constant<Mutation[]>([]), weight: 1 },
    { arbitrary: fc.uniqueArray(fc.constantFrom(...MUTATIONS), { minLength: 1, maxLength: 3, selector: (m) => m.name }), weight: 3 },
  ),
  trick: workbookTricks,
  junk: fc.string({ unit: "grapheme", maxLength: 40 }),
});
type RowSpec = typeof rowSpec extends fc.Arbitrary<infer T> ? T : never;

interface Written {
  spec: RowSpec;
  entity: Record<string, unknown> & { partitionKey: string; rowKey: string };
  valid: boolean;
  /** The session id the row names, if it is a string. */
  sessionId?: string;
  /** Whether a real session was opened on the emulator for it (with the row's own workbook). */
  real: boolean;
  etag?: string;
  owner: Person;
}

async function materialize(spec: RowSpec, index: number, people: Person[], sealer: AssertionSealer): Promise<Written> {
  const owner = people[spec.person]!;
  const other = people[(spec.person + 1) % people.length]!;
  // Harmless changes first, so a later one can never undo a breaking one (attempts -1, then 100).
  const names = new Set([...spec.mutations].sort((a, b) => Number(b.benign) - Number(a.benign)).map((m) => m.name));
  const has = (name: string) => names.has(name);
  const past = new Date(Date.now() - 3_600_000 - index);
  const ids = { d: `drv${index % 7}`, s: `contoso.sharepoint.com,site${index % 5}` };
  const workbook =
    spec.form === "me" ? `/me/drive/items/${spec.item}`
    : spec.form === "users" ? `/users/${owner.userId}/drive/items/${spec.item}`
    : spec.form === "drives" ? `/drives/${ids.d}/items/${spec.item}`
    : `/sites/${ids.s}/drive/items/${spec.item}`;
  const real = spec.real && !has("otherUsersDrive");
  const sessionId = real
    ? cloud.emulator.openSession({ tenantId: owner.tenantId, userId: owner.userId, workbook })
    : `cluster=PS2&session=15.fake-${index}-${Math.random().toString(36).slice(2)}`;

  const entity: Record<string, unknown> = {
    schemaVersion: 2,
    tenantId: owner.tenantId,
    userId: owner.userId,
    sessionId,
    workbook,
    persistChanges: true,
    createdAt: past,
    // Silent since `past` by the service's clock (liveness.ts): as a sweeper's write leaves it.
    heartbeatSeenAt: past,
    leaseSeconds: 0,
    updatedAt: past,
    status: "open",
    attempts: 0,
    nextAttemptAt: past,
    recordedBy: "buggy-producer",
  };
  let partitionKey = partitionKeyFor(owner.tenantId, owner.userId);
  let rowKey = rowKeyFor(sessionId);
  let assertion: unknown = "own";

  for (const name of names) {
    switch (name) {
      case "userUpper": entity.userId = owner.userId.toUpperCase(); break;
      case "attemptsMissing": delete entity.attempts; break;
      case "attemptsHigh": entity.attempts = 100; break;
      case "persistMissing": delete entity.persistChanges; break;
      case "updatedMissing": delete entity.updatedAt; break;
      case "recordedByNumber": entity.recordedBy = 42; break;
      case "ancientActivity": entity.heartbeatSeenAt = new Date("1601-01-01T00:00:00Z"); entity.createdAt = new Date("1601-01-01T00:00:00Z"); break;
      case "createdFuture": entity.createdAt = new Date("9999-12-31T23:59:59Z"); break;
      case "nextPast": entity.nextAttemptAt = new Date("1601-01-01T00:00:00Z"); break;
      case "nextFuture": entity.nextAttemptAt = new Date("9999-12-31T23:59:59Z"); break;
      case "activityFuture": entity.heartbeatSeenAt = new Date("9999-12-31T23:59:59Z"); break;
      case "closingLeasePast": entity.status = "closing"; entity.leaseUntil = new Date(Date.now() - 60_000); entity.attempts = 1; break;
      case "closingLeaseFuture": entity.status = "closing"; entity.leaseUntil = new Date(Date.now() + 3_600_000); entity.attempts = 1; break;
      case "terminal": entity.status = ["closed", "expired", "failed"][index % 3]; break;
      case "extraColumn": entity.evilColumn = spec.junk; entity.PartitionKeyEvil = "x"; break;
      case "junkErrorColumns": entity.lastErrorCode = 7; entity.closedBy = "mallory"; break;
      case "closedAtString": entity.closedAt = "yesterday"; break;
      case "otherUsersDrive": entity.workbook = `/users/${other.userId}/drive/items/${spec.item}`; break;
      case "tenantMissing": delete entity.tenantId; break;
      case "tenantNotGuid": entity.tenantId = spec.junk.length > 0 ? spec.junk : "contoso.onmicrosoft.com"; break;
      case "tenantNumber": entity.tenantId = 12345; break;
      case "tenantGuidTyped": entity.tenantId = { value: owner.tenantId, type: "Guid" }; break;
      case "userNotGuid": entity.userId = "alice@contoso.com"; break;
      case "userOther": entity.userId = other.userId; break;
      case "sessionMissing": delete entity.sessionId; break;
      case "sessionNumber": entity.sessionId = 99; break;
      case "sessionBinary": entity.sessionId = new Uint8Array([1, 2, 3]); break;
      case "sessionHeaderInjection": entity.sessionId = `${sessionId}\r\nx-injected: 1`; rowKey = rowKeyFor(entity.sessionId as string); break;
      case "sessionUnicode": entity.sessionId = `ü-${sessionId}`; rowKey = rowKeyFor(entity.sessionId as string); break;
      case "sessionTooLong": entity.sessionId = "s".repeat(16_385); rowKey = rowKeyFor(entity.sessionId as string); break;
      case "workbookTrick": entity.workbook = spec.trick; break;
      case "workbookMissing": delete entity.workbook; break;
      case "workbookNumber": entity.workbook = 5; break;
      case "statusWrongCase": entity.status = "OPEN"; break;
      case "statusUnknown": entity.status = "deleted"; break;
      case "statusNumber": entity.status = 1; break;
      case "attemptsNegative": entity.attempts = -1; break;
      case "attemptsFraction": entity.attempts = 1.5; break;
      case "attemptsString": entity.attempts = "2"; break;
      case "attemptsInt64": entity.attempts = 2n; break;
      case "persistString": entity.persistChanges = "yes"; break;
      case "createdMissing": delete entity.createdAt; break;
      case "createdString": entity.createdAt = past.toISOString(); break;
      case "activityMissing": delete entity.heartbeatSeenAt; break;
      case "activityString": entity.heartbeatSeenAt = past.toISOString(); break;
      case "activityNumber": entity.heartbeatSeenAt = past.getTime(); break;
      case "nextString": entity.nextAttemptAt = "tomorrow"; break;
      case "leaseString": entity.status = "closing"; entity.leaseUntil = "never"; break;
      case "partitionOther": partitionKey = partitionKeyFor(other.tenantId, other.userId); break;
      case "rowKeyOther": rowKey = `rk-${index}`; break;
      case "assertionOtherUser": assertion = "otherUser"; break;
      case "assertionOtherRow": assertion = "otherRow"; break;
      case "assertionGarbage": assertion = "h1.AAAA.BBBB.CCCC"; break;
      // The retired shared-key format, which this app (no ASSERTION_ENCRYPTION_KEY) refuses.
      case "assertionLegacy": assertion = "legacy"; break;
      // Sealed with a public key whose private key the app does not hold.
      case "assertionOtherKey": assertion = "otherKey"; break;
      case "assertionPlain": assertion = owner.assertion; break;
      case "assertionEmpty": assertion = ""; break;
      case "assertionMissing": assertion = undefined; break;
    }
  }
  if (!KEY_SAFE(partitionKey)) partitionKey = `pk-${index}`;
  if (!KEY_SAFE(rowKey)) rowKey = `rk-${index}`;
  const keys = { partitionKey, rowKey };
  if (assertion === "own") entity.assertion = await sealer.seal(owner.assertion, keys);
  else if (assertion === "otherUser") entity.assertion = await sealer.seal(other.assertion, keys);
  else if (assertion === "otherRow") entity.assertion = await sealer.seal(owner.assertion, { partitionKey, rowKey: `${rowKey}x` });
  else if (assertion === "legacy") entity.assertion = LEGACY_CIPHER.encrypt(owner.assertion, keys);
  else if (assertion === "otherKey") entity.assertion = await OTHER_KEY_SEALER.seal(owner.assertion, keys);
  else if (assertion !== undefined) entity.assertion = assertion;

  return {
    spec,
    entity: { ...entity, ...keys },
    valid: spec.mutations.every((m) => m.benign),
    ...(typeof entity.sessionId === "string" && { sessionId: entity.sessionId }),
    real,
    owner,
  };
}

/** How the stale query can see a row: surely (right types, stale), surely not, or depending on the store. */
function visibility(e: RawEntity, cutoff: number, now: number): "picked" | "not" | "unsure" {
  const isDate = (v: unknown): v is Date => v instanceof Date;
  if (e.status === "open") {
    // The row was just written, so its last heartbeat is heartbeatSeenAt when that is earlier.
    if (isDate(e.heartbeatSeenAt)) return e.heartbeatSeenAt.getTime() < cutoff ? "picked" : "not";
    return e.heartbeatSeenAt === undefined ? "not" : "unsure";
  }
  if (e.status === "closing") {
    if (isDate(e.leaseUntil)) return e.leaseUntil.getTime() < now ? "picked" : "not";
    return e.leaseUntil === undefined ? "not" : "unsure";
  }
  return typeof e.status === "string" ? "not" : "unsure";
}

const REFUSALS = new Set(["MalformedRow", "MissingAssertion", "AssertionUnreadable", "AssertionFormatRetired", "AssertionKeyUnknown", "AssertionUserMismatch", "UnsafeLocation", "TenantNotAllowed"]);
const CLOSE_PATH = /^\/v1\.0\/(me\/drive\/items\/[^/?#]+|users\/[^/?#]+\/drive\/items\/[^/?#]+|drives\/[^/?#]+\/items\/[^/?#]+|sites\/[^/?#]+\/drive\/items\/[^/?#]+)\/workbook\/closeSession$/;

describe("ledger rows written by a buggy producer", () => {
  it("one sweep over hundreds of generated rows: no crash, a clear outcome for each row it reads, nothing sent but closeSession under /v1.0/", async () => {
    const rowsPerRun = sampleSize(240, 600);
    const sealer = AssertionSealer.fromPublicKey(cloud.assertionPublicKey);
    await fc.assert(
      fc.asyncProperty(fc.array(rowSpec, { minLength: rowsPerRun, maxLength: rowsPerRun }), async (specs) => {
        cloud.emulator.reset();
        const target = await cloud.newTable();
        const people: Person[] = Array.from({ length: 6 }, (_, i) => {
          const tenantId = i % 2 ? OTHER_TENANT : HOME_TENANT;
          const userId = newUserId();
          return { tenantId, userId, assertion: cloud.authority.issueUserAssertion({ tenantId, userId, audience: CLIENT_ID }) };
        });
        const seen = new Set<string>();
        // In order: each row's emulator session is opened as the spec's turn comes.
        const materialized: Written[] = [];
        for (const [i, spec] of specs.entries()) materialized.push(await materialize(spec, i, people, sealer));
        const rows = materialized
          .filter((w) => {
            const key = `${w.entity.partitionKey}\u0000${w.entity.rowKey}`;
            if (seen.has(key)) return false;
            seen.add(key);
            return true;
          });
        const client = target.services.ledger.client;
        await mapConcurrent(rows, 16, async (w) => {
          w.etag = (await client.createEntity(w.entity)).etag;
        });
        expect(rows.length, "rows written (at least 200 generated cases per sweep)").toBeGreaterThanOrEqual(200);
        const before = new Map((await rawEntities(target.services.ledger)).map((e) => [`${e.partitionKey}\u0000${e.rowKey}`, e]));
        const now = Date.now();
        const cutoff = now - target.config.sweep.staleAfterMs;

        const warnings: unknown[] = [];
        const summary = await target.services.newSweeper({ log: () => undefined, warn: (_m, details) => warnings.push(details) }).run();

        // The sweep does not crash and accounts for every row it read.
        expect(summary.error).toBeUndefined();
        // `paused` (rows given back because the app's own settings failed) is its own term, as `deferred` is.
        expect(summary.scanned).toBe(summary.malformed + summary.moved + summary.claimed + summary.lostRaces + summary.skipped + summary.deferred + summary.paused + summary.leasedElsewhere);
        expect(summary.claimed).toBe(summary.closed + summary.expired + summary.retry + summary.failed);
        expect(summary.lostRaces).toBe(0);

        const after = new Map((await rawEntities(target.services.ledger)).map((e) => [`${e.partitionKey}\u0000${e.rowKey}`, e]));
        const requests = cloud.emulator.requests;
        const problems: unknown[] = [];
        for (const w of rows) {
          const key = `${w.entity.partitionKey}\u0000${w.entity.rowKey}`;
          const stored = before.get(key)!;
          const final = after.get(key);
          const note = (why: string) => problems.push({ why, mutations: w.spec.mutations.map((m) => m.name), status: final?.status, code: final?.lastErrorCode, message: final?.lastErrorMessage });
          if (!final) {
            note("row vanished");
            continue;
          }
          const changed = final.etag !== stored.etag;
          if (["closed", "expired", "failed"].includes(stored.status as string)) {
            // A finished row only moves to history, as it was: nothing is sent for it.
            if (final.status !== stored.status || final.lastErrorCode !== stored.lastErrorCode) note("a finished row was changed, not only moved");
            if (final.assertion !== undefined) note("a finished row kept an assertion in history");
            if (w.sessionId !== undefined && requests.some((r) => r.sessionId === w.sessionId)) note("a request was sent for a finished row");
            continue;
          }
          const seenBy = visibility(stored, cutoff, now);
          const due = !(stored.nextAttemptAt instanceof Date && stored.nextAttemptAt.getTime() > now);
          const sent = w.sessionId !== undefined ? requests.filter((r) => r.sessionId === w.sessionId) : [];
          if (seenBy === "not" && changed) note("a row the stale query cannot match was changed");
          if (seenBy === "picked" && due && !changed) note("a due row was read and left without an outcome");
          if (changed) {
            if (rowIsInconsistent(final)) note("inconsistent after the sweep");
            if (!["closed", "expired", "failed", "open"].includes(final.status as string)) note("left in a non-final state");
            if (final.status === "open" && !(typeof final.lastErrorCode === "string" && final.nextAttemptAt instanceof Date)) note("retried without a reason or a time");
          }
          if (!w.valid) {
            // A broken row is refused before anything is sent for it.
            if (sent.length > 0) note("a request was sent for a broken row");
            if (changed && (final.status !== "failed" || !REFUSALS.has(final.lastErrorCode as string))) note("a broken row did not end failed with a refusal code");
          } else if (changed) {
            const expected = w.spec.mutations.some((m) => m.name === "otherUsersDrive") ? "failed" : w.real ? "closed" : "expired";
            if (final.status !== expected) note(`a valid row ended ${String(final.status)}, not ${expected}`);
            if (sent.length !== 1) note(`a valid row had ${sent.length} requests`);
            // The request carried the token of the row's own user, nobody else's.
            if (sent.some((r) => r.userId !== w.owner.userId || r.tenantId !== w.owner.tenantId)) note("a request carried another user's token");
          }
        }
        expect(problems).toEqual([]);

        // Graph's log: only POSTs to …/workbook/closeSession under /v1.0/, no dot segments, no query.
        expect(requests.every((r) => r.kind === "closeSession" && r.method === "POST" && /\/workbook\/closeSession$/.test(r.path))).toBe(true);
        for (const r of requests) {
          expect(r.path).toMatch(CLOSE_PATH);
          expect(r.path.startsWith("/v1.0/")).toBe(true);
          const segments = r.path.split("/").map((s) => decodeURIComponent(s));
          expect(segments.some((s) => s === "." || s === ".." || s.includes("/") || s.includes("\\"))).toBe(false);
          expect(r.tokenKind).toBe("delegated");
        }
        // Every location that reached Graph is one a valid row holds, in one of the four forms.
        const locations = new Set(rows.filter((w) => w.valid).map((w) => String(w.entity.workbook)));
        for (const r of requests) {
          const path = r.path.replace(/^\/v1\.0/, "").replace(/\/workbook\/closeSession$/, "");
          const decoded = path.split("/").map((s) => decodeURIComponent(s)).join("/");
          expect(SAFE_WORKBOOK.test(decoded)).toBe(true);
          expect(locations.has(decoded)).toBe(true);
        }
        expect(cloud.emulator.stats().nonCloseRequests).toBe(0);
        expectClosedOnlyWith204([...after.values()], requests);
        // Malformed rows are named in the log with their problems.
        if (summary.malformed > 0) expect(warnings.length).toBeGreaterThan(0);
      }),
      { numRuns: sampleSize(1, 4), endOnFailure: true },
    );
  }, SOAK ? 300_000 : 60_000);
});

/** The consistency rules of support/reliability, for rows that may carry a producer's junk columns. */
function rowIsInconsistent(e: RawEntity): boolean {
  // A finished row keeps no assertion: wiped in the live table, left out of history.
  const holdsAssertion = typeof e.assertion === "string" && e.assertion !== "";
  if (e.status === "closed") return !(e.closedAt instanceof Date) || holdsAssertion;
  if (e.status === "expired" || e.status === "failed") return typeof e.lastErrorCode !== "string" || e.lastErrorCode === "" || holdsAssertion;
  return false;
}

describe("rows from the demo producer", () => {
  it("still decode and close after the hostile rows (sanity of the generator's base row)", async () => {
    const target = await cloud.newTable();
    const { sessionId } = await target.openSession({ userId: newUserId(), workbook: "/drives/base/items/ok" });
    const summary = await target.services.newSweeper().run();
    expect(summary).toMatchObject({ closed: 1 });
    expect(cloud.emulator.sessionState(sessionId)).toBe("closed");
    expectConsistentRows(await rawEntities(target.services.ledger));
  });
});
