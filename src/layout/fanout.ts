/**
 * Byte layouts of fan-out streaming (src/fanout/): the generic message frame carried in each
 * consumer's ring, and the control protocol spoken over the unix socket. Everything is
 * little-endian. docs/LAYOUT.md has the same tables.
 *
 * Generic message frame (one Channel frame per message; Solana frames use their own wire
 * version 9 layouts, src/solana/wire.ts, which share bytes 0..9):
 * ```
 *  0        1        2                               10       11       12        14        16         20         24
 *  +--------+--------+-------------------------------+--------+--------+---------+---------+----------+----------+---...
 *  | ver=1  | tag=32 | senderNanos u64 (unix ns)     | kind   | flags  | keyLen  | groupLen| rawLen   | wireLen  | key, group, payload
 *  +--------+--------+-------------------------------+--------+--------+---------+---------+----------+----------+---...
 * ```
 * flags bit 0: the payload is an LZ4 block (wireLen bytes) of rawLen bytes; bit 1: the payload
 * is in a blob store (layout/blob.ts): wireLen == 28, a 24-byte blob handle then u32 recipient
 * (this consumer's ack index), rawLen = the blob's size; other bits are 0 (and never both).
 * Plain frames have wireLen == rawLen. Frame length == 24 + keyLen + groupLen + wireLen.
 *
 * Control frame (both directions on the unix socket):
 * ```
 *  +-----------------+---------+--------+-----------------+
 *  | length u32      | ver=1   | tag    | body            |   length = 2 + body length, at most MAX_CONTROL_FRAME
 *  +-----------------+---------+--------+-----------------+
 * ```
 * Bodies (strings are u16 length + UTF-8; byte strings are u16 length + bytes):
 * - HELLO      (consumer -> sender) u32 flags (0), string clientName
 * - SUBSCRIBE / UNSUBSCRIBE (consumer -> sender) u32 requestId, u16 kindCount + u8 kinds,
 *   u32 keyCount + byte strings, u32 groupCount + byte strings
 * - PING, BYE  (consumer -> sender) empty
 * - READY      (sender -> consumer, with 2 fds by SCM_RIGHTS: ring segment, eventfd)
 *   u32 consumerId, u32 idleTimeoutMs, u32 capacity, string ringName, string ringDir,
 *   string blobStore (name of the sender's blob store, empty: none), string blobDir
 * - ACK        (sender -> consumer) u32 requestId
 * - REFUSED    (sender -> consumer, then close) string reason, string message
 * - EVICTED    (sender -> consumer, then close) string reason, string message
 * - CLOSING    (sender -> consumer, then close) empty: the sender shuts down
 */

/** Version byte of the generic message frame. */
export const FRAME_VERSION = 1;
/** Tag byte of the generic message frame. */
export const TAG_MESSAGE = 32;

export const FRAME_VERSION_OFFSET = 0;
export const FRAME_TAG_OFFSET = FRAME_VERSION_OFFSET + 1;
/** Common to generic and Solana frames: the sender's wall clock, unix nanoseconds. */
export const SENDER_NANOS_OFFSET = FRAME_TAG_OFFSET + 1;
export const KIND_OFFSET = SENDER_NANOS_OFFSET + 8;
export const FLAGS_OFFSET = KIND_OFFSET + 1;
export const KEY_LENGTH_OFFSET = FLAGS_OFFSET + 1;
export const GROUP_LENGTH_OFFSET = KEY_LENGTH_OFFSET + 2;
export const RAW_LENGTH_OFFSET = GROUP_LENGTH_OFFSET + 2;
export const WIRE_LENGTH_OFFSET = RAW_LENGTH_OFFSET + 4;
export const FRAME_HEADER_LENGTH = WIRE_LENGTH_OFFSET + 4;

export const FLAG_LZ4 = 1;
export const FLAG_BLOB = 2;
/** Wire bytes of a blob frame's payload: the handle and the recipient index. */
export const BLOB_REF_LENGTH = 28;
/** Keys and groups are at most this many bytes. */
export const MAX_KEY_LENGTH = 1024;

/** Version byte of every control frame. */
export const CONTROL_VERSION = 1;
/** Length prefix of a control frame. */
export const CONTROL_LENGTH_PREFIX = 4;
/** Largest control frame body (version + tag + body) either side accepts by default: 16 MiB. */
export const MAX_CONTROL_FRAME = 16 * 1024 * 1024;

export const Tag = {
  HELLO: 1,
  SUBSCRIBE: 2,
  UNSUBSCRIBE: 3,
  PING: 4,
  BYE: 5,
  READY: 16,
  ACK: 17,
  REFUSED: 18,
  EVICTED: 19,
  CLOSING: 20,
} as const;

/** Number of fds a READY frame carries: the ring segment, then the eventfd. */
export const READY_FD_COUNT = 2;
