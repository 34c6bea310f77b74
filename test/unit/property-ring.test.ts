/**
 * Property-based tests of the SPSC ring (core/spsc-ring.ts) against a reference model
 * (test/helpers/property-ring.ts): fast-check generates a ring of 64..512 bytes, a start
 * position (often a few records before the wrap at N or 2N) and up to 120 operations, replays
 * them against a RingWriter/RingReader over a SharedArrayBuffer and against the model, and
 * checks after every step:
 *
 * - every frame received is the next frame committed (bytes, length, order): nothing lost,
 *   duplicated, reordered, torn, or received before it was published;
 * - a write or claim is accepted exactly when the model says it fits, given the head the
 *   reader published (the exact rule: RingModel.place), and a record longer than the ring
 *   never is; a refused one publishes everything written before it;
 * - the reader never sees a claimed-but-uncommitted frame; an aborted claim leaves no frame,
 *   no tail movement (padding before it aside) and a zeroed length word;
 * - a frame the reader holds is never overwritten; nothing outside the ring data is written
 *   (canaries), positions and totals agree with the model;
 * - a corked writer never holds back 16 frames or a quarter ring; a reader that runs dry has
 *   published its head up to the tail.
 * At the end every committed frame is drained, and a frame of the largest payload fits the
 * emptied ring (after at most one padding).
 *
 * The ring itself has no notion of maxFrame (its caller checks it): the second property drives
 * the same ring through ChannelSender/ChannelReceiver over a SharedArrayBuffer and checks that
 * oversize frames, bad lengths and out-of-order claim calls fail with their typed errors and
 * change no byte of the segment.
 *
 * Replay a failure with the seed printed in its message: SHMBUS_SEED=<seed> node --test ...
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { PUBLISH_FRAMES, RingReader, RingWriter, Totals, viewsOf } from '../../src/core/spsc-ring.js';
import { ErrorCode, ShmError } from '../../src/errors.js';
import {
  channelGeometry,
  DATA_WAIT_OFFSET,
  HEAD_POSITION_OFFSET,
  RECEIVED_BYTES_OFFSET,
  RECEIVED_FRAMES_OFFSET,
  RECORD_HEADER_LENGTH,
  recordLength,
  SENT_BYTES_OFFSET,
  SENT_FRAMES_OFFSET,
  TAIL_POSITION_OFFSET,
} from '../../src/layout/channel.js';
import { frameOf, heapChannel, type ModelFrame, RingModel } from '../helpers/property-ring.js';
import { assertProperty, firstDifference } from '../helpers/property-run.js';

const CANARY = 0xa5;
const CANARY_TAIL_LENGTH = 64;

type RingOp =
  | { op: 'write'; length: number }
  | { op: 'claim'; length: number }
  /** Commits the open claim with min(length, claimed) bytes. */
  | { op: 'commit'; length: number }
  | { op: 'abort' }
  | { op: 'poll'; count: number }
  /** As ChannelReceiver.drainRaw: batching on, up to `limit` polls, then release and publish. */
  | { op: 'drain'; limit: number }
  | { op: 'release' }
  | { op: 'publishReader' }
  | { op: 'cork' }
  /** As ChannelSender.uncork: publish if anything is unpublished. */
  | { op: 'uncork' }
  | { op: 'publishWriter' };

interface RingCase {
  length: number;
  start: number;
  ops: RingOp[];
}

/** Payload lengths for a ring of `n` bytes: small, anything that fits an empty ring, and around the ring's own size. */
function payloadLength(n: number): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: n / 4 }) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: n - RECORD_HEADER_LENGTH }) },
    { weight: 1, arbitrary: fc.integer({ min: n - 40, max: n + 16 }) },
    // The largest payload a ring takes and the smallest it never does.
    { weight: 1, arbitrary: fc.constantFrom(n - RECORD_HEADER_LENGTH, n - RECORD_HEADER_LENGTH + 1) },
  );
}

