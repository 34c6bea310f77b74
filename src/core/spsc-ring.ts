/**
 * The SPSC byte ring: a writer and a reader over typed-array views of one channel segment
 * (layout/channel.ts). Pure algorithm: no syscalls, no waiting. It runs the same over a
 * /dev/shm mapping and over a plain SharedArrayBuffer (which is how the unit tests run).
 *
 * ```ts
 * const g = channelGeometry(1 << 16, null);
 * const views = viewsOf(new SharedArrayBuffer(g.segmentLength));
 * const w = new RingWriter(views, g, 0, new Totals(views.f64, SENT_FRAMES_OFFSET >> 3, SENT_BYTES_OFFSET >> 3));
 * const r = new RingReader(views, g, 0, new Totals(views.f64, RECEIVED_FRAMES_OFFSET >> 3, RECEIVED_BYTES_OFFSET >> 3));
 * w.tryWrite(Uint8Array.of(1, 2, 3));        // true: written and published (the tail is the commit point)
 * const n = r.poll();                        // 3; payload at r.u8[r.frameIndex .. + n]
 * ```
 * Concurrency: one RingWriter (one thread of one process) and one RingReader (another
 * thread or process) per ring. Neither blocks nor allocates.
 */

import { ErrorCode, ShmFrameError, ShmSegmentError } from '../errors.js';
import {
  type ChannelGeometry,
  HEAD_POSITION_OFFSET,
  RECEIVED_BYTES_OFFSET,
  RECEIVED_FRAMES_OFFSET,
  RECORD_HEADER_LENGTH,
  SENT_BYTES_OFFSET,
  SENT_FRAMES_OFFSET,
  TAIL_POSITION_OFFSET,
  TYPE_DATA,
  TYPE_PADDING,
} from '../layout/channel.js';
import { STOP_AT, stopAt } from './test-hooks.js';

export interface SegmentViews {
  readonly buffer: ArrayBufferLike;
  readonly u8: Uint8Array;
  readonly i32: Int32Array;
  readonly f64: Float64Array;
}

export function viewsOf(buffer: ArrayBufferLike): SegmentViews {
  return {
    buffer,
    u8: new Uint8Array(buffer),
    i32: new Int32Array(buffer, 0, buffer.byteLength >> 2),
    f64: new Float64Array(buffer, 0, buffer.byteLength >> 3),
  };
}

/** Batched publication (the consumer's head always; the producer's tail while corked): at least every this many frames... */
export const PUBLISH_FRAMES = 16;
/** ...or once this many bytes have passed (a quarter of the ring at most), whichever comes first. */
export const PUBLISH_BYTES_MAX = 64 * 1024;

/** Large frames are published one by one: the atomic is nothing next to the copy, and the peer starts sooner. */
function publishBytesFor(ringLength: number): number {
  return Math.max(8, Math.min(PUBLISH_BYTES_MAX, Math.floor(ringLength / 4)));
}

/**
 * Frame and byte totals of one channel end, shared by its rings and published with their
 * positions (for inspection; never read by the peer's algorithm).
 */
export class Totals {
  frames: number;
  bytes: number;
  constructor(
    private readonly f64: Float64Array,
    private readonly framesIndex: number,
    private readonly bytesIndex: number,
  ) {
    this.frames = f64[framesIndex] || 0;
    this.bytes = f64[bytesIndex] || 0;
  }
  publish(): void {
    this.f64[this.framesIndex] = this.frames;
    this.f64[this.bytesIndex] = this.bytes;
  }
}

/** Thrown by the reader when a record cannot be valid (a corrupt or hostile segment). */
export class RingCorruptError extends ShmSegmentError {
  constructor(
    message: string,
    readonly ringClass: number,
    readonly position: number,
  ) {
    super(ErrorCode.CORRUPT, `ring ${ringClass}: ${message}`, { details: { ringClass, position } });
  }
}

