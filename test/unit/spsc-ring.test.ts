import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RingCorruptError, RingReader, RingWriter, Totals, viewsOf } from '../../src/core/spsc-ring.js';
import {
  type ChannelGeometry,
  channelGeometry,
  checkChannelGeometry,
  HEAD_POSITION_OFFSET,
  RECEIVED_BYTES_OFFSET,
  RECEIVED_FRAMES_OFFSET,
  recordLength,
  SENT_BYTES_OFFSET,
  SENT_FRAMES_OFFSET,
  TAIL_POSITION_OFFSET,
  TYPE_PADDING,
} from '../../src/layout/channel.js';
import { checkFrame, fillFrame, prng, testSeed } from '../helpers/prng.js';

function makeRing(capacity: number, startPosition = 0, maxFrame?: number) {
  const g = channelGeometry(capacity, null, maxFrame);
  const sab = new SharedArrayBuffer(g.segmentLength);
  const views = viewsOf(sab);
  views.i32[TAIL_POSITION_OFFSET >> 2] = startPosition;
  views.i32[HEAD_POSITION_OFFSET >> 2] = startPosition;
  const sut = new RingWriter(views, g, 0, new Totals(views.f64, SENT_FRAMES_OFFSET >> 3, SENT_BYTES_OFFSET >> 3));
  const reader = new RingReader(
    views,
    g,
    0,
    new Totals(views.f64, RECEIVED_FRAMES_OFFSET >> 3, RECEIVED_BYTES_OFFSET >> 3),
  );
  return { g, sab, views, sut, reader };
}

function readFrame(reader: RingReader): Uint8Array | null {
  const n = reader.poll();
  if (n < 0) return null;
  return reader.u8.subarray(reader.frameIndex, reader.frameIndex + n);
}

