import { app, type InvocationContext } from "@azure/functions";
import { handleCloseRequest, parseCloseRequestMessage, sweeperServicesFromEnvironment, ValidationError } from "../src";

const services = sweeperServicesFromEnvironment();

/**
 * A close request from another service (CLOSE_QUEUE). A message that cannot be read is logged
 * with the reason and thrown back, so the host retries it and then keeps it in `<queue>-poison`.
 */
export async function closeRequest(message: unknown, context: InvocationContext): Promise<void> {
  let request;
  try {
    request = parseCloseRequestMessage(message);
  } catch (error) {
    if (error instanceof ValidationError) {
      context.error("Close request message refused; it will be retried and then poisoned", {
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
  context.log("Close request handled", { requestedBy: request.requestedBy, userId: request.userId, ...details });
}

app.storageQueue("closeRequest", { queueName: "%CLOSE_QUEUE%", connection: "AzureWebJobsStorage", handler: closeRequest });
