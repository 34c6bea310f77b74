/**
 * Records the order of stores at each publication point of the ring writer: plain writes
 * (payload, terminator, type) must all come before the atomic store that commits them.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { RingReader, RingWriter, type SegmentViews, Totals, viewsOf } from '../../src/core/spsc-ring.js';
import { channelGeometry, RINGS_OFFSET } from '../../src/layout/channel.js';

type Op = string;

const original = { store: Atomics.store, load: Atomics.load };

function recorder(views: SegmentViews) {
  const log: Op[] = [];
  const targets = new WeakMap<object, ArrayBufferView>();
  const wrap = <T extends Uint8Array | Int32Array>(array: T, name: string): T => {
    const proxy = new Proxy(array, {
      set(target, key, value) {
        if (typeof key === 'string' && /^\d+$/.test(key)) log.push(`${name}[${key}]=${value}`);
        (target as unknown as Record<string | symbol, unknown>)[key] = value;
        return true;
      },
      get(target, key) {
        if (key === 'set')
          return (src: ArrayLike<number>, offset = 0) => {
            log.push(`${name}.set(${src.length}@${offset})`);
            target.set(src, offset);
          };
        const value = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    targets.set(proxy, array);
    return proxy;
  };
  const unwrap = (a: object) => (targets.get(a) ?? a) as Int32Array;
  Atomics.store = ((a: Int32Array, i: number, v: number) => {
    log.push(`store[${i}]=${v}`);
    return original.store(unwrap(a), i, v);
  }) as typeof Atomics.store;
  Atomics.load = ((a: Int32Array, i: number) => {
    log.push(`load[${i}]`);
    return original.load(unwrap(a), i);
  }) as typeof Atomics.load;
  return { log, views: { ...views, u8: wrap(views.u8, 'u8'), i32: wrap(views.i32, 'i32') } };
}

afterEach(() => {
  Atomics.store = original.store;
  Atomics.load = original.load;
});

function setup() {
  const g = channelGeometry(1024, null);
  const views = viewsOf(new SharedArrayBuffer(g.segmentLength));
  const writer = new RingWriter(views, g, 0, new Totals(views.f64, 200, 201));
  const reader = new RingReader(views, g, 0, new Totals(views.f64, 202, 203));
  return { g, views, writer, reader };
}

const base = RINGS_OFFSET >> 2;

describe('publication order of the ring writer', () => {
  test('tryWrite stores payload, next terminator and type before the committing length', () => {
    const { g, views } = setup();
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    rec.log.length = 0;
    sut.tryWrite(Uint8Array.of(1, 2, 3));
    assert.deepEqual(rec.log, [
      `u8.set(3@${RINGS_OFFSET + 8})`,
      `i32[${base + 4}]=0`,
      `i32[${base + 1}]=1`,
      `store[${base}]=11`,
    ]);
  });

  test('claim makes the record visibly claimed; commit writes terminator and type before the length', () => {
    const { g, views } = setup();
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    rec.log.length = 0;
    sut.claim(20);
    assert.deepEqual(rec.log, [`store[${base}]=-28`]);
    rec.log.length = 0;
    sut.commit(5);
    assert.deepEqual(rec.log, [`i32[${base + 4}]=0`, `i32[${base + 1}]=1`, `store[${base}]=13`]);
  });

  test('at the end of the ring the terminator at offset 0 precedes the padding that leads there', () => {
    const { g, views, writer, reader } = setup();
    writer.tryWrite(new Uint8Array(1024 - 8 - 8 - 40)); // record 976: tail at offset 976
    while (reader.poll() >= 0) {}
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    sut.tail = writer.tail;
    rec.log.length = 0;
    sut.tryWrite(new Uint8Array(50)); // record 64 does not fit the last 48 bytes
    const padding = base + 976 / 4;
    const stores = rec.log.filter((op) => !op.startsWith('load'));
    assert.deepEqual(stores, [
      `i32[${base}]=0`,
      `i32[${padding + 1}]=2`,
      `store[${padding}]=48`,
      `u8.set(50@${RINGS_OFFSET + 8})`,
      `i32[${base + 16}]=0`,
      `i32[${base + 1}]=1`,
      `store[${base}]=58`,
    ]);
  });

  test('the reader publishes its head with an atomic store after reading the record', () => {
    const { g, views, writer } = setup();
    for (let i = 0; i < 16; i++) writer.tryWrite(new Uint8Array(8));
    const rec = recorder(views);
    const sut = new RingReader(rec.views, g, 0, new Totals(views.f64, 202, 203));
    rec.log.length = 0;
    for (let i = 0; i < 17; i++) sut.poll();
    const headStore = rec.log.findIndex((op) => op.startsWith('store['));
    assert.ok(headStore > 0);
    assert.equal(rec.log[headStore], `store[${(g.dataIndices[0] - RINGS_OFFSET + 256) >> 2}]=256`);
    assert.ok(rec.log.slice(0, headStore).every((op) => op.startsWith('load[')));
  });
});