describe('SPSC ring over a SharedArrayBuffer', () => {
  test('delivers a frame written into an empty ring', () => {
    const { sut, reader } = makeRing(1024);
    assert.equal(readFrame(reader), null);
    assert.equal(sut.tryWrite(Uint8Array.of(1, 2, 3)), true);
    assert.deepEqual(Array.from(readFrame(reader) ?? []), [1, 2, 3]);
    assert.equal(readFrame(reader), null);
  });

  test('delivers empty frames as zero-length payloads', () => {
    const { sut, reader } = makeRing(1024);
    assert.equal(sut.tryWrite(new Uint8Array(0)), true);
    assert.equal(reader.poll(), 0);
    assert.equal(reader.poll(), -1);
  });

  for (const start of [0, 2048 - 8, 2048 - 64, 1024 - 8, 1024, 1536 + 8]) {
    test(`keeps order and content over every wrap position with random sizes (start position ${start})`, () => {
      const seed = testSeed();
      const random = prng(seed);
      const { sut, reader, g } = makeRing(1024, start);
      const scratch = new Uint8Array(g.maxFrame);
      let sent = 0;
      let received = 0;
      const lengths: number[] = [];
      const offsetsSeen = new Set<number>();
      for (let step = 0; step < 40_000; step++) {
        if (random() < 0.55) {
          const length = Math.floor(random() * (g.maxFrame + 1));
          const frame = scratch.subarray(0, length);
          fillFrame(frame, sent);
          if (sut.tryWrite(frame)) {
            lengths.push(length);
            sent++;
            offsetsSeen.add(sut.tail % 1024);
          }
        } else {
          const frame = readFrame(reader);
          if (frame !== null) {
            const problem = checkFrame(frame, received, lengths[received]);
            assert.equal(problem, null, `seed ${seed}: ${problem}`);
            received++;
          }
        }
      }
      for (let frame = readFrame(reader); frame !== null; frame = readFrame(reader)) {
        assert.equal(checkFrame(frame, received, lengths[received]), null, `seed ${seed}`);
        received++;
      }
      assert.equal(received, sent, `seed ${seed}`);
      assert.ok(sent > 5000, `seed ${seed}: only ${sent} frames went through`);
      assert.ok(offsetsSeen.size >= 120, `seed ${seed}: the tail visited only ${offsetsSeen.size} of 128 offsets`);
    });
  }

  test('fills to exactly the ring length, then refuses', () => {
    const { sut, reader } = makeRing(1024);
    const frame = new Uint8Array(56); // record of 64 bytes
    let accepted = 0;
    while (sut.tryWrite(frame)) accepted++;
    assert.equal(accepted, 16, '16 records of 64 bytes fill 1024 exactly');
    assert.equal(sut.tryWrite(new Uint8Array(0)), false, 'not even an empty frame fits now');
    assert.equal(reader.poll(), 56);
    reader.release();
    reader.publish();
    assert.equal(sut.tryWrite(new Uint8Array(57)), false, 'record 72 > the 64 bytes freed');
    assert.equal(sut.tryWrite(new Uint8Array(56)), true, 'record 64 fits the 64 bytes freed');
  });

  test('a corked writer publishes when its batch fills, when the ring is full, and on publish()', () => {
    const { sut, reader } = makeRing(4096);
    sut.corked = true;
    for (let i = 0; i < 15; i++) assert.ok(sut.tryWrite(new Uint8Array(8)));
    assert.equal(reader.poll(), -1, 'nothing visible before the batch is published');
    assert.ok(sut.tryWrite(new Uint8Array(8)));
    let seen = 0;
    while (reader.poll() >= 0) seen++;
    assert.equal(seen, 16);
    assert.ok(sut.tryWrite(new Uint8Array(8)));
    sut.publish();
    assert.equal(reader.poll(), 8);
    // Fill a corked ring: the full path publishes, so the reader can always make room.
    while (sut.tryWrite(new Uint8Array(100))) {}
    let drained = 0;
    while (reader.poll() >= 0) drained++;
    assert.ok(drained > 30, `only ${drained} frames visible after the ring filled`);
  });

  test('refuses a record that extends past the published tail', () => {
    const { sut, reader, views, g } = makeRing(1024);
    sut.tryWrite(new Uint8Array(8));
    views.i32[g.dataIndices[0] >> 2] = 64;
    assert.throws(() => reader.poll(), /record length 64 at ring offset 0 \(ring 1024 B, 16 B committed\)/);
  });

  test('a frame of the largest payload fits an empty ring at any offset', () => {
    for (let start = 0; start < 2048; start += 8) {
      const { sut, reader, g } = makeRing(1024, start, 1024 - 16);
      const big = new Uint8Array(g.maxFrame);
      fillFrame(big, start);
      // The first try may only pad to the end of the ring; the reader then skips the padding.
      let ok = sut.tryWrite(big);
      if (!ok) {
        assert.equal(reader.poll(), -1);
        ok = sut.tryWrite(big);
      }
      assert.ok(ok, `largest frame refused at start position ${start}`);
      const got = readFrame(reader);
      assert.ok(got, `nothing read at start position ${start}`);
      assert.equal(checkFrame(got, start, g.maxFrame), null);
    }
  });

  test('a claim is visible as claimed (negative length) and invisible to the reader until commit', () => {
    const { sut, reader, views, g } = makeRing(1024);
    const at = sut.claim(10);
    assert.ok(at > 0);
    const length = views.i32[(at - 8) >> 2];
    assert.equal(length, -(10 + 8));
    assert.equal(reader.poll(), -1);
    views.u8.set([9, 8, 7, 6], at);
    sut.commit(4);
    const frame = readFrame(reader);
    assert.deepEqual(Array.from(frame ?? []), [9, 8, 7, 6]);
    assert.equal(g.dataIndices[0] + 8, at);
  });

  test('abort leaves nothing for the reader and reuses the space', () => {
    const { sut, reader } = makeRing(1024);
    const first = sut.claim(100);
    sut.abort();
    assert.equal(reader.poll(), -1);
    const second = sut.claim(100);
    assert.equal(second, first);
    sut.commit(1);
    assert.equal(reader.poll(), 1);
  });

  test('a claim that does not fit before the end pads and starts at offset 0; the reader waits on it', () => {
    const { sut, reader, g } = makeRing(1024);
    assert.ok(sut.tryWrite(new Uint8Array(1024 - 16 - 100))); // record 912 B, tail at 912
    assert.equal(reader.poll(), 1024 - 16 - 100);
    reader.release();
    reader.publish();
    const at = sut.claim(200);
    assert.equal(at, g.dataIndices[0] + 8, 'claim starts at the ring start');
    assert.equal(reader.poll(), -1, 'the reader skipped the padding and stopped at the claim');
    sut.commit(200);
    assert.equal(reader.poll(), 200);
  });

  test('counts and publishes totals', () => {
    const { sut, reader, views } = makeRing(1024);
    for (let i = 0; i < 3; i++) sut.tryWrite(new Uint8Array(10));
    sut.publish();
    assert.equal(views.f64[SENT_FRAMES_OFFSET >> 3], 3);
    assert.equal(views.f64[SENT_BYTES_OFFSET >> 3], 30);
    while (reader.poll() >= 0) {}
    assert.equal(views.f64[RECEIVED_FRAMES_OFFSET >> 3], 3);
    assert.equal(views.f64[RECEIVED_BYTES_OFFSET >> 3], 30);
  });

  test('publishes the head in batches of frames, and when the ring runs dry', () => {
    const { sut, reader, views } = makeRing(4096);
    for (let i = 0; i < 40; i++) sut.tryWrite(new Uint8Array(8));
    const head = () => views.i32[HEAD_POSITION_OFFSET >> 2];
    for (let i = 0; i < 16; i++) reader.poll();
    assert.equal(head(), 0, 'nothing published before the 16th release');
    reader.poll();
    assert.equal(head(), 16 * 16, 'published at the 16th release');
    while (reader.poll() >= 0) {}
    assert.equal(head(), 40 * 16, 'published when the ring ran dry');
  });

  test('refuses a record whose length runs past the end of the ring', () => {
    const { sut, reader, views, g } = makeRing(1024);
    sut.tryWrite(new Uint8Array(8));
    views.i32[g.dataIndices[0] >> 2] = 5000;
    assert.throws(() => reader.poll(), RingCorruptError);
  });

  test('refuses a record with an unknown type', () => {
    const { sut, reader, views, g } = makeRing(1024);
    sut.tryWrite(new Uint8Array(8));
    views.i32[(g.dataIndices[0] >> 2) + 1] = 77;
    assert.throws(() => reader.poll(), /record type 77/);
  });

  test('refuses a padding record that does not end on a record boundary', () => {
    const { sut, reader, views, g } = makeRing(1024);
    sut.tryWrite(new Uint8Array(8));
    views.i32[(g.dataIndices[0] >> 2) + 1] = TYPE_PADDING;
    views.i32[g.dataIndices[0] >> 2] = 4;
    assert.throws(() => reader.poll(), RingCorruptError);
  });

  test('refuses positions outside the ring or more than a ring apart', () => {
    const g = channelGeometry(1024, null);
    const views = viewsOf(new SharedArrayBuffer(g.segmentLength));
    const totals = new Totals(views.f64, 0, 1);
    views.i32[HEAD_POSITION_OFFSET >> 2] = 4096;
    assert.throws(() => new RingReader(views, g, 0, totals), /headPosition=4096/);
    views.i32[HEAD_POSITION_OFFSET >> 2] = 0;
    views.i32[TAIL_POSITION_OFFSET >> 2] = -8;
    assert.throws(() => new RingWriter(views, g, 0, totals), /tailPosition=4294967288/);
    assert.throws(() => new RingReader(views, g, 0, totals), /tailPosition=4294967288/);
    views.i32[TAIL_POSITION_OFFSET >> 2] = 1496;
    assert.throws(() => new RingReader(views, g, 0, totals), /more than a ring ahead/);
    assert.throws(() => new RingWriter(views, g, 0, totals), /more than a ring ahead/);
  });
});

