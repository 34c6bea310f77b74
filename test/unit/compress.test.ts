/**
 * Opportunistic LZ4 (src/fanout/compress.ts) against the qlaster reference's rule and wire
 * format: raw lz4_flex blocks, no frame, no size prefix. The golden blocks below are written
 * out byte by byte and checked by hand (and against the LZ4 C reference, see
 * docs/lz4-choice.md), so a codec that drifts from the block format fails here instead of
 * silently round-tripping with itself.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, ShmFrameError } from '../../src/errors.js';
import {
  COMPRESS_MIN_BYTES,
  compressBlock,
  decompressBlock,
  MAX_EXPANSION,
  maybeCompress,
  PROBE_BYTES,
  PROBE_MIN_SAVING_BP,
  probeSaves,
} from '../../src/fanout/compress.js';
import { prng, testSeed } from '../helpers/prng.js';

const KIB = 1024;
const hex = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
const ascii = (s: string) => new TextEncoder().encode(s);

function randomBytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 256) | 0;
  return out;
}

/** Log-like JSON lines from a small vocabulary: compresses about 2.5x with LZ4, like real text. */
function textLike(n: number, seed: number): Uint8Array {
  const words = 'slot account owner lamports data epoch rent signature program transfer info warn'.split(' ');
  const r = prng(seed);
  const out = new Uint8Array(n);
  let at = 0;
  for (let line = 0; at < n; line++) {
    const msg = Array.from({ length: 4 + Math.floor(r() * 8) }, () => words[Math.floor(r() * words.length)]);
    const bytes = ascii(`{"seq":${line},"slot":${Math.floor(r() * 1e9)},"msg":"${msg.join(' ')}"}\n`);
    out.set(bytes.subarray(0, n - at), at);
    at += bytes.length;
  }
  return out;
}

function assertCorrupt(fn: () => unknown, what: string): ShmFrameError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ShmFrameError, `${what}: expected ShmFrameError, got ${String(caught)}`);
  assert.equal(caught.code, ErrorCode.CORRUPT, what);
  return caught;
}

test('the rule constants are the reference values', () => {
  assert.equal(COMPRESS_MIN_BYTES, 512_000);
  assert.equal(PROBE_BYTES, 8192);
  assert.equal(PROBE_MIN_SAVING_BP, 75);
});

test('the probe must save at least 75 basis points: 8130 of 8192 bytes passes, 8131 does not', () => {
  // 8192 * (10000 - 75) / 10000 = 8130.56
  assert.equal(probeSaves(8192, 8130), true);
  assert.equal(probeSaves(8192, 8131), false);
  assert.equal(probeSaves(8192, 0), true);
});

test('never compresses a payload of 500 KiB - 1 bytes, however compressible', () => {
  assert.equal(maybeCompress(new Uint8Array(COMPRESS_MIN_BYTES - 1)), null);
  assert.equal(maybeCompress(textLike(COMPRESS_MIN_BYTES - 1, 1)), null);
  assert.equal(maybeCompress(new Uint8Array(0)), null);
});

test('compresses 500 KiB of zeros (the reference probe-accepts case) and decodes it back', () => {
  const payload = new Uint8Array(COMPRESS_MIN_BYTES);
  const block = maybeCompress(payload);
  assert.ok(block !== null);
  assert.ok(block.length < payload.length / 100, `block of ${block.length} bytes`);
  assert.deepEqual(decompressBlock(block, payload.length), payload);
});

test('compresses a compressible 500 KiB payload and the decoded bytes are identical', () => {
  const payload = textLike(COMPRESS_MIN_BYTES, 2);
  const block = maybeCompress(payload);
  assert.ok(block !== null);
  assert.ok(block.length < payload.length, `block of ${block.length} bytes`);
  const sut = decompressBlock(block, payload.length);
  assert.equal(sut.length, payload.length);
  assert.ok(Buffer.from(sut).equals(Buffer.from(payload)));
});

test('628 KiB of 0xAB round-trips through a smaller block (the reference roundtrip case)', () => {
  const payload = new Uint8Array(628 * KIB).fill(0xab);
  const block = maybeCompress(payload);
  assert.ok(block !== null && block.length < payload.length);
  assert.deepEqual(decompressBlock(block, payload.length), payload);
});

test('sends a random 500 KiB payload raw', () => {
  const seed = testSeed();
  const payload = randomBytes(COMPRESS_MIN_BYTES, seed);
  assert.equal(maybeCompress(payload), null, `seed ${seed}`);
  // Decided by the probe: random bytes do not shrink, LZ4 only adds its token overhead.
  const probeBlock = compressBlock(payload.subarray(0, PROBE_BYTES));
  assert.ok(!probeSaves(PROBE_BYTES, probeBlock.length), `seed ${seed}: probe block of ${probeBlock.length} bytes`);
});

