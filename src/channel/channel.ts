/**
 * Channel: a one-way SPSC byte channel between two processes (or threads) through a ring
 * in a /dev/shm segment.
 *
 * ```ts
 * import { Channel } from 'shmbus';
 * const tx = Channel.create('orders', { capacity: 1 << 20 });   // producer end
 * tx.trySend(new TextEncoder().encode('hello'));                // true, or false when full
 * await tx.send(bytes, { timeoutMs: 1000 });                    // waits for room
 * tx.close();
 *
 * const rx = Channel.open('orders');                             // consumer end, another process
 * for await (const frame of rx) console.log(frame.length);       // a view into the ring
 * ```
 * Each end belongs to one thread. The sender never blocks in trySend/claim/commit; send()
 * waits on the event loop, sendSync() blocks the thread. The receiver's frames are views
 * INTO the ring, valid until the next receive call on that end (tryRecv, recv, recvSync,
 * drain, close): copy them (`frame.slice()`) to keep them.
 */
import { unlinkSync } from 'node:fs';
import {
  areaReaders,
  areaWriters,
  RingCorruptError,
  type RingReader,
  type RingWriter,
  type Totals,
} from '../core/spsc-ring.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import {
  ErrorCode,
  ShmArgumentError,
  ShmFrameError,
  ShmSegmentError,
  ShmStateError,
  ShmTimeoutError,
} from '../errors.js';
import {
  ATTACH_COUNT_OFFSET,
  type ChannelGeometry,
  CLOSED,
  CONSUMER_CLOSED_OFFSET,
  CONSUMER_PID_OFFSET,
  CONSUMER_ROLE,
  channelGeometry,
  checkChannelGeometry,
  DATA_WAIT_OFFSET,
  DEFAULT_CLASS_SHARES,
  FULL_COUNT_OFFSET,
  LATENCY_MAX_OFFSET,
  LATENCY_P50_OFFSET,
  LATENCY_P99_OFFSET,
  LATENCY_SAMPLES_OFFSET,
  LATENCY_UPDATED_MS_OFFSET,
  MAX_CAPACITY,
  MIN_CAPACITY,
  OPEN,
  PARAMS_LENGTH,
  PRODUCER_CLOSED_OFFSET,
  PRODUCER_PID_OFFSET,
  PRODUCER_ROLE,
  readChannelParams,
  SEQ_OFFSET,
  SLEEPING_OFFSET,
  SPACE_WAIT_OFFSET,
  writeChannelParams,
} from '../layout/channel.js';
import { Kind } from '../layout/segment.js';
import { segmentPath, validateName } from '../segment/names.js';
import { pageSize, Segment, type SegmentOptions } from '../segment/segment.js';
import { WaitBlock, type WaitSpec, waitAsync, waitSync } from '../segment/wake.js';

/**
 * How an end waits: 'spin' polls (lowest latency, burns a core), 'park' sleeps in the
 * kernel at once (lowest CPU), 'adaptive' (default) polls `spinIterations` times, then parks.
 */
export type WaitStrategy = 'spin' | 'adaptive' | 'park';
export type Priority = 'critical' | 'high' | 'low';

export interface EndOptions {
  /** Default 'adaptive'. */
  wait?: WaitStrategy;
  /** Polls before parking under 'adaptive' (default 2000, roughly 10-20 us). */
  spinIterations?: number;
  /** While waiting, how often to check whether the peer process is still alive (default 100 ms). */
  livenessCheckMs?: number;
}

export interface ChannelCreateOptions extends SegmentOptions, EndOptions {
  /** Ring bytes, a power of two in 1 KiB..1 GiB (default 1 MiB). */
  capacity?: number;
  /** Largest payload in bytes (default: half the smallest ring, minus 8). */
  maxFrame?: number;
  /**
   * Three priority classes (critical, high, low), each with its own ring taking a share of
   * `capacity` (default 20/50/30 %). Receivers always get critical before high before low.
   */
  priorities?: boolean | { critical: number; high: number; low: number };
}

export interface ChannelOpenOptions extends SegmentOptions, EndOptions {
  /** Fail with SHM_ERR_INCOMPATIBLE unless the channel has these parameters. */
  expect?: { capacity?: number; maxFrame?: number; priorities?: boolean };
}

export interface SendOptions {
  /** Only on channels created with `priorities` (default 'high'). */
  priority?: Priority;
}

export interface WaitOptions {
  /** Give up after this many ms with SHM_ERR_TIMEOUT (default: wait forever). */
  timeoutMs?: number;
}

export interface SenderStats {
  sentFrames: number;
  sentBytes: number;
  /** trySend/claim calls refused because the ring was full. */
  fullCount: number;
}

export interface ReceiverStats {
  receivedFrames: number;
  receivedBytes: number;
}

/**
 * Copy-out keeps one view per ring offset (frames of the same length land on the same
 * offsets again and again): creating a view costs ~60 ns on Node 20, a bulk copy of 64 B ~25.
 */
const VIEW_CACHE_MAX_FRAME = 4096;
/** recv() lets the event loop turn after this many frames resolved without waiting. */
const YIELD_EVERY = 256;
const PRIORITY_CLASS: Record<Priority, number> = { critical: 0, high: 1, low: 2 };
const DEFAULT_PRIORITY_CLASS = 1;
const DEFAULT_CAPACITY = 1 << 20;

