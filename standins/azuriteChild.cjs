// Runs Azurite in this process and exits when the parent goes away (its stdin closes), so a test
// runner killed with SIGKILL does not leave an Azurite behind on the machine.
"use strict";
const entry = require.resolve("azurite/dist/src/azurite.js");
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
// Azurite's own SIGTERM handler closes its servers but does not exit: the open stdin above would
// keep this process alive until the parent's SIGKILL. Let go of stdin so the process ends when the
// servers have closed, and exit anyway soon after (also when SIGTERM came before Azurite's handler
// was registered: a listener here replaces Node's default of exiting at once).
process.once("SIGTERM", () => {
  process.stdin.destroy();
  setTimeout(() => process.exit(0), 500).unref();
});
process.argv = [process.argv[0], entry, ...process.argv.slice(2)];
require(entry);
