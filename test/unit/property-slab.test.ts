/**
 * Property-based test of the slot slab (core/slab.ts) against a reference model: fast-check
 * generates a slab of 1..12 slots at a random word offset (canaries around it), slots whose
 * generations start anywhere (0, just before the 24-bit wrap, random: a long-lived slab), and
 * up to 100 operations by two agents (two Slab objects over the same words): alloc(owner),
 * markInFlight, handOver, retake, revert, free, check and reclaimOwner, with references that
 * are current, stale (an earlier generation), doubled (freed already), or forged (any slot
 * number, out of range, non-integer; any generation).
 *
 * The model holds, per slot, its generation, state and owner. After every step:
 * - every status is the model's (OK / OUT_OF_RANGE / STALE / WRONG_STATE), and a non-OK call
 *   changes no word of the slab (nor the caller's `refilled`);
 * - alloc() returns -1 exactly when no slot is free, else a slot the model has free (never one
 *   that is held), with its generation bumped by one (mod 2^24) and the owner it was given;
 * - every state word is the model's; freeCount = slotCount - held = listLength(), and the free
 *   list holds exactly the free slots, each once; the head's ABA tag moved once per pop/push;
 * - `refilled` is true exactly when the agent's last successful free found the list empty;
 * - reclaimOwner(o) frees exactly the held slots of owner o and returns how many;
 * - nothing outside the slab's words is written.
 *
 * Replay a failure with the seed printed in its message: SHMBUS_SEED=<seed> node --test ...
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  generationOf,
  SLOT_ALLOCATED,
  SLOT_FREE,
  SLOT_IN_FLIGHT,
  Slab,
  SlabStatus,
  slabWords,
  slotOf,
} from '../../src/core/slab.js';
import { SLAB_HEAD_WORD, SLAB_STATES_WORD } from '../../src/layout/slab.js';
import { assertProperty } from '../helpers/property-run.js';

const CANARY = 0x5a5a5a5a;
const CANARY_WORDS = 4;
const GENERATION_MASK = 0xffffff;
const STATUS_NAMES = ['OK', 'OUT_OF_RANGE', 'STALE', 'WRONG_STATE'];

/** A reference handed to an operation: one alloc() returned (by index, wrapping), or made up. */
type RefPick = { from: 'issued'; pick: number } | { from: 'forged'; slot: number; generation: number };

type SlabOp =
  | { op: 'alloc'; agent: number; owner: number }
  /** `owner` is used by handOver and retake only. */
  | {
      op: 'markInFlight' | 'revert' | 'free' | 'check' | 'handOver' | 'retake';
      agent: number;
      ref: RefPick;
      owner: number;
    }
  | { op: 'reclaimOwner'; agent: number; owner: number };

interface SlabCase {
  slotCount: number;
  /** Int32 index of the slab's first word. */
  index: number;
  /** Generation of each slot before the first step (as a slab that has lived a while). */
  generations: number[];
  ops: SlabOp[];
}

const agent = fc.integer({ min: 0, max: 1 });
/** Owners are 6 bits (0..63): a few small ones that collide often, and the largest. */
const owner = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 0, max: 3 }) }, fc.constantFrom(62, 63));

function refPick(slotCount: number): fc.Arbitrary<RefPick> {
  const forgedSlot = fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: -2, max: slotCount + 2 }) },
    { weight: 1, arbitrary: fc.constantFrom(1.5, Number.NaN, 0xffff, 0x10000, -0) },
  );
  const forgedGeneration = fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 4 }) },
    { weight: 1, arbitrary: fc.constantFrom(GENERATION_MASK, GENERATION_MASK + 1, -1, 0x7fffffff) },
  );
  return fc.oneof(
    { weight: 6, arbitrary: fc.nat(200).map((pick): RefPick => ({ from: 'issued', pick })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(forgedSlot, forgedGeneration)
        .map(([slot, generation]): RefPick => ({ from: 'forged', slot, generation })),
    },
  );
}

function slabOp(slotCount: number): fc.Arbitrary<SlabOp> {
  const ref = refPick(slotCount);
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant('alloc' as const), agent, owner }) },
    {
      weight: 13,
      arbitrary: fc.record({
        op: fc.constantFrom(
          'free' as const,
          'free' as const,
          'markInFlight' as const,
          'revert' as const,
          'check' as const,
          'handOver' as const,
          'retake' as const,
        ),
        agent,
        ref,
        owner,
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('reclaimOwner' as const), agent, owner }) },
  );
}