test('does not compress a payload whose first 8 KiB is random even though the rest compresses (reference rule)', () => {
  // The reference decides from the first 8 KiB only; the rest is never looked at. This payload
  // would shrink by more than 90% as a whole, and is still sent raw: that is the rule.
  const seed = testSeed();
  const payload = new Uint8Array(COMPRESS_MIN_BYTES);
  payload.set(randomBytes(PROBE_BYTES, seed));
  assert.equal(maybeCompress(payload), null, `seed ${seed}`);
  const whole = compressBlock(payload);
  assert.ok(whole.length < payload.length / 10, `seed ${seed}: whole block of ${whole.length} bytes`);
});

test('sends raw a payload whose probe passes but whose whole block is not strictly smaller', () => {
  // Probe: 7192 random bytes + 1000 zeros saves about 12%. The 503,808 random bytes behind it
  // cost LZ4 about 0.4% more than they weigh, which outweighs the probe's saving.
  const seed = testSeed();
  const payload = randomBytes(COMPRESS_MIN_BYTES, seed);
  payload.fill(0, PROBE_BYTES - 1000, PROBE_BYTES);
  const probeBlock = compressBlock(payload.subarray(0, PROBE_BYTES));
  assert.ok(probeSaves(PROBE_BYTES, probeBlock.length), `seed ${seed}: probe block of ${probeBlock.length} bytes`);
  assert.ok(compressBlock(payload).length >= payload.length, `seed ${seed}`);
  assert.equal(maybeCompress(payload), null, `seed ${seed}`);
});

test('rejects a declared raw length one more or one less than the block decodes to', () => {
  const payload = textLike(COMPRESS_MIN_BYTES, 3);
  const block = maybeCompress(payload);
  assert.ok(block !== null);
  const plus = assertCorrupt(() => decompressBlock(block, payload.length + 1), 'declared +1');
  assert.match(plus.message, new RegExp(`${payload.length + 1}`));
  assert.equal(plus.details.rawLength, payload.length + 1);
  assert.equal(plus.details.decodedLength, payload.length);
  const minus = assertCorrupt(() => decompressBlock(block, payload.length - 1), 'declared -1');
  assert.match(minus.message, new RegExp(`${payload.length - 1}`));
  assert.equal(minus.details.rawLength, payload.length - 1);
  assert.equal(minus.details.wireLength, block.length);
});

test('rejects every truncation of a valid block', () => {
  const payload = textLike(64 * KIB, 4);
  const block = compressBlock(payload);
  for (const cut of [0, 1, 2, 3, 5, 17, block.length >> 2, block.length >> 1, block.length - 2, block.length - 1])
    assertCorrupt(() => decompressBlock(block.subarray(0, cut), payload.length), `cut at ${cut} of ${block.length}`);
});

test('rejects garbage bytes with the typed error and never returns another length', () => {
  const seed = testSeed();
  const r = prng(seed);
  let rejected = 0;
  for (let i = 0; i < 2000; i++) {
    const wire = randomBytes(1 + Math.floor(r() * 300), seed + i);
    const rawLength = Math.floor(r() * 4096);
    let out: Uint8Array | undefined;
    try {
      out = decompressBlock(wire, rawLength);
    } catch (err) {
      assert.ok(err instanceof ShmFrameError, `seed ${seed} case ${i}: ${String(err)}`);
      assert.equal(err.code, ErrorCode.CORRUPT, `seed ${seed} case ${i}`);
      rejected++;
      continue;
    }
    // A random string can be a well-formed block; then it must decode to exactly rawLength.
    assert.equal(out.length, rawLength, `seed ${seed} case ${i}`);
  }
  assert.ok(rejected > 1900, `seed ${seed}: only ${rejected} of 2000 rejected`);
});

test('rejects hand-made hostile blocks: far or zero match offsets, runs past the input or the output', () => {
  const hostile: [string, Uint8Array, number][] = [
    // 1 literal 'a', then a match at offset 0xffff: reaches 65,534 bytes before the output starts.
    ['match offset beyond the output', hex('14 61 ffff 00'), 20],
    ['match offset 0', hex('14 61 0000 00'), 20],
    // Literal run of 15 + 255 + 255 + 255 + 16 bytes, but only two bytes follow.
    ['literal run past the input', hex('f0 ff ff ff 10 61 62'), 800],
    // A match whose length runs 64 x 255 bytes past a 100-byte output.
    ['match run past the output', Uint8Array.of(0x1f, 0x61, 0x01, 0x00, ...new Array(64).fill(0xff), 0x00, 0x50), 100],
    ['token with no literals behind it', hex('50'), 5],
    ['empty block', new Uint8Array(0), 0],
    ['64 KiB of 0xff', new Uint8Array(64 * KIB).fill(0xff), 1 << 20],
  ];
  for (const [what, wire, rawLength] of hostile) assertCorrupt(() => decompressBlock(wire, rawLength), what);
});

