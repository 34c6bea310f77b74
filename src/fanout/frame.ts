/**
 * The generic fan-out message frame (layout: src/layout/fanout.ts): encoded once per
 * message by the sender, decoded by each consumer straight from its ring.
 *
 * ```ts
 * const enc = new FrameEncoder();
 * const frame = enc.encode(3, keyBytes, null, payload);   // a view of enc's scratch buffer
 * const m = decodeMessage(frame);                          // m.payload is a view into frame
 * ```
 * encode() reuses one scratch buffer (no allocation once it is big enough; the frame is valid
 * until the next encode). decodeMessage() allocates the message object; its key, group and
 * payload are views into the frame unless the payload was LZ4-compressed (then a new
 * buffer). Malformed frames throw ShmFrameError (SHM_ERR_CORRUPT, _TRUNCATED,
 * _VERSION_MISMATCH, _TOO_LARGE); nothing else is thrown for any input.
 */

import { writeNanos } from '../core/clock.js';
import { ErrorCode, ShmFrameError } from '../errors.js';
import {
  BLOB_REF_LENGTH,
  FLAG_BLOB,
  FLAG_LZ4,
  FLAGS_OFFSET,
  FRAME_HEADER_LENGTH,
  FRAME_TAG_OFFSET,
  FRAME_VERSION,
  FRAME_VERSION_OFFSET,
  GROUP_LENGTH_OFFSET,
  KEY_LENGTH_OFFSET,
  KIND_OFFSET,
  MAX_KEY_LENGTH,
  RAW_LENGTH_OFFSET,
  SENDER_NANOS_OFFSET,
  TAG_MESSAGE,
  WIRE_LENGTH_OFFSET,
} from '../layout/fanout.js';
import { COMPRESS_MIN_BYTES, decompressBlock, maybeCompress } from './compress.js';

const TWO_32 = 0x1_0000_0000;

/** One received message. `key`, `group` and `payload` are views valid until the next receive on the consumer. */
export class FanoutMessage {
  constructor(
    readonly kind: number,
    readonly key: Uint8Array | null,
    readonly group: Uint8Array | null,
    readonly payload: Uint8Array,
    /** High and low 32 bits of the sender's unix-nanosecond stamp. */
    private readonly nanosHi: number,
    private readonly nanosLo: number,
    /** True if the payload travelled LZ4-compressed (it is a decompressed copy then). */
    readonly compressed: boolean,
  ) {}

  /** When the sender stamped the frame (unix ns). */
  get senderNanos(): bigint {
    return (BigInt(this.nanosHi) << 32n) | BigInt(this.nanosLo);
  }

  /** The sender stamp as a (rounded) number of unix ms. */
  get senderTimeMs(): number {
    return (this.nanosHi * TWO_32 + this.nanosLo) / 1e6;
  }

  /** A copy of the payload that outlives the next receive. */
  copy(): Uint8Array {
    return this.payload.slice();
  }
}

/** Encodes generic message frames into one reusable scratch buffer. One thread. */
export class FrameEncoder {
  private scratch = new Uint8Array(4096);
  private dv = new DataView(this.scratch.buffer);
  /** Frames sent LZ4-compressed, and their raw and wire bytes (for the compression ratio). */
  compressedFrames = 0;
  compressedRawBytes = 0;
  compressedWireBytes = 0;

  constructor(private readonly compress = true) {}

  /**
   * Encodes and stamps one frame; returns a view valid until the next encode(). With
   * `blobLength` >= 0 it is a blob frame: `payload` is the reference (BLOB_REF_LENGTH bytes,
   * the recipient index last, for the caller to patch per consumer) to `blobLength` bytes.
   */
  encode(
    kind: number,
    key: Uint8Array | null,
    group: Uint8Array | null,
    payload: Uint8Array,
    blobLength = -1,
  ): Uint8Array {
    const keyLength = key?.length ?? 0;
    const groupLength = group?.length ?? 0;
    let wire = payload;
    let flags = blobLength >= 0 ? FLAG_BLOB : 0;
    if (flags === 0 && this.compress && payload.length >= COMPRESS_MIN_BYTES) {
      const block = maybeCompress(payload);
      if (block !== null) {
        wire = block;
        flags = FLAG_LZ4;
        this.compressedFrames++;
        this.compressedRawBytes += payload.length;
        this.compressedWireBytes += block.length;
      }
    }
    const total = FRAME_HEADER_LENGTH + keyLength + groupLength + wire.length;
    if (total > this.scratch.length) {
      let size = this.scratch.length;
      while (size < total) size *= 2;
      this.scratch = new Uint8Array(size);
      this.dv = new DataView(this.scratch.buffer);
    }
    const dv = this.dv;
    dv.setUint8(FRAME_VERSION_OFFSET, FRAME_VERSION);
    dv.setUint8(FRAME_TAG_OFFSET, TAG_MESSAGE);
    writeNanos(dv, SENDER_NANOS_OFFSET);
    dv.setUint8(KIND_OFFSET, kind);
    dv.setUint8(FLAGS_OFFSET, flags);
    dv.setUint16(KEY_LENGTH_OFFSET, keyLength, true);
    dv.setUint16(GROUP_LENGTH_OFFSET, groupLength, true);
    dv.setUint32(RAW_LENGTH_OFFSET, blobLength >= 0 ? blobLength : payload.length, true);
    dv.setUint32(WIRE_LENGTH_OFFSET, wire.length, true);
    let at = FRAME_HEADER_LENGTH;
    if (key !== null && keyLength > 0) {
      this.scratch.set(key, at);
      at += keyLength;
    }
    if (group !== null && groupLength > 0) {
      this.scratch.set(group, at);
      at += groupLength;
    }
    this.scratch.set(wire, at);
    return this.scratch.subarray(0, total);
  }
}

