/**
 * `sweeper`: this product's sweep engine, built from settings exactly as the timer function builds
 * it, with a storage request counter on its ledger.
 */
import { loadConfig } from "../../src/config";
import { createSweeperServices } from "../../src/app/sweeperServices";
import type { Contender } from "./types";

export const sweeper: Contender = async ({ settings, onStorageRequest, limit }) => {
  const services = createSweeperServices(loadConfig(settings), { onStorageRequest });
  const summary = await services.newSweeper().run(limit === undefined ? {} : { limit });
  return { attempted: summary.claimed, closed: summary.closed, errors: summary.retry + summary.failed, summary };
};

/** The dry-run scan of the memory figure: the same engine, listing what it would close. */
export const sweeperDryRun: Contender = async ({ settings, onStorageRequest }) => {
  const services = createSweeperServices(loadConfig(settings), { onStorageRequest });
  const summary = await services.newSweeper().run({ dryRun: true });
  return { attempted: 0, closed: 0, errors: 0, summary: { ...summary, candidates: summary.candidates?.slice(0, 3) } };
};
