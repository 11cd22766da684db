import { homedir } from "node:os";
import { join } from "node:path";

/** Where fetched kernels and built guest images live; shared by the CLI, the demo and the tests. */
export function cacheRoot(): string {
  const fromEnv = process.env.VMSIGHT_CACHE;
  if (fromEnv) return fromEnv;
  const xdg = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  return join(xdg, "vmsight");
}
