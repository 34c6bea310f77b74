/**
 * Opportunistic LZ4 compression of large fan-out payloads, in the format the Rust reference
 * (qlaster, lz4_flex) sends: one raw LZ4 BLOCK, no frame header, no size prefix. The raw
 * length travels separately, in the frame header (layout/fanout.ts RAW_LENGTH_OFFSET).
 *
 * ```ts
 * import { decompressBlock, maybeCompress } from './compress.js';
 * const payload = new TextEncoder().encode('{"slot":1,"level":"info"}\n'.repeat(25_000)); // 650,000 bytes
 * const block = maybeCompress(payload);                       // a much smaller Uint8Array, or null = send raw
 * const back = block === null ? payload : decompressBlock(block, payload.length); // equal to payload
 * ```
 *
 * The rule (the reference's; keep it identical so both senders make the same choice):
 * ```
 *   payload.length < COMPRESS_MIN_BYTES (512,000) ............................ raw
 *   probe = payload[0, PROBE_BYTES (8,192)); p = lz4(probe)
 *   p.length * 10,000 > probe.length * (10,000 - PROBE_MIN_SAVING_BP (75)) .... raw  (saves < 0.75%)
 *   block = lz4(payload); block.length >= payload.length ..................... raw
 *   otherwise ................................................................ block
 * ```
 * Only the probe decides whether to try: a payload whose first 8 KiB does not compress is sent
 * raw even when the rest would. That is the reference's rule (it bounds the cost of trying on
 * incompressible data to one 8 KiB compression), not an oversight.
 *
 * Codec: lz4-napi, a prebuilt N-API addon around lz4_flex, the same Rust crate as the
 * reference (choice and measurements: docs/lz4-choice.md). Its block API adds a 4-byte
 * little-endian length prefix, which this module strips on compress and writes on decompress;
 * the prefix never reaches the wire. The addon is loaded on first use, so importing shmbus
 * does not load it; if it cannot be loaded both functions throw ShmSystemError
 * (SHM_ERR_NATIVE_UNAVAILABLE).
 *
 * Cost and concurrency: every function is synchronous and blocks the calling thread while it
 * runs (compress roughly 200 MB/s, decompress roughly 1 GB/s on text; the 8 KiB probe about
 * 40 us). Each allocates its result; decompressBlock also allocates a private copy of the
 * block. No shared state: any thread of any process may call them concurrently.
 *
 * Hostile input: decompressBlock copies the block out of the (possibly shared) ring before
 * decoding, so a writer that keeps changing the bytes cannot race the decoder. The decoder is
 * bounds-checked safe Rust writing into an output of exactly `rawLength` bytes; a block that
 * is malformed, or decodes to any other length, throws ShmFrameError (SHM_ERR_CORRUPT), and
 * a declared length no block of that size can reach is refused before anything is allocated.
 */

import { ErrorCode, ShmFrameError, ShmSystemError } from '../errors.js';
import { packageRequire } from '../native/package-root.js';

/** Payloads shorter than this (500 KiB) are always sent raw. */
export const COMPRESS_MIN_BYTES = 512_000;
/** Length of the leading probe compressed to decide whether to try the whole payload. */
export const PROBE_BYTES = 8192;
/** The probe must save at least this many basis points (0.75%) of its length. */
export const PROBE_MIN_SAVING_BP = 75;
/**
 * No LZ4 block decodes to more than 255 bytes per input byte (a 0xff length byte adds 255
 * output bytes, every other construct less), so `rawLength > wire.length * MAX_EXPANSION`
 * cannot be an honest block.
 */
export const MAX_EXPANSION = 255;
/** The largest raw length a block may declare: the codec's length prefix is a u32. */
export const MAX_RAW_LENGTH = 0xffff_ffff;

/** lz4-napi's length prefix (u32 little-endian) in front of the block; not part of the wire format. */
const PREFIX_LENGTH = 4;
const BP_SCALE = 10_000;

type Lz4Napi = typeof import('lz4-napi');
let codec: Lz4Napi | undefined;

function lz4(): Lz4Napi {
  if (codec !== undefined) return codec;
  try {
    codec = packageRequire()('lz4-napi') as Lz4Napi;
  } catch (err) {
    const tuple = `${process.platform}-${process.arch} node ${process.versions.node}`;
    throw new ShmSystemError(
      ErrorCode.NATIVE_UNAVAILABLE,
      `LZ4 codec (lz4-napi) could not be loaded for ${tuple}; reinstall without --omit=optional, ` +
        `or send with compression off: ${(err as Error)?.message ?? String(err)}`,
      { cause: err },
    );
  }
  return codec;
}

