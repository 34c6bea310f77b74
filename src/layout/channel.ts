/**
 * Layout of a channel segment (kind 1): a one-way SPSC byte ring, or three of them (one per
 * priority class) sharing one segment.
 *
 * ```
 *  0      64                       128
 *  +------+------------------------+  segment header (layout/segment.ts); channel
 *  |header| channel parameters     |  parameters at PARAMS_OFFSET:
 *  +------+------------------------+    +0 capacity u32   +4 maxFrame u32
 *  128 PRODUCER block (128 B)         +8 classCount u32 +12 (0)
 *    +0 tailPosition[3] u32           +16 ringLength[3] u32 (bytes, multiple of 8)
 *    +12 closed i32  +16 pid u32      +28 dataOffset[3] u32 (absolute byte index)
 *    +24 sentFrames f64 +32 sentBytes f64 +40 fullCount f64
 *  256 CONSUMER block (128 B)
 *    +0 headPosition[3] u32
 *    +12 closed i32  +16 pid u32  +20 attachCount i32
 *    +24 receivedFrames f64 +32 receivedBytes f64
 *    +40 latency, published by a fan-out consumer about every 100 ms (0 otherwise): p50 f64
 *    +48 p99 f64 +56 max f64 (ns, over the frames of that window) +64 samples f64 (in it)
 *    +72 updatedMs f64 (Date.now() of the publication; 0: never)
 *  384 DATA_WAIT block (128 B): the consumer parks here
 *    +0 sleeping i32  +4 seq i32 (futex word)
 *  512 SPACE_WAIT block (128 B): the producer parks here
 *    +0 sleeping i32  +4 seq i32 (futex word)
 *  640 (rounded up to the page size by Channel.create: 4096 on x86-64) class 0 ring data
 *       (ringLength[0] bytes), then class 1, class 2, each 128-aligned; the receiver maps
 *       the data read-only
 * ```
 * Each block is written by one process only (the wait blocks: `sleeping` by the parker,
 * `seq` by the waker), so no cache line is written from both sides on the hot path.
 *
 * Positions: `tailPosition` / `headPosition` count bytes in [0, 2 * ringLength) and wrap
 * there, so any ring length that is a multiple of 8 works; the byte index in the ring is
 * `position < ringLength ? position : position - ringLength`, and the fill is
 * `(tail - head) mod 2 * ringLength`. The published tail is the commit point: every record
 * before it is complete (the producer publishes it after each frame, or once per batch while
 * corked). The consumer publishes its head in batches of frames and bytes.
 *
 * Records, 8-byte aligned, never split across the end of the ring:
 * ```
 *  0        4        8
 *  +--------+--------+--------------------------+---------+
 *  | length | type   | payload (length - 8 B)   | pad to 8|
 *  +--------+--------+--------------------------+---------+
 * ```
 * `length` (i32) is the record length including this 8-byte header (negative while claimed
 * and not committed: -(8 + claimed bytes)); `type` is DATA or PADDING. A PADDING record fills
 * the ring up to its end when the next record does not fit there.
 */
