import { app } from "@azure/functions";
import { closeRequest } from "../src/app/closeRequest";
import { readBindingSettings } from "../src/config";

export { closeRequest };

// `connection` names the app setting the host reads the storage account from.
app.storageQueue("closeRequest", { queueName: readBindingSettings().closeQueueName, connection: "AzureWebJobsStorage", handler: closeRequest });
