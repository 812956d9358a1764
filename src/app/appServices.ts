import { loadConfig, type Settings } from "../config";
import { createSweeperServices, type SweeperServices } from "./sweeperServices";
import { ConfigurationError } from "../core/errors";
import type { AppLogger } from "./logging";
import { startTelemetry } from "./telemetry";

let services: SweeperServices | undefined;

/**
 * The services of this process, built from app settings on first use, not when the function files
 * load: the host indexes every function whatever the settings, and a missing or malformed setting
 * shows as failed invocations with the reason instead of an app with no functions. A bad
 * configuration is not kept: the next invocation reads the settings again.
 *
 * The first call also starts telemetry (startTelemetry): metrics go to Application Insights when
 * APPLICATIONINSIGHTS_CONNECTION_STRING is set.
 *
 * Throws ConfigurationError naming every setting at fault, after logging it through `logger`.
 */
export function appServices(logger: AppLogger, settings: Settings = process.env): SweeperServices {
  if (services) return services;
  // Once per process, before the first services: metrics to Application Insights when its
  // connection string is set (the distro is not loaded otherwise).
  startTelemetry(settings, logger);
  services = configured(logger, () => createSweeperServices(loadConfig(settings)));
  return services;
}

/**
 * Builds services from the settings; a ConfigurationError is logged through `logger` as the one
 * line operators search for (README "Deploying"), then thrown. Nothing is kept on failure.
 */
export function configured<T>(logger: Pick<AppLogger, "error">, build: () => T): T {
  try {
    return build();
  } catch (error) {
    if (error instanceof ConfigurationError) {
      logger.error("Invalid configuration; fix these app settings", { code: error.code, problems: error.problems });
    }
    throw error;
  }
}
