import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { nanosSince, nowNanos, writeNanos } from '../../src/core/clock.js';
import { Histogram } from '../../src/core/histogram.js';
import { ErrorCode, ShmError } from '../../src/errors.js';
import {
  ControlReader,
  ControlSplitter,
  ControlWriter,
  decodeFilterRequest,
  encodeFilterRequest,
} from '../../src/fanout/control.js';
import { BLOOM_THRESHOLD, Bloom, hashBytes, MessageKey, SubscriptionFilter } from '../../src/fanout/filter.js';
import { decodeMessage, FrameEncoder } from '../../src/fanout/frame.js';
import {
  FLAG_LZ4,
  FLAGS_OFFSET,
  FRAME_HEADER_LENGTH,
  GROUP_LENGTH_OFFSET,
  KEY_LENGTH_OFFSET,
  KIND_OFFSET,
  MAX_CONTROL_FRAME,
  RAW_LENGTH_OFFSET,
  SENDER_NANOS_OFFSET,
  Tag,
  WIRE_LENGTH_OFFSET,
} from '../../src/layout/fanout.js';
import { prng } from '../helpers/prng.js';

const bytes = (s: string) => new TextEncoder().encode(s);

function protocolCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ShmError, `threw ${String(err)}`);
    return err.code;
  }
  return undefined;
}

describe('control codec', () => {
  test('a SUBSCRIBE frame round-trips through the splitter and reader', () => {
    const delta = { kinds: [6, 7], keys: [bytes('a'), new Uint8Array(32).fill(9)], groups: [bytes('owner')] };
    const frame = encodeFilterRequest(Tag.SUBSCRIBE, 42, delta);
    const sut = new ControlSplitter(MAX_CONTROL_FRAME);
    const bodies = [...sut.push(frame.subarray(0, 3)), ...sut.push(frame.subarray(3))];
    assert.equal(bodies.length, 1);
    const r = new ControlReader(bodies[0]);
    assert.equal(r.tag, Tag.SUBSCRIBE);
    const back = decodeFilterRequest(r, 100);
    assert.equal(back.requestId, 42);
    assert.deepEqual(back.delta.kinds, [6, 7]);
    assert.deepEqual(
      back.delta.keys.map((k) => [...k]),
      delta.keys.map((k) => [...k]),
    );
    assert.deepEqual([...back.delta.groups[0]], [...bytes('owner')]);
  });

  test('the splitter cuts several frames out of one chunk and keeps a partial one', () => {
    const a = new ControlWriter(Tag.PING).finish();
    const b = new ControlWriter(Tag.ACK).u32(7).finish();
    const both = new Uint8Array(a.length + b.length);
    both.set(a);
    both.set(b, a.length);
    const sut = new ControlSplitter(1024);
    assert.equal(sut.push(both.subarray(0, a.length + 2)).length, 1);
    assert.equal(sut.buffered, 2);
    const rest = sut.push(both.subarray(a.length + 2));
    assert.equal(rest.length, 1);
    assert.equal(new ControlReader(rest[0]).u32(), 7);
  });

  test('a length prefix over the limit is a protocol error before anything is buffered', () => {
    const sut = new ControlSplitter(1024);
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, 1025, true);
    assert.equal(
      protocolCode(() => sut.push(header)),
      ErrorCode.PROTOCOL,
    );
  });

  test('bad version, truncated fields, trailing bytes and bad UTF-8 are protocol errors', () => {
    assert.equal(
      protocolCode(() => new ControlReader(Uint8Array.of(2, Tag.PING))),
      ErrorCode.PROTOCOL,
    );
    assert.equal(
      protocolCode(() => new ControlReader(Uint8Array.of(1))),
      ErrorCode.PROTOCOL,
    );
    assert.equal(
      protocolCode(() => new ControlReader(Uint8Array.of(1, Tag.ACK, 1, 2)).u32()),
      ErrorCode.PROTOCOL,
    );
    assert.equal(
      protocolCode(() => new ControlReader(Uint8Array.of(1, Tag.PING, 0)).end()),
      ErrorCode.PROTOCOL,
    );
    assert.equal(
      protocolCode(() => new ControlReader(Uint8Array.of(1, Tag.HELLO, 2, 0, 0xff, 0xfe)).string()),
      ErrorCode.PROTOCOL,
    );
  });

  test('a filter request over the item limit, or with empty or oversized keys, is refused', () => {
    const many = encodeFilterRequest(Tag.SUBSCRIBE, 1, { kinds: [], keys: [bytes('a'), bytes('b')], groups: [] });
    assert.equal(
      protocolCode(() => decodeFilterRequest(new ControlReader(many.subarray(4)), 1)),
      ErrorCode.PROTOCOL,
    );
    const empty = encodeFilterRequest(Tag.SUBSCRIBE, 1, { kinds: [], keys: [new Uint8Array(0)], groups: [] });
    assert.equal(
      protocolCode(() => decodeFilterRequest(new ControlReader(empty.subarray(4)), 10)),
      ErrorCode.PROTOCOL,
    );
    const big = encodeFilterRequest(Tag.SUBSCRIBE, 1, { kinds: [], keys: [new Uint8Array(1025)], groups: [] });
    assert.equal(
      protocolCode(() => decodeFilterRequest(new ControlReader(big.subarray(4)), 10)),
      ErrorCode.PROTOCOL,
    );
  });

  test('random bytes never throw anything but a protocol error', () => {
    const rand = prng(0xc0de);
    for (let i = 0; i < 2000; i++) {
      const body = new Uint8Array(Math.floor(rand() * 40));
      for (let j = 0; j < body.length; j++) body[j] = Math.floor(rand() * 256);
      if (body.length > 0) body[0] = 1;
      try {
        decodeFilterRequest(new ControlReader(body), 8);
      } catch (err) {
        assert.ok(err instanceof ShmError && err.code === ErrorCode.PROTOCOL, String(err));
      }
    }
  });
});