test('refuses, before decoding, a raw length that is not a u32 or that the block cannot reach', () => {
  const block = hex('50 68656c6c6f');
  for (const rawLength of [-1, 1.5, Number.NaN, 2 ** 32, Number.POSITIVE_INFINITY])
    assertCorrupt(() => decompressBlock(block, rawLength), `rawLength ${rawLength}`);
  const huge = assertCorrupt(() => decompressBlock(hex('10 61'), 0xffff_ffff), 'a 2-byte block declaring 4 GiB');
  assert.match(huge.message, /4294967295/);
  assert.ok(2 * MAX_EXPANSION < 0xffff_ffff);
});

test('golden: a literal-only block decodes to its bytes, and is what the encoder emits', () => {
  // token 0x50 = 5 literals, no match; then "hello". No frame, no length prefix.
  const block = hex('50 68656c6c6f');
  assert.deepEqual(decompressBlock(block, 5), ascii('hello'));
  // Inputs under 13 bytes cannot hold a match (LZ4's end-of-block rules): every encoder emits this.
  assert.deepEqual(compressBlock(ascii('hello')), block);
});

test('golden: blocks with matches decode to known bytes', () => {
  const cases: [string, Uint8Array, Uint8Array][] = [
    // lz4_flex: token 0x3b = 3 literals "abc" + match of 11+4 = 15 at offset 3; token 0x60 = 6 literals.
    ['abc x 8 (lz4_flex)', hex('3b 616263 0300 60 616263616263'), ascii('abc'.repeat(8))],
    // LZ4 C reference 1.9.2, same input: match of 12+4 = 16 at offset 3, then 5 literals.
    ['abc x 8 (LZ4 C)', hex('3c 616263 0300 50 6263616263'), ascii('abc'.repeat(8))],
    // Overlapping match: "a", then 15+5+4 = 24 copies at offset 1, then "HELLO".
    ['run of a', hex('1f 61 0100 05 50 48454c4c4f'), ascii(`${'a'.repeat(25)}HELLO`)],
    // Literal length 15 + 255 + 1 = 271 (one 0xff continuation byte).
    [
      '271 literals',
      Uint8Array.of(0xf0, 0xff, 0x01, ...Array.from({ length: 271 }, (_, i) => (i * 7) & 0xff)),
      Uint8Array.from({ length: 271 }, (_, i) => (i * 7) & 0xff),
    ],
  ];
  for (const [what, block, want] of cases) assert.deepEqual(decompressBlock(block, want.length), want, what);
  // The encoder's own block for the first case round-trips (its exact bytes may change with the codec version).
  const abc = ascii('abc'.repeat(8));
  assert.deepEqual(decompressBlock(compressBlock(abc), abc.length), abc);
});

test('decodes a block that lives in a SharedArrayBuffer into a new, exact-size Uint8Array', () => {
  const payload = textLike(COMPRESS_MIN_BYTES, 5);
  const block = maybeCompress(payload);
  assert.ok(block !== null);
  const ring = new Uint8Array(new SharedArrayBuffer(block.length + 64), 32, block.length);
  ring.set(block);
  const sut = decompressBlock(ring, payload.length);
  assert.equal(Object.getPrototypeOf(sut), Uint8Array.prototype);
  assert.equal(sut.byteOffset, 0);
  assert.equal(sut.buffer.byteLength, payload.length);
  assert.ok(Buffer.from(sut).equals(Buffer.from(payload)));
  ring.fill(0); // the result is a copy, not a view of the ring
  assert.ok(Buffer.from(sut).equals(Buffer.from(payload)));
});

test('compresses a payload that lives in a SharedArrayBuffer', () => {
  const payload = new Uint8Array(new SharedArrayBuffer(COMPRESS_MIN_BYTES + 16), 16, COMPRESS_MIN_BYTES);
  payload.set(textLike(COMPRESS_MIN_BYTES, 6));
  const block = maybeCompress(payload);
  assert.ok(block !== null);
  assert.ok(Buffer.from(decompressBlock(block, payload.length)).equals(Buffer.from(payload)));
});