import { BLOCK_LENGTH, HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';

export const CAPACITY_OFFSET = PARAMS_OFFSET;
export const MAX_FRAME_OFFSET = CAPACITY_OFFSET + 4;
export const CLASS_COUNT_OFFSET = MAX_FRAME_OFFSET + 4;
export const RING_LENGTH_OFFSET = CLASS_COUNT_OFFSET + 8;
export const DATA_INDEX_OFFSET = RING_LENGTH_OFFSET + 12;
export const PARAMS_LENGTH = DATA_INDEX_OFFSET + 12 - PARAMS_OFFSET;

export const PRODUCER_BLOCK_OFFSET = HEADER_LENGTH;
export const TAIL_POSITION_OFFSET = PRODUCER_BLOCK_OFFSET;
export const PRODUCER_CLOSED_OFFSET = TAIL_POSITION_OFFSET + 12;
export const PRODUCER_PID_OFFSET = PRODUCER_CLOSED_OFFSET + 4;
export const SENT_FRAMES_OFFSET = PRODUCER_PID_OFFSET + 8;
export const SENT_BYTES_OFFSET = SENT_FRAMES_OFFSET + 8;
export const FULL_COUNT_OFFSET = SENT_BYTES_OFFSET + 8;

export const CONSUMER_BLOCK_OFFSET = PRODUCER_BLOCK_OFFSET + BLOCK_LENGTH;
export const HEAD_POSITION_OFFSET = CONSUMER_BLOCK_OFFSET;
export const CONSUMER_CLOSED_OFFSET = HEAD_POSITION_OFFSET + 12;
export const CONSUMER_PID_OFFSET = CONSUMER_CLOSED_OFFSET + 4;
export const ATTACH_COUNT_OFFSET = CONSUMER_PID_OFFSET + 4;
export const RECEIVED_FRAMES_OFFSET = ATTACH_COUNT_OFFSET + 4;
export const RECEIVED_BYTES_OFFSET = RECEIVED_FRAMES_OFFSET + 8;
/**
 * End-to-end latency of the frames received (sender stamp to decoding), as percentiles over
 * the last window, written by the consumer off its hot path (fan-out consumers: a timer,
 * about every 100 ms while frames arrive). Plain f64 stores: a reader may pair fields of two
 * consecutive windows. Zero in a channel nobody measures (the field was spare before).
 */
export const LATENCY_P50_OFFSET = RECEIVED_BYTES_OFFSET + 8;
export const LATENCY_P99_OFFSET = LATENCY_P50_OFFSET + 8;
export const LATENCY_MAX_OFFSET = LATENCY_P99_OFFSET + 8;
export const LATENCY_SAMPLES_OFFSET = LATENCY_MAX_OFFSET + 8;
export const LATENCY_UPDATED_MS_OFFSET = LATENCY_SAMPLES_OFFSET + 8;

export const DATA_WAIT_OFFSET = CONSUMER_BLOCK_OFFSET + BLOCK_LENGTH;
export const SPACE_WAIT_OFFSET = DATA_WAIT_OFFSET + BLOCK_LENGTH;
/** Within a wait block. */
export const SLEEPING_OFFSET = 0;
export const SEQ_OFFSET = 4;

export const RINGS_OFFSET = SPACE_WAIT_OFFSET + BLOCK_LENGTH;
/**
 * The first ring's data starts at RINGS_OFFSET rounded up to `dataAlign` (channelGeometry):
 * Channel.create() uses the page size, so the data area can be mapped read-only by the
 * receiver. A reader accepts any block-aligned start up to this far past RINGS_OFFSET.
 */
export const MAX_DATA_ALIGN = 64 * 1024;

export const RECORD_LENGTH_OFFSET = 0;
export const RECORD_TYPE_OFFSET = 4;
export const RECORD_HEADER_LENGTH = 8;
export const RECORD_ALIGNMENT = 8;
export const TYPE_DATA = 1;
export const TYPE_PADDING = 2;

/** Roles (lock bytes) of a channel segment. */
export const PRODUCER_ROLE = 0;
export const CONSUMER_ROLE = 1;

/** Closed flags. */
export const OPEN = 0;
export const CLOSED = 1;

export const MIN_CAPACITY = 1024;
export const MAX_CAPACITY = 2 ** 30;
export const MAX_CLASSES = 3;
/** Default shares of capacity for critical / high / low (memlink's 20/50/30 %). */
export const DEFAULT_CLASS_SHARES: readonly [number, number, number] = [0.2, 0.5, 0.3];

export interface ChannelGeometry {
  capacity: number;
  maxFrame: number;
  classCount: number;
  ringLengths: number[];
  dataIndices: number[];
  segmentLength: number;
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

/** Bytes a record with `payloadLength` bytes occupies in the ring. */
export function recordLength(payloadLength: number): number {
  return (payloadLength + RECORD_HEADER_LENGTH + RECORD_ALIGNMENT - 1) & ~(RECORD_ALIGNMENT - 1);
}

/** The largest payload that can ever fit a ring of `ringLength` bytes. */
export function largestPayload(ringLength: number): number {
  return ringLength - RECORD_HEADER_LENGTH;
}

/**
 * Computes the rings of a channel. `capacity` is the total ring bytes (a power of two);
 * with `shares`, it is split into one ring per class (each a multiple of 8).
 * `maxFrame` defaults to half the smallest ring, minus a header. `dataAlign` places the
 * first ring's data on that boundary: Channel.create() passes the page size, so the receiver
 * can make every ring's data read-only (a stray write kills the receiver, not the stream).
 */
export function channelGeometry(
  capacity: number,
  shares: readonly number[] | null,
  maxFrame?: number,
  dataAlign = BLOCK_LENGTH,
): ChannelGeometry {
  const ringLengths = shares === null ? [capacity] : shares.map((s) => Math.floor((capacity * s) / 8) * 8);
  const smallest = Math.min(...ringLengths);
  const frame = maxFrame ?? Math.floor(smallest / 2 / 8) * 8 - RECORD_HEADER_LENGTH;
  const dataIndices: number[] = [];
  let at = alignUp(RINGS_OFFSET, dataAlign);
  for (const length of ringLengths) {
    dataIndices.push(at);
    at = alignUp(at + length, BLOCK_LENGTH);
  }
  return { capacity, maxFrame: frame, classCount: ringLengths.length, ringLengths, dataIndices, segmentLength: at };
}

/** Problems with a channel geometry as `field=value (reason)` strings; empty when valid. */
export function checkChannelGeometry(g: ChannelGeometry, fileLength: number): string[] {
  const problems: string[] = [];
  if (!Number.isInteger(g.capacity) || g.capacity < MIN_CAPACITY || g.capacity > MAX_CAPACITY)
    problems.push(`capacity=${g.capacity} (must be ${MIN_CAPACITY}..${MAX_CAPACITY})`);
  else if ((g.capacity & (g.capacity - 1)) !== 0) problems.push(`capacity=${g.capacity} (must be a power of two)`);
  if (g.classCount !== 1 && g.classCount !== MAX_CLASSES)
    problems.push(`classCount=${g.classCount} (must be 1 or ${MAX_CLASSES})`);
  let end = RINGS_OFFSET;
  let total = 0;
  for (let c = 0; c < g.classCount && c < MAX_CLASSES; c++) {
    const length = g.ringLengths[c];
    const index = g.dataIndices[c];
    if (!Number.isInteger(length) || length < 64 || length % RECORD_ALIGNMENT !== 0)
      problems.push(`ringLength[${c}]=${length} (must be a multiple of 8, at least 64)`);
    if (c === 0) {
      // The first ring starts on a block boundary, at most one (largest) page after the blocks.
      if (!Number.isInteger(index) || index % BLOCK_LENGTH !== 0 || index < end || index > end + MAX_DATA_ALIGN)
        problems.push(`dataOffset[0]=${index} (must be a multiple of 128 in ${end}..${end + MAX_DATA_ALIGN})`);
    } else if (index !== alignUp(end, BLOCK_LENGTH))
      problems.push(`dataOffset[${c}]=${index} (expected ${alignUp(end, 128)})`);
    end = index + length;
    total += length;
  }
  if (total > g.capacity) problems.push(`ring lengths sum to ${total} (more than capacity ${g.capacity})`);
  if (end > fileLength) problems.push(`rings end at ${end} (file has ${fileLength} bytes)`);
  const smallest = Math.min(...g.ringLengths.slice(0, g.classCount));
  if (!Number.isInteger(g.maxFrame) || g.maxFrame < 1 || g.maxFrame > largestPayload(smallest))
    problems.push(`maxFrame=${g.maxFrame} (must be 1..${largestPayload(smallest)})`);
  return problems;
}

export function writeChannelParams(dv: DataView, g: ChannelGeometry): void {
  dv.setUint32(CAPACITY_OFFSET, g.capacity, true);
  dv.setUint32(MAX_FRAME_OFFSET, g.maxFrame, true);
  dv.setUint32(CLASS_COUNT_OFFSET, g.classCount, true);
  for (let c = 0; c < MAX_CLASSES; c++) {
    dv.setUint32(RING_LENGTH_OFFSET + 4 * c, g.ringLengths[c] ?? 0, true);
    dv.setUint32(DATA_INDEX_OFFSET + 4 * c, g.dataIndices[c] ?? 0, true);
  }
}

export function readChannelParams(dv: DataView): ChannelGeometry {
  const classCount = dv.getUint32(CLASS_COUNT_OFFSET, true);
  const n = Math.min(classCount, MAX_CLASSES);
  const ringLengths: number[] = [];
  const dataIndices: number[] = [];
  for (let c = 0; c < n; c++) {
    ringLengths.push(dv.getUint32(RING_LENGTH_OFFSET + 4 * c, true));
    dataIndices.push(dv.getUint32(DATA_INDEX_OFFSET + 4 * c, true));
  }
  const last = n - 1;
  return {
    capacity: dv.getUint32(CAPACITY_OFFSET, true),
    maxFrame: dv.getUint32(MAX_FRAME_OFFSET, true),
    classCount,
    ringLengths,
    dataIndices,
    segmentLength: n > 0 ? alignUp(dataIndices[last] + ringLengths[last], BLOCK_LENGTH) : RINGS_OFFSET,
  };
}
