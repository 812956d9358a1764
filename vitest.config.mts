import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    // Fails a file whose captured output contains any registered token, assertion or secret.
    setupFiles: ["test/support/secretScan.ts"],
    // forks, not threads: NODE_EXTRA_CA_CERTS (set by globalSetup) only reaches new processes.
    pool: "forks",
    // Two files at a time on CI's two cores: most of the suite waits on leases, timers and child
    // processes, not on the CPU (one at a time, the default there, took 273 s; two, see the commit).
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The JSON report is what .ci/run counts from.
    reporters: ["default", ["json", { outputFile: ".vitest-results.json" }]],
  },
});