function ringOp(n: number): fc.Arbitrary<RingOp> {
  return fc.oneof(
    { weight: 6, arbitrary: payloadLength(n).map((length): RingOp => ({ op: 'write', length })) },
    { weight: 2, arbitrary: payloadLength(n).map((length): RingOp => ({ op: 'claim', length })) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: n }).map((length): RingOp => ({ op: 'commit', length })) },
    { weight: 1, arbitrary: fc.constant<RingOp>({ op: 'abort' }) },
    { weight: 5, arbitrary: fc.integer({ min: 1, max: 4 }).map((count): RingOp => ({ op: 'poll', count })) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 20 }).map((limit): RingOp => ({ op: 'drain', limit })) },
    { weight: 1, arbitrary: fc.constant<RingOp>({ op: 'release' }) },
    { weight: 1, arbitrary: fc.constant<RingOp>({ op: 'publishReader' }) },
    { weight: 1, arbitrary: fc.constant<RingOp>({ op: 'cork' }) },
    { weight: 1, arbitrary: fc.constant<RingOp>({ op: 'uncork' }) },
    { weight: 1, arbitrary: fc.constant<RingOp>({ op: 'publishWriter' }) },
  );
}

/** Start positions: 0, a few records before the wrap at N or at 2N, or anywhere. */
function startPosition(n: number): fc.Arbitrary<number> {
  return fc.oneof(
    fc.constant(0),
    fc.integer({ min: 1, max: 8 }).map((j) => n - 8 * j),
    fc.integer({ min: 1, max: 8 }).map((j) => 2 * n - 8 * j),
    fc.integer({ min: 0, max: n / 4 - 1 }).map((i) => 8 * i),
  );
}

const ringCase: fc.Arbitrary<RingCase> = fc.integer({ min: 8, max: 64 }).chain((k) => {
  const length = 8 * k;
  return fc.record({
    length: fc.constant(length),
    start: startPosition(length),
    ops: fc.array(ringOp(length), { minLength: 1, maxLength: 120, size: 'max' }),
  });
});

/** One replay: the ring under test, the model, and the checks that tie them together. */
class RingRun {
  readonly model: RingModel;
  readonly writer: RingWriter;
  readonly reader: RingReader;
  private readonly u8: Uint8Array;
  private readonly i32: Int32Array;
  /** Absolute byte index of the ring's first byte. */
  private readonly base: number;
  private readonly n: number;
  /** The frame the reader holds (returned by its last poll, not yet released). */
  private held: { frame: ModelFrame; view: Uint8Array } | null = null;
  /** Where the reader resumes: past the held frame, or past everything it consumed and skipped. */
  private readPosition: number;
  private claim: { seq: number; start: number; max: number; index: number; bytes: Uint8Array } | null = null;
  private seq = 0;
  private receivedFrames = 0;
  private receivedBytes = 0;
  /** Frames the reader released whose head it has not published yet (ends and record lengths), oldest first. */
  private readonly released: { end: number; record: number }[] = [];
  private corked = false;
  private step = -1;

  constructor(c: RingCase) {
    const n = c.length;
    this.n = n;
    const g = channelGeometry(n, null);
    const sab = new SharedArrayBuffer(g.segmentLength + CANARY_TAIL_LENGTH);
    const views = viewsOf(sab);
    this.u8 = views.u8;
    this.i32 = views.i32;
    this.base = g.dataIndices[0];
    this.u8.fill(CANARY, DATA_WAIT_OFFSET, this.base);
    this.u8.fill(CANARY, this.base + n);
    this.i32[TAIL_POSITION_OFFSET >> 2] = c.start;
    this.i32[HEAD_POSITION_OFFSET >> 2] = c.start;
    this.writer = new RingWriter(views, g, 0, new Totals(views.f64, SENT_FRAMES_OFFSET >> 3, SENT_BYTES_OFFSET >> 3));
    this.reader = new RingReader(
      views,
      g,
      0,
      new Totals(views.f64, RECEIVED_FRAMES_OFFSET >> 3, RECEIVED_BYTES_OFFSET >> 3),
    );
    this.model = new RingModel(n, c.start);
    this.readPosition = c.start;
  }

  private where(): string {
    return `step ${this.step}`;
  }

  private publishedTail(): number {
    return Atomics.load(this.i32, TAIL_POSITION_OFFSET >> 2);
  }

  private publishedHead(): number {
    return Atomics.load(this.i32, HEAD_POSITION_OFFSET >> 2);
  }

