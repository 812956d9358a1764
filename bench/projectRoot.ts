import { existsSync } from "node:fs";
import { dirname, join } from "node:path";

/** The repository's root, whether the bench runs from `bench/` (vitest, tsx) or compiled from `dist-bench/bench/`. */
export const PROJECT_ROOT = findRoot(__dirname);

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}
