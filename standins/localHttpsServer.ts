import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { TestCertificate } from "./certificate";

/**
 * An https server on 127.0.0.1 and a free port for a local stand-in of a cloud service. It keeps
 * its sockets so close() ends kept-alive and hanging connections at once, and a handler that
 * throws answers 500 (or drops the connection) instead of crashing the test process.
 */
export class LocalHttpsServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private originValue = "";

  constructor(certificate: TestCertificate, handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>) {
    this.server = createServer({ cert: certificate.cert, key: certificate.key }, (req, res) => {
      void handle(req, res).catch(() => {
        if (!res.headersSent && !res.destroyed) {
          res.statusCode = 500;
          res.end();
        } else res.destroy();
      });
    });
    // Node's 5 s default closes an idle kept-alive connection just as a client may reuse it (the
    // client then sees a reset: a NetworkError the real front ends, idle for minutes, rarely cause).
    this.server.keepAliveTimeout = 120_000;
    this.server.headersTimeout = 125_000;
    this.server.on("secureConnection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  /** `https://127.0.0.1:PORT`, once listening. */
  get origin(): string {
    return this.originValue;
  }

  listen(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => {
        const address = this.server.address();
        if (address === null || typeof address === "string") return reject(new Error("no address"));
        this.originValue = `https://127.0.0.1:${address.port}`;
        resolve(this.originValue);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      for (const socket of this.sockets) socket.destroy();
    });
  }
}
