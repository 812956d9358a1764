import type { SweepLogger } from "../sweep/Sweeper";
import type { SweepCandidate, SweepSummary } from "../sweep/models";
import { formatLogLine } from "../utils/logLine";
import { RECORDED_SWEEP_COUNTS } from "../ledger/sweepsTable";

export interface TextSink {
  write(chunk: string): unknown;
}

/** Account keys, SAS tokens and client secrets are replaced before anything is written. */
export function redactingSink(sink: TextSink, secrets: () => readonly string[]): TextSink {
  return {
    write(chunk: string) {
      let text = chunk;
      for (const secret of secrets()) text = text.split(secret).join("[redacted]");
      // Whatever the settings said, a connection string's key or SAS never reaches the output.
      text = text.replace(/\b(AccountKey|SharedAccessSignature|sig)=[^;&\s"]+/gi, "$1=[redacted]");
      return sink.write(text);
    },
  };
}

/** Control characters (terminal escapes included) from ledger rows are shown as `?`. */
export function printable(value: string): string {
  return value.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

/** Rows as aligned columns, the last one unpadded. */
export function table(rows: readonly (readonly string[])[], indent = "  "): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) => indent + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ").trimEnd())
    .join("\n");
}

/** The summary's rows: the counts every sweep record keeps (leasedElsewhere among them), framed by the run's own fields. */
const SUMMARY_FIELDS = ["dryRun", ...RECORDED_SWEEP_COUNTS, "durationMs", "stoppedEarly"] as const satisfies readonly (keyof SweepSummary)[];

/** The candidates a dry run lists in full; the rest are counted. */
export const MAX_LISTED_CANDIDATES = 50;

/** The summary (and a dry run's candidates) as readable tables. */
export function formatSummary(summary: SweepSummary, tableName: string): string {
  const paused = summary.pauses?.some((p) => p.code === summary.error?.code);
  const heading = paused
    ? `Sweep of table ${tableName} paused by the app's settings or credential (${summary.error!.code}); fix them and sweep again`
    : summary.error
    ? `Sweep of table ${tableName} ended by a storage fault; the next sweep carries on`
    : summary.dryRun
      ? `Dry run of table ${tableName}: nothing was claimed, written or sent`
      : `Sweep of table ${tableName} finished`;
  const rows: string[][] = [["field", "value"], ["-----", "-----"]];
  for (const field of SUMMARY_FIELDS) rows.push([field, String(summary[field])]);
  if (summary.error) rows.push(["error", printable(`${summary.error.code}: ${summary.error.message}`)]);
  const parts = [heading, table(rows)];
  if (summary.dryRun) parts.push(formatCandidates(summary.candidates ?? [], summary.stale));
  return `${parts.join("\n\n")}\n`;
}

function formatCandidates(candidates: readonly SweepCandidate[], stale: number): string {
  const total = Math.max(stale, candidates.length);
  if (total === 0) return "No session would be closed.";
  const shown = candidates.slice(0, MAX_LISTED_CANDIDATES);
  const rows: string[][] = [
    ["lastActivityAt", "attempts", "tenantId", "userId", "session", "workbook"],
    ["--------------", "--------", "--------", "------", "-------", "--------"],
  ];
  for (const c of shown) {
    rows.push([c.lastActivityAt, String(c.attempts), c.tenantId, c.userId, `${c.sessionIdPrefix}…`, c.workbook].map(printable));
  }
  const lines = [`Sessions that would be closed (${total}):`, table(rows)];
  if (total > shown.length) lines.push(`  … and ${total - shown.length} more`);
  return lines.join("\n");
}

/**
 * A progress line on a terminal: rewritten in place (`\r`), cleared before anything else is
 * written to the same stream and at the end.
 */
export class ProgressLine {
  private shown = false;

  constructor(
    private readonly sink: TextSink,
    private readonly columns: number | undefined,
  ) {}

  update(summary: Readonly<SweepSummary>): void {
    const seconds = Math.round(summary.durationMs / 1000);
    const counts = summary.dryRun
      ? `scanned ${summary.scanned}, would close ${summary.stale}`
      : `scanned ${summary.scanned}, closed ${summary.closed}, expired ${summary.expired}, retry ${summary.retry}, failed ${summary.failed}, skipped ${summary.skipped}`;
    let line = `${summary.dryRun ? "dry run" : "sweeping"}: ${counts} (${seconds}s)`;
    if (this.columns && this.columns > 10 && line.length > this.columns - 1) line = `${line.slice(0, this.columns - 2)}…`;
    this.sink.write(`\r\x1b[2K${line}`);
    this.shown = true;
  }

  clear(): void {
    if (!this.shown) return;
    this.sink.write("\r\x1b[2K");
    this.shown = false;
  }
}

/**
 * The CLI's SweepLogger: warnings (malformed rows, faults) always go to stderr, one line each;
 * the informational lines only with `--verbose`, since the summary is the output.
 */
export function cliLogger(stderr: TextSink, options: { verbose: boolean; progress?: ProgressLine; clock?: () => Date }): SweepLogger {
  const clock = options.clock ?? (() => new Date());
  const write = (level: string, message: string, details: Record<string, unknown>) => {
    options.progress?.clear();
    stderr.write(`${clock().toISOString()} ${level} ${formatLogLine(printable(message), details)}\n`);
  };
  return {
    log: (message, details) => {
      if (options.verbose) write("info", message, details);
    },
    warn: (message, details) => write("warn", message, details),
  };
}