/** Validates and defaults wait options (shared with the daemon/client ends). @internal */
export function checkEndOptions(o: EndOptions): Required<EndOptions> {
  const wait = o.wait ?? 'adaptive';
  if (wait !== 'spin' && wait !== 'adaptive' && wait !== 'park')
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `wait must be 'spin', 'adaptive' or 'park', got ${String(wait)}`,
    );
  const spinIterations = o.spinIterations ?? 2000;
  if (!Number.isInteger(spinIterations) || spinIterations < 0)
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `spinIterations must be an integer >= 0, got ${spinIterations}`,
    );
  const livenessCheckMs = o.livenessCheckMs ?? 100;
  if (!(livenessCheckMs > 0))
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `livenessCheckMs must be > 0, got ${livenessCheckMs}`);
  return { wait, spinIterations, livenessCheckMs };
}

/** Absolute deadline (ms since the epoch) of a wait; Infinity without timeoutMs. @internal */
export function deadlineOf(options: WaitOptions | undefined): number {
  const t = options?.timeoutMs;
  if (t === undefined || t === Number.POSITIVE_INFINITY) return Number.POSITIVE_INFINITY;
  if (!(t >= 0)) throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `timeoutMs must be >= 0, got ${t}`);
  return Date.now() + t;
}

function corrupt(name: string, err: RingCorruptError): ShmSegmentError {
  return new ShmSegmentError(ErrorCode.CORRUPT, `channel ${JSON.stringify(name)} ${err.message}`, {
    cause: err,
    details: { name, ringClass: err.ringClass, position: err.position },
  });
}

function wrapCorrupt(name: string, err: unknown): unknown {
  return err instanceof RingCorruptError ? corrupt(name, err) : err;
}

function geometryFromOptions(options: ChannelCreateOptions): ChannelGeometry {
  const capacity = options.capacity ?? DEFAULT_CAPACITY;
  let shares: readonly number[] | null = null;
  const p = options.priorities;
  if (p === true) shares = DEFAULT_CLASS_SHARES;
  else if (p && typeof p === 'object') {
    const total = p.critical + p.high + p.low;
    if (![p.critical, p.high, p.low].every((x) => x > 0 && Number.isFinite(x)))
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'priorities shares must be positive numbers');
    shares = [p.critical / total, p.high / total, p.low / total];
  }
  const g = channelGeometry(capacity, shares, options.maxFrame, pageSize());
  const problems = checkChannelGeometry(g, Number.POSITIVE_INFINITY);
  if (problems.length > 0)
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `invalid channel options: ${problems.join('; ')}`, {
      details: { capacity, maxFrame: options.maxFrame, min: MIN_CAPACITY, max: MAX_CAPACITY },
    });
  return g;
}

/** Entry points: create the producer end, open the consumer end, remove a name. */
export const Channel = {
  /**
   * Creates channel `name` and returns its producer end. Fails with SHM_ERR_EXISTS if a
   * live producer owns the name; replaces the segment of a dead one.
   */
  create(name: string, options: ChannelCreateOptions = {}): ChannelSender {
    validateName(name);
    const end = checkEndOptions(options);
    const g = geometryFromOptions(options);
    const seg = Segment.create(
      name,
      Kind.CHANNEL,
      g.segmentLength,
      PARAMS_LENGTH,
      (views) => {
        writeChannelParams(views.dv, g);
        views.dv.setUint32(PRODUCER_PID_OFFSET, process.pid, true);
      },
      options,
    );
    return new ChannelSender(seg, g, end);
  },

  /**
   * Opens the consumer end of channel `name`. Fails with SHM_ERR_NOT_FOUND (after
   * `waitMs`), SHM_ERR_BUSY if a live consumer holds it, or a segment error if the file is
   * not a valid channel. A consumer may re-open a channel whose previous consumer closed or
   * died: it resumes after the last published head (frames read but not yet published are
   * delivered again).
   */
  open(name: string, options: ChannelOpenOptions = {}): ChannelReceiver {
    return openReceiver(name, options);
  },

  /**
   * open() through another path to the same file: `/proc/self/fd/N` for a segment fd
   * received over a unix socket (the fan-out consumer). The name still decides what
   * close() may unlink.
   * @internal
   */
  openVia(name: string, via: string, options: ChannelOpenOptions = {}): ChannelReceiver {
    return openReceiver(name, options, via);
  },

  /** Removes the file of channel `name` (whatever the state of its ends). True if it existed. */
  remove(name: string, options: SegmentOptions = {}): boolean {
    const path = segmentPath(name, options.dir);
    try {
      unlinkSync(path);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return false;
      throw err;
    }
  },

  /** The file a channel name maps to. */
  pathOf(name: string, options: SegmentOptions = {}): string {
    return segmentPath(name, options.dir);
  },
};