function assertPosition(position: number, twoLength: number, what: string, cls: number): void {
  if (!Number.isInteger(position) || position < 0 || position >= twoLength || position % 8 !== 0)
    throw new RingCorruptError(
      `${what}=${position >>> 0} is not a record boundary in [0, ${twoLength})`,
      cls,
      position,
    );
}

/** The producer side of one ring. */
export class RingWriter {
  readonly u8: Uint8Array;
  readonly i32: Int32Array;
  /** Absolute byte index of the ring's first byte. */
  private readonly base: number;
  /** Ring length in bytes (N); positions live in [0, 2N). */
  private readonly length: number;
  private readonly twoLength: number;
  private readonly tailIndex: number;
  private readonly headIndex: number;
  private readonly publishBytes: number;
  /** Private tail position: records before it are written; before the published tail, committed. */
  tail: number;
  /** Last head position read from the consumer block. */
  private headCache: number;
  private pendingFrames = 0;
  private pendingBytes = 0;
  /** While true, the tail is published in batches (PUBLISH_FRAMES / publishBytes) and by publish(). */
  corked = false;
  /** Called after each tail publication (the channel wakes a parked consumer). */
  onPublish: (() => void) | null = null;
  /** Ring offset of an open claim, or -1. */
  private claimOffset = -1;
  /** Payload bytes of the open claim. */
  claimMax = 0;

  /**
   * `blocksBase` moves the position blocks: a segment holding several ring sets (the daemon's
   * per-client command and response rings) lays out each set like a channel's, at an offset.
   */
  constructor(
    views: SegmentViews,
    g: ChannelGeometry,
    readonly cls: number,
    readonly totals: Totals,
    blocksBase = 0,
  ) {
    this.u8 = views.u8;
    this.i32 = views.i32;
    this.base = g.dataIndices[cls];
    this.length = g.ringLengths[cls];
    this.twoLength = 2 * this.length;
    this.tailIndex = ((blocksBase + TAIL_POSITION_OFFSET) >> 2) + cls;
    this.headIndex = ((blocksBase + HEAD_POSITION_OFFSET) >> 2) + cls;
    this.publishBytes = publishBytesFor(this.length);
    this.tail = Atomics.load(this.i32, this.tailIndex);
    assertPosition(this.tail, this.twoLength, 'tailPosition', cls);
    this.headCache = this.tail;
    this.loadHead();
  }

  private used(head: number): number {
    const d = this.tail - head;
    return d < 0 ? d + this.twoLength : d;
  }

  /** True if `need` more bytes fit; reloads the consumer's head only when the cache says no. */
  private hasRoom(need: number): boolean {
    if (this.used(this.headCache) + need <= this.length) return true;
    return this.used(this.loadHead()) + need <= this.length;
  }

  /** Loads and validates the consumer's published head (off the hot path: only when space looks short). */
  private loadHead(): number {
    // SYNC POINT: pairs with Atomics.store(headPosition) in RingReader.publish(); the reader
    // is done with every byte before the head it publishes.
    const head = Atomics.load(this.i32, this.headIndex);
    assertPosition(head, this.twoLength, 'headPosition', this.cls);
    if (this.used(head) > this.length)
      throw new RingCorruptError(`tail ${this.tail} is more than a ring ahead of head ${head}`, this.cls, head);
    this.headCache = head;
    return head;
  }

  /** Bytes in flight as last seen (0..1 of the ring). */
  fill(): number {
    return this.used(this.loadHead()) / this.length;
  }

  private advance(bytes: number): void {
    let tail = this.tail + bytes;
    if (tail >= this.twoLength) tail -= this.twoLength;
    this.tail = tail;
  }

