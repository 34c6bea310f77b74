/**
 * Fuzz target `frame-decode`: the decoders of what a sender puts into a consumer's ring.
 *
 * Half the cases are generic fan-out frames (src/fanout/frame.ts decodeMessage), half Solana
 * wire-v9 frames (src/solana/wire.ts). Inputs: 10 % random bytes, else a valid frame made by
 * the real encoders (FrameEncoder; FrameEncoder with a blob length for blob frames; a plain
 * frame whose payload is a real LZ4 block (compress.ts compressBlock) with FLAG_LZ4 and the raw
 * length set, as the sender's encoder does for payloads >= 500 KiB, plus now and then a real
 * 512,000-byte compressed frame from FrameEncoder itself; encodeAccountUpdate with and without
 * compression, encodeTransactionUpdate, encodeSlotUpdate), then mutated with the header fields
 * named: version, tag, kind, flags, keyLen, groupLen, rawLen, wireLen (generic); executable,
 * flags, raw_len, wire_len, is_vote, payload_len (Solana); limits MAX_KEY_LENGTH,
 * MAX_PAYLOAD_BYTES, the blob reference length and the frame's own length. Frames are placed
 * at a random byteOffset of a larger ArrayBuffer or SharedArrayBuffer half the time.
 *
 * Generic: decodeMessage(frame, maxPayload, resolver) with maxPayload the default or small,
 * and a blob resolver that throws ShmFrameError (80 %) or returns rawLength bytes. Accepted
 * frames: lengths add up, key / group / payload views lie inside the frame, an LZ4 payload has
 * exactly rawLength bytes, a plain frame re-encodes to the same bytes (but the clock stamp).
 * Solana: decodeSolanaFrame, decodeFrame without options, each typed decoder on any tag,
 * peekTag, peekSenderNanos, and a decompress option that throws a TypeError (must come out as
 * SHM_ERR_CORRUPT) or returns the wrong length. Accepted frames re-encode to the same bytes.
 * Also decompressBlock(wire, rawLength) directly with hostile lengths: the result has exactly
 * rawLength bytes, and a length no block of that size can reach is refused before allocating.
 */

