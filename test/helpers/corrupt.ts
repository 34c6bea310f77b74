/**
 * Byte surgery on segment files for bad-input tests. Offsets always come from the layout
 * modules (src/layout/*.ts); these helpers only write little-endian integers at them with
 * plain file I/O (pwrite), the way a buggy or hostile peer in another process would.
 *
 * ```ts
 * const g = abandonedChannel(name, { capacity: 1024 });          // file stays, nobody attached
 * patchU32(Channel.pathOf(name), CLASS_COUNT_OFFSET, 2);
 * Channel.open(name);                                            // throws SHM_ERR_CORRUPT
 * ```
 * On tmpfs a write through the file is seen at once by every mapping of it, so the helpers
 * also corrupt segments that live ends have mapped.
 */
import { closeSync, existsSync, openSync, readSync, truncateSync, writeSync } from 'node:fs';
import { Channel, type ChannelCreateOptions } from '../../src/channel/channel.js';
import type { ChannelGeometry } from '../../src/layout/channel.js';

/** Writes `bytes` at byte `offset` of the file at `path` (the file keeps its length unless written past it). */
export function patchBytes(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  try {
    const written = writeSync(fd, bytes, 0, bytes.length, offset);
    if (written !== bytes.length) throw new Error(`short write at ${offset} of ${path}: ${written}/${bytes.length}`);
  } finally {
    closeSync(fd);
  }
}

/** Writes `value` as a little-endian u32 (taken modulo 2**32). */
export function patchU32(path: string, offset: number, value: number): void {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  patchBytes(path, offset, b);
}

/** Writes `value` as a little-endian i32. */
export function patchI32(path: string, offset: number, value: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value, 0);
  patchBytes(path, offset, b);
}

/** Writes `value` (a safe integer >= 0) as a little-endian u64. */
export function patchU64(path: string, offset: number, value: number): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value), 0);
  patchBytes(path, offset, b);
}

/** Reads the little-endian u32 at `offset`. */
export function readU32(path: string, offset: number): number {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    if (readSync(fd, b, 0, 4, offset) !== 4) throw new Error(`short read at ${offset} of ${path}`);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

/** Cuts (or extends with zeros) the file at `path` to `length` bytes. */
export function truncateFile(path: string, length: number): void {
  truncateSync(path, length);
}

/**
 * Creates channel `name` and closes its producer before any consumer attached: the file
 * stays, valid and mapped by no process. Returns the channel's geometry.
 */
export function abandonedChannel(name: string, options: ChannelCreateOptions = {}): ChannelGeometry {
  const tx = Channel.create(name, options);
  const geometry = tx.geometry;
  tx.close();
  const path = Channel.pathOf(name, options);
  if (!existsSync(path)) throw new Error(`abandonedChannel: closing the producer removed ${path}`);
  return geometry;
}
