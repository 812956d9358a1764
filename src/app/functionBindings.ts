import { readBindingSettings, type BindingSettings } from "../config";

/**
 * The values the function registrations bind, read when the function files load. They come from
 * the app's settings with the app's defaults, as plain values: the host resolves `%NAME%` only
 * from app settings, so a default that lives in the app would never reach it, and a timer bound to
 * an unset `%SWEEP_SCHEDULE%` would never fire.
 */
export function functionBindings(settings = process.env): BindingSettings {
  return readBindingSettings(settings);
}
