import { app } from "@azure/functions";
import { readBindingSettings } from "../src/config";
import { sweepTimer } from "../src/app/sweepTimer";

export { sweepTimer };

app.timer("sweepTimer", { schedule: readBindingSettings().sweepSchedule, handler: sweepTimer });