  run(ops: readonly RingOp[]): void {
    for (const op of ops) {
      this.step++;
      this.apply(op);
      this.checkInvariants();
    }
    this.step = ops.length;
    this.finish();
  }

  private apply(op: RingOp): void {
    switch (op.op) {
      case 'write':
        this.write(op.length);
        return;
      case 'claim':
        this.claimOp(op.length);
        return;
      case 'commit':
        this.commit(op.length);
        return;
      case 'abort':
        this.abort();
        return;
      case 'poll':
        for (let i = 0; i < op.count; i++) if (!this.poll()) break;
        return;
      case 'drain':
        this.drain(op.limit);
        return;
      case 'release':
        this.reader.release();
        this.noteRelease();
        return;
      case 'publishReader':
        this.reader.publish();
        assert.equal(this.publishedHead(), this.reader.head, `${this.where()}: publish() published another head`);
        return;
      case 'cork':
        this.writer.corked = true;
        this.corked = true;
        return;
      case 'uncork':
        this.writer.corked = false;
        this.corked = false;
        if (this.writer.unpublished) this.writer.publish();
        assert.equal(
          this.publishedTail(),
          this.model.tail,
          `${this.where()}: after uncork the published tail lags (unpublished said false)`,
        );
        return;
      case 'publishWriter':
        this.writer.publish();
        assert.equal(this.publishedTail(), this.model.tail, `${this.where()}: publish() left the tail behind`);
        return;
    }
  }

  /** Checks of a write or claim of `record` bytes that the model placed as `fits`, once the writer answered. */
  private afterPlacement(record: number, fits: boolean, accepted: boolean, what: string, used: number): void {
    assert.equal(
      accepted,
      fits,
      `${this.where()}: ${what} of a ${record}-byte record was ${accepted ? 'accepted' : 'refused'} with ${used} bytes in use of ${this.n} (tail ${this.model.tail}, published head ${this.publishedHead()})`,
    );
    if (record > this.n) assert.equal(accepted, false, `${this.where()}: a record longer than the ring was accepted`);
    if (!accepted)
      assert.equal(
        this.publishedTail(),
        this.model.tail,
        `${this.where()}: a refused ${what} did not publish what was written before it`,
      );
  }

  private write(length: number): void {
    // The ring's contract: no write while a claim is open (ChannelSender enforces it).
    if (this.claim !== null) return;
    const seq = this.seq++;
    const bytes = frameOf(seq, length);
    const record = recordLength(length);
    const used = this.model.distance(this.publishedHead(), this.model.tail);
    const placement = this.model.place(record, this.publishedHead());
    const accepted = this.writer.tryWrite(bytes);
    this.model.pad(placement);
    this.afterPlacement(record, placement.fits, accepted, 'write', used);
    if (accepted) {
      this.model.commit(seq, bytes);
      this.afterCommit();
    }
  }

  private claimOp(length: number): void {
    if (this.claim !== null) {
      const tail = this.writer.tail;
      assert.throws(
        () => this.writer.claim(length),
        (err: unknown) => err instanceof ShmError && err.code === ErrorCode.CLAIM_STATE,
        `${this.where()}: a second claim did not fail with CLAIM_STATE`,
      );
      assert.equal(this.writer.tail, tail, `${this.where()}: a refused second claim moved the tail`);
      return;
    }
    const record = recordLength(length);
    const used = this.model.distance(this.publishedHead(), this.model.tail);
    const placement = this.model.place(record, this.publishedHead());
    const index = this.writer.claim(length);
    this.model.pad(placement);
    this.afterPlacement(record, placement.fits, index >= 0, 'claim', used);
    if (index < 0) return;
    const start = this.model.tail;
    assert.equal(
      index,
      this.base + this.model.offsetOf(start) + RECORD_HEADER_LENGTH,
      `${this.where()}: the claim is not at the tail`,
    );
    assert.equal(
      this.i32[(index - RECORD_HEADER_LENGTH) >> 2],
      -(length + RECORD_HEADER_LENGTH),
      `${this.where()}: a claimed record does not read as claimed (negative length)`,
    );
    assert.equal(this.writer.claimMax, length);
    const seq = this.seq++;
    const bytes = frameOf(seq, length);
    this.u8.set(bytes, index);
    this.claim = { seq, start, max: length, index, bytes };
  }

