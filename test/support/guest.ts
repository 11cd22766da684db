import { type GuestImage, type GuestImageOptions, ensureGuestImage } from "../../src/guests/guest-image.js";
import { type LaunchOptions, type LaunchedGuest, launchGuest } from "../../src/qemu/launch.js";
import { Target } from "../../src/qemu/session.js";
import { VmsightError } from "../../src/util/errors.js";
import { type GuestView, parseGuestView } from "./oracle.js";
import { SerialConsole, waitForFile } from "./serial.js";

export const READY_PATTERN = /(^|\n)VMSIGHT-READY\r?\n/;

/**
 * vmsight reads live RAM two ways: mapped from a shared memfd (guests it launches) or with
 * pread on /proc/<pid>/mem (QEMU's default anonymous RAM). The attach and semantics tests run
 * their 6.1 guest the second way, so that both are checked against the guest's own view.
 */
export function ramBackendFor(kernelId: string): "anonymous" | "memfd" {
  return kernelId === "6.1" ? "anonymous" : "memfd";
}

export interface TestGuestOptions extends Partial<Omit<LaunchOptions, "kernel" | "initrd">> {
  readonly log?: (line: string) => void;
  /** Boot this bzImage (e.g. a copy of the image's) instead of the image's own file. */
  readonly kernel?: string;
  readonly image?: GuestImageOptions;
  /**
   * QEMU gets `-device vmcoreinfo` and the guest loads qemu_fw_cfg (an image of its own), so the
   * kernel's VMCOREINFO reaches QEMU: what drgn's --qemu mode needs (bench/peers/drgn.ts).
   */
  readonly vmcoreinfo?: boolean;
}

export interface TestGuest {
  readonly image: GuestImage;
  readonly guest: LaunchedGuest;
  readonly qmpSocket: string;
  /** The serial console; throws for a qmpOnly guest, which has no console socket. */
  readonly serial: SerialConsole;
  /** Milliseconds from launch to VMSIGHT-READY, once waitReady has seen it. */
  readonly readyAfterMs: number | undefined;
  /** Waits for init's VMSIGHT-READY on the console (in the serial log for a qmpOnly guest). */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Runs vmsight-view in the guest shell and parses what it prints. */
  view(timeoutMs?: number): Promise<GuestView>;
  stop(): Promise<void>;
}

/**
 * Builds (or reuses) the test image for `kernelId` and boots it, running (not paused) under
 * TCG (or $VMSIGHT_ACCEL) with 512M unless told otherwise.
 */
export async function bootTestGuest(kernelId: string, opts: TestGuestOptions = {}): Promise<TestGuest> {
  const { log, image: imageOpts, kernel, vmcoreinfo, ...launch } = opts;
  const image = await ensureGuestImage(kernelId, log, vmcoreinfo ? { ...imageOpts, vmcoreinfo } : imageOpts);
  const startedAt = Date.now();
  const guest = await launchGuest({
    // TCG unless VMSIGHT_ACCEL says otherwise: the tests' timings and trap costs assume it.
    accel: process.env.VMSIGHT_ACCEL ? undefined : "tcg",
    memory: "512M",
    // VMSIGHT_TEST_CPUS runs a suite on SMP guests (per-CPU runqueues, traps on every vCPU).
    cpus: Number(process.env.VMSIGHT_TEST_CPUS ?? 1),
    append: image.append,
    ...launch,
    extraArgs: [...(launch.extraArgs ?? []), ...(vmcoreinfo ? ["-device", "vmcoreinfo"] : [])],
    kernel: kernel ?? image.kernel,
    initrd: image.initrd,
  });
  let serial: SerialConsole | undefined;
  try {
    if (guest.serialSocket) serial = await SerialConsole.connect(guest.serialSocket);
  } catch (e) {
    await guest.stop();
    throw e;
  }
  let readyAfterMs: number | undefined;
  let exitCode: number | null | undefined;
  guest.exited.then((code) => {
    exitCode = code;
  });
  const console = (): SerialConsole => {
    if (!serial)
      throw new VmsightError("E_SERIAL", "this guest was launched qmpOnly: it has no serial socket");
    return serial;
  };
  return {
    image,
    guest,
    qmpSocket: guest.qmpSocket,
    get serial() {
      return console();
    },
    get readyAfterMs() {
      return readyAfterMs;
    },
    async waitReady(timeoutMs = 60_000) {
      // With a console client, QEMU 7.2's serial.log is not exact (see LaunchedGuest.serialLog):
      // read the socket stream then, and the log file only when it is the sole output.
      if (serial) await serial.waitFor(READY_PATTERN, timeoutMs);
      else {
        await waitForFile(guest.serialLog, READY_PATTERN, timeoutMs, () =>
          exitCode === undefined ? undefined : `QEMU exited (code ${exitCode})`,
        );
      }
      readyAfterMs ??= Date.now() - startedAt;
    },
    async view(timeoutMs = 60_000) {
      return parseGuestView(await console().command("vmsight-view", timeoutMs));
    },
    async stop() {
      serial?.close();
      await guest.stop();
    },
  };
}

/**
 * QEMU's own ELF dump of a guest (dump-guest-memory with paging: false, the physical layout
 * Volatility reads): an artifact vmsight's dump code has no hand in. `pause`: "around" stops the
 * guest for the dump and resumes it, "leave" stops it and leaves it stopped (for comparing the
 * dump with the live guest in the very same state); without it QEMU stops the vCPUs only while
 * it writes.
 */
export async function qemuElfDump(
  qmpSocket: string,
  path: string,
  opts: { readonly timeoutMs: number; readonly pause?: "around" | "leave" },
): Promise<void> {
  const t = await Target.attach(qmpSocket);
  try {
    if (opts.pause) await t.pause();
    await t.qmp.execute(
      "dump-guest-memory",
      { paging: false, protocol: `file:${path}` },
      { timeoutMs: opts.timeoutMs },
    );
    if (opts.pause === "around") await t.resume();
  } finally {
    await t.close();
  }
}
