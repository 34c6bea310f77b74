/**
 * Layout of a fan-out sender's registration segment (kind 7), `shmbus.sender.<hash>` in the
 * sender's segment directory (`hash`: the first 16 hex digits of the SHA-256 of the socket's
 * absolute path). It says which socket the sender serves (so `shmbus clean` can remove the
 * socket of a dead sender, and tools can list it) and holds the sender's counters, which live
 * here rather than in the process so a tool can read them without asking the sender.
 * ```
 *  0      64                       128
 *  +------+------------------------+  segment header (layout/segment.ts); parameters at 64:
 *  |header| sender parameters      |    +0 protocol u32 (1)  +4 pathLength u32 (UTF-8 bytes)
 *  +------+------------------------+    +8 socketMode u32  +12 maxConsumers u32  +16 capacity u32
 *  128 socket path: pathLength bytes of UTF-8 (at most 107), zero-padded to 128 B
 *  256 COUNTERS block (128 B), f64 each, written by the sender only (plain stores):
 *    +0 consumers  +8 published  +16 dispatched  +24 dispatchedBytes  +32 unmatched
 *    +40 refused  +48 disconnects  +56 blobMessages  +64 blobFallbacks
 *    +72 evictions: ring-full  +80 idle  +88 protocol  +96 too-many-keys
 *  384 end
 * ```
 * The owner role's lock byte is the sender's liveness (as for every segment).
 */
import { BLOCK_LENGTH, HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';

export const SENDER_PROTOCOL_VERSION = 1;

export const SENDER_PROTOCOL_OFFSET = PARAMS_OFFSET;
export const SOCKET_PATH_LENGTH_OFFSET = SENDER_PROTOCOL_OFFSET + 4;
export const SOCKET_MODE_OFFSET = SOCKET_PATH_LENGTH_OFFSET + 4;
export const MAX_CONSUMERS_OFFSET = SOCKET_MODE_OFFSET + 4;
export const RING_CAPACITY_OFFSET = MAX_CONSUMERS_OFFSET + 4;
export const SENDER_PARAMS_LENGTH = RING_CAPACITY_OFFSET + 4 - PARAMS_OFFSET;

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

export const SENDER_SEGMENT_LENGTH = COUNTERS_OFFSET + BLOCK_LENGTH;

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
