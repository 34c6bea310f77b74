/**
 * Layout of a fan-out sender's registration segment (kind 7), `shmbus.sender.<hash>` in the
 * sender's segment directory (`hash`: the first 16 hex digits of the SHA-256 of the socket's
 * absolute path). It says which socket the sender serves (so `shmbus clean` can remove the
 * socket of a dead sender, and tools can list it) and holds the sender's counters and a table
 * of its consumers, which live here rather than in the process so a tool can read them
 * without asking the sender.
 * ```
 *  0      64                       128
 *  +------+------------------------+  segment header (layout/segment.ts); parameters at 64:
 *  |header| sender parameters      |    +0 protocol u32 (2)  +4 pathLength u32 (UTF-8 bytes)
 *  +------+------------------------+    +8 socketMode u32  +12 maxConsumers u32  +16 capacity u32
 *                                       +20 tableSlots u32  +24 tableOffset u32  (protocol >= 2)
 *  128 socket path: pathLength bytes of UTF-8 (at most 107), zero-padded to 128 B
 *  256 COUNTERS block (128 B), f64 each, written by the sender only (plain stores):
 *    +0 consumers  +8 published  +16 dispatched  +24 dispatchedBytes  +32 unmatched
 *    +40 refused  +48 disconnects  +56 blobMessages  +64 blobFallbacks
 *    +72 evictions: ring-full  +80 idle  +88 protocol  +96 too-many-keys
 *  384 KIND_MODES block (128 B): 256 delivery modes, 2 bits each (kind k: byte k >> 2,
 *      bits 2 * (k & 3)): 0 filtered, 1 opt-in, 2 always; written once at listen()
 *  512 CONSUMER TABLE (protocol >= 2): tableSlots entries of 256 B, written by the sender only
 *    +0   seq u32 (odd while the sender rewrites the entry's identity or filter fields)
 *    +4   state u32: FREE 0 / LIVE 1 / EVICTED 2 / GONE 3 (disconnected or said BYE)
 *    +8   consumerId u32  +12 pid u32  +16 uid u32  +20 evictReason u32 (EVICTED: 1 ring-full,
 *         2 idle, 3 protocol, 4 too-many-keys)
 *    +24  keys u32  +28 groups u32  +32 kindCount u32 (kinds opted in)
 *    +36  ringNameLength u32  +40 nameLength u32  +44 (0)
 *    +48  connectedMs f64 (Date.now())  +56 endedMs f64 (0 while LIVE)
 *    +64  delivered f64  +72 deliveredBytes f64 (frames copied into its ring; plain stores
 *         per delivery, outside the seq)
 *    +80  kinds bitmap, 32 B (bit k & 7 of byte k >> 3: kind k opted in)
 *    +112 ring name, 48 B of UTF-8: the consumer's channel segment, same directory
 *    +160 client name (HELLO's clientName), 96 B of UTF-8, cut at 96 bytes
 *  512 + tableSlots * 256: end
 * ```
 * Table entries: a consumer takes a FREE entry at its handshake, else the one that ended
 * longest ago; an entry keeps its last state (EVICTED with the reason, GONE) until reused, so
 * a tool sees recent evictions. With more consumers than slots (maxConsumers above
 * MAX_TABLE_SLOTS) the extra ones have no entry (the counters still count them).
 *
 * Reading an entry (seqlock, one writer): load seq; odd: retry; copy the fields; load seq
 * again: changed: retry. Protocol 1 registrations (384 B, no table, no modes) read as such.
 * The owner role's lock byte is the sender's liveness (as for every segment).
 */
