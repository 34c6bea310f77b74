/**
 * Layout of a session segment (kind 3): two peers (A creates, B opens), a descriptor ring in
 * each direction, and a slab of fixed-size slots both peers allocate from.
 *
 * ```
 *  0      64                         128
 *  +------+--------------------------+  segment header (layout/segment.ts); parameters at 64:
 *  |header| session parameters       |    +0 protocolVersion u32 (major << 16 | minor)
 *  +------+--------------------------+    +4 ringCapacity u32 (descriptor ring bytes, each way)
 *  128 PEER_A block: +0 pid u32            +8 slotSize u32  +12 slotCount u32  +16 inlineMax u32
 *      +4 closed i32 +8 opens u32           +20 areaAB u32  +24 areaBA u32  +28 slabOffset u32
 *      +12 reopenHead u32 (B only: the A->B head when this B opened)
 *      +16 sendingSlot u32 (slot + 1 being sent, 0: none) +20 sendingGeneration u32
 *      +24 sendingTail u32 (this peer's outbound tail before that descriptor)
 *  256 PEER_B block: same                   +32 slotsOffset u32  +36 segmentLength u32
 *  384 SLOT_WAIT_A: sleeping, seq (A parks waiting for a free slot)
 *  512 SLOT_WAIT_B: sleeping, seq
 *  640 area A->B: a channel's blocks (producer = A, consumer = B, DATA_WAIT = B parks for
 *      descriptors, SPACE_WAIT = A parks for ring room) and one ring of ringCapacity bytes
 *  areaBA: the same, B -> A
 *  slabOffset: the slot slab (core/slab.ts: head, free count, state words, next links)
 *  slotsOffset (4 KiB aligned): slotCount slots of slotSize bytes
 * ```
 * Descriptor (one ring record each, little-endian):
 * ```
 *  +0 channel u32  +4 flags u32  +8 slot u32 (INLINE_SLOT = inline)  +12 generation u32
 *  +16 length u32  +20 reserved u32  +24 inline payload (length bytes, only when inline)
 * ```
 * Liveness locks: byte OWNER_ROLE (0) is peer A, byte PEER_B_ROLE (1) is peer B. The
 * protocol's major version must match; a different minor is accepted.
 */
