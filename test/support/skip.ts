/**
 * The one way a test skips because this host lacks something (QEMU, the native reader, ...).
 * `.ci/run` exports VMSIGHT_REQUIRE_ALL=1, which turns every such skip into a failure, so CI
 * proves each path instead of passing around the ones it could not take.
 */
export const REQUIRE_ALL = "VMSIGHT_REQUIRE_ALL";

/** A test's `skip` option: false when `available`; otherwise `why`, or a failure under REQUIRE_ALL. */
export function skipUnless(available: boolean, why: string): false | string {
  if (available) return false;
  if (process.env[REQUIRE_ALL] === "1") {
    throw new Error(`${REQUIRE_ALL}=1 and this host cannot run the test: ${why}`);
  }
  return why;
}
