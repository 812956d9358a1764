import { app } from "@azure/functions";
import { sweepHttp } from "../src/app/sweepHttp";

export { sweepHttp };

app.http("sweep", { methods: ["POST"], authLevel: "function", route: "sweep", handler: sweepHttp });
