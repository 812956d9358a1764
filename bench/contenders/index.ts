import { competent } from "./competent";
import { naive } from "./naive";
import { sweeper, sweeperCountingRows, sweeperDryRun } from "./sweeper";
import { graphRoundTrips } from "../floors";
import type { Contender } from "./types";

export type { Contender, ContenderContext, ContenderOutcome } from "./types";

/** Loads what the others load and does nothing: the RSS a worker process has before any work. */
const baseline: Contender = async () => ({ attempted: 0, closed: 0, errors: 0 });

/** Every job a bench worker can run, by name. */
export const CONTENDERS = { naive, competent, sweeper, sweeperDryRun, sweeperCountingRows, baseline, graphRoundTrips } satisfies Record<string, Contender>;
export type JobName = keyof typeof CONTENDERS;
