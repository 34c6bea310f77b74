/**
 * Layout of a blob store: one control segment (kind 5) and one file per chunk (kind 6).
 * Data appended into a chunk never moves; a 24-byte handle names it. Chunk files are named
 * by a generation that is never reused, so a freed chunk's bytes (and counters) can never be
 * mistaken for a newer chunk's: a process still mapping a freed chunk sees the old bytes, a
 * process opening it by name finds nothing.
 *
 * Control segment `shmbus.<name>`:
 * ```
 *  0      64                       128
 *  +------+------------------------+  segment header (layout/segment.ts); parameters at 64:
 *  |header| blob store parameters  |    +0 protocol u32  +4 chunkSize u32  +8 maxChunks u32
 *  +------+------------------------+    +12 ttlMs u32  +16 decayMs u32  +20 prefetchPermille u32
 *                                       +24 leaseTimeoutMs u32  +28 tableOffset u32
 *  128 STORE block (64 B)
 *    +0 writeHead i32 (table index of the active chunk, -1: none yet)
 *    +4 nextGeneration u32 (Atomics.add: chunk generations 1, 2, ...; never reused)
 *    +8 closed i32 (the creator closed the store: appends refused)
 *    +12 prefetching u32 (low 32 bits of Date.now() while a process creates the prefetch chunk)
 *    +16 appends u32  +20 freed u32  +24 full u32  +28 expired u32   (counters, for stats)
 *  192 TABLE: maxChunks entries of 32 B
 *    +0 state i32: FREE 0 -> CREATING 1 -> READY 2 (prefetched) -> ACTIVE 3 (the write head)
 *                  -> SEALED 4 (the head moved on) -> FREEING 5 (a cleanup removes the file) -> FREE
 *                  (CREATING and FREEING words carry the pid in that step: state | pid << 3)
 *    +4 generation u32 (of the chunk file this entry names)
 *    +8 creatorPid u32  +12 creatorStart u32 (low 32 bits of its start ticks)  +16 createdMs u32
 * ```
 * Chunk file `shmbus.<name>.b<generation>`:
 * ```
 *  0      64                       128
 *  +------+------------------------+  parameters at 64: +0 protocol u32 +4 generation u32
 *  |header| chunk parameters       |    +8 tableIndex u32 +12 chunkSize u32 +16 dataOffset u32
 *  +------+------------------------+
 *  128 CHUNK block (64 B)
 *    +0 used u32 (bytes of the data area reserved; compare-and-swap by appenders)
 *    +4 entries u32 (appends completed)   +8 acked u32 (entries every recipient acknowledged)
 *    +12 writers i32 (appends between their reservation and their completion)
 *    +16 sealed i32 (1: no new reservations; set before the table says SEALED)
 *    +20 firstWriteMs u32   +24 emptySinceMs u32   +28 leases i32   +32 lastLeaseMs u32
 *    +36 lastWriteMs u32 (the newest entry's time: the chunk expires once it is older than the TTL)
 *  192 ACK area, ceil(chunkSize / 64) u32 words: the words of the entry at data offset o start
 *      at word o / 64 (entries take at least 64 B per word they use, so they never overlap):
 *      recipients <= 32: 1 word, the bitmap (bit r = recipient r acknowledged);
 *      more: remaining i32 (recipients that have not acknowledged yet), then ceil(recipients / 32) bitmap words
 *  dataOffset (the end of the ACK area rounded up to the page size): data area, chunkSize bytes,
 *      entries back to back, each 8-byte aligned and at least 64 B per ack word:
 *    +0 length u32 (payload bytes)  +4 check u32 (entryCheck(generation, offset, length))
 *    +8 recipients u32  +12 (0)  +16 payload, padded
 * ```
 * Only appenders write the data area; readers (acknowledgements, leases) write the CHUNK block
 * and the ACK area, so a read-only attacher maps the data area read-only.
 *
 * Times (`*Ms` u32) are the low 32 bits of Date.now(), odd (| 1) so that 0 means "none";
 * ages are computed modulo 2^32, so TTLs and decays must stay below 2^31 ms (24 days).
 *
 * Handle (24 bytes, little-endian): +0 chunk u32 (table index) +4 offset u32 (of the entry in
 * the data area) +8 size u32 +12 generation u32 +16 timestamp u64 (Date.now() at append).
 */
import { HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';

/** The STORE and CHUNK blocks are one cache line each. */
export const SMALL_BLOCK_LENGTH = 64;

/** 2: acknowledgements moved out of the entries into the ACK area (read-only data area). */
export const BLOB_PROTOCOL_VERSION = 2;

// Control parameters.
export const PROTOCOL_OFFSET = PARAMS_OFFSET;
export const CHUNK_SIZE_OFFSET = PROTOCOL_OFFSET + 4;
export const MAX_CHUNKS_OFFSET = CHUNK_SIZE_OFFSET + 4;
export const TTL_OFFSET = MAX_CHUNKS_OFFSET + 4;
export const DECAY_OFFSET = TTL_OFFSET + 4;
export const PREFETCH_OFFSET = DECAY_OFFSET + 4;
export const LEASE_TIMEOUT_OFFSET = PREFETCH_OFFSET + 4;
export const TABLE_OFFSET_OFFSET = LEASE_TIMEOUT_OFFSET + 4;
export const STORE_PARAMS_LENGTH = TABLE_OFFSET_OFFSET + 4 - PARAMS_OFFSET;

// STORE block.
export const STORE_BLOCK_OFFSET = HEADER_LENGTH;
export const WRITE_HEAD_OFFSET = STORE_BLOCK_OFFSET;
export const NEXT_GENERATION_OFFSET = WRITE_HEAD_OFFSET + 4;
export const STORE_CLOSED_OFFSET = NEXT_GENERATION_OFFSET + 4;
export const PREFETCHING_OFFSET = STORE_CLOSED_OFFSET + 4;
export const APPENDS_OFFSET = PREFETCHING_OFFSET + 4;
export const FREED_OFFSET = APPENDS_OFFSET + 4;
export const FULL_OFFSET = FREED_OFFSET + 4;
export const EXPIRED_OFFSET = FULL_OFFSET + 4;

// TABLE.
export const TABLE_OFFSET = STORE_BLOCK_OFFSET + SMALL_BLOCK_LENGTH;
export const TABLE_ENTRY_LENGTH = 32;
export const ENTRY_STATE_OFFSET = 0;
export const ENTRY_GENERATION_OFFSET = 4;
export const ENTRY_CREATOR_PID_OFFSET = 8;
export const ENTRY_CREATOR_START_OFFSET = 12;
export const ENTRY_CREATED_OFFSET = 16;

export const ChunkState = {
  FREE: 0,
  CREATING: 1,
  READY: 2,
  ACTIVE: 3,
  SEALED: 4,
  FREEING: 5,
} as const;

export function chunkStateName(state: number): string {
  return ['free', 'creating', 'ready', 'active', 'sealed', 'freeing'][state] ?? `unknown(${state})`;
}

export function controlLength(maxChunks: number): number {
  return TABLE_OFFSET + maxChunks * TABLE_ENTRY_LENGTH;
}

// Chunk parameters.
export const CHUNK_PROTOCOL_OFFSET = PARAMS_OFFSET;
export const CHUNK_GENERATION_OFFSET = CHUNK_PROTOCOL_OFFSET + 4;
export const CHUNK_INDEX_OFFSET = CHUNK_GENERATION_OFFSET + 4;
export const CHUNK_CAPACITY_OFFSET = CHUNK_INDEX_OFFSET + 4;
export const CHUNK_DATA_OFFSET_OFFSET = CHUNK_CAPACITY_OFFSET + 4;
export const CHUNK_PARAMS_LENGTH = CHUNK_DATA_OFFSET_OFFSET + 4 - PARAMS_OFFSET;

// CHUNK block.
export const CHUNK_BLOCK_OFFSET = HEADER_LENGTH;
export const USED_OFFSET = CHUNK_BLOCK_OFFSET;
export const ENTRIES_OFFSET = USED_OFFSET + 4;
export const ACKED_OFFSET = ENTRIES_OFFSET + 4;
export const WRITERS_OFFSET = ACKED_OFFSET + 4;
export const SEALED_OFFSET = WRITERS_OFFSET + 4;
export const FIRST_WRITE_OFFSET = SEALED_OFFSET + 4;
export const EMPTY_SINCE_OFFSET = FIRST_WRITE_OFFSET + 4;
export const LEASES_OFFSET = EMPTY_SINCE_OFFSET + 4;
export const LAST_LEASE_OFFSET = LEASES_OFFSET + 4;
export const LAST_WRITE_OFFSET = LAST_LEASE_OFFSET + 4;
/** Where a chunk's ACK area starts. */
export const CHUNK_ACKS_OFFSET = CHUNK_BLOCK_OFFSET + SMALL_BLOCK_LENGTH;
/** Data-area bytes per ACK-area word. */
export const ACK_GRANULE = 64;

export function ackAreaLength(chunkSize: number): number {
  return Math.ceil(chunkSize / ACK_GRANULE) * 4;
}

/** Where a chunk's data area starts: after its ACK area, on a page boundary (mapped read-only by readers). */
export function chunkDataOffset(chunkSize: number, pageSize: number): number {
  return Math.ceil((CHUNK_ACKS_OFFSET + ackAreaLength(chunkSize)) / pageSize) * pageSize;
}

export function chunkFileLength(chunkSize: number, pageSize: number): number {
  return chunkDataOffset(chunkSize, pageSize) + chunkSize;
}

// Entries.
export const ENTRY_LENGTH_OFFSET = 0;
export const ENTRY_CHECK_OFFSET = 4;
export const ENTRY_RECIPIENTS_OFFSET = 8;
/** Bytes before an entry's payload. */
export const ENTRY_HEADER_LENGTH = 16;
export const MAX_RECIPIENTS = 1024;
/** Recipients whose acknowledgements fit one bitmap word (no `remaining` word). */
export const SMALL_RECIPIENTS = 32;

/** ACK-area words of an entry with `recipients`. */
export function ackWords(recipients: number): number {
  return recipients <= SMALL_RECIPIENTS ? 1 : 1 + Math.ceil(recipients / 32);
}

/** Byte index (in the chunk file) of the first ACK word of the entry at data offset `offset`. */
export function ackIndex(offset: number): number {
  return CHUNK_ACKS_OFFSET + (offset >>> 6) * 4;
}

/** The bitmap of an entry of `recipients` <= 32 once every one acknowledged, as an int32. */
export function fullMask(recipients: number): number {
  return recipients >= 32 ? -1 : (1 << recipients) - 1;
}

/** Bytes an entry of `length` payload bytes takes in a chunk (8-byte aligned, at least ACK_GRANULE per ack word). */
export function entrySize(length: number, recipients = 1): number {
  return Math.max((ENTRY_HEADER_LENGTH + length + 7) & ~7, ACK_GRANULE * ackWords(recipients));
}

/** The check word of an entry: a handle whose offset is not an entry of this chunk fails it. */
export function entryCheck(generation: number, offset: number, length: number): number {
  return (Math.imul(generation, 0x9e3779b1) ^ Math.imul(offset + 1, 0x85ebca77) ^ length ^ 0x5b10b5e5) >>> 0;
}

export const HANDLE_LENGTH = 24;

export const MIN_CHUNK_SIZE = 128;
export const MAX_CHUNK_SIZE = 1 << 30;
export const MAX_CHUNKS = 4096;
/** Longest store name: chunk files append `.b<generation>` (up to 12 characters). */
export const MAX_STORE_NAME_LENGTH = 180;
