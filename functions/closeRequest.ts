import { app } from "@azure/functions";
import { closeRequest } from "../src/app/closeRequest";
import { functionBindings } from "../src/app/functionBindings";

export { closeRequest };

// `connection` names the app setting the host reads the storage account from.
app.storageQueue("closeRequest", { queueName: functionBindings().closeQueueName, connection: "AzureWebJobsStorage", handler: closeRequest });