  private commit(length: number): void {
    const claim = this.claim;
    if (claim === null) return;
    const n = Math.min(length, claim.max);
    this.writer.commit(n);
    this.claim = null;
    this.model.commit(claim.seq, claim.bytes.slice(0, n));
    this.afterCommit();
  }

  private abort(): void {
    const claim = this.claim;
    if (claim === null) return;
    this.writer.abort();
    this.claim = null;
    assert.equal(
      this.i32[(claim.index - RECORD_HEADER_LENGTH) >> 2],
      0,
      `${this.where()}: an aborted claim left its length word`,
    );
  }

  /** After a frame was written: published at once unless corked; corked, never 16 frames or a quarter ring behind. */
  private afterCommit(): void {
    const published = this.publishedTail();
    if (!this.corked) {
      assert.equal(published, this.model.tail, `${this.where()}: an uncorked write was not published at once`);
      return;
    }
    const lagBytes = this.model.distance(published, this.model.tail);
    let lagFrames = 0;
    for (const f of this.model.queue) if (!this.model.isPublished(f, this.readPosition, published)) lagFrames++;
    assert.ok(lagFrames < PUBLISH_FRAMES, `${this.where()}: a corked writer holds back ${lagFrames} frames`);
    assert.ok(lagBytes < this.n / 4, `${this.where()}: a corked writer holds back ${lagBytes} bytes of ${this.n}`);
  }

  /** One reader.poll() checked against the model; false when it found nothing. */
  private poll(): boolean {
    const tail = this.publishedTail();
    const n = this.reader.poll();
    this.noteRelease();
    const next = this.model.queue[0];
    const visible = next !== undefined && this.model.isPublished(next, this.readPosition, tail);
    if (n < 0) {
      assert.ok(!visible, `${this.where()}: poll() found nothing but frame ${next?.seq} was published`);
      assert.equal(this.reader.head, tail, `${this.where()}: a dry poll() stopped short of the published tail`);
      this.readPosition = tail;
      if (!this.reader.batching)
        assert.equal(this.publishedHead(), tail, `${this.where()}: a reader that ran dry did not publish its head`);
      return false;
    }
    assert.ok(
      visible,
      next === undefined
        ? `${this.where()}: poll() returned ${n} bytes but nothing was committed (a claim?)`
        : `${this.where()}: poll() returned frame ${next.seq} before it was published`,
    );
    const frame = this.model.queue.shift() as ModelFrame;
    assert.equal(n, frame.bytes.length, `${this.where()}: frame ${frame.seq} has the wrong length`);
    assert.equal(this.reader.head, frame.start, `${this.where()}: the reader's head is not at the frame it returned`);
    assert.equal(this.reader.frameIndex, this.base + this.model.offsetOf(frame.start) + RECORD_HEADER_LENGTH);
    const view = this.u8.subarray(this.reader.frameIndex, this.reader.frameIndex + n);
    const diff = firstDifference(view, frame.bytes);
    assert.equal(diff, -1, `${this.where()}: frame ${frame.seq} differs at byte ${diff}`);
    this.held = { frame, view };
    this.readPosition = frame.end;
    this.receivedFrames++;
    this.receivedBytes += n;
    return true;
  }

  /** The reader let go of the frame it held (if any). */
  private noteRelease(): void {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    this.released.push({ end: held.frame.end, record: recordLength(held.frame.bytes.length) });
  }

  private drain(limit: number): void {
    this.reader.batching = true;
    try {
      for (let i = 0; i < limit; i++) if (!this.poll()) break;
    } finally {
      this.reader.batching = false;
      this.reader.release();
      this.noteRelease();
      this.reader.publish();
    }
    assert.equal(this.publishedHead(), this.readPosition, `${this.where()}: a drain did not publish its head`);
  }