function openReceiver(name: string, options: ChannelOpenOptions, via?: string): ChannelReceiver {
  const end = checkEndOptions(options);
  const seg = Segment.open(name, Kind.CHANNEL, options, via);
  try {
    const g = readChannelParams(seg.views.dv);
    const problems = checkChannelGeometry(g, Math.min(seg.length, seg.header.segmentLength));
    if (seg.header.paramsLength < PARAMS_LENGTH)
      problems.push(`paramsLength=${seg.header.paramsLength} (a channel needs ${PARAMS_LENGTH})`);
    if (seg.header.segmentLength < g.segmentLength)
      problems.push(`segmentLength=${seg.header.segmentLength} (the rings end at ${g.segmentLength})`);
    if (problems.length > 0)
      throw new ShmSegmentError(
        ErrorCode.CORRUPT,
        `channel ${JSON.stringify(name)} has corrupt parameters: ${problems.join('; ')}`,
        {
          details: { name, problems },
        },
      );
    const expect = options.expect;
    if (expect) {
      for (const key of ['capacity', 'maxFrame'] as const)
        if (expect[key] !== undefined && typeof expect[key] !== 'number')
          throw new ShmArgumentError(
            ErrorCode.INVALID_ARGUMENT,
            `expect.${key} must be a number, got ${typeof expect[key]}`,
          );
      if (expect.priorities !== undefined && typeof expect.priorities !== 'boolean')
        throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `expect.priorities must be a boolean`);
      const mismatches: string[] = [];
      if (expect.capacity !== undefined && expect.capacity !== g.capacity)
        mismatches.push(`capacity: expected ${expect.capacity}, segment has ${g.capacity}`);
      if (expect.maxFrame !== undefined && expect.maxFrame !== g.maxFrame)
        mismatches.push(`maxFrame: expected ${expect.maxFrame}, segment has ${g.maxFrame}`);
      if (expect.priorities !== undefined && expect.priorities !== g.classCount > 1)
        mismatches.push(`priorities: expected ${expect.priorities}, segment has ${g.classCount > 1}`);
      if (mismatches.length > 0)
        throw new ShmSegmentError(
          ErrorCode.INCOMPATIBLE,
          `channel ${JSON.stringify(name)} is incompatible: ${mismatches.join('; ')}`,
          {
            details: { name, mismatches },
          },
        );
    }
    if (!seg.tryAcquireRole(CONSUMER_ROLE))
      throw new ShmSegmentError(ErrorCode.BUSY, `channel ${JSON.stringify(name)} already has a live consumer`, {
        details: { name, consumerPid: seg.views.dv.getUint32(CONSUMER_PID_OFFSET, true) },
      });
    // Only the producer writes the ring data: the receiver maps it read-only (segments made
    // by Channel.create() start it on a page boundary; older ones stay read-write).
    seg.protectReadOnly(g.dataIndices[0]);
    return new ChannelReceiver(seg, g, end);
  } catch (err) {
    seg.close();
    throw wrapCorrupt(name, err);
  }
}

abstract class ChannelEnd {
  protected readonly i32: Int32Array;
  protected readonly options: Required<EndOptions>;
  protected closedByUs = false;

  constructor(
    protected readonly seg: Segment,
    readonly geometry: ChannelGeometry,
    options: Required<EndOptions>,
  ) {
    this.i32 = seg.views.i32;
    this.options = options;
  }

  get name(): string {
    return this.seg.name;
  }

  /** True once close() was called on this end. */
  get closed(): boolean {
    return this.closedByUs;
  }

  protected assertOpen(): void {
    if (this.closedByUs)
      throw new ShmStateError(ErrorCode.CLOSED, `channel ${JSON.stringify(this.name)}: this end is closed`);
  }

  protected peerRole(): number {
    return this.seg.holdsRole(PRODUCER_ROLE) ? CONSUMER_ROLE : PRODUCER_ROLE;
  }

  private livenessCheckedAt = 0;

  /**
   * Peer liveness for the wait loops, at most once per livenessCheckMs (the lock probe is a
   * system call; a park would otherwise pay it every time). Between probes it answers true:
   * a death is noticed within livenessCheckMs.
   */
  protected peerAliveThrottled(role: number): boolean {
    const now = Date.now();
    if (now - this.livenessCheckedAt < this.options.livenessCheckMs) return true;
    this.livenessCheckedAt = now;
    return this.seg.roleAlive(role);
  }

  /** Whether the other end's process is alive (holds its liveness lock). One syscall. */
  peerAlive(): boolean {
    this.assertOpen();
    return this.seg.roleAlive(this.peerRole());
  }

  protected timeout(what: string, timeoutMs: number | undefined): ShmTimeoutError {
    return new ShmTimeoutError(
      ErrorCode.TIMEOUT,
      `channel ${JSON.stringify(this.name)}: ${what} timed out after ${timeoutMs} ms`,
      {
        details: { name: this.name, timeoutMs },
      },
    );
  }
}

/** The producer end. One thread uses it. */
export class ChannelSender extends ChannelEnd {
  private readonly rings: RingWriter[];
  private readonly single: RingWriter;
  private readonly totals: Totals;
  private readonly dataWait: WaitBlock;
  private readonly spaceWait: WaitBlock;
  private readonly dataSleepingIndex: number;
  private readonly consumerClosedIndex: number;
  private readonly maxFrame: number;
  private readonly prioritized: boolean;
  private fullCount = 0;
  private claimRing: RingWriter | null = null;
  private claimView: Uint8Array | null = null;