describe('channel geometry', () => {
  test('splits capacity 20/50/30 across priority rings, 8-byte aligned', () => {
    const g = channelGeometry(1 << 20, [0.2, 0.5, 0.3]);
    assert.deepEqual(g.ringLengths, [209712, 524288, 314568]);
    assert.ok(g.ringLengths.reduce((a, b) => a + b) <= 1 << 20);
    assert.deepEqual(checkChannelGeometry(g, g.segmentLength), []);
    assert.equal(g.maxFrame, Math.floor(209712 / 2 / 8) * 8 - 8);
  });

  test('names every bad parameter', () => {
    const g: ChannelGeometry = { ...channelGeometry(1024, null), capacity: 1000, maxFrame: 5000 };
    const problems = checkChannelGeometry(g, 100);
    assert.ok(problems.some((p) => p.startsWith('capacity=1000')));
    assert.ok(problems.some((p) => p.startsWith('maxFrame=5000')));
    assert.ok(problems.some((p) => p.startsWith('rings end at')));
  });

  test('a record occupies its payload plus 8, rounded up to 8', () => {
    assert.equal(recordLength(0), 8);
    assert.equal(recordLength(1), 16);
    assert.equal(recordLength(8), 16);
    assert.equal(recordLength(9), 24);
  });
});
