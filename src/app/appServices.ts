import { loadConfig, type Settings } from "../config";
import { createSweeperServices, type SweeperServices } from "./sweeperServices";
import { ConfigurationError } from "../core/errors";
import type { AppLogger } from "./logging";

let services: SweeperServices | undefined;

/**
 * The services of this process, built from app settings on first use, not when the function files
 * load: the host indexes every function whatever the settings, and a missing or malformed setting
 * shows as failed invocations with the reason instead of an app with no functions. A bad
 * configuration is not kept: the next invocation reads the settings again.
 *
 * Throws ConfigurationError naming every setting at fault, after logging it through `logger`.
 */
export function appServices(logger: AppLogger, settings: Settings = process.env): SweeperServices {
  if (services) return services;
  try {
    services = createSweeperServices(loadConfig(settings));
    return services;
  } catch (error) {
    if (error instanceof ConfigurationError) {
      logger.error("Invalid configuration; fix these app settings", { code: error.code, problems: error.problems });
    }
    throw error;
  }
}