  /** @internal Use Channel.create(). */
  constructor(seg: Segment, g: ChannelGeometry, options: Required<EndOptions>) {
    super(seg, g, options);
    const v = seg.views;
    this.rings = areaWriters(v, { g, blocksBase: 0 });
    this.totals = this.rings[0].totals;
    this.single = this.rings[0];
    this.prioritized = g.classCount > 1;
    this.maxFrame = g.maxFrame;
    const buffer = v.buffer as ArrayBuffer;
    this.dataWait = new WaitBlock(buffer, v.i32, DATA_WAIT_OFFSET + SLEEPING_OFFSET, DATA_WAIT_OFFSET + SEQ_OFFSET);
    this.spaceWait = new WaitBlock(buffer, v.i32, SPACE_WAIT_OFFSET + SLEEPING_OFFSET, SPACE_WAIT_OFFSET + SEQ_OFFSET);
    this.dataSleepingIndex = (DATA_WAIT_OFFSET + SLEEPING_OFFSET) >> 2;
    this.consumerClosedIndex = CONSUMER_CLOSED_OFFSET >> 2;
    for (const ring of this.rings) ring.onPublish = () => this.afterPublish();
  }

  private afterPublish(): void {
    // SYNC POINT: pairs with WaitBlock.prepare() in the receiver; the tail store precedes
    // this load of the consumer's sleeping flag.
    if (Atomics.load(this.i32, this.dataSleepingIndex) === 0) return;
    if (!this.coalesceWakes) this.dataWait.wake();
    else if (!this.wakeQueued) {
      this.wakeQueued = true;
      queueMicrotask(this.flushWake);
    }
  }

  private coalesceWakes = false;
  private wakeQueued = false;
  private readonly flushWake = (): void => {
    this.wakeQueued = false;
    if (!this.closedByUs) this.dataWait.wake();
  };

  /**
   * Wakes a parked consumer by writing `fd` (an eventfd) instead of FUTEX_WAKE: the fan-out
   * sender hands the same eventfd to the consumer. Still only when the consumer is parked.
   * With `coalesce`, the wake-up waits for the end of the current JS job (a microtask), so a
   * burst of sends costs one wake-up and the consumer wakes to a batch.
   * @internal
   */
  useEventFd(fd: number, coalesce = false): void {
    this.dataWait.eventFd = fd;
    this.coalesceWakes = coalesce;
  }

  /**
   * Batches publication (like net.Socket#cork): frames sent while corked become visible to
   * the consumer every 16 frames or quarter ring, when the ring is full, and at uncork(),
   * flush(), before send()/sendSync() wait, and at close(). Saves one atomic store and one
   * atomic load per frame on bursts.
   */
  cork(): void {
    this.assertOpen();
    for (const ring of this.rings) ring.corked = true;
  }

  /** Ends cork(): publishes everything written and publishes per frame again. */
  uncork(): void {
    this.assertOpen();
    for (const ring of this.rings) {
      ring.corked = false;
      if (ring.unpublished) ring.publish();
    }
  }

