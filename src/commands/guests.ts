import { existsSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { type GuestImage, ensureGuestImage } from "../guests/guest-image.js";
import { kernelCatalog } from "../guests/kernels.js";
import { type LaunchedGuest, launchGuest } from "../qemu/launch.js";
import { QmpClient } from "../transport/qmp/client.js";
import { ProtocolError, VmsightError } from "../util/errors.js";

export type Log = (line: string) => void;

/** Fetches the catalog's kernels and builds their guest images; optional kernels only when named. */
export async function buildImages(
  ids: readonly string[],
  log: Log,
  variant?: "rootkit",
): Promise<GuestImage[]> {
  const catalog = kernelCatalog();
  const wanted = ids.length > 0 ? ids : catalog.kernels.filter((k) => !k.optional).map((k) => k.id);
  const images: GuestImage[] = [];
  for (const id of wanted) images.push(await ensureGuestImage(id, log, variant ? { variant } : {}));
  return images;
}

/** Waits until the guest's init prints its ready line on the serial console (read from the log). */
export async function waitForGuestReady(guest: LaunchedGuest, timeoutMs: number, log: Log): Promise<void> {
  const started = Date.now();
  let lastReport = started;
  while (Date.now() - started < timeoutMs) {
    if (existsSync(guest.serialLog) && readFileSync(guest.serialLog, "latin1").includes("VMSIGHT-READY"))
      return;
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      log(`  still booting (${Math.round((Date.now() - started) / 1000)} s)…`);
    }
    await sleep(200);
  }
  throw new VmsightError("E_BOOT_TIMEOUT", `the guest did not finish booting within ${timeoutMs / 1000} s`, {
    hint: `see its console log: ${guest.serialLog}`,
  });
}

export async function bootDemoGuest(
  kernelId: string | undefined,
  log: Log,
  /** Outlive this process (demo --keep): otherwise QEMU goes when vmsight exits. */
  detach = false,
): Promise<{ image: GuestImage; guest: LaunchedGuest }> {
  const image = await ensureGuestImage(kernelId ?? kernelCatalog().default, log);
  log(`booting ${image.release} …`);
  const guest = await launchGuest({
    kernel: image.kernel,
    initrd: image.initrd,
    append: image.append,
    memory: "512M",
    detach,
  });
  return { image, guest };
}

/**
 * Powers a guest off: QEMU quits. QEMU may close the connection before its reply arrives, so
 * a closed connection counts as done; resolves once the connection is closed on our side too.
 */
export async function stopGuest(qmpSocket: string): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    await qmp.execute("quit");
  } catch (error) {
    if (!(error instanceof ProtocolError && error.code === "E_QMP_CLOSED")) throw error;
  } finally {
    await qmp.close();
  }
}
