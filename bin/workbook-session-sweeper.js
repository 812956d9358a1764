#!/usr/bin/env node
"use strict";
// The operator CLI's launcher: the compiled CLI lives in dist/ (`npm run build`).
const { existsSync } = require("node:fs");
const { join } = require("node:path");

const cli = join(__dirname, "..", "dist", "src", "cli.js");
if (!existsSync(cli)) {
  process.stderr.write("workbook-session-sweeper: the CLI is not built; run `npm run build` first\n");
  process.exit(2);
}
require(cli)
  .main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`workbook-session-sweeper: ${error && error.message ? error.message : String(error)}\n`);
      process.exitCode = 1;
    },
  );