  private ringFor(options: SendOptions | undefined): RingWriter {
    const priority = options?.priority;
    if (priority === undefined) return this.prioritized ? this.rings[DEFAULT_PRIORITY_CLASS] : this.single;
    const cls = PRIORITY_CLASS[priority];
    if (cls === undefined)
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `priority must be 'critical', 'high' or 'low', got ${String(priority)}`,
      );
    if (!this.prioritized)
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `channel ${JSON.stringify(this.name)} was created without priorities`,
      );
    return this.rings[cls];
  }

  private tooLarge(length: number): ShmFrameError {
    return new ShmFrameError(ErrorCode.TOO_LARGE, `frame of ${length} bytes is larger than maxFrame=${this.maxFrame}`, {
      details: { name: this.name, length, maxFrame: this.maxFrame },
    });
  }

  /** Called when a ring is full: a consumer that closed will never make room. */
  private onFull(): void {
    this.fullCount++;
    if (Atomics.load(this.i32, this.consumerClosedIndex) === CLOSED)
      throw new ShmStateError(
        ErrorCode.PEER_CLOSED,
        `channel ${JSON.stringify(this.name)}: the consumer closed its end`,
      );
  }

  /**
   * Copies `bytes` into the ring as one frame. Returns false (and counts it) when the ring
   * is full. Never blocks, never allocates. Throws SHM_ERR_TOO_LARGE above maxFrame.
   */
  trySend(bytes: Uint8Array, options?: SendOptions): boolean {
    if (this.closedByUs || this.claimRing !== null) this.assertCanWrite();
    if (bytes.length > this.maxFrame) throw this.tooLarge(bytes.length);
    const ring = options === undefined && !this.prioritized ? this.single : this.ringFor(options);
    if (!ring.tryWrite(bytes)) {
      this.onFull();
      return false;
    }
    return true;
  }

  private assertCanWrite(): void {
    this.assertOpen();
    if (this.claimRing !== null)
      throw new ShmFrameError(
        ErrorCode.CLAIM_STATE,
        `channel ${JSON.stringify(this.name)}: commit() or abort() the open claim first`,
      );
  }

  /**
   * Reserves `length` bytes in the ring and returns a writable view of them (zero-copy
   * write), or null when the ring is full now. Follow with commit() or abort(). Allocates
   * the returned view.
   */
  claim(length: number, options?: SendOptions): Uint8Array | null {
    this.assertCanWrite();
    if (!Number.isInteger(length) || length < 0)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `claim length must be an integer >= 0, got ${length}`);
    if (length > this.maxFrame) throw this.tooLarge(length);
    const ring = this.ringFor(options);
    const index = ring.claim(length);
    if (index < 0) {
      this.onFull();
      return null;
    }
    this.claimRing = ring;
    this.claimView = ring.u8.subarray(index, index + length);
    if (STOP_AT !== null) stopAt('channel.after-claim');
    return this.claimView;
  }

  /** Publishes the claimed frame; `length` (default: all claimed bytes) may shrink it. */
  commit(length?: number): void {
    if (STOP_AT !== null) stopAt('channel.before-commit');
    this.assertOpen();
    const ring = this.claimRing;
    if (ring === null)
      throw new ShmFrameError(ErrorCode.CLAIM_STATE, `channel ${JSON.stringify(this.name)}: commit() without claim()`);
    const n = length ?? ring.claimMax;
    if (!Number.isInteger(n) || n < 0 || n > ring.claimMax)
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `commit length must be 0..${ring.claimMax}, got ${length}`,
      );
    ring.commit(n);
    this.claimRing = null;
    this.claimView = null;
  }

  /** Discards the claimed frame; nothing is delivered. */
  abort(): void {
    this.assertOpen();
    const ring = this.claimRing;
    if (ring === null)
      throw new ShmFrameError(ErrorCode.CLAIM_STATE, `channel ${JSON.stringify(this.name)}: abort() without claim()`);
    ring.abort();
    this.claimRing = null;
    this.claimView = null;
  }

  private checkConsumer(): void {
    if (Atomics.load(this.i32, this.consumerClosedIndex) === CLOSED)
      throw new ShmStateError(
        ErrorCode.PEER_CLOSED,
        `channel ${JSON.stringify(this.name)}: the consumer closed its end`,
      );
    const attached = Atomics.load(this.i32, ATTACH_COUNT_OFFSET >> 2) > 0;
    if (attached && !this.peerAliveThrottled(CONSUMER_ROLE))
      throw new ShmStateError(ErrorCode.PEER_DEAD, `channel ${JSON.stringify(this.name)}: the consumer process died`, {
        details: { name: this.name, consumerPid: this.seg.views.dv.getUint32(CONSUMER_PID_OFFSET, true) },
      });
  }

  /** The wait of a send()/sendSync() that found no room (one at a time per end; reused, so no allocation). */
  private readonly spaceSpec: WaitSpec & {
    ring: RingWriter | null;
    bytes: Uint8Array | null;
    what: string;
    timeoutMs?: number;
  } = {
    ring: null,
    bytes: null,
    what: 'send',
    attempt: () => (this.spaceSpec.ring as RingWriter).tryWrite(this.spaceSpec.bytes as Uint8Array),
    check: () => {
      this.checkConsumer();
      return false;
    },
    deadline: 0,
    timeout: () => this.timeout(this.spaceSpec.what, this.spaceSpec.timeoutMs),
    beforePark: () => this.flush(),
  };

  private prepareSpaceWait(bytes: Uint8Array, options: (SendOptions & WaitOptions) | undefined, what: string): void {
    const spec = this.spaceSpec;
    spec.ring = this.ringFor(options);
    spec.bytes = bytes;
    spec.what = what;
    spec.timeoutMs = options?.timeoutMs;
    spec.deadline = deadlineOf(options);
  }

  /**
   * Sends `bytes`, waiting on the event loop for room (spin, then park, per the wait
   * strategy). Rejects with SHM_ERR_TIMEOUT, SHM_ERR_CLOSED, SHM_ERR_PEER_CLOSED or
   * SHM_ERR_PEER_DEAD. Resolves at once when there is room.
   */
  async send(bytes: Uint8Array, options?: SendOptions & WaitOptions): Promise<void> {
    if (this.trySend(bytes, options)) return;
    this.prepareSpaceWait(bytes, options, 'send');
    try {
      await waitAsync(this.spaceWait, this.options, this.spaceSpec, () => this.assertOpen());
    } finally {
      this.spaceSpec.bytes = null;
    }
  }

  /** Like send(), but blocks this thread (futex) instead of returning a promise. */
  sendSync(bytes: Uint8Array, options?: SendOptions & WaitOptions): void {
    if (this.trySend(bytes, options)) return;
    this.prepareSpaceWait(bytes, options, 'sendSync');
    try {
      waitSync(this.spaceWait, this.options, this.spaceSpec);
    } finally {
      this.spaceSpec.bytes = null;
    }
  }

  /** Publishes positions and counters now (they are otherwise published in batches). */
  flush(): void {
    for (const ring of this.rings) ring.publish();
    this.seg.views.f64[FULL_COUNT_OFFSET >> 3] = this.fullCount;
  }

  /** Fill level 0..1 of the ring(s) as the producer sees it. */
  backpressure(): number {
    this.assertOpen();
    let used = 0;
    for (const ring of this.rings) used += ring.fill() * this.geometry.ringLengths[ring.cls];
    return used / this.geometry.capacity;
  }

  stats(): SenderStats {
    return { sentFrames: this.totals.frames, sentBytes: this.totals.bytes, fullCount: this.fullCount };
  }

  /** Whether a consumer is attached now (holds its liveness lock). */
  consumerAttached(): boolean {
    this.assertOpen();
    return this.seg.roleAlive(CONSUMER_ROLE);
  }

  /**
   * Ends the stream: the consumer receives every committed frame, then end-of-stream. An
   * open claim is aborted. The file is removed if the consumer has already gone; otherwise
   * the consumer removes it when it closes. Idempotent.
   */
  close(): void {
    if (this.closedByUs) return;
    if (this.claimRing !== null) this.abort();
    this.flush();
    // SYNC POINT: pairs with Atomics.load(producerClosed) in ChannelReceiver; every frame is
    // committed before the stream reads as closed.
    Atomics.store(this.i32, PRODUCER_CLOSED_OFFSET >> 2, CLOSED);
    this.closedByUs = true;
    this.dataWait.wakeAlways();
    const consumerGone =
      Atomics.load(this.i32, this.consumerClosedIndex) === CLOSED ||
      (Atomics.load(this.i32, ATTACH_COUNT_OFFSET >> 2) > 0 && !this.seg.roleAlive(CONSUMER_ROLE));
    this.spaceWait.close();
    if (consumerGone) this.seg.unlinkIfCurrent();
    this.seg.close();
  }
}

