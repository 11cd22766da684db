/** What every view gets: the connection, a way to tell the user something, and navigation. */
import type { RpcClient } from "./rpc.js";
import type { VmEvent } from "./types.js";

export interface App {
  readonly rpc: RpcClient;
  notify(message: string, kind?: "error" | "ok"): void;
}

/** A mounted view: refresh() re-reads its data, unmount() drops what it holds. */
export interface View {
  readonly root: HTMLElement;
  refresh(): Promise<void>;
  /** A pushed event (any VM's: the view picks its own). */
  onEvent?(e: VmEvent): void;
  /** The server ended one of this view's subscriptions (its VM went, its stream failed). */
  onEnded?(subscription: string): void;
  unmount(): void;
}

export function vmHash(vm: string, ...rest: (string | number)[]): string {
  return `#/vm/${[vm, ...rest].map((s) => encodeURIComponent(String(s))).join("/")}`;
}
