"use strict";
/**
 * A stand-in for the Azure Functions Node worker, run as its own plain `node` process over a built
 * app, the way the host runs the real one: the app settings are the process's environment, the
 * worker loads every file `main` in package.json matches, and @azure/functions talks to it through
 * the `@azure/functions-core` module the worker provides. This file provides that module, so the
 * app's own copy of @azure/functions registers its functions here and runs invocations through its
 * own InvocationModel (binding conversion, `util.format` of log arguments), exactly the code that
 * runs under the real worker.
 *
 * What the real worker (azure-functions-nodejs-worker 3.x) does and this mirrors: a file that
 * throws while loading stops the loading, and if no function registered before it the worker
 * reports no functions at all (the host then falls back to function.json indexing and finds none);
 * log lines reach the host as `{ level, category, message }`.
 *
 * Protocol (IPC, `process.send`): on start it sends `{ type: "indexed", functions, loadError }`;
 * it answers `{ type: "invoke", id, functionName, inputData, triggerMetadata }` with
 * `{ type: "invoked", id, logs, response, error }`.
 *
 * Usage: fork(thisFile, [appDirectory], { env: appSettings })
 */
const Module = require("node:module");
const fs = require("node:fs");
const path = require("node:path");

const appDirectory = path.resolve(process.argv[2] ?? ".");

/** @type {{ model?: any, functions: Map<string, { metadata: any, callback: Function }> }} */
const state = { model: undefined, functions: new Map() };
let currentLogs = undefined;

const coreApi = {
  version: "3.9.1-standin",
  setProgrammingModel(model) {
    state.model = model;
  },
  getProgrammingModel() {
    return state.model;
  },
  registerFunction(metadata, callback) {
    if (state.functions.has(metadata.name)) throw new Error(`A function with the name "${metadata.name}" has already been registered.`);
    state.functions.set(metadata.name, { metadata, callback });
    return { dispose: () => state.functions.delete(metadata.name) };
  },
  registerHook() {
    return { dispose() {} };
  },
  log(level, category, message) {
    (currentLogs ?? indexingLogs).push({ level, category, message });
  },
};
const indexingLogs = [];

const originalResolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === "@azure/functions-core") return "@azure/functions-core";
  return originalResolve.call(this, request, ...rest);
};
require.cache["@azure/functions-core"] = { id: "@azure/functions-core", filename: "@azure/functions-core", loaded: true, exports: coreApi };

/** The files package.json `main` names: a path whose last segment may hold `*` (the worker globs it). */
function entryPoints(directory) {
  const main = JSON.parse(fs.readFileSync(path.join(directory, "package.json"), "utf8")).main;
  if (typeof main !== "string") throw new Error("package.json has no main");
  const folder = path.join(directory, path.dirname(main));
  const pattern = path.basename(main);
  if (path.dirname(main).includes("*")) throw new Error(`this stand-in globs only the last segment of main, not ${main}`);
  const matcher = new RegExp(`^${pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*")}$`);
  return fs
    .readdirSync(folder)
    .filter((name) => matcher.test(name))
    .sort()
    .map((name) => path.join(folder, name));
}

let loadError;
process.chdir(appDirectory);
try {
  for (const file of entryPoints(appDirectory)) require(file);
} catch (error) {
  loadError = { file: undefined, message: error && error.message ? error.message : String(error) };
}

function describeFunctions() {
  // As the worker answers FunctionsMetadataRequest: nothing when no function registered.
  return [...state.functions.values()].map(({ metadata }) => ({ name: metadata.name, bindings: metadata.bindings }));
}

async function invoke({ functionName, inputData = [], triggerMetadata = {} }) {
  const registered = state.functions.get(functionName);
  if (!registered || !state.model) throw new Error(`no function "${functionName}" was registered`);
  const bindings = registered.metadata.bindings;
  const triggerName = Object.keys(bindings).find((name) => /trigger$/i.test(bindings[name].type));
  const logs = [];
  currentLogs = logs;
  const coreContext = {
    invocationId: `standin-${Math.random().toString(36).slice(2)}`,
    request: {
      inputData: inputData.map((input) => ({ name: input.name ?? triggerName, data: input.data })),
      triggerMetadata,
    },
    metadata: { name: functionName, bindings },
    state: "invocation",
    log: (level, category, message) => logs.push({ level, category, message }),
  };
  try {
    const model = state.model.getInvocationModel(coreContext);
    const { context, inputs } = await model.getArguments();
    let result;
    let error;
    try {
      result = await model.invokeFunction(context, inputs, registered.callback);
    } catch (thrown) {
      error = { name: thrown?.name, code: thrown?.code, message: thrown?.message ?? String(thrown) };
    }
    const response = error ? undefined : await model.getResponse(context, result);
    return { logs, response, error };
  } finally {
    currentLogs = undefined;
  }
}

process.send({ type: "indexed", functions: describeFunctions(), loadError, logs: indexingLogs });
process.on("message", (message) => {
  if (!message || message.type !== "invoke") return;
  invoke(message).then(
    (outcome) => process.send({ type: "invoked", id: message.id, ...outcome }),
    (failure) => process.send({ type: "invoked", id: message.id, logs: [], error: { message: String(failure?.message ?? failure) } }),
  );
});
process.on("disconnect", () => process.exit(0));
