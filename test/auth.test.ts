import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import type { AccessToken } from "@azure/identity";
import { AssertionCipher, AssertionDecryptionError } from "../src/core/AssertionCipher";
import { ReusedTokenCredential } from "../src/auth/ReusedTokenCredential";

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
