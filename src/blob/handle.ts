/**
 * A blob handle: 24 bytes that name one entry of a blob store (layout/blob.ts). It fits any
 * ring frame; `BlobStore.resolve()` turns it back into the bytes, or null once they are gone.
 *
 * ```ts
 * const bytes = handle.toBytes();             // exactly 24 bytes
 * const again = BlobHandle.fromBytes(bytes);  // equal fields
 * ```
 */
import { ErrorCode, ShmArgumentError } from '../errors.js';
import { HANDLE_LENGTH } from '../layout/blob.js';

const TWO_32 = 0x1_0000_0000;

export class BlobHandle {
  constructor(
    /** Table index of the chunk. */
    readonly chunk: number,
    /** Offset of the entry in the chunk's data area. */
    readonly offset: number,
    /** Payload bytes. */
    readonly size: number,
    /** Generation of the chunk file (never reused). */
    readonly generation: number,
    /** Date.now() when the bytes were appended (TTLs count from here). */
    readonly timestamp: number,
  ) {}

  /** The 24-byte form (little-endian: chunk, offset, size, generation u32; timestamp u64). */
  toBytes(): Uint8Array {
    const out = new Uint8Array(HANDLE_LENGTH);
    this.writeTo(out, 0);
    return out;
  }

  /** Writes the 24-byte form into `target` at `at` (no allocation). */
  writeTo(target: Uint8Array, at: number): void {
    const dv = new DataView(target.buffer, target.byteOffset + at, HANDLE_LENGTH);
    dv.setUint32(0, this.chunk, true);
    dv.setUint32(4, this.offset, true);
    dv.setUint32(8, this.size, true);
    dv.setUint32(12, this.generation, true);
    dv.setUint32(16, this.timestamp % TWO_32, true);
    dv.setUint32(20, Math.floor(this.timestamp / TWO_32), true);
  }

  /** Reads a handle from exactly 24 bytes. SHM_ERR_INVALID_ARGUMENT for any other length. */
  static fromBytes(bytes: Uint8Array): BlobHandle {
    if (!(bytes instanceof Uint8Array) || bytes.length !== HANDLE_LENGTH)
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `a blob handle is exactly ${HANDLE_LENGTH} bytes, got ${bytes instanceof Uint8Array ? bytes.length : typeof bytes}`,
      );
    return BlobHandle.readFrom(bytes, 0);
  }

  /** Reads the 24 bytes at `at` of `source` (the caller checked the length). */
  static readFrom(source: Uint8Array, at: number): BlobHandle {
    const dv = new DataView(source.buffer, source.byteOffset + at, HANDLE_LENGTH);
    return new BlobHandle(
      dv.getUint32(0, true),
      dv.getUint32(4, true),
      dv.getUint32(8, true),
      dv.getUint32(12, true),
      dv.getUint32(20, true) * TWO_32 + dv.getUint32(16, true),
    );
  }
}
