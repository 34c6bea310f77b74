/**
 * The descriptor codec shared by sessions and the hub (layout: src/layout/session.ts): one
 * ring record per message, naming a slot (and its generation) or carrying the payload inline.
 *
 * ```ts
 * writeDescriptor(writer, views, { channel: 1, flags: 0, slot: 3, generation: 7, length: 4096 }, null);
 * const n = reader.poll();
 * const d = takeDescriptor(reader, views, n);   // consumed: the head is published at once
 * ```
 * Allocates nothing on write; takeDescriptor allocates the result (and copies inline bytes).
 */
import type { RingArea, RingReader, RingWriter } from '../core/spsc-ring.js';
import { ErrorCode, ShmArgumentError, ShmFrameError } from '../errors.js';
import { RECORD_HEADER_LENGTH, TAIL_POSITION_OFFSET, TYPE_DATA } from '../layout/channel.js';
import {
  DESC_CHANNEL_OFFSET,
  DESC_FLAGS_OFFSET,
  DESC_GENERATION_OFFSET,
  DESC_HEADER_LENGTH,
  DESC_LENGTH_OFFSET,
  DESC_SLOT_OFFSET,
  INLINE_SLOT,
} from '../layout/session.js';

export interface DescriptorViews {
  readonly u8: Uint8Array;
  readonly dv: DataView;
}

export interface Descriptor {
  channel: number;
  flags: number;
  /** The slot reference, or INLINE_SLOT. */
  slot: number;
  generation: number;
  length: number;
}

/** Writes and commits one descriptor (with `inline` bytes after it); false when the ring has no room now. */
/** A descriptor's channel or flags word from a send option: undefined is 0, else a u32. */
export function checkU32(v: number | undefined, what: string): number {
  const x = v ?? 0;
  if (!Number.isInteger(x) || x < 0 || x > 0xffffffff)
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${what} must be a u32, got ${v}`);
  return x;
}

export function writeDescriptor(
  writer: RingWriter,
  views: DescriptorViews,
  d: Descriptor,
  inline: Uint8Array | null,
): boolean {
  const record = DESC_HEADER_LENGTH + (inline?.length ?? 0);
  const at = writer.claim(record);
  if (at < 0) return false;
  const dv = views.dv;
  dv.setUint32(at + DESC_CHANNEL_OFFSET, d.channel, true);
  dv.setUint32(at + DESC_FLAGS_OFFSET, d.flags, true);
  dv.setUint32(at + DESC_SLOT_OFFSET, d.slot, true);
  dv.setUint32(at + DESC_GENERATION_OFFSET, d.generation, true);
  dv.setUint32(at + DESC_LENGTH_OFFSET, d.length, true);
  if (inline !== null && inline.length > 0) views.u8.set(inline, at + DESC_HEADER_LENGTH);
  writer.commit(record);
  return true;
}

/**
 * The slot words named by the descriptors of ring `area` from position `from` to its published
 * tail (one ring, as sessions and hubs have). Shared memory may be hostile: the walk stops at
 * the first position or record that cannot be valid, and never goes round more than once.
 */
export function slotsNamedFrom(
  views: { readonly i32: Int32Array; readonly dv: DataView },
  area: RingArea,
  from: number,
): Set<number> {
  const { i32, dv } = views;
  const length = area.g.ringLengths[0];
  const base = area.g.dataIndices[0];
  const tail = Atomics.load(i32, (area.blocksBase + TAIL_POSITION_OFFSET) >> 2);
  const named = new Set<number>();
  let pos = from;
  for (let guard = 0; pos !== tail && guard < length; guard++) {
    if (!Number.isInteger(pos) || pos < 0 || pos >= 2 * length || pos % 8 !== 0) break;
    const offset = pos >= length ? pos - length : pos;
    const at = base + offset;
    const recordLength = i32[at >> 2];
    if (recordLength < RECORD_HEADER_LENGTH || recordLength > length - offset) break;
    if (i32[(at >> 2) + 1] === TYPE_DATA && recordLength >= RECORD_HEADER_LENGTH + DESC_HEADER_LENGTH) {
      const slot = dv.getUint32(at + RECORD_HEADER_LENGTH + DESC_SLOT_OFFSET, true);
      if (slot !== INLINE_SLOT) named.add(slot);
    }
    pos += (recordLength + 7) & ~7;
    if (pos >= 2 * length) pos -= 2 * length;
  }
  return named;
}

/**
 * Takes the record `reader.poll()` just returned (`n` bytes) apart and consumes it: the head
 * is published at once, so a receiver that crashes and is replaced neither sees it again nor
 * leaves the sender unsure which slots it took. Returns the fields and, for an inline
 * descriptor, a copy of its bytes. Throws SHM_ERR_CORRUPT for a record too short to be a
 * descriptor or an inline one whose length does not match (consumed all the same).
 */
export function takeDescriptor(
  reader: RingReader,
  views: DescriptorViews,
  n: number,
): Descriptor & { inline: Uint8Array | null } {
  const at = reader.frameIndex;
  const dv = views.dv;
  const short = n < DESC_HEADER_LENGTH;
  const d = short
    ? null
    : {
        channel: dv.getUint32(at + DESC_CHANNEL_OFFSET, true),
        flags: dv.getUint32(at + DESC_FLAGS_OFFSET, true),
        slot: dv.getUint32(at + DESC_SLOT_OFFSET, true),
        generation: dv.getUint32(at + DESC_GENERATION_OFFSET, true),
        length: dv.getUint32(at + DESC_LENGTH_OFFSET, true),
        inline: null as Uint8Array | null,
      };
  if (d !== null && d.slot === INLINE_SLOT && d.length === n - DESC_HEADER_LENGTH)
    d.inline = views.u8.slice(at + DESC_HEADER_LENGTH, at + n);
  reader.release();
  reader.publish();
  if (d === null)
    throw new ShmFrameError(
      ErrorCode.CORRUPT,
      `descriptor of ${n} bytes (shorter than its ${DESC_HEADER_LENGTH}-byte header)`,
    );
  if (d.slot === INLINE_SLOT && d.inline === null)
    throw new ShmFrameError(
      ErrorCode.CORRUPT,
      `inline descriptor says ${d.length} bytes, carries ${n - DESC_HEADER_LENGTH}`,
    );
  return d;
}
