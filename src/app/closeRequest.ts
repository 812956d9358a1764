import type { InvocationContext } from "@azure/functions";
import { AppFaultError, ValidationError } from "../core/errors";
import { handleCloseRequest } from "./handleCloseRequest";
import { parseCloseRequestMessage } from "../core/closeRequestMessage";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";

/**
 * A close request from another service (CLOSE_QUEUE). A message that cannot be read is logged
 * with the reason and thrown back, so the host retries it and then keeps it in `<queue>-poison`.
 * So is one the app could not act on for a fault of its own (a wrong client secret, scope …): the
 * row is as it was, and the message is retried once the settings are fixed.
 */
export async function closeRequest(message: unknown, context: InvocationContext): Promise<void> {
  const logger = invocationLogger(context);
  const services = appServices(logger);
  let request;
  try {
    request = parseCloseRequestMessage(message);
  } catch (error) {
    if (error instanceof ValidationError) {
      logger.error("Close request message refused; it will be retried and then poisoned", {
        problems: error.problems,
        dequeueCount: context.triggerMetadata?.dequeueCount,
        messageId: context.triggerMetadata?.id,
      });
    }
    throw error;
  }
  let result;
  try {
    result = await handleCloseRequest(services, request);
  } catch (error) {
    if (error instanceof AppFaultError) {
      logger.error("Close request paused: the app's settings or credential failed; it will be retried", {
        code: error.code,
        message: error.message,
        scope: error.scope,
        ...(error.tenantId && { tenantId: error.tenantId }),
        dequeueCount: context.triggerMetadata?.dequeueCount,
        messageId: context.triggerMetadata?.id,
      });
    }
    throw error;
  }
  const details =
    result.result === "attempted"
      ? { result: result.report.result, ...("transition" in result.report && { state: result.report.transition.to }) }
      : result;
  logger.log("Close request handled", { requestedBy: request.requestedBy, userId: request.userId, ...details });
}
