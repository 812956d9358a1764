import { app } from "@azure/functions";
import { functionBindings } from "../src/app/functionBindings";
import { purgeTimer } from "../src/app/purgeTimer";

export { purgeTimer };

app.timer("purgeTimer", { schedule: functionBindings().purgeSchedule, handler: purgeTimer });
