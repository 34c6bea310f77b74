/**
 * Layout of a hub segment (kind 4): one host and up to `maxPeers` peers, a descriptor ring
 * each way per peer, and a shared pool of slots in size classes (one slab per class).
 *
 * ```
 *  0      64                      128
 *  +------+-----------------------+  segment header; parameters at 64 (u32):
 *  |header| hub parameters        |    +0 protocol (major << 16 | minor) +4 maxPeers +8 ringCapacity
 *  +------+-----------------------+    +12 inlineMax +16 classCount +20 peersOffset +24 peerLength
 *  128 HOST block: +0 pid u32 +4 closed i32 +8 joinSeq u32   +28 segmentLength
 *  256 HOST_WAIT: sleeping, seq (the host parks for messages from any peer)
 *  384 HOST_SLOT_WAIT: sleeping, seq (the host parks for a free slot)
 *  512 CLASSES: 8 x { slotSize u32, slotCount u32, slabOffset u32, slotsOffset u32 }
 *  peersOffset: maxPeers entries of peerLength bytes:
 *     +0   PEER block: state i32 (FREE 0 / CLAIMED 1), peerId u32, pid u32, generation u32,
 *          +16 sendingSlot u32 (class << 16 | slot, + 1; 0: none) +20 sendingGeneration u32
 *          +24 sendingTail u32 (the up ring's tail before that descriptor): the session's
 *          sending record (layout/session.ts), so the host can free a slot handed over to it
 *          by a peer that died before publishing its descriptor
 *     +128 PEER_SLOT_WAIT: sleeping, seq (the peer parks for a free slot)
 *     +256 up area (peer -> host): a channel's blocks and one ring (its DATA_WAIT is unused:
 *          the host parks on HOST_WAIT)
 *     then the down area (host -> peer): the same; the peer parks on its DATA_WAIT
 *  then per class: its slab (layout/slab.ts), then its slots (4 KiB aligned)
 * ```
 * Descriptors are the session's (layout/session.ts) with `slot = class << 16 | index`. Slab
 * owners: peer index 0..61, the host 63; a slot sent is handed over to its destination, so a
 * dead peer's slots are exactly those owned by its index. Liveness locks: byte 0 the host,
 * byte 1 + i peer i.
 */

