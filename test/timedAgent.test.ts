import { request } from "node:https";
import { describe, expect, inject, it } from "vitest";
import { TimedHttpsAgent } from "../src/graph/TimedHttpsAgent";
import { loadTestCertificate } from "../standins/certificate";
import { LocalHttpsServer } from "../standins/localHttpsServer";

function get(url: string, agent: TimedHttpsAgent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("TimedHttpsAgent", () => {
  it("says how long the handshakes of the connections it opened lately took, and nothing for warm ones", async () => {
    const server = new LocalHttpsServer(loadTestCertificate(inject("testCertificateDir")), async (_req, res) => {
      res.end("ok");
    });
    const origin = await server.listen();
    const agent = new TimedHttpsAgent();
    try {
      const sent = performance.now();
      expect(agent.handshakeDelayMs(0, 100)).toBe(0);
      expect(await get(`${origin}/`, agent)).toBe(200);
      expect(agent.handshakeDelayMs(performance.now() - sent, 100)).toBeGreaterThan(0);
      // The same connection again: no handshake, so a request sent then was not held up by one.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const again = performance.now();
      expect(await get(`${origin}/`, agent)).toBe(200);
      expect(agent.handshakeDelayMs(performance.now() - again, 100)).toBe(0);
      // Two at once: one takes the idle connection, the other opens one, whose handshake counts.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const both = performance.now();
      await Promise.all([get(`${origin}/`, agent), get(`${origin}/`, agent)]);
      expect(agent.handshakeDelayMs(performance.now() - both, 100)).toBeGreaterThan(0);
    } finally {
      agent.destroy();
      await server.close();
    }
  });
});