  /**
   * Returns the ring offset where a record of `record` bytes goes, or -1 when there is no
   * room. If the record does not fit before the end of the ring, the rest of the ring gets a
   * PADDING record first (published with the next record).
   */
  private place(record: number): number {
    const length = this.length;
    const tail = this.tail;
    const offset = tail >= length ? tail - length : tail;
    const toEnd = length - offset;
    if (record <= toEnd) {
      if (this.hasRoom(record)) return offset;
      return this.noRoom();
    }
    // The padding is needed whatever happens next (the record can never start here), so it
    // is written as soon as it fits, even if the record itself does not fit yet.
    if (!this.hasRoom(toEnd)) return this.noRoom();
    const at = (this.base + offset) >> 2;
    this.i32[at] = toEnd;
    this.i32[at + 1] = TYPE_PADDING;
    this.advance(toEnd);
    this.pendingBytes += toEnd;
    if (this.hasRoom(record)) return 0;
    // Publish the padding so the reader skips it and frees the space the record needs.
    this.publish();
    return -1;
  }

  /** Full: a corked batch must not wait for room its own unpublished records hold back. */
  private noRoom(): number {
    if (this.pendingBytes !== 0) this.publish();
    return -1;
  }

  /** Counts one written record and publishes the tail now, or at the end of the batch when corked. */
  private written(record: number, payload: number): void {
    if (STOP_AT !== null) stopAt('ring.before-publish');
    this.advance(record);
    this.totals.frames++;
    this.totals.bytes += payload;
    this.pendingFrames++;
    if (!this.corked) {
      this.publishTail();
      this.pendingBytes = 0;
      if (this.pendingFrames >= PUBLISH_FRAMES) {
        this.totals.publish();
        this.pendingFrames = 0;
      }
      return;
    }
    this.pendingBytes += record;
    if (this.pendingFrames >= PUBLISH_FRAMES || this.pendingBytes >= this.publishBytes) this.publish();
  }

  /**
   * Copies `src` into the ring as one frame. Returns false when there is no room now (the
   * caller counts it). The caller has checked `src.length <= maxFrame`.
   */
  tryWrite(src: Uint8Array): boolean {
    const payload = src.length;
    const record = (payload + RECORD_HEADER_LENGTH + 7) & ~7;
    const offset = this.place(record);
    if (offset < 0) return false;
    const at = this.base + offset;
    this.u8.set(src, at + RECORD_HEADER_LENGTH);
    if (STOP_AT !== null) stopAt('ring.after-copy');
    const i32 = this.i32;
    i32[at >> 2] = payload + RECORD_HEADER_LENGTH;
    i32[(at >> 2) + 1] = TYPE_DATA;
    this.written(record, payload);
    return true;
  }

  /**
   * Reserves room for a frame of up to `maxLength` bytes and returns the absolute byte index
   * of its payload, or -1 when there is no room. The record reads as claimed (negative
   * length) until commit() or abort().
   */
  claim(maxLength: number): number {
    if (this.claimOffset >= 0)
      throw new ShmFrameError(ErrorCode.CLAIM_STATE, `ring ${this.cls}: commit() or abort() the open claim first`);
    const record = (maxLength + RECORD_HEADER_LENGTH + 7) & ~7;
    const offset = this.place(record);
    if (offset < 0) return -1;
    const at = this.base + offset;
    // Visible "claimed, not committed" state (for inspection and crash analysis); the
    // reader never looks past the published tail, which a claim does not move.
    this.i32[at >> 2] = -(maxLength + RECORD_HEADER_LENGTH);
    this.claimOffset = offset;
    this.claimMax = maxLength;
    return at + RECORD_HEADER_LENGTH;
  }

  get claimed(): boolean {
    return this.claimOffset >= 0;
  }

  /** Commits the open claim with `payload` bytes (at most what was claimed). */
  commit(payload: number): void {
    const at = this.base + this.claimOffset;
    this.i32[at >> 2] = payload + RECORD_HEADER_LENGTH;
    this.i32[(at >> 2) + 1] = TYPE_DATA;
    this.claimOffset = -1;
    this.claimMax = 0;
    this.written((payload + RECORD_HEADER_LENGTH + 7) & ~7, payload);
  }

  /** Discards the open claim: nothing is published and the tail does not move. */
  abort(): void {
    this.i32[(this.base + this.claimOffset) >> 2] = 0;
    this.claimOffset = -1;
    this.claimMax = 0;
  }

