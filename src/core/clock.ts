/**
 * Wall-clock timestamps in unix nanoseconds as two u32 halves, without BigInt (the fan-out
 * sender stamps every frame; the consumer measures end-to-end latency from the stamp).
 *
 * ```ts
 * const dv = new DataView(new ArrayBuffer(8));
 * writeNanos(dv, 0);                 // now, unix ns, little-endian u64
 * const ns = nanosSince(dv, 0);      // elapsed ns (a small number, exact)
 * ```
 * The clock is performance.timeOrigin + performance.now(): CLOCK_MONOTONIC anchored once to
 * the wall clock at process start, so two processes on one host agree to about a
 * microsecond and a stamp never goes backwards within a process. Resolution is limited by
 * the double that holds the wall time in ms (~0.25 us). Allocates nothing.
 */

const TWO_32 = 0x1_0000_0000;
const originMs = performance.timeOrigin;
/** Whole seconds of the origin, and the rest in ns (exact in a double). */
const originSeconds = Math.floor(originMs / 1000);
const originRestNs = (originMs - originSeconds * 1000) * 1e6;

let lastHi = 0;
let lastLo = 0;

/** Now as unix nanoseconds: sets lastHi/lastLo (the u64's halves). */
function now(): void {
  const sinceOriginNs = originRestNs + performance.now() * 1e6;
  const extraSeconds = Math.floor(sinceOriginNs / 1e9);
  const restNs = Math.floor(sinceOriginNs - extraSeconds * 1e9);
  const seconds = originSeconds + extraSeconds;
  // seconds * 1e9 + restNs split into 32-bit halves with every intermediate exact in a double.
  const sH = Math.floor(seconds / 65536);
  const sL = seconds - sH * 65536;
  const a = sL * 1e9 + restNs; // < 2^46
  const b = sH * 1e9; // < 2^45
  const bHi = Math.floor(b / 65536);
  const c = (b - bHi * 65536) * 65536 + a; // < 2^47
  const cHi = Math.floor(c / TWO_32);
  lastHi = bHi + cHi;
  lastLo = c - cHi * TWO_32;
}

/** Writes now (unix ns) as a little-endian u64 at `offset`. */
export function writeNanos(dv: DataView, offset: number): void {
  now();
  dv.setUint32(offset, lastLo, true);
  dv.setUint32(offset + 4, lastHi, true);
}

/** Nanoseconds from the u64 stamp at `offset` to now (negative if the stamp is in the future). */
export function nanosSince(dv: DataView, offset: number): number {
  now();
  const lo = dv.getUint32(offset, true);
  const hi = dv.getUint32(offset + 4, true);
  return (lastHi - hi) * TWO_32 + (lastLo - lo);
}

/** Now as unix nanoseconds (a BigInt: for APIs and tests, not hot paths). */
export function nowNanos(): bigint {
  now();
  return (BigInt(lastHi) << 32n) | BigInt(lastLo);
}
