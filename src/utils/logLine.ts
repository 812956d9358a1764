/**
 * One log line as the app writes it everywhere: the message, a space, then its details as JSON
 * (`Sweep finished {"trigger":"timer","closed":3,…}`).
 *
 * Why not `context.log(message, details)`: the Functions worker formats log arguments with
 * `util.format`, which turns an object into multi-line `util.inspect` text with nested values cut
 * to `[Array]`, and Application Insights stores that as one trace message nobody can query. One
 * line whose structured part is JSON stays whole, and `parse_json` reads it back.
 */
export function formatLogLine(message: string, details?: Readonly<Record<string, unknown>>): string {
  const text = message.replace(LINE_BREAKS, " ");
  if (details === undefined) return text;
  return `${text} ${detailsJson(details)}`;
}

/** Carriage returns, line feeds and the Unicode line and paragraph separators. */
const LINE_BREAKS = /[\r\n\u2028\u2029]+/g;

/**
 * The details as one line of JSON. JSON.stringify escapes line breaks inside strings; errors
 * become their name, code and first line; a bigint its digits; a cycle `[Circular]`. Nothing is cut.
 */
function detailsJson(details: Readonly<Record<string, unknown>>): string {
  const seen = new WeakSet<object>();
  const json = JSON.stringify(details, (_key, value: unknown) => {
    if (typeof value === "bigint") return value.toString();
    if (value instanceof Error) return errorDetails(value);
    if (typeof value === "object" && value !== null) {
      if (seen.has(value)) return "[Circular]";
      seen.add(value);
    }
    return value;
  });
  // U+2028/2029 are valid inside JSON strings but end a line for some readers.
  return (json ?? "{}").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

function errorDetails(error: Error): Record<string, unknown> {
  const code = (error as { code?: unknown }).code;
  return { name: error.name, ...(typeof code === "string" && { code }), message: error.message.split("\n")[0] };
}