/** A Buffer over the same bytes (no copy); works for views of SharedArrayBuffers too. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Compresses `input` into one raw LZ4 block (no prefix), whatever its size; the block may be
 * larger than the input. Returns a view of a new buffer. Blocks; allocates.
 */
export function compressBlock(input: Uint8Array): Uint8Array {
  const prefixed = lz4().compressSync(asBuffer(input));
  return new Uint8Array(prefixed.buffer, prefixed.byteOffset + PREFIX_LENGTH, prefixed.length - PREFIX_LENGTH);
}

/** True if a probe of `probeLength` bytes that compressed to `blockLength` bytes saved at least PROBE_MIN_SAVING_BP. */
export function probeSaves(probeLength: number, blockLength: number): boolean {
  return blockLength * BP_SCALE <= probeLength * (BP_SCALE - PROBE_MIN_SAVING_BP);
}

/**
 * Applies the rule in the module doc: returns the raw LZ4 block to send in place of
 * `payload`, or null to send `payload` raw. Never throws for any payload (except
 * NATIVE_UNAVAILABLE, see the module doc). Blocks; allocates the probe's block and, when the
 * probe passes, the whole block.
 */
export function maybeCompress(payload: Uint8Array): Uint8Array | null {
  if (payload.length < COMPRESS_MIN_BYTES) return null;
  const probe = payload.subarray(0, PROBE_BYTES);
  if (!probeSaves(probe.length, compressBlock(probe).length)) return null;
  const block = compressBlock(payload);
  return block.length < payload.length ? block : null;
}

function corrupt(message: string, details: Record<string, unknown>, cause?: unknown): ShmFrameError {
  return new ShmFrameError(ErrorCode.CORRUPT, `LZ4 block: ${message}`, { details, cause });
}

/**
 * Decodes one raw LZ4 block that declares `rawLength` decoded bytes. Returns a new
 * Uint8Array of exactly `rawLength` bytes (not a Buffer, not a view of `wire`). Throws
 * ShmFrameError (SHM_ERR_CORRUPT, with `wireLength`, `rawLength` and, where known,
 * `decodedLength` in `details`) if the block is malformed, decodes to another length, or
 * declares a length it cannot reach. Blocks; allocates a copy of `wire` and the result.
 */
export function decompressBlock(wire: Uint8Array, rawLength: number): Uint8Array {
  const wireLength = wire.length;
  if (!Number.isSafeInteger(rawLength) || rawLength < 0 || rawLength > MAX_RAW_LENGTH)
    throw corrupt(`declared raw length ${rawLength} is not an integer in [0, ${MAX_RAW_LENGTH}]`, {
      wireLength,
      rawLength,
    });
  // Refused before allocating: a hostile header must not make us allocate 4 GiB for a 10-byte block.
  if (rawLength > wireLength * MAX_EXPANSION)
    throw corrupt(
      `${wireLength} bytes cannot decode to the declared ${rawLength} bytes (at most ${MAX_EXPANSION}x expansion)`,
      { wireLength, rawLength },
    );
  const prefixed = Buffer.allocUnsafe(PREFIX_LENGTH + wireLength);
  prefixed.writeUInt32LE(rawLength, 0);
  prefixed.set(wire, PREFIX_LENGTH);
  const codec = lz4();
  let out: Buffer;
  try {
    // The codec decodes into a buffer of exactly rawLength bytes: a block that would write
    // more fails here ("output too small"); one that writes less returns short (checked below).
    out = codec.uncompressSync(prefixed);
  } catch (err) {
    throw corrupt(
      `malformed ${wireLength}-byte block (declared raw length ${rawLength}): ${(err as Error)?.message ?? String(err)}`,
      { wireLength, rawLength },
      err,
    );
  }
  if (out.length !== rawLength)
    throw corrupt(`${wireLength}-byte block decodes to ${out.length} bytes, the header declares ${rawLength}`, {
      wireLength,
      rawLength,
      decodedLength: out.length,
    });
  // The addon returns a Buffer over its own exact-size memory; copy only if that ever changes.
  if (out.byteOffset === 0 && out.buffer.byteLength === rawLength) return new Uint8Array(out.buffer, 0, rawLength);
  return new Uint8Array(out);
}