function bad(code: (typeof ErrorCode)[keyof typeof ErrorCode], message: string, details = {}): ShmFrameError {
  return new ShmFrameError(code, `fan-out frame: ${message}`, { details });
}

/**
 * Turns a blob frame's reference (BLOB_REF_LENGTH bytes) into the blob's bytes (`rawLength` of
 * them); throws a ShmError when the blob is gone.
 */
export type BlobResolver = (ref: Uint8Array, rawLength: number) => Uint8Array;

/**
 * Decodes a generic message frame (see the module doc for what is a view and what throws).
 * Blob frames need `blobs` (the consumer passes one bound to the sender's store).
 */
export function decodeMessage(frame: Uint8Array, maxPayload = 0x7fffffff, blobs?: BlobResolver): FanoutMessage {
  if (frame.length < FRAME_HEADER_LENGTH)
    throw bad(ErrorCode.TRUNCATED, `${frame.length} bytes, shorter than the ${FRAME_HEADER_LENGTH}-byte header`);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const version = dv.getUint8(FRAME_VERSION_OFFSET);
  if (version !== FRAME_VERSION)
    throw bad(ErrorCode.VERSION_MISMATCH, `version ${version}, expected ${FRAME_VERSION}`, {
      found: version,
      expected: FRAME_VERSION,
    });
  const tag = dv.getUint8(FRAME_TAG_OFFSET);
  if (tag !== TAG_MESSAGE)
    throw bad(ErrorCode.CORRUPT, `tag ${tag}, expected ${TAG_MESSAGE}`, { found: tag, expected: TAG_MESSAGE });
  const flags = dv.getUint8(FLAGS_OFFSET);
  if ((flags & ~(FLAG_LZ4 | FLAG_BLOB)) !== 0 || flags === (FLAG_LZ4 | FLAG_BLOB))
    throw bad(ErrorCode.CORRUPT, `unknown flag bits 0x${flags.toString(16)}`);
  const keyLength = dv.getUint16(KEY_LENGTH_OFFSET, true);
  const groupLength = dv.getUint16(GROUP_LENGTH_OFFSET, true);
  if (keyLength > MAX_KEY_LENGTH || groupLength > MAX_KEY_LENGTH)
    throw bad(ErrorCode.CORRUPT, `key ${keyLength} / group ${groupLength} bytes (at most ${MAX_KEY_LENGTH})`);
  const rawLength = dv.getUint32(RAW_LENGTH_OFFSET, true);
  const wireLength = dv.getUint32(WIRE_LENGTH_OFFSET, true);
  if (rawLength > maxPayload)
    throw bad(ErrorCode.TOO_LARGE, `payload of ${rawLength} bytes (at most ${maxPayload})`, {
      rawLength,
      maxPayload,
    });
  const expected = FRAME_HEADER_LENGTH + keyLength + groupLength + wireLength;
  if (frame.length !== expected)
    throw bad(ErrorCode.CORRUPT, `length ${frame.length}, header says ${expected}`, {
      length: frame.length,
      expected,
    });
  const keyAt = FRAME_HEADER_LENGTH;
  const groupAt = keyAt + keyLength;
  const payloadAt = groupAt + groupLength;
  const wire = frame.subarray(payloadAt, payloadAt + wireLength);
  let payload = wire;
  const compressed = (flags & FLAG_LZ4) !== 0;
  if (compressed) payload = decompressBlock(wire, rawLength);
  else if ((flags & FLAG_BLOB) !== 0) {
    if (wireLength !== BLOB_REF_LENGTH)
      throw bad(ErrorCode.CORRUPT, `blob reference of ${wireLength} bytes (expected ${BLOB_REF_LENGTH})`);
    if (blobs === undefined) throw bad(ErrorCode.CORRUPT, 'a blob frame, but this decoder has no blob store');
    payload = blobs(wire, rawLength);
  } else if (wireLength !== rawLength)
    throw bad(ErrorCode.CORRUPT, `uncompressed payload of ${wireLength} bytes declares ${rawLength}`);
  return new FanoutMessage(
    dv.getUint8(KIND_OFFSET),
    keyLength === 0 ? null : frame.subarray(keyAt, groupAt),
    groupLength === 0 ? null : frame.subarray(groupAt, payloadAt),
    payload,
    dv.getUint32(SENDER_NANOS_OFFSET + 4, true),
    dv.getUint32(SENDER_NANOS_OFFSET, true),
    compressed,
  );
}