/** The consumer end. One thread uses it. */
export class ChannelReceiver extends ChannelEnd implements AsyncIterable<Uint8Array> {
  private readonly rings: RingReader[];
  private readonly single: RingReader | null;
  private readonly totals: Totals;
  private readonly dataWait: WaitBlock;
  private readonly spaceWait: WaitBlock;
  private readonly spaceSleepingIndex: number;
  private readonly producerClosedIndex: number;
  private readonly u8: Uint8Array;
  private ended = false;
  private pending = false;
  private streak = 0;
  /** Views of the ring by payload index / 8, reused by copy-out while their length matches (never handed out). */
  private readonly viewCache: (Uint8Array | undefined)[] = [];

  /** @internal Use Channel.open(). */
  constructor(seg: Segment, g: ChannelGeometry, options: Required<EndOptions>) {
    super(seg, g, options);
    const v = seg.views;
    this.u8 = v.u8;
    this.rings = areaReaders(v, { g, blocksBase: 0 });
    this.totals = this.rings[0].totals;
    this.single = this.rings.length === 1 ? this.rings[0] : null;
    const buffer = v.buffer as ArrayBuffer;
    this.dataWait = new WaitBlock(buffer, v.i32, DATA_WAIT_OFFSET + SLEEPING_OFFSET, DATA_WAIT_OFFSET + SEQ_OFFSET);
    this.spaceWait = new WaitBlock(buffer, v.i32, SPACE_WAIT_OFFSET + SLEEPING_OFFSET, SPACE_WAIT_OFFSET + SEQ_OFFSET);
    this.spaceSleepingIndex = (SPACE_WAIT_OFFSET + SLEEPING_OFFSET) >> 2;
    this.producerClosedIndex = PRODUCER_CLOSED_OFFSET >> 2;
    for (const ring of this.rings) ring.onPublish = () => this.afterPublish();
    v.dv.setUint32(CONSUMER_PID_OFFSET, process.pid, true);
    Atomics.store(this.i32, CONSUMER_CLOSED_OFFSET >> 2, OPEN);
    Atomics.add(this.i32, ATTACH_COUNT_OFFSET >> 2, 1);
  }

  private afterPublish(): void {
    // SYNC POINT: pairs with WaitBlock.prepare() in the sender; the head store precedes
    // this load of the sender's sleeping flag.
    if (Atomics.load(this.i32, this.spaceSleepingIndex) !== 0) this.spaceWait.wake();
  }

  /**
   * Parks recv() on `fd` (the eventfd the producer writes, see ChannelSender.useEventFd)
   * instead of the futex.
   * @internal
   */
  useEventFd(fd: number): void {
    this.dataWait.eventFd = fd;
  }

  /** Index of the frame found by pollFrame() and its ring, or -1. */
  private pollFrame(): number {
    const single = this.single;
    try {
      if (single !== null) return single.poll();
      // Free the frame handed out last, whichever ring it came from.
      this.current?.release();
      for (let c = 0; c < this.rings.length; c++) {
        const n = this.rings[c].poll();
        if (n >= 0) {
          this.current = this.rings[c];
          return n;
        }
      }
      return -1;
    } catch (err) {
      throw wrapCorrupt(this.name, err);
    }
  }

  private current: RingReader | null = null;

  private frameIndexOf(): number {
    return (this.single ?? (this.current as RingReader)).frameIndex;
  }

  /**
   * The next frame as a view INTO the ring, or null when none is committed now. The view is
   * valid until the next receive call on this end. Never blocks; allocates the view.
   * At end-of-stream returns null and `ended` becomes true.
   */
  tryRecv(): Uint8Array | null {
    if (this.closedByUs) this.assertOpen();
    const n = this.pollFrame();
    if (n >= 0) {
      if (STOP_AT !== null) stopAt('channel.holding-frame');
      const at = this.frameIndexOf();
      return this.u8.subarray(at, at + n);
    }
    if (!this.ended && Atomics.load(this.i32, this.producerClosedIndex) === CLOSED) this.checkEnded();
    return null;
  }