import { ErrorCode, ShmFrameError } from '../../src/errors.js';
import { compressBlock, decompressBlock, MAX_EXPANSION } from '../../src/fanout/compress.js';
import { decodeMessage, FrameEncoder } from '../../src/fanout/frame.js';
import {
  BLOB_REF_LENGTH,
  FLAG_BLOB,
  FLAG_LZ4,
  FLAGS_OFFSET,
  FRAME_HEADER_LENGTH,
  FRAME_TAG_OFFSET,
  FRAME_VERSION_OFFSET,
  GROUP_LENGTH_OFFSET,
  KEY_LENGTH_OFFSET,
  KIND_OFFSET,
  MAX_KEY_LENGTH,
  RAW_LENGTH_OFFSET,
  SENDER_NANOS_OFFSET,
  WIRE_LENGTH_OFFSET,
} from '../../src/layout/fanout.js';
import { decodeSolanaFrame } from '../../src/solana/index.js';
import {
  ACCOUNT_EXECUTABLE_OFFSET,
  ACCOUNT_FLAGS_OFFSET,
  ACCOUNT_HEADER_LENGTH,
  ACCOUNT_RAW_LENGTH_OFFSET,
  ACCOUNT_WIRE_LENGTH_OFFSET,
  type DecodedFrame,
  decodeAccountUpdate,
  decodeFrame,
  decodeSlotUpdate,
  decodeTransactionUpdate,
  encodeAccountUpdate,
  encodeSlotUpdate,
  encodeTransactionUpdate,
  MAX_PAYLOAD_BYTES,
  MESSAGE_TAG_OFFSET,
  peekSenderNanos,
  peekTag,
  TAG_ACCOUNT_UPDATE,
  TAG_SLOT_UPDATE,
  TAG_TRANSACTION_UPDATE,
  TRANSACTION_IS_VOTE_OFFSET,
  TRANSACTION_PAYLOAD_LENGTH_OFFSET,
  WIRE_VERSION_OFFSET,
} from '../../src/solana/wire.js';
import { type CaseContext, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import { caseRng, type Field, mutate, placed, type Rng } from './mutate.js';

export const NAME = 'frame-decode';
export const DEFAULT_CASES = 20_000;

const GENERIC_FIELDS: Field[] = [
  { at: FRAME_VERSION_OFFSET, width: 1 },
  { at: FRAME_TAG_OFFSET, width: 1 },
  { at: KIND_OFFSET, width: 1 },
  { at: FLAGS_OFFSET, width: 1 },
  { at: KEY_LENGTH_OFFSET, width: 2 },
  { at: GROUP_LENGTH_OFFSET, width: 2 },
  { at: RAW_LENGTH_OFFSET, width: 4 },
  { at: WIRE_LENGTH_OFFSET, width: 4 },
];
const ACCOUNT_FIELDS: Field[] = [
  { at: WIRE_VERSION_OFFSET, width: 1 },
  { at: MESSAGE_TAG_OFFSET, width: 1 },
  { at: ACCOUNT_EXECUTABLE_OFFSET, width: 1 },
  { at: ACCOUNT_FLAGS_OFFSET, width: 1 },
  { at: ACCOUNT_RAW_LENGTH_OFFSET, width: 4 },
  { at: ACCOUNT_WIRE_LENGTH_OFFSET, width: 4 },
];
const TRANSACTION_FIELDS: Field[] = [
  { at: WIRE_VERSION_OFFSET, width: 1 },
  { at: MESSAGE_TAG_OFFSET, width: 1 },
  { at: TRANSACTION_IS_VOTE_OFFSET, width: 1 },
  { at: TRANSACTION_PAYLOAD_LENGTH_OFFSET, width: 4 },
];

const plainEncoder = new FrameEncoder(false);
const text = new TextEncoder().encode('{"slot":250000000,"level":"info","msg":"account updated"}\n');

/** A payload: random, or text (compressible), of a skewed size. */
function payloadOf(rng: Rng, max = 4096): Uint8Array {
  const n = rng.chance(0.02) ? rng.range(4096, 70_000) : rng.size(max);
  if (rng.chance(0.5)) return rng.bytes(n);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = text[i % text.length];
  return out;
}

function keyOf(rng: Rng): Uint8Array | null {
  const r = rng.float();
  if (r < 0.3) return null;
  return rng.bytes(r < 0.35 ? MAX_KEY_LENGTH : rng.range(1, 40));
}

let bigLz4: Uint8Array | null = null;
/** One real LZ4 frame from the sender's encoder (payload over COMPRESS_MIN_BYTES); built once. */
function bigCompressedFrame(): Uint8Array {
  if (bigLz4 === null) {
    const payload = new Uint8Array(512_000);
    for (let i = 0; i < payload.length; i++) payload[i] = text[i % text.length];
    bigLz4 = new FrameEncoder(true).encode(7, new TextEncoder().encode('big'), null, payload).slice();
  }
  return bigLz4;
}

/** A valid generic frame and the bytes it carries. */
export function genericFrame(rng: Rng): Uint8Array {
  const kind = rng.int(256);
  const key = keyOf(rng);
  const group = keyOf(rng);
  const r = rng.float();
  if (r < 0.005) return bigCompressedFrame();
  if (r < 0.25) {
    // As the sender encodes a blob frame: a 28-byte reference to rawLength bytes elsewhere.
    const ref = rng.bytes(BLOB_REF_LENGTH);
    return plainEncoder.encode(kind, key, group, ref, rng.pick([0, 1, 65536, rng.u32(), 0xffffffff])).slice();
  }
  if (r < 0.45) {
    // As the sender encodes a compressed frame: wire = the LZ4 block, flag and raw length set.
    const payload = payloadOf(rng);
    const block = compressBlock(payload);
    const frame = plainEncoder.encode(kind, key, group, block).slice();
    const dv = new DataView(frame.buffer);
    dv.setUint8(FLAGS_OFFSET, FLAG_LZ4);
    dv.setUint32(RAW_LENGTH_OFFSET, payload.length, true);
    return frame;
  }
  return plainEncoder.encode(kind, key, group, payloadOf(rng)).slice();
}

/** A valid Solana data frame. */
export function solanaFrame(rng: Rng): Uint8Array {
  const senderNanos = rng.u64();
  const r = rng.float();
  if (r < 0.5)
    return encodeAccountUpdate(
      {
        pubkey: rng.bytes(32),
        owner: rng.bytes(32),
        lamports: rng.u64(),
        executable: rng.chance(0.5),
        rentEpoch: rng.u64(),
        slot: rng.u64(),
        writeVersion: rng.u64(),
        data: payloadOf(rng, 1024),
      },
      { senderNanos, compress: rng.chance(0.4) ? compressBlock : undefined },
    );
  if (r < 0.85)
    return encodeTransactionUpdate(
      { slot: rng.u64(), index: rng.u32(), signature: rng.bytes(64), isVote: rng.chance(0.5), payload: payloadOf(rng) },
      { senderNanos },
    );
  return encodeSlotUpdate({ slot: rng.u64() }, { senderNanos });
}

function within(frame: Uint8Array, view: Uint8Array | null): boolean {
  if (view === null) return true;
  return (
    view.buffer === frame.buffer &&
    view.byteOffset >= frame.byteOffset &&
    view.byteOffset + view.length <= frame.byteOffset + frame.length
  );
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function genericCase(ctx: CaseContext, rng: Rng): void {
  let frame: Uint8Array;
  if (rng.chance(0.1)) frame = rng.bytes(rng.size(300));
  else {
    const valid = genericFrame(rng);
    frame = rng.chance(0.1)
      ? valid
      : mutate(rng, valid, {
          fields: GENERIC_FIELDS,
          limits: [MAX_KEY_LENGTH, BLOB_REF_LENGTH, FRAME_HEADER_LENGTH, valid.length, valid.length * MAX_EXPANSION],
          others: [genericFrame(rng)],
          maxLength: valid.length + 4096,
        });
  }
  ctx.input = frame;
  const input = placed(rng, frame);
  const maxPayload = rng.chance(0.8) ? undefined : rng.pick([0, 1, 100, 65536]);
  const resolveBlobs = rng.chance(0.2);
  const resolver = (ref: Uint8Array, rawLength: number): Uint8Array => {
    ctx.check(ref.length === BLOB_REF_LENGTH, 'blob resolver', `given a reference of ${ref.length} bytes`);
    if (!resolveBlobs || rawLength > 1 << 20)
      throw new ShmFrameError(ErrorCode.NOT_FOUND, `blob of ${rawLength} bytes is gone (fuzz resolver)`);
    return new Uint8Array(rawLength);
  };
  const m = ctx.attempt('decodeMessage', () => decodeMessage(input, maxPayload, resolver));
  if (m === undefined) return;
  const dv = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const flags = dv.getUint8(FLAGS_OFFSET);
  const keyLength = dv.getUint16(KEY_LENGTH_OFFSET, true);
  const groupLength = dv.getUint16(GROUP_LENGTH_OFFSET, true);
  const rawLength = dv.getUint32(RAW_LENGTH_OFFSET, true);
  const wireLength = dv.getUint32(WIRE_LENGTH_OFFSET, true);
  ctx.check(
    input.length === FRAME_HEADER_LENGTH + keyLength + groupLength + wireLength,
    'decodeMessage',
    'accepted a frame whose lengths do not add up',
  );
  ctx.check(flags === 0 || flags === FLAG_LZ4 || flags === FLAG_BLOB, 'decodeMessage', `accepted flags ${flags}`);
  ctx.check(rawLength <= (maxPayload ?? 0x7fffffff), 'decodeMessage', 'accepted a payload over maxPayload');
  ctx.check((m.key?.length ?? 0) === keyLength && within(input, m.key), 'decodeMessage', 'key view wrong');
  ctx.check((m.group?.length ?? 0) === groupLength && within(input, m.group), 'decodeMessage', 'group view wrong');
  ctx.check(
    m.payload.length === rawLength,
    'decodeMessage',
    () => `payload ${m.payload.length} B, rawLen ${rawLength}`,
  );
  if (flags === 0) {
    ctx.check(within(input, m.payload) && wireLength === rawLength, 'decodeMessage', 'plain payload view wrong');
    const again = plainEncoder.encode(m.kind, m.key, m.group, m.payload);
    // Every byte but the clock stamp.
    const same =
      again.length === input.length &&
      equalBytes(again.subarray(0, SENDER_NANOS_OFFSET), input.subarray(0, SENDER_NANOS_OFFSET)) &&
      equalBytes(again.subarray(SENDER_NANOS_OFFSET + 8), input.subarray(SENDER_NANOS_OFFSET + 8));
    ctx.check(same, 'decodeMessage', 'an accepted plain frame does not re-encode to its bytes');
  }
  if (flags === FLAG_LZ4)
    ctx.check(
      m.compressed && !within(input, m.payload) && rawLength <= wireLength * MAX_EXPANSION,
      'decodeMessage',
      'LZ4 payload not a fresh buffer of rawLength bytes',
    );
  ctx.attempt('FanoutMessage', () => {
    m.senderNanos;
    m.senderTimeMs;
    ctx.check(m.copy().length === m.payload.length, 'FanoutMessage.copy', 'copy has another length');
  });
}

function reencode(d: DecodedFrame, wire: Uint8Array): Uint8Array {
  const options = { senderNanos: d.senderNanos };
  switch (d.tag) {
    case TAG_ACCOUNT_UPDATE:
      return encodeAccountUpdate(d.update, { ...options, compress: d.compressed ? () => wire : undefined });
    case TAG_TRANSACTION_UPDATE:
      return encodeTransactionUpdate(d.update, options);
    default:
      return encodeSlotUpdate(d.update, options);
  }
}

function checkSolana(ctx: CaseContext, op: string, input: Uint8Array, d: DecodedFrame): void {
  ctx.check([TAG_ACCOUNT_UPDATE, TAG_TRANSACTION_UPDATE, TAG_SLOT_UPDATE].includes(d.tag), op, `tag ${d.tag}`);
  if (d.tag === TAG_ACCOUNT_UPDATE) {
    const dv = new DataView(input.buffer, input.byteOffset, input.byteLength);
    const rawLength = dv.getUint32(ACCOUNT_RAW_LENGTH_OFFSET, true);
    ctx.check(rawLength <= MAX_PAYLOAD_BYTES, op, `accepted raw_len ${rawLength}`);
    ctx.check(d.update.data.length === rawLength, op, () => `data ${d.update.data.length} B, raw_len ${rawLength}`);
    ctx.check(within(input, d.update.pubkey) && within(input, d.update.owner), op, 'key views outside the frame');
    if (!d.compressed) ctx.check(within(input, d.update.data), op, 'plain data view outside the frame');
  }
  if (d.tag === TAG_TRANSACTION_UPDATE) {
    ctx.check(d.update.payload.length <= MAX_PAYLOAD_BYTES, op, 'payload over MAX_PAYLOAD_BYTES');
    ctx.check(within(input, d.update.payload) && within(input, d.update.signature), op, 'views outside the frame');
  }
  const again = ctx.attempt(`${op} re-encode`, () => reencode(d, input.subarray(ACCOUNT_HEADER_LENGTH)));
  if (again !== undefined) ctx.check(equalBytes(again, input), op, 'an accepted frame does not re-encode to its bytes');
}

function solanaCase(ctx: CaseContext, rng: Rng): void {
  let frame: Uint8Array;
  if (rng.chance(0.1)) frame = rng.bytes(rng.size(200));
  else {
    const valid = solanaFrame(rng);
    const fields = valid[MESSAGE_TAG_OFFSET] === TAG_ACCOUNT_UPDATE ? ACCOUNT_FIELDS : TRANSACTION_FIELDS;
    frame = rng.chance(0.1)
      ? valid
      : mutate(rng, valid, {
          fields,
          limits: [MAX_PAYLOAD_BYTES, valid.length, ACCOUNT_HEADER_LENGTH, 18],
          others: [solanaFrame(rng)],
          maxLength: valid.length + 2048,
        });
  }
  ctx.input = frame;
  const input = placed(rng, frame);
  const which = rng.int(8);
  switch (which) {
    case 0:
    case 1:
    case 2: {
      const d = ctx.attempt('decodeSolanaFrame', () => decodeSolanaFrame(input));
      if (d !== undefined) checkSolana(ctx, 'decodeSolanaFrame', input, d);
      return;
    }
    case 3: {
      const d = ctx.attempt('decodeFrame', () => decodeFrame(input));
      if (d !== undefined) {
        ctx.check(d.tag !== TAG_ACCOUNT_UPDATE || !d.compressed, 'decodeFrame', 'inflated without a decompressor');
        checkSolana(ctx, 'decodeFrame', input, d);
      }
      return;
    }
    case 4: {
      const decoder = rng.pick([decodeAccountUpdate, decodeTransactionUpdate, decodeSlotUpdate]);
      const d = ctx.attempt('typed decoder', () => decoder(input, { decompress: decompressBlock }));
      if (d !== undefined) checkSolana(ctx, 'typed decoder', input, d);
      return;
    }
    case 5: {
      // A decompressor that fails its own way: a TypeError must come out as SHM_ERR_CORRUPT.
      const bad = rng.chance(0.5);
      ctx.attempt('decodeAccountUpdate(bad decompress)', () =>
        decodeAccountUpdate(input, {
          decompress: (_wire, n) => {
            if (bad) throw new TypeError('fuzz decompressor failure');
            return new Uint8Array(n + 1);
          },
        }),
      );
      return;
    }
    case 6:
      ctx.attempt('peekTag', () => peekTag(input));
      ctx.attempt('peekSenderNanos', () => peekSenderNanos(input));
      return;
    default: {
      // The block decoder with hostile lengths.
      const rawLength = rng.pick([
        0,
        1,
        input.length,
        input.length * MAX_EXPANSION,
        input.length * MAX_EXPANSION + 1,
        0xffffffff,
        rng.u32() % 1_000_000,
        -1,
        0.5,
        2 ** 40,
      ]);
      const out = ctx.attempt('decompressBlock', () => decompressBlock(input, rawLength));
      if (out !== undefined)
        ctx.check(out.length === rawLength && out.buffer !== input.buffer, 'decompressBlock', () => {
          return `returned ${out.length} bytes for rawLength ${rawLength}`;
        });
    }
  }
}

export function runCase(ctx: CaseContext, rng: Rng): void {
  if (rng.chance(0.5)) genericCase(ctx, rng);
  else solanaCase(ctx, rng);
}

export function run(options: RunOptions): TargetResult {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  for (const index of sut.indices()) {
    const ctx = sut.begin(index);
    runCase(ctx, caseRng(options.seed, index));
    sut.end(ctx);
  }
  options.watchdog?.idle();
  return resultOf(sut);
}
