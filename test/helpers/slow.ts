/**
 * How many times slower than a plain run this test run may be: SHMBUS_TEST_SLOW (a number
 * >= 1, default 1). scripts/test-sanitizers.sh sets it: under AddressSanitizer a child
 * process takes 1-3 s to start on a loaded 2-core machine instead of ~0.3 s. Intervals a
 * test sets on purpose and relies on another process keeping up with (an idle timeout that
 * a pinging consumer must beat) scale with it; deadlines on waits are generous anyway, and
 * no test asserts a maximum runtime. It never makes a test unable to fail: what must happen
 * still has to happen, only with more time around it.
 */
const raw = process.env.SHMBUS_TEST_SLOW ?? '1';
const factor = Number(raw);
if (!(Number.isFinite(factor) && factor >= 1))
  throw new RangeError(`SHMBUS_TEST_SLOW must be a number >= 1, got ${JSON.stringify(raw)}`);

export const SLOW = factor;

/** `ms` scaled by SHMBUS_TEST_SLOW (rounded to a whole millisecond). */
export function slow(ms: number): number {
  return Math.round(ms * SLOW);
}
