import assert from 'node:assert/strict';
import { test } from 'node:test';
import { viewsOf } from '../../src/core/spsc-ring.js';
import { StateReader, StateWriter } from '../../src/core/state-cells.js';
import { ErrorCode, ShmError } from '../../src/errors.js';
import {
  CELL_VERSION_OFFSET,
  CELLS_OFFSET,
  daemonGeometry,
  STATE_CELLS,
  STATE_SEQ_OFFSET,
} from '../../src/layout/daemon.js';

function setup(dataSize = 64) {
  const g = daemonGeometry({ dataSize, maxClients: 1, cmdCapacity: 1 << 16, respCapacity: 1 << 16, cmdMaxBytes: 64 });
  const views = viewsOf(new SharedArrayBuffer(g.slotsOffset));
  return { g, views, writer: new StateWriter(views, g), reader: new StateReader(views, g) };
}

test('before any write a reader gets length 0 and version 0', () => {
  const { reader } = setup();
  assert.equal(reader.read(new Uint8Array(8)), 0);
  assert.equal(reader.version, 0);
});

test('length-prefixed state: 10 bytes then 3; a 2-byte buffer gets length 3 and the first 2 bytes', () => {
  const { writer, reader } = setup();
  writer.write(Uint8Array.from({ length: 10 }, (_, i) => i + 1));
  const big = new Uint8Array(16);
  assert.equal(reader.read(big), 10);
  assert.deepEqual([...big.subarray(0, 10)], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  writer.write(Uint8Array.of(7, 8, 9));
  const small = new Uint8Array(2);
  assert.equal(reader.read(small), 3);
  assert.deepEqual([...small], [7, 8]);
  assert.equal(reader.version, 2);
});

test('versions count writes and cells rotate through all four', () => {
  const { g, views, writer, reader } = setup();
  for (let v = 1; v <= 9; v++) {
    assert.equal(writer.write(Uint8Array.of(v)), v);
    const cell = g.stateOffset + (v % STATE_CELLS) * g.cellLength;
    assert.equal(views.i32[(cell + CELL_VERSION_OFFSET) >> 2], v);
    const out = new Uint8Array(1);
    assert.equal(reader.read(out), 1);
    assert.equal(out[0], v);
    assert.equal(reader.version, v);
  }
  assert.equal(g.stateOffset, CELLS_OFFSET);
});

test('a writer that died mid-write leaves readers with the last complete state', () => {
  const { g, views, writer, reader } = setup();
  writer.write(Uint8Array.of(1, 1, 1));
  // Simulate a crash half-way through write 2: its cell is scribbled, stateSeq not moved.
  const cell = g.stateOffset + (2 % STATE_CELLS) * g.cellLength;
  views.u8.fill(0xee, cell, cell + 32);
  const out = new Uint8Array(3);
  assert.equal(reader.read(out), 3);
  assert.deepEqual([...out], [1, 1, 1]);
  assert.equal(reader.version, 1);
});

test('a cell that does not carry its published version is reported as corrupt, not returned', () => {
  const { g, views, writer, reader } = setup();
  writer.write(Uint8Array.of(5));
  const cell = g.stateOffset + (1 % STATE_CELLS) * g.cellLength;
  views.i32[(cell + CELL_VERSION_OFFSET) >> 2] = 77;
  assert.throws(
    () => reader.read(new Uint8Array(1)),
    (e) => e instanceof ShmError && e.code === ErrorCode.CORRUPT,
  );
});

test('a state larger than dataSize is refused', () => {
  const { writer } = setup(16);
  assert.throws(
    () => writer.write(new Uint8Array(17)),
    (e) => e instanceof ShmError && e.code === ErrorCode.TOO_LARGE,
  );
});

test('a reader lapped by the writer on every attempt reports -1 instead of a torn copy', () => {
  const { views, writer, reader } = setup();
  writer.write(Uint8Array.of(1));
  // A writer that publishes three new versions during every copy: each validation sees it
  // three ahead, where the copied cell may already be rewritten.
  const seqIndex = STATE_SEQ_OFFSET >> 2;
  const realCas = Atomics.compareExchange;
  (Atomics as { compareExchange: typeof Atomics.compareExchange }).compareExchange = ((
    a: Int32Array,
    i: number,
    e: number,
    r: number,
  ) => {
    if (a === views.i32 && i === seqIndex) {
      for (let k = 0; k < 3; k++) writer.write(Uint8Array.of(9));
      return Atomics.load(a, i);
    }
    return realCas(a, i, e, r);
  }) as typeof Atomics.compareExchange;
  try {
    assert.equal(reader.read(new Uint8Array(1), 5), -1);
    assert.equal(reader.retries, 5);
  } finally {
    (Atomics as { compareExchange: typeof Atomics.compareExchange }).compareExchange = realCas;
  }
});

test('version arithmetic survives u32 wrap-around', () => {
  const { views, writer, reader } = setup();
  Atomics.store(views.i32, STATE_SEQ_OFFSET >> 2, -2); // 0xfffffffe
  writer.write(Uint8Array.of(42)); // 0xffffffff
  writer.write(Uint8Array.of(43)); // wraps to 0 ... and 0 means "nothing yet"
  writer.write(Uint8Array.of(44)); // 1
  const out = new Uint8Array(1);
  assert.equal(reader.read(out), 1);
  assert.equal(out[0], 44);
});
