import { loadConfig, type Settings } from "./config";
import { createSweeperServices, type SweeperServices } from "./createSweeper";

let services: SweeperServices | undefined;

/**
 * The services of this process, built once from app settings. The function registrations call it
 * when they load, so a missing or malformed setting stops the app at start-up with an error that
 * names it, rather than at the first trigger.
 */
export function sweeperServicesFromEnvironment(settings: Settings = process.env): SweeperServices {
  services ??= createSweeperServices(loadConfig(settings));
  return services;
}