  /**
   * Copies the next frame into `dst` at `dstOffset` and returns its length, or -1 when no
   * frame is committed now (or at end-of-stream: see `isEnded`). Does not allocate in steady
   * state for frames up to 4 KiB (ring views are cached per offset). If `dst` has no room
   * for the frame, throws SHM_ERR_INVALID_ARGUMENT and the frame stays unread.
   */
  tryRecvInto(dst: Uint8Array, dstOffset = 0): number {
    if (this.closedByUs) this.assertOpen();
    const n = this.pollFrame();
    if (n < 0) {
      if (!this.ended && Atomics.load(this.i32, this.producerClosedIndex) === CLOSED) this.checkEnded();
      return -1;
    }
    const ring = this.single ?? (this.current as RingReader);
    if (n > dst.length - dstOffset) {
      ring.unread();
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `frame of ${n} bytes does not fit dst (${dst.length - dstOffset} bytes from offset ${dstOffset})`,
      );
    }
    dst.set(this.frameView(ring.frameIndex, n), dstOffset);
    return n;
  }

  /** A view of ring bytes [at, at + n) for internal copies: cached for small frames, so steady state allocates nothing. */
  private frameView(at: number, n: number): Uint8Array {
    if (n > VIEW_CACHE_MAX_FRAME) return this.u8.subarray(at, at + n);
    const slot = at >> 3;
    const cached = this.viewCache[slot];
    if (cached !== undefined && cached.length === n) return cached;
    const view = this.u8.subarray(at, at + n);
    this.viewCache[slot] = view;
    return view;
  }

  /**
   * Publishes end-to-end latency percentiles (ns) of the last window into the consumer block
   * (layout/channel.ts), for `shmbus inspect` / `shmbus top`. Plain stores, no system call;
   * meant for a periodic caller (the fan-out consumer's ~100 ms timer), not per frame. A
   * closed end ignores it.
   * @internal
   */
  publishLatency(p50: number, p99: number, max: number, samples: number): void {
    if (this.closedByUs) return;
    const f64 = this.seg.views.f64;
    f64[LATENCY_P50_OFFSET >> 3] = p50;
    f64[LATENCY_P99_OFFSET >> 3] = p99;
    f64[LATENCY_MAX_OFFSET >> 3] = max;
    f64[LATENCY_SAMPLES_OFFSET >> 3] = samples;
    f64[LATENCY_UPDATED_MS_OFFSET >> 3] = Date.now();
  }

  /** True once the producer closed and every frame was received. */
  get isEnded(): boolean {
    return this.ended;
  }

  /** Producer closed: re-poll (the closed flag is stored after the last commit). */
  private checkEnded(): void {
    for (const ring of this.rings) if (ring.ready()) return;
    this.ended = true;
  }

  /**
   * Calls fn(view) for up to `limit` committed frames and publishes the head once at the
   * end. Returns how many frames were delivered. Each view is valid only during its call.
   */
  drain(fn: (frame: Uint8Array) => void, limit = Number.POSITIVE_INFINITY): number {
    this.assertOpen();
    const u8 = this.u8;
    return this.drainRaw((_, at, n) => fn(u8.subarray(at, at + n)), limit);
  }

  /**
   * Zero-allocation drain: fn(ring, offset, length) for up to `limit` frames, where the
   * payload is ring[offset .. offset + length). Publishes the head once at the end.
   */
  drainRaw(fn: (ring: Uint8Array, offset: number, length: number) => void, limit = Number.POSITIVE_INFINITY): number {
    this.assertOpen();
    const u8 = this.u8;
    let count = 0;
    for (const ring of this.rings) ring.batching = true;
    try {
      while (count < limit) {
        const n = this.pollFrame();
        if (n < 0) break;
        count++;
        fn(u8, this.frameIndexOf(), n);
      }
    } finally {
      for (const ring of this.rings) {
        ring.batching = false;
        ring.release();
        ring.publish();
      }
    }
    if (count === 0 && !this.ended && Atomics.load(this.i32, this.producerClosedIndex) === CLOSED) this.checkEnded();
    return count;
  }

  private checkProducer(): boolean {
    if (Atomics.load(this.i32, this.producerClosedIndex) === CLOSED) return true;
    if (!this.peerAliveThrottled(PRODUCER_ROLE)) {
      // Dead: everything it committed is in the ring; deliver that first.
      for (const ring of this.rings) if (ring.ready()) return false;
      throw new ShmStateError(ErrorCode.PEER_DEAD, `channel ${JSON.stringify(this.name)}: the producer process died`, {
        details: { name: this.name, producerPid: this.seg.header.ownerPid },
      });
    }
    return false;
  }

  private readonly stillOpen = (): void => {
    if (this.closedByUs) this.assertOpen();
  };

  private anyReady(): boolean {
    const single = this.single;
    if (single !== null) return single.ready();
    for (const ring of this.rings) if (ring.ready()) return true;
    return false;
  }

  /** The wait of a receive that found nothing (one at a time per end; reused, so no allocation). */
  private readonly dataSpec: WaitSpec & { what: string; timeoutMs?: number } = {
    what: 'recv',
    attempt: () => this.anyReady(),
    check: () => this.checkProducer(),
    deadline: 0,
    timeout: () => this.timeout(this.dataSpec.what, this.dataSpec.timeoutMs),
  };

  private prepareDataWait(options: WaitOptions | undefined, what: string): WaitSpec {
    const spec = this.dataSpec;
    spec.what = what;
    spec.timeoutMs = options?.timeoutMs;
    spec.deadline = deadlineOf(options);
    return spec;
  }

  /**
   * Blocks this thread until a frame arrives (spin, then futex park, per the wait
   * strategy). Returns the frame (a view, as tryRecv), or null at end-of-stream. Throws
   * SHM_ERR_TIMEOUT, SHM_ERR_PEER_DEAD (after every committed frame was delivered) or
   * SHM_ERR_CLOSED.
   */
  recvSync(options?: WaitOptions): Uint8Array | null {
    let frame = this.tryRecv();
    if (frame !== null || this.ended) return frame;
    const spec = this.prepareDataWait(options, 'recvSync');
    for (;;) {
      // A committed record may be padding only: then wait again.
      waitSync(this.dataWait, this.options, spec);
      frame = this.tryRecv();
      if (frame !== null || this.ended) return frame;
    }
  }

  /**
   * recvSync() that copies the frame into `dst` (as tryRecvInto) and returns its length, or
   * -1 at end-of-stream. Allocates nothing in steady state: the lowest-latency receive.
   */
  recvSyncInto(dst: Uint8Array, dstOffset = 0, options?: WaitOptions): number {
    let n = this.tryRecvInto(dst, dstOffset);
    if (n >= 0 || this.ended) return n;
    const spec = this.prepareDataWait(options, 'recvSyncInto');
    for (;;) {
      waitSync(this.dataWait, this.options, spec);
      n = this.tryRecvInto(dst, dstOffset);
      if (n >= 0 || this.ended) return n;
    }
  }

  /**
   * Resolves with the next frame (a view, as tryRecv) or null at end-of-stream, waiting on
   * the event loop: never blocks it beyond the adaptive spin, burns no CPU while parked.
   * One recv() at a time per end (else SHM_ERR_PENDING). Rejects with SHM_ERR_TIMEOUT,
   * SHM_ERR_PEER_DEAD (after every committed frame was delivered) or SHM_ERR_CLOSED.
   */
  async recv(options?: WaitOptions): Promise<Uint8Array | null> {
    if (this.pending)
      throw new ShmStateError(ErrorCode.PENDING, `channel ${JSON.stringify(this.name)}: another recv() is pending`);
    let frame = this.tryRecv();
    if (frame !== null) {
      // A stream that never runs dry would otherwise resolve in microtasks forever and
      // starve timers and I/O: let the event loop turn every YIELD_EVERY frames.
      if (++this.streak >= YIELD_EVERY) {
        this.streak = 0;
        this.pending = true;
        await new Promise(setImmediate);
        this.pending = false;
      }
      return frame;
    }
    this.streak = 0;
    if (this.ended) return frame;
    const spec = this.prepareDataWait(options, 'recv');
    this.pending = true;
    try {
      for (;;) {
        await waitAsync(this.dataWait, this.options, spec, this.stillOpen);
        frame = this.tryRecv();
        if (frame !== null || this.ended) return frame;
      }
    } finally {
      this.pending = false;
    }
  }

  /** recv() that copies the frame into `dst` (as tryRecvInto): resolves with its length, or -1 at end-of-stream. */
  async recvInto(dst: Uint8Array, dstOffset = 0, options?: WaitOptions): Promise<number> {
    if (this.pending)
      throw new ShmStateError(ErrorCode.PENDING, `channel ${JSON.stringify(this.name)}: another recv() is pending`);
    let n = this.tryRecvInto(dst, dstOffset);
    if (n >= 0 || this.ended) return n;
    const spec = this.prepareDataWait(options, 'recvInto');
    this.pending = true;
    try {
      for (;;) {
        await waitAsync(this.dataWait, this.options, spec, this.stillOpen);
        n = this.tryRecvInto(dst, dstOffset);
        if (n >= 0 || this.ended) return n;
      }
    } finally {
      this.pending = false;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const frame = await this.recv();
      if (frame === null) return;
      yield frame;
    }
  }

  /** Fill level 0..1 from the producer's last published positions. */
  backpressure(): number {
    this.assertOpen();
    let used = 0;
    for (const ring of this.rings) used += ring.fill() * this.geometry.ringLengths[ring.cls];
    return used / this.geometry.capacity;
  }

  stats(): ReceiverStats {
    return { receivedFrames: this.totals.frames, receivedBytes: this.totals.bytes };
  }

  /** Whether the producer closed its end (frames may remain to be received). */
  producerClosed(): boolean {
    this.assertOpen();
    return Atomics.load(this.i32, this.producerClosedIndex) === CLOSED;
  }

  /**
   * Leaves the channel: publishes the head, marks the consumer closed (a waiting producer
   * gets SHM_ERR_PEER_CLOSED), releases the consumer role and removes the file if the
   * producer is gone. A pending recv() rejects with SHM_ERR_CLOSED. Views handed out read as
   * length 0 afterwards. Idempotent.
   */
  close(): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    for (const ring of this.rings) {
      ring.release();
      ring.publish();
    }
    // SYNC POINT: pairs with Atomics.load(consumerClosed) in ChannelSender.onFull()/checkConsumer().
    Atomics.store(this.i32, CONSUMER_CLOSED_OFFSET >> 2, CLOSED);
    this.spaceWait.wakeAlways();
    this.dataWait.close();
    const producerGone =
      Atomics.load(this.i32, this.producerClosedIndex) === CLOSED || !this.seg.roleAlive(PRODUCER_ROLE);
    if (producerGone) this.seg.unlinkIfCurrent();
    this.seg.close();
  }
}
