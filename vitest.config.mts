import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    // Fails a file whose captured output contains any registered token, assertion or secret.
    setupFiles: ["test/support/secretScan.ts"],
    // forks, not threads: NODE_EXTRA_CA_CERTS (set by globalSetup) only reaches new processes.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The JSON report is what .ci/run counts from.
    reporters: ["default", ["json", { outputFile: ".vitest-results.json" }]],
  },
});