  private checkInvariants(): void {
    const u8 = this.u8;
    for (let i = DATA_WAIT_OFFSET; i < this.base; i++)
      if (u8[i] !== CANARY) assert.fail(`${this.where()}: byte ${i} before the ring data was written`);
    for (let i = this.base + this.n; i < u8.length; i++)
      if (u8[i] !== CANARY)
        assert.fail(`${this.where()}: byte ${i - this.base - this.n} past the ring's end was written`);
    const held = this.held;
    if (held !== null) {
      const diff = firstDifference(held.view, held.frame.bytes);
      assert.equal(diff, -1, `${this.where()}: the held frame ${held.frame.seq} was overwritten at byte ${diff}`);
    }
    assert.equal(this.writer.tail, this.model.tail, `${this.where()}: writer tail`);
    assert.equal(this.writer.claimed, this.claim !== null, `${this.where()}: writer claimed`);
    assert.equal(
      this.reader.head,
      held !== null ? held.frame.start : this.readPosition,
      `${this.where()}: reader head`,
    );
    assert.equal(this.writer.totals.frames, this.model.sentFrames, `${this.where()}: sent frames`);
    assert.equal(this.writer.totals.bytes, this.model.sentBytes, `${this.where()}: sent bytes`);
    assert.equal(this.reader.totals.frames, this.receivedFrames, `${this.where()}: received frames`);
    assert.equal(this.reader.totals.bytes, this.receivedBytes, `${this.where()}: received bytes`);
    // Published positions stay between what the reader consumed and what the writer wrote.
    const m = this.model;
    const tail = this.publishedTail();
    assert.ok(
      m.distance(this.readPosition, tail) <= m.distance(this.readPosition, m.tail),
      `${this.where()}: published tail ${tail} is not between the reader (${this.readPosition}) and the writer (${m.tail})`,
    );
    const head = this.publishedHead();
    assert.ok(
      m.distance(head, this.reader.head) <= m.distance(head, m.tail) && m.distance(head, m.tail) <= this.n,
      `${this.where()}: published head ${head} is ahead of the reader (${this.reader.head}) or a ring behind the writer (${m.tail})`,
    );
    // The reader publishes its head at least every 16 released frames or quarter ring of them.
    // (A released frame at or before the published head is published for good: forget it.)
    const reach = m.distance(head, this.reader.head);
    const unpublished = this.released.filter((r) => {
      const d = m.distance(head, r.end);
      return d > 0 && d <= reach;
    });
    this.released.splice(0, this.released.length, ...unpublished);
    const frames = unpublished.length;
    const bytes = unpublished.reduce((sum, r) => sum + r.record, 0);
    assert.ok(frames < PUBLISH_FRAMES, `${this.where()}: the reader holds back the head of ${frames} released frames`);
    assert.ok(bytes < this.n / 4, `${this.where()}: the reader holds back ${bytes} released bytes of ${this.n}`);
  }

  /** Abort an open claim, publish, drain everything: exactly the model's queue comes out. */
  private finish(): void {
    if (this.claim !== null) this.abort();
    this.writer.publish();
    while (this.poll()) {}
    assert.equal(this.model.queue.length, 0, `end: ${this.model.queue.length} committed frames never arrived`);
    this.checkInvariants();
    // Liveness: the emptied ring takes a frame of the largest payload, after at most one padding.
    const big = frameOf(this.seq, this.n - RECORD_HEADER_LENGTH);
    let accepted = this.writer.tryWrite(big);
    if (!accepted) {
      assert.equal(this.reader.poll(), -1, 'end: the reader found a frame in an emptied ring');
      accepted = this.writer.tryWrite(big);
    }
    assert.ok(accepted, `end: an emptied ring refused a ${big.length}-byte frame twice`);
    assert.equal(this.reader.poll(), big.length, 'end: the largest frame did not arrive');
    const got = this.u8.subarray(this.reader.frameIndex, this.reader.frameIndex + big.length);
    assert.equal(firstDifference(got, big), -1, 'end: the largest frame arrived damaged');
  }
}

type ChannelOp =
  | { op: 'send'; length: number }
  | { op: 'claim'; length: number }
  /** null: commit everything claimed (the default). */
  | { op: 'commit'; length: number | null }
  | { op: 'abort' }
  | { op: 'recv'; count: number }
  | { op: 'drain'; limit: number };

