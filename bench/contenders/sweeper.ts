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

/**
 * The history scenario's sweep: the same engine, and a count of the rows the live table's queries
 * returned, read off the service's answers (before the ledger judges them; the summary's `scanned`
 * counts what it kept). The sweep queries no other table (its requests per table say so).
 */
export const sweeperCountingRows: Contender = async ({ settings, onStorageRequest }) => {
  const services = createSweeperServices(loadConfig(settings), { onStorageRequest });
  let rowsReturned = 0;
  services.ledger.client.pipeline.addPolicy({
    name: "benchRowsReturned",
    async sendRequest(request, next) {
      const response = await next(request);
      // A query's page is `{ value: [...] }`; a point read is the entity alone.
      if (request.method === "GET" && response.status === 200 && response.bodyAsText) {
        const value = (JSON.parse(response.bodyAsText) as { value?: unknown }).value;
        if (Array.isArray(value)) rowsReturned += value.length;
      }
      return response;
    },
  });
  const summary = await services.newSweeper().run();
  return { attempted: summary.claimed, closed: summary.closed, errors: summary.retry + summary.failed, summary, timings: { rowsReturned } };
};
