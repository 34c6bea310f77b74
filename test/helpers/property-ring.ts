/**
 * The reference model of one SPSC ring (layout/channel.ts) for the property tests, and a
 * channel whose segment is a plain SharedArrayBuffer (no addon, no file).
 *
 * The model is the layout's contract, not the writer's code: positions count bytes in
 * [0, 2N) and wrap there; a record (8-byte header + payload, rounded up to 8) never crosses
 * the end of the ring; when it does not fit before the end, a PADDING record fills the ring
 * up to its end first, and that padding is written as soon as it fits, even when the record
 * after it does not (yet). Room is counted against the head the consumer published.
 *
 * ```ts
 * const model = new RingModel(1024, 1016);
 * model.place(recordLength(100), 1016);   // { padding: 8, fits: true }: pads the last 8 bytes, then writes at 0
 * ```
 */
import { ChannelReceiver, ChannelSender, checkEndOptions } from '../../src/channel/channel.js';
import { viewsOf } from '../../src/core/spsc-ring.js';
import {
  type ChannelGeometry,
  HEAD_POSITION_OFFSET,
  recordLength,
  TAIL_POSITION_OFFSET,
} from '../../src/layout/channel.js';
import type { Segment } from '../../src/segment/segment.js';
import { fillFrame } from './prng.js';

/** A frame the model knows was committed: its bytes and where its record lies. */
export interface ModelFrame {
  readonly seq: number;
  readonly bytes: Uint8Array;
  /** Position of the record's header. */
  readonly start: number;
  /** Position just past the record (start + recordLength(bytes.length), wrapped). */
  readonly end: number;
}

export interface Placement {
  /** Bytes of PADDING written before the record (0 or the bytes left to the end of the ring). */
  readonly padding: number;
  /** Whether the record itself is written. */
  readonly fits: boolean;
}

export class RingModel {
  readonly twoLength: number;
  /** The writer's position (private tail): every record before it is written. */
  tail: number;
  /** Committed frames not yet handed to the reader, oldest first. */
  readonly queue: ModelFrame[] = [];
  sentFrames = 0;
  sentBytes = 0;

  constructor(
    readonly length: number,
    start: number,
  ) {
    this.twoLength = 2 * length;
    this.tail = start;
  }

  /** Bytes from position `from` forward to position `to` (0..2N-1). */
  distance(from: number, to: number): number {
    const d = to - from;
    return d < 0 ? d + this.twoLength : d;
  }

  /** The position `bytes` after `position`. */
  advance(position: number, bytes: number): number {
    const p = position + bytes;
    return p >= this.twoLength ? p - this.twoLength : p;
  }

  /** Ring offset (0..N-1) of a position. */
  offsetOf(position: number): number {
    return position >= this.length ? position - this.length : position;
  }

  /**
   * What a write or claim of `record` bytes must do when the consumer's published head is
   * `head`: pad to the end of the ring if the record does not fit before it (and the padding
   * itself fits), then write the record if the ring has room for it.
   */
  place(record: number, head: number): Placement {
    const used = this.distance(head, this.tail);
    const toEnd = this.length - this.offsetOf(this.tail);
    if (record <= toEnd) return { padding: 0, fits: used + record <= this.length };
    if (used + toEnd > this.length) return { padding: 0, fits: false };
    return { padding: toEnd, fits: used + toEnd + record <= this.length };
  }

  /** Applies the padding of a placement (the writer keeps it whether or not the record fits). */
  pad(p: Placement): void {
    this.tail = this.advance(this.tail, p.padding);
  }

  /** Records a committed frame at the current tail and moves the tail past it. */
  commit(seq: number, bytes: Uint8Array): ModelFrame {
    const start = this.tail;
    const frame = { seq, bytes, start, end: this.advance(start, recordLength(bytes.length)) };
    this.queue.push(frame);
    this.tail = frame.end;
    this.sentFrames++;
    this.sentBytes += bytes.length;
    return frame;
  }

  /**
   * Whether `frame` lies before the published tail `publishedTail`, seen from position `from`
   * (where the reader resumes): only such frames may reach the reader.
   */
  isPublished(frame: ModelFrame, from: number, publishedTail: number): boolean {
    return this.distance(from, frame.end) <= this.distance(from, publishedTail);
  }
}

/** A payload of `length` bytes that describes itself (test/helpers/prng.ts fillFrame). */
export function frameOf(seq: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  fillFrame(out, seq);
  return out;
}

/**
 * Both ends of a channel over a SharedArrayBuffer, with the head and tail positions at
 * `start`. The segment is a stand-in holding only what the non-blocking paths use (`name`,
 * `views`): trySend, claim, commit, abort, tryRecv, drain and stats never reach the addon while
 * no end is parked, and close() must not be called.
 */
export function heapChannel(g: ChannelGeometry, start: number) {
  const sab = new SharedArrayBuffer(g.segmentLength);
  const base = viewsOf(sab);
  const seg = { name: 'property-heap-channel', views: { ...base, dv: new DataView(sab) } } as unknown as Segment;
  base.i32[TAIL_POSITION_OFFSET >> 2] = start;
  base.i32[HEAD_POSITION_OFFSET >> 2] = start;
  const options = checkEndOptions({ wait: 'spin' });
  const sender = new ChannelSender(seg, g, options);
  const receiver = new ChannelReceiver(seg, g, options);
  return { sab, u8: base.u8, i32: base.i32, sender, receiver };
}