interface ChannelCase {
  capacity: number;
  maxFrame: number;
  start: number;
  ops: ChannelOp[];
}

function channelOp(maxFrame: number): fc.Arbitrary<ChannelOp> {
  const length = fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: maxFrame }) },
    { weight: 1, arbitrary: fc.integer({ min: Math.max(0, maxFrame - 8), max: maxFrame + 24 }) },
    { weight: 1, arbitrary: fc.constantFrom(maxFrame, maxFrame + 1) },
  );
  return fc.oneof(
    { weight: 6, arbitrary: length.map((n): ChannelOp => ({ op: 'send', length: n })) },
    {
      weight: 2,
      arbitrary: fc
        .oneof({ weight: 8, arbitrary: length }, { weight: 1, arbitrary: fc.constantFrom(-1, 2.5, Number.NaN) })
        .map((n): ChannelOp => ({ op: 'claim', length: n })),
    },
    {
      weight: 3,
      arbitrary: fc
        .option(fc.integer({ min: 0, max: maxFrame + 8 }), { nil: null })
        .map((n): ChannelOp => ({ op: 'commit', length: n })),
    },
    { weight: 1, arbitrary: fc.constant<ChannelOp>({ op: 'abort' }) },
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 4 }).map((count): ChannelOp => ({ op: 'recv', count })) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 20 }).map((limit): ChannelOp => ({ op: 'drain', limit })) },
  );
}

const channelCase: fc.Arbitrary<ChannelCase> = fc
  .record({ log2: fc.integer({ min: 10, max: 11 }), frameShare: fc.integer({ min: 1, max: 100 }) })
  .chain(({ log2, frameShare }) => {
    const capacity = 2 ** log2;
    const maxFrame = Math.max(1, Math.floor(((capacity - RECORD_HEADER_LENGTH) * frameShare) / 100));
    return fc.record({
      capacity: fc.constant(capacity),
      maxFrame: fc.constant(maxFrame),
      start: startPosition(capacity),
      ops: fc.array(channelOp(maxFrame), { minLength: 1, maxLength: 60, size: 'max' }),
    });
  });

function expectCode(codes: readonly string[], fn: () => unknown, what: string): void {
  assert.throws(
    fn,
    (err: unknown) => {
      assert.ok(err instanceof ShmError, `${what}: threw ${String(err)}, not a ShmError`);
      assert.ok(codes.includes(err.code), `${what}: ${err.code}, expected ${codes.join(' or ')}`);
      return true;
    },
    `${what}: did not throw ${codes.join(' or ')}`,
  );
}

