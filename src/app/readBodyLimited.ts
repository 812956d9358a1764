import { ValidationError } from "../core/errors";

/**
 * Reads a request body as text, refusing it as soon as it passes `maxBytes`: an oversize body is
 * never buffered whole.
 */
export async function readBodyLimited(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<string> {
  if (!body) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ValidationError([{ field: "body", message: `is larger than ${maxBytes} bytes` }]);
    }
    chunks.push(value);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new ValidationError([{ field: "body", message: "is not UTF-8 text" }]);
  }
}
