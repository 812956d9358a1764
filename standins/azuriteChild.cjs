// Runs Azurite in this process and exits when the parent goes away (its stdin closes), so a test
// runner killed with SIGKILL does not leave an Azurite behind on the machine.
"use strict";
const entry = require.resolve("azurite/dist/src/azurite.js");
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
process.argv = [process.argv[0], entry, ...process.argv.slice(2)];
require(entry);
