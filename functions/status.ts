import { app } from "@azure/functions";
import { statusHttp } from "../src/app/statusHttp";

export { statusHttp };

app.http("status", { methods: ["GET"], authLevel: "function", route: "status", handler: statusHttp });
