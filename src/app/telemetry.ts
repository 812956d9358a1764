import type { Settings } from "../config";
import type { AppLogger } from "./logging";

/** The Functions host's own setting for Application Insights; the app exports its metrics there too. */
const CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING";

/** What startTelemetry did: the first call decides, for the life of the process. */
export type TelemetryState =
  | { readonly exporting: true }
  | { readonly exporting: false; readonly reason: "notConfigured" | "failed" };

let state: TelemetryState | undefined;

/**
 * Starts exporting the app's metrics (src/app/metrics.ts) to Application Insights with Azure's
 * OpenTelemetry distro, once per process, when APPLICATIONINSIGHTS_CONNECTION_STRING is set.
 * Otherwise the distro is not even loaded (it is required here, not imported at the top: it
 * brings the whole OpenTelemetry SDK and its instrumentations), and the metrics go nowhere.
 *
 * A distro that fails to start (a malformed connection string, say) is logged through `logger` and
 * leaves the app running without metrics: telemetry never fails an invocation.
 */
export function startTelemetry(settings: Settings = process.env, logger?: Pick<AppLogger, "error">): TelemetryState {
  if (state) return state;
  const connectionString = settings[CONNECTION_STRING_SETTING]?.trim();
  if (!connectionString) return (state = { exporting: false, reason: "notConfigured" });
  try {
    const { useAzureMonitor } = require("@azure/monitor-opentelemetry") as typeof import("@azure/monitor-opentelemetry");
    useAzureMonitor({ azureMonitorExporterOptions: { connectionString } });
    return (state = { exporting: true });
  } catch (error) {
    // The connection string is not repeated: the message names what is wrong with it.
    logger?.error("Telemetry could not start; metrics are not exported", {
      code: error instanceof Error ? error.name : "Error",
      message: (error instanceof Error ? error.message : String(error)).split("\n")[0]!.slice(0, 300),
    });
    return (state = { exporting: false, reason: "failed" });
  }
}