import { BLOCK_LENGTH, HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';

/** 2: the kind modes and the consumer table (protocol 1 ended at the counters). */
export const SENDER_PROTOCOL_VERSION = 2;

export const SENDER_PROTOCOL_OFFSET = PARAMS_OFFSET;
export const SOCKET_PATH_LENGTH_OFFSET = SENDER_PROTOCOL_OFFSET + 4;
export const SOCKET_MODE_OFFSET = SOCKET_PATH_LENGTH_OFFSET + 4;
export const MAX_CONSUMERS_OFFSET = SOCKET_MODE_OFFSET + 4;
export const RING_CAPACITY_OFFSET = MAX_CONSUMERS_OFFSET + 4;
export const TABLE_SLOTS_OFFSET = RING_CAPACITY_OFFSET + 4;
export const TABLE_OFFSET_OFFSET = TABLE_SLOTS_OFFSET + 4;
export const SENDER_PARAMS_LENGTH = TABLE_OFFSET_OFFSET + 4 - PARAMS_OFFSET;

export const SOCKET_PATH_OFFSET = HEADER_LENGTH;
/** Room for the socket path (unix socket paths are at most 107 bytes). */
export const SOCKET_PATH_ROOM = BLOCK_LENGTH;

export const COUNTERS_OFFSET = SOCKET_PATH_OFFSET + SOCKET_PATH_ROOM;
/** Indexes of the f64 counters, from COUNTERS_OFFSET. */
export const Counter = {
  CONSUMERS: 0,
  PUBLISHED: 1,
  DISPATCHED: 2,
  DISPATCHED_BYTES: 3,
  UNMATCHED: 4,
  REFUSED: 5,
  DISCONNECTS: 6,
  BLOB_MESSAGES: 7,
  BLOB_FALLBACKS: 8,
  EVICTED_RING_FULL: 9,
  EVICTED_IDLE: 10,
  EVICTED_PROTOCOL: 11,
  EVICTED_TOO_MANY_KEYS: 12,
} as const;
export const COUNTER_COUNT = 13;

/** Bytes of a protocol-1 registration; every registration has at least these. */
export const SENDER_SEGMENT_LENGTH = COUNTERS_OFFSET + BLOCK_LENGTH;

export const KIND_MODES_OFFSET = SENDER_SEGMENT_LENGTH;
export const KIND_MODES_LENGTH = 256 / 4;
export const KIND_MODE_CODES = ['filtered', 'opt-in', 'always'] as const;

export const CONSUMER_TABLE_OFFSET = KIND_MODES_OFFSET + BLOCK_LENGTH;
export const TABLE_ENTRY_LENGTH = 256;
/** Most table entries a registration has (a sender serving more consumers lists the first ones). */
export const MAX_TABLE_SLOTS = 256;

/** Within a table entry. */
export const ENTRY_SEQ_OFFSET = 0;
export const ENTRY_STATE_OFFSET = ENTRY_SEQ_OFFSET + 4;
export const ENTRY_CONSUMER_ID_OFFSET = ENTRY_STATE_OFFSET + 4;
export const ENTRY_PID_OFFSET = ENTRY_CONSUMER_ID_OFFSET + 4;
export const ENTRY_UID_OFFSET = ENTRY_PID_OFFSET + 4;
export const ENTRY_REASON_OFFSET = ENTRY_UID_OFFSET + 4;
export const ENTRY_KEYS_OFFSET = ENTRY_REASON_OFFSET + 4;
export const ENTRY_GROUPS_OFFSET = ENTRY_KEYS_OFFSET + 4;
export const ENTRY_KIND_COUNT_OFFSET = ENTRY_GROUPS_OFFSET + 4;
export const ENTRY_RING_NAME_LENGTH_OFFSET = ENTRY_KIND_COUNT_OFFSET + 4;
export const ENTRY_NAME_LENGTH_OFFSET = ENTRY_RING_NAME_LENGTH_OFFSET + 4;
export const ENTRY_CONNECTED_MS_OFFSET = ENTRY_NAME_LENGTH_OFFSET + 8;
export const ENTRY_ENDED_MS_OFFSET = ENTRY_CONNECTED_MS_OFFSET + 8;
export const ENTRY_DELIVERED_OFFSET = ENTRY_ENDED_MS_OFFSET + 8;
export const ENTRY_DELIVERED_BYTES_OFFSET = ENTRY_DELIVERED_OFFSET + 8;
export const ENTRY_KINDS_OFFSET = ENTRY_DELIVERED_BYTES_OFFSET + 8;
export const ENTRY_KINDS_LENGTH = 256 / 8;
export const ENTRY_RING_NAME_OFFSET = ENTRY_KINDS_OFFSET + ENTRY_KINDS_LENGTH;
export const ENTRY_RING_NAME_ROOM = 48;
export const ENTRY_NAME_OFFSET = ENTRY_RING_NAME_OFFSET + ENTRY_RING_NAME_ROOM;
export const ENTRY_NAME_ROOM = TABLE_ENTRY_LENGTH - ENTRY_NAME_OFFSET;

export const EntryState = { FREE: 0, LIVE: 1, EVICTED: 2, GONE: 3 } as const;
export const ENTRY_STATE_NAMES = ['free', 'live', 'evicted', 'gone'] as const;
/** evictReason codes (index = code). */
export const EVICT_REASON_CODES = ['', 'ring-full', 'idle', 'protocol', 'too-many-keys'] as const;

/** Table entries of a sender serving at most `maxConsumers`. */
export function tableSlotsFor(maxConsumers: number): number {
  return Math.min(maxConsumers, MAX_TABLE_SLOTS);
}

/** Bytes of a protocol-2 registration with `tableSlots` entries. */
export function senderSegmentLength(tableSlots: number): number {
  return CONSUMER_TABLE_OFFSET + tableSlots * TABLE_ENTRY_LENGTH;
}

/** Name (in the segment directory) of the registration of the sender serving `absolutePath`. */
export function senderSegmentName(hashHex: string): string {
  return `sender.${hashHex.slice(0, 16)}`;
}

/** The counters as named values (what Sender.metrics() and `shmbus inspect` report). */
export function senderCounters(c: Float64Array) {
  return {
    consumers: c[Counter.CONSUMERS],
    published: c[Counter.PUBLISHED],
    dispatched: c[Counter.DISPATCHED],
    dispatchedBytes: c[Counter.DISPATCHED_BYTES],
    unmatched: c[Counter.UNMATCHED],
    refused: c[Counter.REFUSED],
    disconnects: c[Counter.DISCONNECTS],
    blobMessages: c[Counter.BLOB_MESSAGES],
    blobFallbacks: c[Counter.BLOB_FALLBACKS],
    evictions: {
      'ring-full': c[Counter.EVICTED_RING_FULL],
      idle: c[Counter.EVICTED_IDLE],
      protocol: c[Counter.EVICTED_PROTOCOL],
      'too-many-keys': c[Counter.EVICTED_TOO_MANY_KEYS],
    },
  };
}

/** One consumer table entry as `shmbus inspect` reports it. */
export interface ConsumerEntry {
  slot: number;
  state: string;
  consumerId: number;
  pid: number;
  uid: number;
  name: string;
  ring: string;
  keys: number;
  groups: number;
  kinds: number[];
  connectedMs: number;
  endedMs: number;
  evictReason: string;
  delivered: number;
  deliveredBytes: number;
}

const decoder = new TextDecoder();

/**
 * Reads table entry `slot` (at byte `at` of `dv`) under its seqlock; null if it is FREE, or
 * kept changing over `tries` attempts. Throws (a RangeError) only if `dv` is too short.
 */
export function readConsumerEntry(dv: DataView, i32: Int32Array, slot: number, tries = 8): ConsumerEntry | null {
  const at = CONSUMER_TABLE_OFFSET + slot * TABLE_ENTRY_LENGTH;
  for (let t = 0; t < tries; t++) {
    // SYNC POINT: pairs with the two Atomics.store(seq) in the sender's writeEntry(); an
    // even sequence unchanged across the copy means no rewrite overlapped it.
    const s1 = Atomics.load(i32, (at + ENTRY_SEQ_OFFSET) >> 2);
    if ((s1 & 1) !== 0) continue;
    const state = dv.getUint32(at + ENTRY_STATE_OFFSET, true);
    if (state === EntryState.FREE) return null;
    const ringLength = Math.min(dv.getUint32(at + ENTRY_RING_NAME_LENGTH_OFFSET, true), ENTRY_RING_NAME_ROOM);
    const nameLength = Math.min(dv.getUint32(at + ENTRY_NAME_LENGTH_OFFSET, true), ENTRY_NAME_ROOM);
    const kinds: number[] = [];
    for (let k = 0; k < 256; k++)
      if ((dv.getUint8(at + ENTRY_KINDS_OFFSET + (k >> 3)) & (1 << (k & 7))) !== 0) kinds.push(k);
    const reason = dv.getUint32(at + ENTRY_REASON_OFFSET, true);
    const entry: ConsumerEntry = {
      slot,
      state: ENTRY_STATE_NAMES[state] ?? `unknown(${state})`,
      consumerId: dv.getUint32(at + ENTRY_CONSUMER_ID_OFFSET, true),
      pid: dv.getUint32(at + ENTRY_PID_OFFSET, true),
      uid: dv.getInt32(at + ENTRY_UID_OFFSET, true),
      name: decoder.decode(new Uint8Array(dv.buffer, dv.byteOffset + at + ENTRY_NAME_OFFSET, nameLength)),
      ring: decoder.decode(new Uint8Array(dv.buffer, dv.byteOffset + at + ENTRY_RING_NAME_OFFSET, ringLength)),
      keys: dv.getUint32(at + ENTRY_KEYS_OFFSET, true),
      groups: dv.getUint32(at + ENTRY_GROUPS_OFFSET, true),
      kinds,
      connectedMs: dv.getFloat64(at + ENTRY_CONNECTED_MS_OFFSET, true),
      endedMs: dv.getFloat64(at + ENTRY_ENDED_MS_OFFSET, true),
      evictReason: EVICT_REASON_CODES[reason] ?? `unknown(${reason})`,
      delivered: dv.getFloat64(at + ENTRY_DELIVERED_OFFSET, true),
      deliveredBytes: dv.getFloat64(at + ENTRY_DELIVERED_BYTES_OFFSET, true),
    };
    if (Atomics.load(i32, (at + ENTRY_SEQ_OFFSET) >> 2) === s1) return entry;
  }
  return null;
}
