/**
 * Records the order of stores at each publication point of the ring writer: plain writes
 * (payload, length, type, padding) must all come before the atomic tail store that commits them.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { RingReader, RingWriter, type SegmentViews, Totals, viewsOf } from '../../src/core/spsc-ring.js';
import { channelGeometry, HEAD_POSITION_OFFSET, RINGS_OFFSET, TAIL_POSITION_OFFSET } from '../../src/layout/channel.js';

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
        if (typeof key === 'string' && /^\d+$/.test(key)) log.push(`read ${name}[${key}]`);
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
const tail = TAIL_POSITION_OFFSET >> 2;

describe('publication order of the ring writer', () => {
  test('tryWrite writes payload, length and type, then publishes the tail', () => {
    const { g, views } = setup();
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    rec.log.length = 0;
    sut.tryWrite(Uint8Array.of(1, 2, 3));
    assert.deepEqual(rec.log, [
      `u8.set(3@${RINGS_OFFSET + 8})`,
      `i32[${base}]=11`,
      `i32[${base + 1}]=1`,
      `store[${tail}]=16`,
    ]);
  });

  test('while corked, frames are published by one tail store per batch', () => {
    const { g, views } = setup();
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    sut.corked = true;
    rec.log.length = 0;
    for (let i = 0; i < 15; i++) sut.tryWrite(Uint8Array.of(i));
    assert.equal(rec.log.filter((op) => op.startsWith('store[')).length, 0);
    sut.tryWrite(Uint8Array.of(15));
    assert.deepEqual(
      rec.log.filter((op) => op.startsWith('store[')),
      [`store[${tail}]=${16 * 16}`],
    );
    assert.ok(rec.log.at(-1)?.startsWith('store['), 'the tail store comes after every record write');
  });

  test('claim marks the record claimed without publishing; commit writes length and type before the tail', () => {
    const { g, views } = setup();
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    rec.log.length = 0;
    sut.claim(20);
    assert.deepEqual(rec.log, [`i32[${base}]=-28`]);
    rec.log.length = 0;
    sut.commit(5);
    assert.deepEqual(rec.log, [`i32[${base}]=13`, `i32[${base + 1}]=1`, `store[${tail}]=16`]);
  });

  test('at the end of the ring the padding and the record at offset 0 are published by one tail store', () => {
    const { g, views, writer, reader } = setup();
    writer.tryWrite(new Uint8Array(1024 - 8 - 48)); // record 976: tail at offset 976
    while (reader.poll() >= 0) {}
    const rec = recorder(views);
    const sut = new RingWriter(rec.views, g, 0, new Totals(views.f64, 200, 201));
    rec.log.length = 0;
    sut.tryWrite(new Uint8Array(50)); // record 64 does not fit the last 48 bytes
    const padding = base + 976 / 4;
    const stores = rec.log.filter((op) => !op.startsWith('load'));
    assert.deepEqual(stores, [
      `i32[${padding}]=48`,
      `i32[${padding + 1}]=2`,
      `u8.set(50@${RINGS_OFFSET + 8})`,
      `i32[${base}]=58`,
      `i32[${base + 1}]=1`,
      `store[${tail}]=${1024 + 64}`,
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
    assert.equal(rec.log[headStore], `store[${HEAD_POSITION_OFFSET >> 2}]=256`);
    const before = rec.log.slice(0, headStore);
    assert.equal(
      before.filter((op) => op.startsWith('read i32')).length,
      32,
      'length and type of 16 records read first',
    );
    assert.ok(before.every((op) => op.startsWith('read') || op.startsWith('load[')));
  });
});
