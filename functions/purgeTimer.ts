import { app } from "@azure/functions";
import { readBindingSettings } from "../src/config";
import { purgeTimer } from "../src/app/purgeTimer";

export { purgeTimer };

app.timer("purgeTimer", { schedule: readBindingSettings().purgeSchedule, handler: purgeTimer });
