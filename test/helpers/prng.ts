export { prng } from '../../src/core/prng.js';

/** A seed from SHMBUS_SEED or the clock, reported so a failure can be replayed. */
export function testSeed(): number {
  const fromEnv = process.env.SHMBUS_SEED;
  return fromEnv !== undefined ? Number(fromEnv) : Date.now() % 2 ** 31;
}

/**
 * Fills `frame` so that it checks itself: bytes 0..3 carry the sequence number (LE), the
 * rest a pattern derived from (seq, index). Frames shorter than 4 bytes carry the pattern only.
 */
export function fillFrame(frame: Uint8Array, seq: number): void {
  const n = frame.length;
  if (n >= 4) {
    frame[0] = seq & 0xff;
    frame[1] = (seq >>> 8) & 0xff;
    frame[2] = (seq >>> 16) & 0xff;
    frame[3] = (seq >>> 24) & 0xff;
  }
  for (let i = n >= 4 ? 4 : 0; i < n; i++) frame[i] = (seq * 31 + i * 7) & 0xff;
}

/** Returns a description of the first problem with `frame` as frame number `seq`, or null. */
export function checkFrame(frame: Uint8Array, seq: number, expectedLength?: number): string | null {
  const n = frame.length;
  if (expectedLength !== undefined && n !== expectedLength)
    return `frame ${seq}: length ${n}, expected ${expectedLength}`;
  if (n >= 4) {
    const got = (frame[0] | (frame[1] << 8) | (frame[2] << 16) | (frame[3] << 24)) >>> 0;
    if (got !== seq >>> 0) return `frame ${seq}: carries sequence ${got}`;
  }
  for (let i = n >= 4 ? 4 : 0; i < n; i++)
    if (frame[i] !== ((seq * 31 + i * 7) & 0xff)) return `frame ${seq}: byte ${i} is ${frame[i]}`;
  return null;
}
