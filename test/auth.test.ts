import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import type { AccessToken } from "@azure/identity";
import { AssertionCipher, AssertionDecryptionError } from "../src/core/AssertionCipher";
import { ReusedTokenCredential } from "../src/auth/ReusedTokenCredential";
import { classifyAuthorityError } from "../src/auth/authorityErrors";
import { Codes } from "../src/core/codes";

describe("ReusedTokenCredential", () => {
  it("hands the same token out while it has more than five minutes left, then asks the inner credential", async () => {
    let now = 0;
    let asked = 0;
    const tokenUntil = (expiresOnTimestamp: number): AccessToken => ({ token: `t${asked}`, expiresOnTimestamp });
    const inner = {
      getToken: async () => {
        asked++;
        return tokenUntil(now + 3_600_000);
      },
    };
    const first = tokenUntil(3_600_000);
    const credential = new ReusedTokenCredential(inner, first, () => now);
    expect(await credential.getToken("scope")).toBe(first);
    now = 3_600_000 - 5 * 60_000 - 1;
    expect(await credential.getToken("scope")).toBe(first);
    expect(asked).toBe(0);
    now += 2;
    const fresh = await credential.getToken("scope");
    expect(asked).toBe(1);
    expect(fresh).not.toBe(first);
    expect(await credential.getToken("scope")).toBe(fresh);
    expect(asked).toBe(1);
  });
});

describe("AssertionCipher", () => {
  const key = Buffer.alloc(32, 3);
  const row = { partitionKey: "u_t", rowKey: "r" };

  it("round-trips, never stores the text, and differs each time", () => {
    const cipher = new AssertionCipher(key);
    const a = cipher.encrypt("eyJ.payload.sig", row);
    const b = cipher.encrypt("eyJ.payload.sig", row);
    expect(a).not.toBe(b);
    expect(a).not.toContain("payload");
    expect(cipher.decrypt(a, row)).toBe("eyJ.payload.sig");
  });

  it("refuses another row, another key, and tampering", () => {
    const sealed = new AssertionCipher(key).encrypt("secret", row);
    expect(() => new AssertionCipher(key).decrypt(sealed, { ...row, rowKey: "other" })).toThrow(AssertionDecryptionError);
    expect(() => new AssertionCipher(Buffer.alloc(32, 4)).decrypt(sealed, row)).toThrow(AssertionDecryptionError);
    const [v, iv, body, tag] = sealed.split(".");
    // Another character in place of the second-to-last one (whose bits are all data).
    const tampered = body!.at(-2) === "A" ? "B" : "A";
    const flipped = `${v}.${iv}.${body!.slice(0, -2)}${tampered}${body!.slice(-1)}.${tag}`;
    expect(flipped).not.toBe(sealed);
    expect(() => new AssertionCipher(key).decrypt(flipped, row)).toThrow(AssertionDecryptionError);
    expect(() => new AssertionCipher(key).decrypt("garbage", row)).toThrow(AssertionDecryptionError);
  });

  it("keeps its key out of JSON and inspection", () => {
    const cipher = new AssertionCipher(key);
    expect(JSON.stringify({ cipher })).not.toContain(key.toString("base64"));
    expect(inspect(cipher)).not.toContain(key.toString("hex"));
  });
});

describe("classifyAuthorityError", () => {
  const context = { now: new Date("2026-11-23T12:00:00Z"), retryAfterMs: 30_000 };
  const thrown = (code: string) =>
    Object.assign(new Error(`AuthenticationRequiredError: ${code}: Something the authority said about 'secret-ish' input.\r\nTrace ID: t\r\nCorrelation ID: c`), {
      name: "AuthenticationRequiredError",
    });

  it.each([
    ["AADSTS7000215", "app", Codes.ClientCredentialRejected],
    ["AADSTS7000222", "app", Codes.ClientSecretExpired],
    ["AADSTS7000218", "app", Codes.ClientCredentialRejected],
    ["AADSTS70002", "app", Codes.ClientCredentialRejected],
    ["AADSTS700027", "app", Codes.ClientCredentialRejected],
    ["AADSTS700024", "app", Codes.ClientCredentialRejected],
    ["AADSTS70011", "app", Codes.InvalidGraphScope],
    ["AADSTS500011", "app", Codes.InvalidGraphScope],
    ["AADSTS65005", "app", Codes.GraphPermissionNotConfigured],
    ["AADSTS700016", "tenant", Codes.ClientNotInTenant],
    ["AADSTS7000112", "tenant", Codes.ClientDisabled],
    ["AADSTS70001", "tenant", Codes.ClientDisabled],
    ["AADSTS90002", "tenant", Codes.TenantNotFound],
  ])("%s is the app's fault: paused, scope %s, %s, in our words", (aadsts, scope, code) => {
    const outcome = classifyAuthorityError(thrown(aadsts), context);
    expect(outcome).toEqual({ kind: "paused", scope, code, message: expect.stringContaining(`(${aadsts})`) });
    expect(outcome.message).not.toMatch(/secret-ish|Trace ID|Correlation ID/);
  });

  it("an authority out of reach pauses the whole app", () => {
    const error = Object.assign(new Error("request to https://127.0.0.1:9/tenant/v2.0/.well-known/openid-configuration failed, reason: connect ECONNREFUSED 127.0.0.1:9"), {
      name: "AuthenticationRequiredError",
    });
    expect(classifyAuthorityError(error, context)).toMatchObject({ kind: "paused", scope: "app", code: Codes.AuthorityUnreachable });
  });

  it.each([
    ["AADSTS500133", "expired"],
    ["AADSTS700082", "expired"],
    ["AADSTS50173", "expired"],
    ["AADSTS50076", "expired"],
    ["AADSTS90033", "retry"],
    ["AADSTS65001", "failed"],
    ["AADSTS50013", "failed"],
    ["AADSTS50034", "failed"],
  ])("%s is about one user or a passing problem: %s, as before", (aadsts, kind) => {
    expect(classifyAuthorityError(thrown(aadsts), context)).toMatchObject({ kind, code: aadsts });
  });
});
