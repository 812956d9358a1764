import { app } from "@azure/functions";
import { functionBindings } from "../src/app/functionBindings";
import { sweepTimer } from "../src/app/sweepTimer";

export { sweepTimer };

app.timer("sweepTimer", { schedule: functionBindings().sweepSchedule, handler: sweepTimer });