const startGeneration = fc.oneof(
  { weight: 3, arbitrary: fc.constant(0) },
  { weight: 2, arbitrary: fc.constantFrom(GENERATION_MASK, GENERATION_MASK - 1) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: GENERATION_MASK }) },
);

const slabCase: fc.Arbitrary<SlabCase> = fc.integer({ min: 1, max: 12 }).chain((slotCount) =>
  fc.record({
    slotCount: fc.constant(slotCount),
    index: fc.integer({ min: 0, max: 5 }),
    generations: fc.array(startGeneration, { minLength: slotCount, maxLength: slotCount }),
    ops: fc.array(slabOp(slotCount), { minLength: 1, maxLength: 100, size: 'max' }),
  }),
);

interface ModelSlot {
  generation: number;
  state: number;
  owner: number;
}

function statusName(status: number): string {
  return STATUS_NAMES[status] ?? `unknown(${status})`;
}

function runSlab(c: SlabCase): void {
  const n = c.slotCount;
  const words = slabWords(n);
  const i32 = new Int32Array(new SharedArrayBuffer(4 * (c.index + words + CANARY_WORDS)));
  i32.fill(CANARY);
  const agents = [new Slab(i32, c.index, n), new Slab(i32, c.index, n)];
  agents[0].format();
  const stateIndex = (slot: number) => c.index + SLAB_STATES_WORD + slot;
  const nextIndex = (slot: number) => c.index + SLAB_STATES_WORD + n + slot;
  const headIndex = c.index + SLAB_HEAD_WORD;
  // A slab that has lived: every slot free, generations anywhere (the list is format()'s).
  for (let s = 0; s < n; s++) i32[stateIndex(s)] = c.generations[s] << 8;
  const model: ModelSlot[] = c.generations.map((generation) => ({ generation, state: SLOT_FREE, owner: 0 }));
  const refilled = [false, false];
  const issued: number[] = [];
  let tag = 0;

  const freeSlots = () => model.filter((m) => m.state === SLOT_FREE).length;
  const refOf = (pick: RefPick): [slot: number, generation: number] | null => {
    if (pick.from === 'forged') return [pick.slot, pick.generation];
    if (issued.length === 0) return null;
    const ref = issued[pick.pick % issued.length];
    return [slotOf(ref), generationOf(ref)];
  };
  /** The model's status for (slot, generation) in a call that needs one of `from`. */
  const expected = (slot: number, generation: number, from: readonly number[]): number => {
    if (!Number.isInteger(slot) || slot < 0 || slot >= n) return SlabStatus.OUT_OF_RANGE;
    if (model[slot].generation !== (generation & GENERATION_MASK)) return SlabStatus.STALE;
    return from.includes(model[slot].state) ? SlabStatus.OK : SlabStatus.WRONG_STATE;
  };
  const freeInModel = (slot: number) => {
    // A push: onto an empty list exactly when no slot was free before it.
    const wasEmpty = freeSlots() === 0;
    model[slot].state = SLOT_FREE;
    model[slot].owner = 0;
    tag++;
    return wasEmpty;
  };

  for (let step = 0; step < c.ops.length; step++) {
    const op = c.ops[step];
    const at = `step ${step} (${JSON.stringify(op)})`;
    const sut = agents[op.agent];
    const before = i32.slice();
    const refilledBefore = sut.refilled;
    /** Whether the call must leave every word (and the agent's refilled) as it was. */
    let unchanged = false;
    switch (op.op) {
      case 'alloc': {
        const free = freeSlots();
        const ref = sut.alloc(op.owner);
        if (free === 0) {
          assert.equal(ref, -1, `${at}: alloc() returned ${ref} with no slot free`);
          unchanged = true;
          break;
        }
        assert.ok(ref >= 0, `${at}: alloc() returned -1 with ${free} slots free`);
        const slot = slotOf(ref);
        assert.ok(slot < n, `${at}: alloc() returned slot ${slot} of ${n}`);
        assert.equal(model[slot].state, SLOT_FREE, `${at}: alloc() handed out slot ${slot}, which is held`);
        const generation = (model[slot].generation + 1) & GENERATION_MASK;
        assert.equal(generationOf(ref), generation, `${at}: alloc() did not bump slot ${slot}'s generation by one`);
        model[slot] = { generation, state: SLOT_ALLOCATED, owner: op.owner & 63 };
        issued.push(ref);
        tag++;
        break;
      }
      case 'reclaimOwner': {
        const mine = model.flatMap((m, slot) => (m.state !== SLOT_FREE && m.owner === (op.owner & 63) ? [slot] : []));
        const freeBefore = freeSlots();
        const count = sut.reclaimOwner(op.owner);
        assert.equal(count, mine.length, `${at}: reclaimOwner freed ${count} slots, owner held ${mine.length}`);
        for (const slot of mine) freeInModel(slot);
        // Only the first push can find the list empty; refilled reflects the last one.
        if (mine.length > 0) refilled[op.agent] = mine.length === 1 && freeBefore === 0;
        unchanged = mine.length === 0;
        break;
      }
      default: {
        const ref = refOf(op.ref);
        if (ref === null) continue;
        const [slot, generation] = ref;
        let want: number;
        let status: number;
        if (op.op === 'free' || op.op === 'check') {
          want = expected(slot, generation, [SLOT_ALLOCATED, SLOT_IN_FLIGHT]);
          status = op.op === 'free' ? sut.free(slot, generation) : sut.check(slot, generation);
        } else if (op.op === 'markInFlight' || op.op === 'handOver') {
          want = expected(slot, generation, [SLOT_ALLOCATED]);
          status =
            op.op === 'markInFlight' ? sut.markInFlight(slot, generation) : sut.handOver(slot, generation, op.owner);
        } else {
          want = expected(slot, generation, [SLOT_IN_FLIGHT]);
          status = op.op === 'revert' ? sut.revert(slot, generation) : sut.retake(slot, generation, op.owner);
        }
        assert.equal(statusName(status), statusName(want), `${at}: ${op.op}(${slot}, ${generation})`);
        // check() changes nothing whatever it answers; the others only when they answer OK.
        unchanged = want !== SlabStatus.OK || op.op === 'check';
        if (unchanged) break;
        if (op.op === 'free') refilled[op.agent] = freeInModel(slot);
        else if (op.op === 'markInFlight' || op.op === 'handOver') model[slot].state = SLOT_IN_FLIGHT;
        else model[slot].state = SLOT_ALLOCATED;
        if (op.op === 'handOver' || op.op === 'retake') model[slot].owner = op.owner & 63;
      }
    }
    if (unchanged) {
      for (let i = 0; i < i32.length; i++)
        if (i32[i] !== before[i])
          assert.fail(`${at}: a call that changed nothing wrote word ${i - c.index} of the slab`);
      assert.equal(sut.refilled, refilledBefore, `${at}: a call that freed nothing changed refilled`);
    }

    // The whole slab against the model.
    for (let i = 0; i < c.index; i++) assert.equal(i32[i], CANARY, `${at}: word ${i} before the slab was written`);
    for (let i = c.index + words; i < i32.length; i++)
      assert.equal(i32[i], CANARY, `${at}: word ${i - c.index - words} after the slab was written`);
    let held = 0;
    for (let slot = 0; slot < n; slot++) {
      const m = model[slot];
      const word = sut.stateWord(slot);
      assert.equal(word >>> 8, m.generation, `${at}: slot ${slot} generation`);
      assert.equal(word & 3, m.state, `${at}: slot ${slot} state`);
      if (m.state !== SLOT_FREE) {
        held++;
        assert.equal((word >>> 2) & 63, m.owner, `${at}: slot ${slot} owner`);
      }
    }
    assert.equal(sut.freeCount, n - held, `${at}: freeCount`);
    assert.equal(sut.listLength(), n - held, `${at}: listLength()`);
    const head = Atomics.load(i32, headIndex);
    assert.equal(head >>> 16, tag & 0xffff, `${at}: the head's tag did not move once per pop and push`);
    const onList = new Set<number>();
    for (let top = head & 0xffff; top !== 0; top = i32[nextIndex(top - 1)]) {
      const slot = top - 1;
      assert.ok(slot < n, `${at}: the free list links to slot ${slot} of ${n}`);
      assert.ok(!onList.has(slot), `${at}: slot ${slot} is on the free list twice`);
      assert.equal(model[slot].state, SLOT_FREE, `${at}: held slot ${slot} is on the free list`);
      onList.add(slot);
    }
    assert.equal(onList.size, n - held, `${at}: free slots missing from the free list`);
    assert.deepEqual(
      agents.map((a) => a.refilled),
      refilled,
      `${at}: refilled is not "the agent's last free found the list empty"`,
    );
  }
}

test('random alloc, hand-over, retake, revert, free, check and reclaimOwner calls by two agents, with current, stale, doubled and forged references, keep the slab equal to the model', () => {
  assertProperty(fc.property(slabCase, runSlab), { numRuns: 1000 });
});
