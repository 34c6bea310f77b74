/**
 * The SPSC byte ring: a writer and a reader over typed-array views of one channel segment
 * (layout/channel.ts). Pure algorithm: no syscalls, no waiting. It runs the same over a
 * /dev/shm mapping and over a plain SharedArrayBuffer (which is how the unit tests run).
 *
 * ```ts
 * const sab = new SharedArrayBuffer(g.segmentLength);
 * const w = new RingWriter(viewsOf(sab), g, 0);
 * const r = new RingReader(viewsOf(sab), g, 0);
 * w.tryWrite(Uint8Array.of(1, 2, 3));        // true
 * const n = r.poll();                        // 3; payload at r.u8[r.frameIndex .. + n]
 * ```
 * Concurrency: one RingWriter (one thread of one process) and one RingReader (another
 * thread or process) per ring. Neither blocks or allocates on its hot path, except that
 * claim() returns a new view.
 */

import { ErrorCode, ShmSegmentError } from '../errors.js';
import {
  type ChannelGeometry,
  HEAD_POSITION_OFFSET,
  RECORD_HEADER_LENGTH,
  TAIL_POSITION_OFFSET,
  TERMINATOR_LENGTH,
  TYPE_DATA,
  TYPE_PADDING,
} from '../layout/channel.js';

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