  private publishTail(): void {
    // SYNC POINT: pairs with Atomics.load(tailPosition) in RingReader.poll(); every record
    // (payload, length, type, padding) before the tail is written before it is published.
    Atomics.store(this.i32, this.tailIndex, this.tail);
    this.onPublish?.();
  }

  /** Publishes the tail (commits every record written so far) and the totals. */
  publish(): void {
    this.totals.publish();
    this.publishTail();
    this.pendingFrames = 0;
    this.pendingBytes = 0;
  }

  /** True if records were written but the tail not yet published (corked). */
  get unpublished(): boolean {
    return this.pendingBytes !== 0;
  }
}

/** The consumer side of one ring. */
export class RingReader {
  readonly u8: Uint8Array;
  private readonly i32: Int32Array;
  private readonly base: number;
  private readonly length: number;
  private readonly twoLength: number;
  private readonly headIndex: number;
  private readonly tailIndex: number;
  private readonly publishBytes: number;
  /** Private head position. */
  head: number;
  /** Last published tail read: records between head and it are committed. */
  private tailCache: number;
  /** Bytes of the frame handed out by the last poll() (released by the next poll()). */
  private held = 0;
  private pendingFrames = 0;
  private pendingBytes = 0;
  /** Absolute byte index of the payload returned by the last successful poll(). */
  frameIndex = 0;
  /** Payload length returned by the last successful poll(). */
  frameLength = 0;
  /** While true (drain), the head is published only when the caller says so. */
  batching = false;
  /** Called after each head publication (the channel wakes a producer waiting for room). */
  onPublish: (() => void) | null = null;

  /** `blocksBase`: as RingWriter's. */
  constructor(
    views: SegmentViews,
    g: ChannelGeometry,
    readonly cls: number,
    readonly totals: Totals,
    blocksBase = 0,
  ) {
    this.u8 = views.u8;
    this.i32 = views.i32;
    this.base = g.dataIndices[cls];
    this.length = g.ringLengths[cls];
    this.twoLength = 2 * this.length;
    this.headIndex = ((blocksBase + HEAD_POSITION_OFFSET) >> 2) + cls;
    this.tailIndex = ((blocksBase + TAIL_POSITION_OFFSET) >> 2) + cls;
    this.publishBytes = publishBytesFor(this.length);
    this.head = Atomics.load(this.i32, this.headIndex);
    assertPosition(this.head, this.twoLength, 'headPosition', cls);
    this.tailCache = this.head;
    this.loadTail();
  }

  /** Committed bytes between the head and `tail`. */
  private available(tail: number): number {
    const d = tail - this.head;
    return d < 0 ? d + this.twoLength : d;
  }

  /** Loads and validates the producer's published tail. */
  private loadTail(): number {
    // SYNC POINT: pairs with Atomics.store(tailPosition) in RingWriter.publishTail(); every
    // record before the loaded tail is fully written and may be read with plain loads.
    const tail = Atomics.load(this.i32, this.tailIndex);
    if (tail !== this.tailCache) {
      assertPosition(tail, this.twoLength, 'tailPosition', this.cls);
      if (this.available(tail) > this.length)
        throw new RingCorruptError(`tail ${tail} is more than a ring ahead of head ${this.head}`, this.cls, tail);
      this.tailCache = tail;
    }
    return tail;
  }

  /** Frees the frame handed out by the last poll(). */
  release(): void {
    const held = this.held;
    if (held === 0) return;
    this.held = 0;
    let head = this.head + held;
    if (head >= this.twoLength) head -= this.twoLength;
    this.head = head;
    this.pendingFrames++;
    this.pendingBytes += held;
    if (!this.batching && (this.pendingFrames >= PUBLISH_FRAMES || this.pendingBytes >= this.publishBytes))
      this.publish();
  }

  /** True if a committed record follows the frame handed out last (consumes nothing; one atomic load). */
  ready(): boolean {
    let head = this.head + this.held;
    if (head >= this.twoLength) head -= this.twoLength;
    return Atomics.load(this.i32, this.tailIndex) !== head;
  }

