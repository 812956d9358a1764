import type { Context, FetchOptions, Middleware } from "@microsoft/microsoft-graph-client";
import { createDefaultHttpClient, createHttpHeaders, createPipelineRequest, type HttpClient, type HttpHeaders, type HttpMethods } from "@azure/core-rest-pipeline";
import type { Agent } from "node:https";
import type { Readable } from "node:stream";
import { SweeperError } from "../core/errors";
import { Codes } from "../core/codes";

export interface CoreHttpMessageHandlerOptions {
  /** The whole request: connection, answer and its body. @default 30_000 */
  timeoutMs?: number;
  /** Bytes of an answer's body kept; the rest is dropped (Graph's error bodies are small). @default 65_536 */
  maxBodyBytes?: number;
  /** The HTTP client. @default `createDefaultHttpClient()`, node:https with keep-alive connections */
  httpClient?: HttpClient;
  /** The agent each request is sent through. @default the HTTP client's own keep-alive agent */
  agent?: Agent;
}

/**
 * The answer did not come, or not whole, within the handler's time. Its name is the one
 * `AbortSignal.timeout` gives, because the Graph client passes on only a thrown error's name.
 */
export class GraphRequestTimeoutError extends SweeperError {
  readonly code = Codes.GraphRequestTimeout;
  override readonly name = "TimeoutError";
}

const ANY_STATUS = new Set([Number.POSITIVE_INFINITY]);

/**
 * The Graph client's last middleware: sends the request with @azure/core-rest-pipeline's HTTP
 * client (node:https, keep-alive) instead of the global `fetch` the SDK's own HTTPMessageHandler
 * uses. Measured on the bench's machine, `fetch` costs about twice the CPU per request, and a
 * sweep through a backlog is CPU-bound. Redirects are not followed: a 3xx comes back as it is, so
 * nobody but the row's own Graph URL ever receives the user's token. The timeout covers the body
 * too (core's own stops at the headers) without an AbortSignal per request, which Node makes dear.
 */
export class CoreHttpMessageHandler implements Middleware {
  private readonly http: HttpClient;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly agent: Agent | undefined;

  constructor(options: CoreHttpMessageHandlerOptions = {}) {
    this.http = options.httpClient ?? createDefaultHttpClient();
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
    this.agent = options.agent;
  }

  async execute(context: Context): Promise<void> {
    const { request, options = {} } = context;
    if (typeof request !== "string") throw new TypeError("CoreHttpMessageHandler sends requests given as URL strings only.");
    const deadline = Date.now() + this.timeoutMs;
    const pipelineRequest = createPipelineRequest({
      url: request,
      method: (options.method ?? "GET").toUpperCase() as HttpMethods,
      headers: headersOf(options.headers),
      body: typeof options.body === "string" || options.body instanceof Uint8Array ? options.body : undefined,
      timeout: this.timeoutMs,
      abortSignal: options.signal ?? undefined,
      streamResponseStatusCodes: ANY_STATUS,
    });
    // createPipelineRequest does not copy an agent from its options; the HTTP client reads it off the request.
    if (this.agent) pipelineRequest.agent = this.agent;
    const response = await this.http.sendRequest(pipelineRequest);
    const text = await readText(response.readableStreamBody as Readable | undefined, deadline, this.maxBodyBytes);
    context.response = toResponse(response.status, response.headers, text);
  }
}

function headersOf(init: FetchOptions["headers"]): HttpHeaders {
  const headers = createHttpHeaders();
  if (!init) return headers;
  if (init instanceof Headers || Array.isArray(init)) {
    for (const [name, value] of init instanceof Headers ? init.entries() : init) headers.set(name, value);
  } else {
    for (const name of Object.keys(init)) {
      const value = init[name]!;
      headers.set(name, typeof value === "string" ? value : value.join(", "));
    }
  }
  return headers;
}

async function readText(body: Readable | undefined, deadline: number, maxBytes: number): Promise<string> {
  if (!body) return "";
  const chunks: Buffer[] = [];
  let size = 0;
  const timer = setTimeout(() => body.destroy(new GraphRequestTimeoutError("Graph's answer did not arrive whole in time.")), Math.max(0, deadline - Date.now()));
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (size < maxBytes) chunks.push(chunk.subarray(0, maxBytes - size));
      size += chunk.length;
    }
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The Graph client hands its callers a fetch `Response`; build one (no body where HTTP allows none). */
function toResponse(status: number, headers: HttpHeaders, text: string): Response {
  if (status < 200 || status > 599) throw new RangeError(`Graph answered with HTTP status ${status}, which is not a final answer.`);
  const noBody = status === 204 || status === 205 || status === 304;
  return new Response(noBody ? null : text, { status, headers: headers.toJSON({ preserveCase: true }) });
}