/** Publish positions at least every this many frames... */
export const PUBLISH_FRAMES = 16;
/** ...or once this fraction of the ring has passed, whichever comes first. */
export const PUBLISH_BYTES_DIVISOR = 4;

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
  /** Private tail position (may be ahead of the published one). */
  tail: number;
  /** Last head position read from the consumer block. */
  private headCache: number;
  private pendingFrames = 0;
  private pendingBytes = 0;
  /** Byte index (relative to the ring) of an open claim, or -1. */
  private claimOffset = -1;
  /** Payload bytes of the open claim. */
  claimMax = 0;

  constructor(
    views: SegmentViews,
    g: ChannelGeometry,
    readonly cls: number,
    readonly totals: Totals,
  ) {
    this.u8 = views.u8;
    this.i32 = views.i32;
    this.base = g.dataIndices[cls];
    this.length = g.ringLengths[cls];
    this.twoLength = 2 * this.length;
    this.tailIndex = (TAIL_POSITION_OFFSET >> 2) + cls;
    this.headIndex = (HEAD_POSITION_OFFSET >> 2) + cls;
    this.publishBytes = Math.max(8, Math.floor(this.length / PUBLISH_BYTES_DIVISOR));
    this.tail = Atomics.load(this.i32, this.tailIndex);
    this.headCache = Atomics.load(this.i32, this.headIndex);
    assertPosition(this.tail, this.twoLength, 'tailPosition', cls);
    assertPosition(this.headCache, this.twoLength, 'headPosition', cls);
    if (this.used(this.headCache) > this.length)
      throw new RingCorruptError(
        `tail ${this.tail} is more than a ring ahead of head ${this.headCache}`,
        cls,
        this.tail,
      );
  }

  private used(head: number): number {
    const d = this.tail - head;
    return d < 0 ? d + this.twoLength : d;
  }

  /** True if `need` more bytes fit; reloads the consumer's head only when the cache says no. */
  private hasRoom(need: number): boolean {
    if (this.used(this.headCache) + need <= this.length) return true;
    // SYNC POINT: pairs with Atomics.store(headPosition) in RingReader.publish(); the reader
    // is done with every byte before the head it publishes.
    const head = this.loadHead();
    return this.used(head) + need <= this.length;
  }

  /** Loads and validates the consumer's published head (off the hot path: only when space looks short). */
  private loadHead(): number {
    const head = Atomics.load(this.i32, this.headIndex);
    assertPosition(head, this.twoLength, 'headPosition', this.cls);
    const used = this.used(head);
    if (used > this.length)
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
   * If the next record of `record` bytes does not fit before the end of the ring, fills the
   * rest with a PADDING record (committed at once: it carries nothing). Returns the ring
   * offset the record goes to, or -1 when there is no room.
   */
  private place(record: number): number {
    const length = this.length;
    const tail = this.tail;
    const offset = tail >= length ? tail - length : tail;
    const toEnd = length - offset;
    if (record <= toEnd) return this.hasRoom(record + TERMINATOR_LENGTH) ? offset : -1;
    if (!this.hasRoom(toEnd + TERMINATOR_LENGTH)) return -1;
    const i32 = this.i32;
    const base = this.base;
    i32[base >> 2] = 0; // terminator at the start of the next lap
    i32[((base + offset) >> 2) + 1] = TYPE_PADDING;
    // SYNC POINT: pairs with Atomics.load(length) in RingReader.poll(); the terminator at
    // ring offset 0 is written before the padding that leads the reader there.
    Atomics.store(i32, (base + offset) >> 2, toEnd);
    this.advance(toEnd);
    return this.hasRoom(record + TERMINATOR_LENGTH) ? 0 : -1;
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
    const base = this.base;
    const i32 = this.i32;
    const at = base + offset;
    this.u8.set(src, at + RECORD_HEADER_LENGTH);
    const next = offset + record;
    i32[(base + (next === this.length ? 0 : next)) >> 2] = 0; // terminator
    i32[(at >> 2) + 1] = TYPE_DATA;
    // SYNC POINT: pairs with Atomics.load(length) in RingReader.poll(); payload, type and
    // the next terminator are written before the length that commits them.
    Atomics.store(i32, at >> 2, payload + RECORD_HEADER_LENGTH);
    this.advance(record);
    this.totals.frames++;
    this.totals.bytes += payload;
    this.pendingFrames++;
    this.pendingBytes += record;
    if (this.pendingFrames >= PUBLISH_FRAMES || this.pendingBytes >= this.publishBytes) this.publish();
    return true;
  }

  /**
   * Reserves room for a frame of up to `maxLength` bytes and returns the ring byte index
   * of its payload, or -1 when there is no room. The record reads as claimed (negative
   * length) until commit() or abort().
   */
  claim(maxLength: number): number {
    const record = (maxLength + RECORD_HEADER_LENGTH + 7) & ~7;
    const offset = this.place(record);
    if (offset < 0) return -1;
    const at = this.base + offset;
    // Visible "claimed, not committed" state; the reader stops at a length <= 0.
    Atomics.store(this.i32, at >> 2, -(maxLength + RECORD_HEADER_LENGTH));
    this.claimOffset = offset;
    this.claimMax = maxLength;
    return at + RECORD_HEADER_LENGTH;
  }

  get claimed(): boolean {
    return this.claimOffset >= 0;
  }

  /** Commits the open claim with `payload` bytes (at most what was claimed). */
  commit(payload: number): void {
    const offset = this.claimOffset;
    const record = (payload + RECORD_HEADER_LENGTH + 7) & ~7;
    const base = this.base;
    const i32 = this.i32;
    const at = base + offset;
    const next = offset + record;
    i32[(base + (next === this.length ? 0 : next)) >> 2] = 0; // terminator
    i32[(at >> 2) + 1] = TYPE_DATA;
    // SYNC POINT: pairs with Atomics.load(length) in RingReader.poll(); the payload written
    // through the claimed view and the terminator come before the committing length.
    Atomics.store(i32, at >> 2, payload + RECORD_HEADER_LENGTH);
    this.claimOffset = -1;
    this.claimMax = 0;
    this.advance(record);
    this.totals.frames++;
    this.totals.bytes += payload;
    this.pendingFrames++;
    this.pendingBytes += record;
    if (this.pendingFrames >= PUBLISH_FRAMES || this.pendingBytes >= this.publishBytes) this.publish();
  }

  /** Discards the open claim: the slot reads as empty again and the tail does not move. */
  abort(): void {
    // The reader cannot have passed a claimed record, so rolling back is safe (single producer).
    Atomics.store(this.i32, (this.base + this.claimOffset) >> 2, 0);
    this.claimOffset = -1;
    this.claimMax = 0;
  }

  /** Publishes the private tail and the totals (for fill levels and inspection). */
  publish(): void {
    this.totals.publish();
    // SYNC POINT: pairs with Atomics.load(tailPosition) in RingReader.fill(); informational
    // only (frames are found through record lengths), so it may lag.
    Atomics.store(this.i32, this.tailIndex, this.tail);
    this.pendingFrames = 0;
    this.pendingBytes = 0;
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
  /** Bytes of the frame handed out by the last poll() (released by the next poll()). */
  private held = 0;
  private pendingFrames = 0;
  private pendingBytes = 0;
  /** Absolute byte index of the payload returned by the last successful poll(). */
  frameIndex = 0;
  /** Payload length returned by the last successful poll(). */
  frameLength = 0;
  /** While true (drain), positions are published only when the caller says so. */
  batching = false;
  /** Called after each head publication (the channel wakes a producer waiting for room). */
  onPublish: (() => void) | null = null;

  constructor(
    views: SegmentViews,
    g: ChannelGeometry,
    readonly cls: number,
    readonly totals: Totals,
  ) {
    this.u8 = views.u8;
    this.i32 = views.i32;
    this.base = g.dataIndices[cls];
    this.length = g.ringLengths[cls];
    this.twoLength = 2 * this.length;
    this.headIndex = (HEAD_POSITION_OFFSET >> 2) + cls;
    this.tailIndex = (TAIL_POSITION_OFFSET >> 2) + cls;
    this.publishBytes = Math.max(8, Math.floor(this.length / PUBLISH_BYTES_DIVISOR));
    this.head = Atomics.load(this.i32, this.headIndex);
    assertPosition(this.head, this.twoLength, 'headPosition', cls);
    // The published tail may lag the head (the writer batches it), so only its range is checked.
    assertPosition(Atomics.load(this.i32, this.tailIndex), this.twoLength, 'tailPosition', cls);
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

  /** True if a frame (or padding) is committed after the one handed out last (consumes nothing). */
  ready(): boolean {
    const length = this.length;
    let head = this.head + this.held;
    if (head >= this.twoLength) head -= this.twoLength;
    const offset = head >= length ? head - length : head;
    return Atomics.load(this.i32, (this.base + offset) >> 2) > 0;
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
      const offset = head >= length ? head - length : head;
      const at = base + offset;
      // SYNC POINT: pairs with Atomics.store(length) in RingWriter.tryWrite()/commit()/place();
      // a positive length means payload, type and terminator are visible.
      const recordLength = Atomics.load(i32, at >> 2);
      if (recordLength <= 0) {
        if (this.pendingBytes !== 0) this.publish();
        return -1;
      }
      // Compare before rounding: rounding a huge length up would overflow int32.
      // (length - offset is a multiple of 8, so this is the same bound as on the rounded record.)
      if (recordLength < RECORD_HEADER_LENGTH || recordLength > length - offset)
        throw new RingCorruptError(
          `record length ${recordLength} at ring offset ${offset} (ring ${length} B)`,
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
    // SYNC POINT: pairs with Atomics.load(headPosition) in RingWriter.hasRoom(); every byte
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

  /** Fill level 0..1 from the published tail (which may lag: then it reads as less full). */
  fill(): number {
    const tail = Atomics.load(this.i32, this.tailIndex);
    let used = tail - this.head;
    if (used < 0) used += this.twoLength;
    return used > this.length ? 0 : used / this.length;
  }
}