import { alignUp, RECORD_HEADER_LENGTH } from './channel.js';
import { type AreaGeometry, areaGeometry } from './daemon.js';
import { BLOCK_LENGTH, HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';
import { slabLength } from './slab.js';

export const SESSION_PROTOCOL_MAJOR = 1;
/** Minor 1: the sending record in the peer blocks (peers of minor 0 never write it; nothing else changed). */
export const SESSION_PROTOCOL_MINOR = 1;
export const SESSION_PROTOCOL_VERSION = (SESSION_PROTOCOL_MAJOR << 16) | SESSION_PROTOCOL_MINOR;

export const PROTOCOL_OFFSET = PARAMS_OFFSET;
export const RING_CAPACITY_OFFSET = PROTOCOL_OFFSET + 4;
export const SLOT_SIZE_OFFSET = RING_CAPACITY_OFFSET + 4;
export const SLOT_COUNT_OFFSET = SLOT_SIZE_OFFSET + 4;
export const INLINE_MAX_OFFSET = SLOT_COUNT_OFFSET + 4;
export const AREA_AB_OFFSET = INLINE_MAX_OFFSET + 4;
export const AREA_BA_OFFSET = AREA_AB_OFFSET + 4;
export const SLAB_OFFSET_OFFSET = AREA_BA_OFFSET + 4;
export const SLOTS_OFFSET_OFFSET = SLAB_OFFSET_OFFSET + 4;
export const SEGMENT_LENGTH_PARAM_OFFSET = SLOTS_OFFSET_OFFSET + 4;
export const SESSION_PARAMS_LENGTH = SEGMENT_LENGTH_PARAM_OFFSET + 4 - PARAMS_OFFSET;

export const PEER_A_BLOCK_OFFSET = HEADER_LENGTH;
export const PEER_B_BLOCK_OFFSET = PEER_A_BLOCK_OFFSET + BLOCK_LENGTH;
/** Within a peer block. */
export const PEER_PID_OFFSET = 0;
export const PEER_CLOSED_OFFSET = PEER_PID_OFFSET + 4;
export const PEER_OPENS_OFFSET = PEER_CLOSED_OFFSET + 4;
/** Where the previous B had consumed up to when this B opened (its inbound ring's head position). */
export const PEER_REOPEN_HEAD_OFFSET = PEER_OPENS_OFFSET + 4;
/**
 * The sending record: the slot a peer is sending (slot + 1; 0 none), stored before the slot
 * goes IN_FLIGHT and cleared once its descriptor is published (or the send backed out), with
 * its generation and the peer's outbound tail position before the descriptor. When the peer is
 * gone with a record set, the slot was published iff a descriptor naming it follows that tail;
 * if none does, nobody will ever release it and whoever reclaims after the peer frees it.
 */
export const PEER_SENDING_SLOT_OFFSET = PEER_REOPEN_HEAD_OFFSET + 4;
export const PEER_SENDING_GENERATION_OFFSET = PEER_SENDING_SLOT_OFFSET + 4;
export const PEER_SENDING_TAIL_OFFSET = PEER_SENDING_GENERATION_OFFSET + 4;
export const SLOT_WAIT_A_OFFSET = PEER_B_BLOCK_OFFSET + BLOCK_LENGTH;
export const SLOT_WAIT_B_OFFSET = SLOT_WAIT_A_OFFSET + BLOCK_LENGTH;
export const AREAS_OFFSET = SLOT_WAIT_B_OFFSET + BLOCK_LENGTH;

export const PEER_B_ROLE = 1;

export const DESC_CHANNEL_OFFSET = 0;
export const DESC_FLAGS_OFFSET = DESC_CHANNEL_OFFSET + 4;
export const DESC_SLOT_OFFSET = DESC_FLAGS_OFFSET + 4;
export const DESC_GENERATION_OFFSET = DESC_SLOT_OFFSET + 4;
export const DESC_LENGTH_OFFSET = DESC_GENERATION_OFFSET + 4;
export const DESC_HEADER_LENGTH = DESC_LENGTH_OFFSET + 8;
/** `slot` of an inline descriptor. */
export const INLINE_SLOT = 0xffffffff;

export const SLOTS_ALIGNMENT = 4096;

export interface SessionGeometry {
  ringCapacity: number;
  slotSize: number;
  slotCount: number;
  inlineMax: number;
  ab: AreaGeometry;
  ba: AreaGeometry;
  slabOffset: number;
  slotsOffset: number;
  segmentLength: number;
}

export function sessionGeometry(o: {
  ringCapacity: number;
  slotSize: number;
  slotCount: number;
  inlineMax: number;
}): SessionGeometry {
  const maxDescriptor = DESC_HEADER_LENGTH + o.inlineMax;
  const ab = areaGeometry(AREAS_OFFSET, o.ringCapacity, null, maxDescriptor);
  const baBase = alignUp(AREAS_OFFSET + ab.length, BLOCK_LENGTH);
  const ba = areaGeometry(baBase, o.ringCapacity, null, maxDescriptor);
  const slabOffset = alignUp(baBase + ba.length, BLOCK_LENGTH);
  const slotsOffset = alignUp(slabOffset + slabLength(o.slotCount), SLOTS_ALIGNMENT);
  return {
    ...o,
    ab,
    ba,
    slabOffset,
    slotsOffset,
    segmentLength: slotsOffset + o.slotCount * o.slotSize,
  };
}

/** The smallest ring capacity a descriptor of `inlineMax` inline bytes fits (two records). */
export function minRingCapacity(inlineMax: number): number {
  let c = 1024;
  while (c / 2 - RECORD_HEADER_LENGTH < DESC_HEADER_LENGTH + inlineMax) c *= 2;
  return c;
}

export function writeSessionParams(dv: DataView, g: SessionGeometry): void {
  dv.setUint32(PROTOCOL_OFFSET, SESSION_PROTOCOL_VERSION, true);
  dv.setUint32(RING_CAPACITY_OFFSET, g.ringCapacity, true);
  dv.setUint32(SLOT_SIZE_OFFSET, g.slotSize, true);
  dv.setUint32(SLOT_COUNT_OFFSET, g.slotCount, true);
  dv.setUint32(INLINE_MAX_OFFSET, g.inlineMax, true);
  dv.setUint32(AREA_AB_OFFSET, g.ab.blocksBase + HEADER_LENGTH, true);
  dv.setUint32(AREA_BA_OFFSET, g.ba.blocksBase + HEADER_LENGTH, true);
  dv.setUint32(SLAB_OFFSET_OFFSET, g.slabOffset, true);
  dv.setUint32(SLOTS_OFFSET_OFFSET, g.slotsOffset, true);
  dv.setUint32(SEGMENT_LENGTH_PARAM_OFFSET, g.segmentLength, true);
}

/** Reads and re-derives the geometry; `problems` lists what does not add up (a corrupt or hostile header). */
export function readSessionParams(
  dv: DataView,
  fileLength: number,
): { protocol: number; g: SessionGeometry | null; problems: string[] } {
  const protocol = dv.getUint32(PROTOCOL_OFFSET, true);
  const ringCapacity = dv.getUint32(RING_CAPACITY_OFFSET, true);
  const slotSize = dv.getUint32(SLOT_SIZE_OFFSET, true);
  const slotCount = dv.getUint32(SLOT_COUNT_OFFSET, true);
  const inlineMax = dv.getUint32(INLINE_MAX_OFFSET, true);
  const problems: string[] = [];
  if (!(ringCapacity >= 1024 && ringCapacity <= 1 << 30 && (ringCapacity & (ringCapacity - 1)) === 0))
    problems.push(`ringCapacity=${ringCapacity} (a power of two, 1 KiB..1 GiB)`);
  if (!(slotSize >= 64 && slotSize <= 1 << 30 && slotSize % 8 === 0))
    problems.push(`slotSize=${slotSize} (a multiple of 8 in 64..1 GiB)`);
  if (!(slotCount >= 1 && slotCount <= 0xffff)) problems.push(`slotCount=${slotCount} (1..65535)`);
  if (!(inlineMax <= 65536)) problems.push(`inlineMax=${inlineMax} (at most 65536)`);
  if (problems.length === 0 && minRingCapacity(inlineMax) > ringCapacity)
    problems.push(`ringCapacity=${ringCapacity} (too small for inlineMax=${inlineMax})`);
  if (problems.length > 0) return { protocol, g: null, problems };
  const g = sessionGeometry({ ringCapacity, slotSize, slotCount, inlineMax });
  const stored: [string, number, number][] = [
    ['areaAB', dv.getUint32(AREA_AB_OFFSET, true), g.ab.blocksBase + HEADER_LENGTH],
    ['areaBA', dv.getUint32(AREA_BA_OFFSET, true), g.ba.blocksBase + HEADER_LENGTH],
    ['slabOffset', dv.getUint32(SLAB_OFFSET_OFFSET, true), g.slabOffset],
    ['slotsOffset', dv.getUint32(SLOTS_OFFSET_OFFSET, true), g.slotsOffset],
    ['segmentLength', dv.getUint32(SEGMENT_LENGTH_PARAM_OFFSET, true), g.segmentLength],
  ];
  for (const [k, found, expected] of stored)
    if (found !== expected) problems.push(`${k}=${found} (expected ${expected})`);
  if (g.segmentLength > fileLength) problems.push(`segment needs ${g.segmentLength} bytes, file has ${fileLength}`);
  return { protocol, g: problems.length === 0 ? g : null, problems };
}