describe('subscription filter', () => {
  const key = (i: number) => bytes(`key-${i}`);
  const message = (k: Uint8Array | null, g: Uint8Array | null) => {
    const m = new MessageKey();
    m.set(k, g);
    return m;
  };

  test('an empty filter matches nothing of a filtered kind', () => {
    const sut = new SubscriptionFilter();
    assert.equal(sut.matches('filtered', 1, message(key(1), key(2))), false);
  });

  test('a message matches by its key OR its group', () => {
    const sut = new SubscriptionFilter();
    sut.add({ kinds: [], keys: [key(1)], groups: [bytes('g')] });
    assert.equal(sut.matches('filtered', 1, message(key(1), null)), true);
    assert.equal(sut.matches('filtered', 1, message(key(9), bytes('g'))), true);
    assert.equal(sut.matches('filtered', 1, message(key(9), bytes('h'))), false);
    // A group equal to a subscribed key is not a match: the sets are separate.
    assert.equal(sut.matches('filtered', 1, message(null, key(1))), false);
  });

  test('subscriptions are additive and de-duplicated; unsubscribe removes', () => {
    const sut = new SubscriptionFilter();
    sut.add({ kinds: [], keys: [key(1), key(1)], groups: [] });
    sut.add({ kinds: [], keys: [key(1), key(2)], groups: [] });
    assert.equal(sut.keys.size, 2);
    sut.remove({ kinds: [], keys: [key(1)], groups: [] });
    assert.equal(sut.matches('filtered', 1, message(key(1), null)), false);
    assert.equal(sut.matches('filtered', 1, message(key(2), null)), true);
  });

  test('opt-in kinds match only after opting in, and always kinds match everyone', () => {
    const sut = new SubscriptionFilter();
    assert.equal(sut.matches('opt-in', 6, message(null, null)), false);
    assert.equal(sut.matches('always', 7, message(null, null)), true);
    sut.add({ kinds: [6], keys: [], groups: [] });
    assert.equal(sut.matches('opt-in', 6, message(null, null)), true);
    sut.add({ kinds: [], keys: [key(1)], groups: [] });
    assert.equal(sut.matches('opt-in', 6, message(null, null)), true, 'the opt-in is sticky');
    sut.remove({ kinds: [6], keys: [], groups: [] });
    assert.equal(sut.matches('opt-in', 6, message(null, null)), false);
  });

  test('above the threshold a Bloom filter pre-rejects, and delivery stays exact', () => {
    const sut = new SubscriptionFilter();
    const subscribed = Array.from({ length: 1000 }, (_, i) => key(i));
    sut.add({ kinds: [], keys: subscribed, groups: [] });
    assert.ok(sut.size > BLOOM_THRESHOLD);
    assert.ok(sut.bloomBits > 0);
    for (let i = 0; i < 1000; i++) assert.equal(sut.matches('filtered', 1, message(key(i), null)), true);
    let matched = 0;
    for (let i = 1000; i < 11_000; i++) if (sut.matches('filtered', 1, message(key(i), null))) matched++;
    assert.equal(matched, 0);
    // Most of the 10,000 were rejected by the Bloom filter without an exact look-up.
    assert.ok(sut.bloomRejects > 9000, `bloomRejects=${sut.bloomRejects}`);
  });

  test('dropping back under the threshold removes the Bloom filter', () => {
    const sut = new SubscriptionFilter();
    const keys = Array.from({ length: 20 }, (_, i) => key(i));
    sut.add({ kinds: [], keys, groups: [] });
    assert.ok(sut.bloomBits > 0);
    sut.remove({ kinds: [], keys: keys.slice(5), groups: [] });
    assert.equal(sut.bloomBits, 0);
    assert.equal(sut.matches('filtered', 1, message(key(3), null)), true);
  });

  test('a Bloom filter never misses an inserted hash', () => {
    const sut = new Bloom(5000);
    const rand = prng(7);
    const hashes = Array.from({ length: 5000 }, () => Math.floor(rand() * 2 ** 32) >>> 0);
    for (const h of hashes) sut.add(h);
    for (const h of hashes) assert.equal(sut.has(h), true);
    assert.equal(hashBytes(bytes('a')), hashBytes(bytes('a')));
  });
});