import { alignUp } from './channel.js';
import { type AreaGeometry, areaGeometry } from './daemon.js';
import { BLOCK_LENGTH, HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';
import { DESC_HEADER_LENGTH, minRingCapacity, SLOTS_ALIGNMENT } from './session.js';
import { slabLength } from './slab.js';

/** Minor 1: the sending record in the peer entries (a minor-0 peer never writes it). */
export const HUB_PROTOCOL_VERSION = (1 << 16) | 1;
export const HUB_MAX_PEERS = 62;
export const HOST_OWNER = 63;
export const MAX_CLASSES = 8;
export const PEER_ROLE_BASE = 1;

export const HUB_PROTOCOL_OFFSET = PARAMS_OFFSET;
export const MAX_PEERS_OFFSET = HUB_PROTOCOL_OFFSET + 4;
export const HUB_RING_CAPACITY_OFFSET = MAX_PEERS_OFFSET + 4;
export const HUB_INLINE_MAX_OFFSET = HUB_RING_CAPACITY_OFFSET + 4;
export const CLASS_COUNT_OFFSET = HUB_INLINE_MAX_OFFSET + 4;
export const PEERS_OFFSET_OFFSET = CLASS_COUNT_OFFSET + 4;
export const PEER_LENGTH_OFFSET = PEERS_OFFSET_OFFSET + 4;
export const HUB_SEGMENT_LENGTH_OFFSET = PEER_LENGTH_OFFSET + 4;
export const HUB_PARAMS_LENGTH = HUB_SEGMENT_LENGTH_OFFSET + 4 - PARAMS_OFFSET;

export const HOST_BLOCK_OFFSET = HEADER_LENGTH;
export const HOST_PID_OFFSET = HOST_BLOCK_OFFSET;
export const HOST_CLOSED_OFFSET = HOST_PID_OFFSET + 4;
/** Bumped by every peer after it joins: the host rescans the entries when it moves. */
export const JOIN_SEQ_OFFSET = HOST_CLOSED_OFFSET + 4;
export const HOST_WAIT_OFFSET = HOST_BLOCK_OFFSET + BLOCK_LENGTH;
export const HOST_SLOT_WAIT_OFFSET = HOST_WAIT_OFFSET + BLOCK_LENGTH;
export const CLASSES_OFFSET = HOST_SLOT_WAIT_OFFSET + BLOCK_LENGTH;
export const CLASS_ENTRY_LENGTH = 16;
export const PEERS_START = CLASSES_OFFSET + BLOCK_LENGTH;

/** Within a peer entry. */
export const ENTRY_STATE_OFFSET = 0;
export const ENTRY_PEER_ID_OFFSET = ENTRY_STATE_OFFSET + 4;
export const ENTRY_PID_OFFSET = ENTRY_PEER_ID_OFFSET + 4;
export const ENTRY_GENERATION_OFFSET = ENTRY_PID_OFFSET + 4;
export const ENTRY_SENDING_SLOT_OFFSET = ENTRY_GENERATION_OFFSET + 4;
export const ENTRY_SENDING_GENERATION_OFFSET = ENTRY_SENDING_SLOT_OFFSET + 4;
export const ENTRY_SENDING_TAIL_OFFSET = ENTRY_SENDING_GENERATION_OFFSET + 4;
export const ENTRY_SLOT_WAIT_OFFSET = BLOCK_LENGTH;
export const ENTRY_UP_AREA_OFFSET = ENTRY_SLOT_WAIT_OFFSET + BLOCK_LENGTH;
export const ENTRY_FREE = 0;
export const ENTRY_CLAIMED = 1;

/** The reference's classes, the largest two smaller (16 MiB x 4 would reserve 64 MiB alone). */
export const DEFAULT_CLASSES: readonly SizeClass[] = [
  { slotSize: 1024, slotCount: 1024 },
  { slotSize: 16 * 1024, slotCount: 256 },
  { slotSize: 256 * 1024, slotCount: 32 },
  { slotSize: 4 * 1024 * 1024, slotCount: 8 },
];

export interface SizeClass {
  slotSize: number;
  slotCount: number;
}

export interface ClassGeometry extends SizeClass {
  slabOffset: number;
  slotsOffset: number;
}

export interface HubGeometry {
  maxPeers: number;
  ringCapacity: number;
  inlineMax: number;
  classes: ClassGeometry[];
  peersOffset: number;
  peerLength: number;
  segmentLength: number;
}

export function hubGeometry(o: {
  maxPeers: number;
  ringCapacity: number;
  inlineMax: number;
  classes: readonly SizeClass[];
}): HubGeometry {
  const maxDescriptor = DESC_HEADER_LENGTH + o.inlineMax;
  const up = areaGeometry(ENTRY_UP_AREA_OFFSET, o.ringCapacity, null, maxDescriptor);
  const downStart = alignUp(ENTRY_UP_AREA_OFFSET + up.length, BLOCK_LENGTH);
  const down = areaGeometry(downStart, o.ringCapacity, null, maxDescriptor);
  const peerLength = alignUp(downStart + down.length, BLOCK_LENGTH);
  const peersOffset = PEERS_START;
  let at = peersOffset + o.maxPeers * peerLength;
  const classes: ClassGeometry[] = [];
  for (const c of o.classes) {
    const slabOffset = alignUp(at, BLOCK_LENGTH);
    const slotsOffset = alignUp(slabOffset + slabLength(c.slotCount), SLOTS_ALIGNMENT);
    classes.push({ ...c, slabOffset, slotsOffset });
    at = slotsOffset + c.slotCount * c.slotSize;
  }
  return { ...o, classes, peersOffset, peerLength, segmentLength: at };
}

/** The up and down areas of peer entry `i`, at their absolute offsets. */
export function peerAreas(h: HubGeometry, i: number): { base: number; up: AreaGeometry; down: AreaGeometry } {
  const base = h.peersOffset + i * h.peerLength;
  const maxDescriptor = DESC_HEADER_LENGTH + h.inlineMax;
  const up = areaGeometry(base + ENTRY_UP_AREA_OFFSET, h.ringCapacity, null, maxDescriptor);
  const downStart = alignUp(base + ENTRY_UP_AREA_OFFSET + up.length, BLOCK_LENGTH);
  const down = areaGeometry(downStart, h.ringCapacity, null, maxDescriptor);
  return { base, up, down };
}

export function writeHubParams(dv: DataView, h: HubGeometry): void {
  dv.setUint32(HUB_PROTOCOL_OFFSET, HUB_PROTOCOL_VERSION, true);
  dv.setUint32(MAX_PEERS_OFFSET, h.maxPeers, true);
  dv.setUint32(HUB_RING_CAPACITY_OFFSET, h.ringCapacity, true);
  dv.setUint32(HUB_INLINE_MAX_OFFSET, h.inlineMax, true);
  dv.setUint32(CLASS_COUNT_OFFSET, h.classes.length, true);
  dv.setUint32(PEERS_OFFSET_OFFSET, h.peersOffset, true);
  dv.setUint32(PEER_LENGTH_OFFSET, h.peerLength, true);
  dv.setUint32(HUB_SEGMENT_LENGTH_OFFSET, h.segmentLength, true);
  h.classes.forEach((c, i) => {
    const at = CLASSES_OFFSET + i * CLASS_ENTRY_LENGTH;
    dv.setUint32(at, c.slotSize, true);
    dv.setUint32(at + 4, c.slotCount, true);
    dv.setUint32(at + 8, c.slabOffset, true);
    dv.setUint32(at + 12, c.slotsOffset, true);
  });
}

/** Reads and re-derives the geometry; `problems` lists what does not add up. */
export function readHubParams(
  dv: DataView,
  fileLength: number,
): { protocol: number; h: HubGeometry | null; problems: string[] } {
  const protocol = dv.getUint32(HUB_PROTOCOL_OFFSET, true);
  const maxPeers = dv.getUint32(MAX_PEERS_OFFSET, true);
  const ringCapacity = dv.getUint32(HUB_RING_CAPACITY_OFFSET, true);
  const inlineMax = dv.getUint32(HUB_INLINE_MAX_OFFSET, true);
  const classCount = dv.getUint32(CLASS_COUNT_OFFSET, true);
  const problems: string[] = [];
  if (!(maxPeers >= 1 && maxPeers <= HUB_MAX_PEERS)) problems.push(`maxPeers=${maxPeers} (1..${HUB_MAX_PEERS})`);
  if (!(ringCapacity >= 1024 && ringCapacity <= 1 << 30 && (ringCapacity & (ringCapacity - 1)) === 0))
    problems.push(`ringCapacity=${ringCapacity} (a power of two, 1 KiB..1 GiB)`);
  if (!(inlineMax <= 65536) || minRingCapacity(Math.min(inlineMax, 65536)) > ringCapacity)
    problems.push(`inlineMax=${inlineMax} (too large for ringCapacity=${ringCapacity})`);
  if (!(classCount >= 1 && classCount <= MAX_CLASSES)) problems.push(`classCount=${classCount} (1..${MAX_CLASSES})`);
  if (problems.length > 0) return { protocol, h: null, problems };
  const classes: SizeClass[] = [];
  for (let i = 0; i < classCount; i++) {
    const at = CLASSES_OFFSET + i * CLASS_ENTRY_LENGTH;
    const slotSize = dv.getUint32(at, true);
    const slotCount = dv.getUint32(at + 4, true);
    if (!(slotSize >= 64 && slotSize <= 1 << 30 && slotSize % 8 === 0 && slotCount >= 1 && slotCount <= 0xffff))
      problems.push(`class ${i}: slotSize=${slotSize}, slotCount=${slotCount}`);
    classes.push({ slotSize, slotCount });
  }
  if (problems.length > 0) return { protocol, h: null, problems };
  const h = hubGeometry({ maxPeers, ringCapacity, inlineMax, classes });
  h.classes.forEach((c, i) => {
    const at = CLASSES_OFFSET + i * CLASS_ENTRY_LENGTH;
    if (dv.getUint32(at + 8, true) !== c.slabOffset || dv.getUint32(at + 12, true) !== c.slotsOffset)
      problems.push(`class ${i}: offsets do not match its geometry`);
  });
  if (dv.getUint32(PEERS_OFFSET_OFFSET, true) !== h.peersOffset) problems.push('peersOffset does not match');
  if (dv.getUint32(PEER_LENGTH_OFFSET, true) !== h.peerLength) problems.push('peerLength does not match');
  if (dv.getUint32(HUB_SEGMENT_LENGTH_OFFSET, true) !== h.segmentLength) problems.push('segmentLength does not match');
  if (h.segmentLength > fileLength) problems.push(`segment needs ${h.segmentLength} bytes, file has ${fileLength}`);
  return { protocol, h: problems.length === 0 ? h : null, problems };
}