function runChannel(c: ChannelCase): void {
  const g = channelGeometry(c.capacity, null, c.maxFrame);
  const { u8, i32, sender, receiver } = heapChannel(g, c.start);
  const model = new RingModel(c.capacity, c.start);
  const head = () => Atomics.load(i32, HEAD_POSITION_OFFSET >> 2);
  let claim: { view: Uint8Array; bytes: Uint8Array } | null = null;
  let seq = 0;
  let full = 0;
  for (let step = 0; step < c.ops.length; step++) {
    const op = c.ops[step];
    const at = `step ${step} (${JSON.stringify(op)})`;
    // Sender-side failures must leave every byte of the segment as it was.
    const errors: string[] = [];
    if (op.op === 'send') {
      if (claim !== null) errors.push(ErrorCode.CLAIM_STATE);
      if (op.length > c.maxFrame) errors.push(ErrorCode.TOO_LARGE);
    } else if (op.op === 'claim') {
      if (claim !== null) errors.push(ErrorCode.CLAIM_STATE);
      if (!Number.isInteger(op.length) || op.length < 0) errors.push(ErrorCode.INVALID_ARGUMENT);
      else if (op.length > c.maxFrame) errors.push(ErrorCode.TOO_LARGE);
    } else if (op.op === 'commit') {
      if (claim === null) errors.push(ErrorCode.CLAIM_STATE);
      else if (op.length !== null && op.length > claim.view.length) errors.push(ErrorCode.INVALID_ARGUMENT);
    } else if (op.op === 'abort' && claim === null) errors.push(ErrorCode.CLAIM_STATE);
    if (errors.length > 0) {
      const before = u8.slice();
      const stats = JSON.stringify(sender.stats());
      expectCode(
        errors,
        () => {
          if (op.op === 'send') sender.trySend(frameOf(seq, op.length));
          else if (op.op === 'claim') sender.claim(op.length);
          else if (op.op === 'commit') sender.commit(op.length ?? undefined);
          else sender.abort();
        },
        at,
      );
      assert.equal(firstDifference(u8, before), -1, `${at}: a refused call changed the segment`);
      assert.equal(JSON.stringify(sender.stats()), stats, `${at}: a refused call changed the stats`);
      continue;
    }
    switch (op.op) {
      case 'send': {
        const bytes = frameOf(seq++, op.length);
        const placement = model.place(recordLength(op.length), head());
        const accepted = sender.trySend(bytes);
        model.pad(placement);
        assert.equal(accepted, placement.fits, `${at}: trySend answered ${accepted}`);
        if (accepted) model.commit(seq - 1, bytes);
        else full++;
        break;
      }
      case 'claim': {
        const placement = model.place(recordLength(op.length), head());
        const view = sender.claim(op.length);
        model.pad(placement);
        assert.equal(view !== null, placement.fits, `${at}: claim answered ${view === null ? 'null' : 'a view'}`);
        if (view === null) full++;
        else {
          assert.equal(view.length, op.length, `${at}: the claimed view has the wrong length`);
          const bytes = frameOf(seq++, op.length);
          view.set(bytes);
          claim = { view, bytes };
        }
        break;
      }
      case 'commit': {
        const open = claim as { view: Uint8Array; bytes: Uint8Array };
        const n = op.length ?? open.view.length;
        sender.commit(op.length ?? undefined);
        model.commit(-1, open.bytes.slice(0, n));
        claim = null;
        break;
      }
      case 'abort':
        sender.abort();
        claim = null;
        break;
      case 'recv':
        for (let i = 0; i < op.count; i++) {
          const got = receiver.tryRecv();
          const want = model.queue.shift();
          if (got === null) {
            assert.equal(want, undefined, `${at}: tryRecv() found nothing but a frame was committed`);
            break;
          }
          assert.ok(want !== undefined, `${at}: tryRecv() returned ${got.length} bytes nobody committed`);
          assert.equal(firstDifference(got, want.bytes), -1, `${at}: a received frame differs from the one sent`);
        }
        break;
      case 'drain': {
        const expected = Math.min(op.limit, model.queue.length);
        const delivered = receiver.drain((frame) => {
          const want = model.queue.shift();
          assert.ok(want !== undefined, `${at}: drain() delivered ${frame.length} bytes nobody committed`);
          assert.equal(firstDifference(frame, want.bytes), -1, `${at}: a drained frame differs from the one sent`);
        }, op.limit);
        assert.equal(delivered, expected, `${at}: drain() delivered ${delivered} frames`);
        break;
      }
    }
    const stats = sender.stats();
    assert.equal(stats.sentFrames, model.sentFrames, `${at}: sentFrames`);
    assert.equal(stats.sentBytes, model.sentBytes, `${at}: sentBytes`);
    assert.equal(stats.fullCount, full, `${at}: fullCount counts every refusal`);
  }
  for (let got = receiver.tryRecv(); got !== null; got = receiver.tryRecv()) {
    const want = model.queue.shift();
    assert.ok(want !== undefined && firstDifference(got, want.bytes) === -1, 'end: a frame differs or is extra');
  }
  assert.equal(model.queue.length, 0, `end: ${model.queue.length} committed frames never arrived`);
}

describe('SPSC ring properties (fast-check, seeded)', () => {
  test('random writes, claims, polls and drains from any start position deliver exactly the committed frames, in order, accepted exactly when the model says they fit', () => {
    assertProperty(
      fc.property(ringCase, (c) => {
        new RingRun(c).run(c.ops);
      }),
      { numRuns: 1000 },
    );
  });

  test('through ChannelSender/ChannelReceiver, oversize frames, bad lengths and out-of-order claims fail with their typed errors and change nothing', () => {
    assertProperty(fc.property(channelCase, runChannel), { numRuns: 600 });
  });
});