describe('generic frame', () => {
  test('encodes once and decodes every field as views', () => {
    const enc = new FrameEncoder();
    const frame = enc.encode(9, bytes('k'), bytes('grp'), bytes('payload')).slice();
    assert.equal(frame.length, FRAME_HEADER_LENGTH + 1 + 3 + 7);
    const m = decodeMessage(frame);
    assert.equal(m.kind, 9);
    assert.deepEqual([...(m.key as Uint8Array)], [...bytes('k')]);
    assert.deepEqual([...(m.group as Uint8Array)], [...bytes('grp')]);
    assert.equal(new TextDecoder().decode(m.payload), 'payload');
    assert.equal(m.payload.buffer, frame.buffer, 'the payload is a view into the frame');
    assert.equal(m.compressed, false);
    const ageMs = Date.now() - m.senderTimeMs;
    assert.ok(ageMs > -50 && ageMs < 60_000, `sender stamp ${m.senderTimeMs} vs now ${Date.now()}`);
  });

  test('large compressible payloads travel compressed and come back identical', () => {
    const enc = new FrameEncoder();
    const payload = bytes('{"slot":1,"level":"info"}\n'.repeat(25_000));
    const frame = enc.encode(1, null, null, payload).slice();
    assert.ok(frame.length < payload.length / 4);
    assert.equal(new DataView(frame.buffer).getUint8(FLAGS_OFFSET), FLAG_LZ4);
    const m = decodeMessage(frame);
    assert.equal(m.compressed, true);
    assert.deepEqual(Buffer.from(m.payload), Buffer.from(payload));
    assert.equal(enc.compressedFrames, 1);
  });

  test('malformed frames are typed errors', () => {
    const good = new FrameEncoder().encode(1, bytes('k'), null, bytes('abc')).slice();
    const mutate = (fn: (dv: DataView, f: Uint8Array) => Uint8Array | undefined) => {
      const f = good.slice();
      return fn(new DataView(f.buffer), f) ?? f;
    };
    const cases: [string, Uint8Array, string][] = [
      ['short', good.subarray(0, 10), ErrorCode.TRUNCATED],
      ['version', mutate((dv) => dv.setUint8(0, 2) as undefined), ErrorCode.VERSION_MISMATCH],
      ['tag', mutate((dv) => dv.setUint8(1, 33) as undefined), ErrorCode.CORRUPT],
      ['flags', mutate((dv) => dv.setUint8(FLAGS_OFFSET, 2) as undefined), ErrorCode.CORRUPT],
      ['key length', mutate((dv) => dv.setUint16(KEY_LENGTH_OFFSET, 2000, true) as undefined), ErrorCode.CORRUPT],
      ['group length', mutate((dv) => dv.setUint16(GROUP_LENGTH_OFFSET, 5, true) as undefined), ErrorCode.CORRUPT],
      ['raw length', mutate((dv) => dv.setUint32(RAW_LENGTH_OFFSET, 4, true) as undefined), ErrorCode.CORRUPT],
      ['wire length', mutate((dv) => dv.setUint32(WIRE_LENGTH_OFFSET, 9, true) as undefined), ErrorCode.CORRUPT],
      [
        'lz4 garbage',
        mutate((dv) => {
          dv.setUint8(FLAGS_OFFSET, FLAG_LZ4);
          dv.setUint32(RAW_LENGTH_OFFSET, 100, true);
          return undefined;
        }),
        ErrorCode.CORRUPT,
      ],
    ];
    for (const [what, frame, code] of cases)
      assert.equal(
        protocolCode(() => decodeMessage(frame)),
        code,
        what,
      );
    assert.equal(good[KIND_OFFSET], 1);
    assert.ok(SENDER_NANOS_OFFSET === 2);
  });
});

describe('clock and histogram', () => {
  test('a stamp agrees with the wall clock and measures elapsed time exactly', () => {
    const dv = new DataView(new ArrayBuffer(8));
    writeNanos(dv, 0);
    const stamp = (BigInt(dv.getUint32(4, true)) << 32n) | BigInt(dv.getUint32(0, true));
    const wall = BigInt(Date.now()) * 1_000_000n;
    const diff = stamp > wall ? stamp - wall : wall - stamp;
    assert.ok(diff < 50_000_000n, `stamp ${stamp} is ${diff} ns from Date.now()`);
    const elapsed = nanosSince(dv, 0);
    assert.ok(elapsed >= 0 && elapsed < 1e9, `elapsed ${elapsed}`);
    assert.ok(nowNanos() >= stamp);
  });

  test('the histogram reports percentiles within one bucket', () => {
    const sut = new Histogram();
    for (let i = 1; i <= 10_000; i++) sut.record(i * 100);
    const s = sut.snapshot();
    assert.equal(s.count, 10_000);
    assert.equal(s.min, 100);
    assert.equal(s.max, 1_000_000);
    for (const [q, expected] of [
      [0.5, 500_000],
      [0.99, 990_000],
    ] as const) {
      const got = sut.percentile(q);
      assert.ok(Math.abs(got - expected) / expected < 1 / 16, `p${q * 100}=${got}, expected ~${expected}`);
    }
    sut.reset();
    assert.equal(sut.snapshot().count, 0);
  });
});
