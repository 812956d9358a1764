import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Settings } from "../config";
import { Codes } from "../core/codes";
import { ConfigurationError, SweeperError } from "../core/errors";

/** The settings file could not be used; the message names the file and what is wrong with it. */
export class SettingsFileError extends SweeperError {
  readonly code = Codes.SettingsFileUnreadable;
}

export interface ResolvedSettings {
  settings: Settings;
  /** The settings file that was read, if any (absolute path). */
  file: string | undefined;
}

/**
 * The CLI's settings, as the Functions host would see them: the `Values` of a local.settings.json
 * (the one named by `--settings`, else `./local.settings.json` if there is one), overridden by the
 * environment. An environment variable that is empty does not hide the file's value.
 */
export function resolveSettings(env: Settings, cwd: string, settingsPath: string | undefined): ResolvedSettings {
  const file = settingsPath !== undefined ? resolve(cwd, settingsPath) : defaultSettingsFile(cwd);
  const values = file ? readSettingsFile(file) : {};
  const merged: Record<string, string | undefined> = { ...values };
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && value.trim() !== "") merged[name] = value;
  }
  return { settings: merged, file };
}

/**
 * The configuration `load` reads from the settings; undefined when a setting is at fault, after
 * `fail` has said which (the message names every one and never quotes a secret) and, when given,
 * where the settings were read from.
 */
export function configOrFail<T>(load: () => T, fail: (message: string) => void, settingsFrom?: string): T | undefined {
  try {
    return load();
  } catch (error) {
    if (!(error instanceof ConfigurationError)) throw error;
    fail(error.message);
    if (settingsFrom) fail(`settings are read from ${settingsFrom}`);
    return undefined;
  }
}

function defaultSettingsFile(cwd: string): string | undefined {
  const path = resolve(cwd, "local.settings.json");
  return existsSync(path) ? path : undefined;
}

function readSettingsFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new SettingsFileError(`cannot read the settings file ${path}${typeof code === "string" ? ` (${code})` : ""}`);
  }
  let parsed: unknown;
  try {
    // local.settings.json may start with a byte order mark.
    parsed = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch {
    // The parser's message may quote the file's content, secrets included: say where, not what.
    throw new SettingsFileError(`the settings file ${path} is not valid JSON`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new SettingsFileError(`the settings file ${path} is not a JSON object with a "Values" object`);
  }
  const file = parsed as Record<string, unknown>;
  if (file.IsEncrypted === true) {
    throw new SettingsFileError(`the settings file ${path} is encrypted ("IsEncrypted": true); decrypt it with \`func settings decrypt\``);
  }
  const values = file.Values;
  if (values === undefined) return {};
  if (typeof values !== "object" || values === null || Array.isArray(values)) {
    throw new SettingsFileError(`the settings file ${path} has a "Values" that is not an object`);
  }
  const settings: Record<string, string> = {};
  const bad: string[] = [];
  for (const [name, value] of Object.entries(values as Record<string, unknown>)) {
    if (typeof value === "string") settings[name] = value;
    else if (typeof value === "number" || typeof value === "boolean") settings[name] = String(value);
    else if (value !== null) bad.push(name);
  }
  if (bad.length > 0) {
    throw new SettingsFileError(`the settings file ${path} has values that are not text: ${bad.map((n) => n.slice(0, 60)).join(", ")}`);
  }
  return settings;
}

/**
 * The secret values among the settings (client secret, assertion keys, the storage connection
 * string and its account key or SAS), so that no output of the CLI ever carries them.
 */
export function secretValuesOf(settings: Settings): string[] {
  const secrets = new Set<string>();
  const add = (value: string | undefined) => {
    const trimmed = value?.trim();
    if (trimmed && trimmed.length >= 8) secrets.add(trimmed);
  };
  add(settings.AZURE_CLIENT_SECRET);
  add(settings.ASSERTION_ENCRYPTION_KEY);
  add(settings.ASSERTION_PRIVATE_KEY);
  add(settings.ASSERTION_PREVIOUS_PRIVATE_KEYS);
  for (const key of settings.ASSERTION_PREVIOUS_PRIVATE_KEYS?.split(",") ?? []) add(key);
  const connectionString = settings.AzureWebJobsStorage;
  if (connectionString && !/^\s*UseDevelopmentStorage=true\s*$/i.test(connectionString)) {
    add(connectionString);
    for (const match of connectionString.matchAll(/(?:AccountKey|SharedAccessSignature)=([^;]+)/gi)) add(match[1]);
  }
  // Longest first, so a connection string is replaced whole rather than around its key.
  return [...secrets].sort((a, b) => b.length - a.length);
}
