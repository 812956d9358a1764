import type { InvocationContext } from "@azure/functions";
import { ValidationError } from "../core/errors";
import { handleCloseRequest } from "./handleCloseRequest";
import { parseCloseRequestMessage } from "../core/closeRequestMessage";
import { appServices } from "./appServices";
import { invocationLogger } from "./logging";

/**
 * A close request from another service (CLOSE_QUEUE). A message that cannot be read is logged
 * with the reason and thrown back, so the host retries it and then keeps it in `<queue>-poison`.
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
  const result = await handleCloseRequest(services, request);
  const details =
    result.result === "attempted"
      ? { result: result.report.result, ...("transition" in result.report && { state: result.report.transition.to }) }
      : result;
  logger.log("Close request handled", { requestedBy: request.requestedBy, userId: request.userId, ...details });
}