  /**
   * Releases the previous frame, then returns the payload length of the next committed
   * frame (its payload is at `u8[frameIndex]`), or -1 when none is committed. Skips
   * padding. Throws RingCorruptError on a record that cannot be valid.
   */
  poll(): number {
    if (this.held !== 0) this.release();
    const i32 = this.i32;
    const length = this.length;
    const base = this.base;
    for (;;) {
      const head = this.head;
      let available = this.available(this.tailCache);
      if (available === 0) {
        available = this.available(this.loadTail());
        if (available === 0) {
          if (this.pendingBytes !== 0) this.publish();
          return -1;
        }
      }
      const offset = head >= length ? head - length : head;
      const at = base + offset;
      const recordLength = i32[at >> 2];
      // Compare before rounding: rounding a huge length up would overflow int32. A record
      // never crosses the end of the ring nor the published tail.
      if (recordLength < RECORD_HEADER_LENGTH || recordLength > length - offset || recordLength > available)
        throw new RingCorruptError(
          `record length ${recordLength} at ring offset ${offset} (ring ${length} B, ${available} B committed)`,
          this.cls,
          head,
        );
      const record = (recordLength + 7) & ~7;
      const type = i32[(at >> 2) + 1];
      if (type === TYPE_DATA) {
        this.held = record;
        this.frameIndex = at + RECORD_HEADER_LENGTH;
        const payload = recordLength - RECORD_HEADER_LENGTH;
        this.frameLength = payload;
        this.totals.frames++;
        this.totals.bytes += payload;
        return payload;
      }
      if (type !== TYPE_PADDING)
        throw new RingCorruptError(`record type ${type} at ring offset ${offset}`, this.cls, head);
      // Padding carries nothing: skip it without counting a frame.
      let next = head + record;
      if (next >= this.twoLength) next -= this.twoLength;
      this.head = next;
      this.pendingBytes += record;
    }
  }

  /** Puts back the frame returned by the last poll(): it will be returned again. */
  unread(): void {
    if (this.held === 0) return;
    this.held = 0;
    this.totals.frames--;
    this.totals.bytes -= this.frameLength;
  }

  /** Publishes the head (frees space for the writer) and the totals. */
  publish(): void {
    this.totals.publish();
    // SYNC POINT: pairs with Atomics.load(headPosition) in RingWriter.loadHead(); every byte
    // before the head has been read and may be overwritten.
    Atomics.store(this.i32, this.headIndex, this.head);
    this.pendingFrames = 0;
    this.pendingBytes = 0;
    this.onPublish?.();
  }

  /** True if frames were consumed but the head not yet published. */
  get unpublished(): boolean {
    return this.pendingBytes !== 0;
  }

  /** Fill level 0..1 from the published tail. */
  fill(): number {
    return this.available(this.loadTail()) / this.length;
  }
}

/**
 * A ring set laid out like a channel's: its blocks at `blocksBase` plus the channel offsets
 * (0 for a channel segment; an area of a daemon, session or hub segment otherwise).
 */
export interface RingArea {
  readonly g: ChannelGeometry;
  readonly blocksBase: number;
}

/** The producer side of every class ring of `area`, sharing the producer block's totals. */
export function areaWriters(views: SegmentViews, area: RingArea): RingWriter[] {
  const b = area.blocksBase;
  const totals = new Totals(views.f64, (b + SENT_FRAMES_OFFSET) >> 3, (b + SENT_BYTES_OFFSET) >> 3);
  return area.g.ringLengths.map((_, c) => new RingWriter(views, area.g, c, totals, b));
}

/** The consumer side of every class ring of `area`, sharing the consumer block's totals. */
export function areaReaders(views: SegmentViews, area: RingArea): RingReader[] {
  const b = area.blocksBase;
  const totals = new Totals(views.f64, (b + RECEIVED_FRAMES_OFFSET) >> 3, (b + RECEIVED_BYTES_OFFSET) >> 3);
  return area.g.ringLengths.map((_, c) => new RingReader(views, area.g, c, totals, b));
}
