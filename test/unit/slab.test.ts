import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  generationOf,
  SLOT_ALLOCATED,
  SLOT_FREE,
  SLOT_IN_FLIGHT,
  Slab,
  SlabStatus,
  slabLength,
  slotOf,
} from '../../src/core/slab.js';
import { prng, testSeed } from '../helpers/prng.js';

function make(slots: number) {
  const sab = new SharedArrayBuffer(slabLength(slots) + 16);
  const sut = new Slab(new Int32Array(sab), 4, slots); // at a non-zero offset
  sut.format();
  return { sab, sut };
}

test('a formatted slab hands out every slot once, then reports none free', () => {
  const { sut } = make(8);
  const seen = new Set<number>();
  for (let i = 0; i < 8; i++) {
    const ref = sut.alloc();
    assert.ok(ref >= 0);
    seen.add(slotOf(ref));
    assert.equal(sut.stateWord(slotOf(ref)) & 3, SLOT_ALLOCATED);
  }
  assert.equal(seen.size, 8);
  assert.equal(sut.alloc(), -1);
  assert.equal(sut.freeCount, 0);
});

test('generations move on every allocation and a stale reference is refused', () => {
  const { sut } = make(1);
  const first = sut.alloc();
  assert.equal(sut.free(slotOf(first), generationOf(first)), SlabStatus.OK);
  const second = sut.alloc();
  assert.equal(slotOf(second), slotOf(first));
  assert.equal(generationOf(second), generationOf(first) + 1);
  assert.equal(sut.free(slotOf(first), generationOf(first)), SlabStatus.STALE);
  assert.equal(sut.markInFlight(slotOf(first), generationOf(first)), SlabStatus.STALE);
  assert.equal(sut.check(slotOf(second), generationOf(second)), SlabStatus.OK);
});

test('a double free and an out-of-range slot change nothing', () => {
  const { sut } = make(4);
  const ref = sut.alloc();
  assert.equal(sut.markInFlight(slotOf(ref), generationOf(ref)), SlabStatus.OK);
  assert.equal(sut.stateWord(slotOf(ref)) & 3, SLOT_IN_FLIGHT);
  assert.equal(sut.markInFlight(slotOf(ref), generationOf(ref)), SlabStatus.WRONG_STATE);
  assert.equal(sut.free(slotOf(ref), generationOf(ref)), SlabStatus.OK);
  const before = sut.freeCount;
  assert.equal(sut.free(slotOf(ref), generationOf(ref)), SlabStatus.WRONG_STATE);
  assert.equal(sut.freeCount, before);
  for (const bad of [-1, 4, 1.5, Number.NaN]) assert.equal(sut.free(bad, 0), SlabStatus.OUT_OF_RANGE);
  assert.equal(sut.stateWord(slotOf(ref)) & 3, SLOT_FREE);
});

test('refilled says whether a free found the list empty (only those frees wake slot waiters)', () => {
  const { sut } = make(3);
  const refs = [sut.alloc(), sut.alloc(), sut.alloc()];
  assert.equal(sut.alloc(), -1);
  assert.equal(sut.free(slotOf(refs[0]), generationOf(refs[0])), SlabStatus.OK);
  assert.equal(sut.refilled, true, 'the first free onto an empty list must wake');
  assert.equal(sut.free(slotOf(refs[1]), generationOf(refs[1])), SlabStatus.OK);
  assert.equal(sut.refilled, false, 'a free onto a non-empty list wakes no one');
  const again = sut.alloc();
  sut.alloc();
  assert.equal(sut.free(slotOf(again), generationOf(again)), SlabStatus.OK);
  assert.equal(sut.refilled, true);
  assert.equal(sut.free(slotOf(refs[2]), generationOf(refs[2])), SlabStatus.OK);
  assert.equal(sut.refilled, false);
});

test("reclaimOwner frees only the dead owner's slots", () => {
  const { sut } = make(6);
  const mine = [sut.alloc(0), sut.alloc(0)];
  const theirs = [sut.alloc(5), sut.alloc(5), sut.alloc(5)];
  sut.markInFlight(slotOf(theirs[0]), generationOf(theirs[0]));
  assert.equal(sut.reclaimOwner(5), 3);
  for (const r of theirs) assert.equal(sut.check(slotOf(r), generationOf(r)), SlabStatus.WRONG_STATE);
  for (const r of mine) assert.equal(sut.check(slotOf(r), generationOf(r)), SlabStatus.OK);
  assert.equal(sut.freeCount, 4);
});

test('random alloc/free sequences keep the free count equal to the free slots', () => {
  const seed = testSeed();
  const rand = prng(seed);
  const { sut } = make(32);
  const held: number[] = [];
  for (let step = 0; step < 20_000; step++) {
    if (held.length > 0 && (rand() < 0.5 || held.length === 32)) {
      const i = Math.floor(rand() * held.length);
      const ref = held.splice(i, 1)[0];
      assert.equal(sut.free(slotOf(ref), generationOf(ref)), SlabStatus.OK, `seed ${seed}`);
    } else {
      const ref = sut.alloc();
      assert.ok(ref >= 0, `seed ${seed}`);
      assert.ok(!held.some((h) => slotOf(h) === slotOf(ref)), `seed ${seed}: slot handed out twice`);
      held.push(ref);
    }
    assert.equal(sut.freeCount, 32 - held.length, `seed ${seed}`);
  }
});

test('four threads allocating and freeing concurrently never share a slot', async () => {
  const slots = 16;
  const { sab } = make(slots);
  const owners = new Int32Array(new SharedArrayBuffer(slots * 4));
  const source = `
    const { workerData, parentPort } = require('node:worker_threads');
    const { sab, owners, id, rounds, slots } = workerData;
    import(${JSON.stringify(new URL('../../src/core/slab.js', import.meta.url).href)}).then(({ Slab, slotOf, generationOf }) => {
      const slab = new Slab(new Int32Array(sab), 4, slots);
      let clashes = 0, done = 0;
      for (let r = 0; r < rounds; r++) {
        const ref = slab.alloc(id);
        if (ref < 0) continue;
        const s = slotOf(ref);
        if (Atomics.compareExchange(owners, s, 0, id + 1) !== 0) clashes++;
        Atomics.store(owners, s, 0);
        if (slab.free(s, generationOf(ref)) !== 0) clashes++;
        done++;
      }
      parentPort.postMessage({ clashes, done });
    });`;
  const results = await Promise.all(
    [0, 1, 2, 3].map(
      (id) =>
        new Promise<{ clashes: number; done: number }>((resolve, reject) => {
          const w = new Worker(source, { eval: true, workerData: { sab, owners, id, rounds: 200_000, slots } });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    ),
  );
  assert.equal(
    results.reduce((a, r) => a + r.clashes, 0),
    0,
  );
  assert.ok(results.every((r) => r.done > 1000));
  const check = new Slab(new Int32Array(sab), 4, slots);
  assert.equal(check.freeCount, slots);
  let free = 0;
  for (let s = 0; s < slots; s++) if ((check.stateWord(s) & 3) === SLOT_FREE) free++;
  assert.equal(free, slots);
});
