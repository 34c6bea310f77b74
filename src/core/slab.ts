/**
 * A lock-free slab of fixed-size slots shared by processes: a Treiber-stack free list with an
 * ABA tag, and a state word per slot carrying a generation that every allocation bumps.
 *
 * ```ts
 * const sab = new SharedArrayBuffer(slabLength(64));
 * const slab = new Slab(new Int32Array(sab), 0, 64);
 * slab.format();                                       // once, by the creator: every slot free
 * const ref = slab.alloc();                            // -1 when none is free
 * slab.markInFlight(slotOf(ref), generationOf(ref));   // SlabStatus.OK
 * slab.free(slotOf(ref), generationOf(ref));           // SlabStatus.OK; a second free: WRONG_STATE
 * ```
 * Words: src/layout/slab.ts.
 * States: FREE 0 -> ALLOCATED 1 (alloc, generation + 1) -> IN_FLIGHT 2 (sent) -> FREE (free).
 * A free() or markInFlight() with the wrong generation, from the wrong state, or of a slot out
 * of range is refused with a status code and changes nothing: a stale descriptor is never
 * acted on. Up to 65,535 slots; the 16-bit tag makes an ABA on the head need 65,536 pops
 * between one allocator's load and its compare-and-swap.
 * Concurrency: any number of threads/processes; every method is lock-free and allocates nothing.
 */

import { ErrorCode, ShmFrameError } from '../errors.js';

export const SLOT_FREE = 0;
export const SLOT_ALLOCATED = 1;
export const SLOT_IN_FLIGHT = 2;

import { SLAB_FREE_WORD, SLAB_HEAD_WORD, SLAB_MAX_SLOTS, SLAB_STATES_WORD } from '../layout/slab.js';

export { slabLength, slabWords } from '../layout/slab.js';

export const MAX_SLOTS = SLAB_MAX_SLOTS;
const HEAD = SLAB_HEAD_WORD;
const FREE_COUNT = SLAB_FREE_WORD;
const STATES = SLAB_STATES_WORD;

/** Result codes of free() / markInFlight() / check(). */
export const SlabStatus = {
  OK: 0,
  OUT_OF_RANGE: 1,
  STALE: 2,
  WRONG_STATE: 3,
} as const;

/** A slot reference as alloc() returns it: (generation & 0xffffff) * 65536 + slot, a non-negative number. */
export function slotOf(ref: number): number {
  return ref % 65536;
}
export function generationOf(ref: number): number {
  return Math.floor(ref / 65536);
}

export class Slab {
  private readonly base: number;
  private readonly nextBase: number;
  /**
   * Whether this agent's last successful free() found the free list empty. Only such a free
   * must wake slot waiters: a waiter parks only after it set its sleeping flag and then found
   * every list it may take from empty, so any later push onto a non-empty list was preceded
   * by a push onto an empty one (after the waiter's check) whose caller saw the flag and woke
   * it. Saves the flag loads (~20 ns each in Node 20) on nearly every free.
   */
  refilled = false;

  /** `index`: Int32 index of the slab's first word in `i32`. */
  constructor(
    private readonly i32: Int32Array,
    index: number,
    readonly slotCount: number,
  ) {
    if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > MAX_SLOTS)
      throw new RangeError(`slotCount must be 1..${MAX_SLOTS}, got ${slotCount}`);
    this.base = index;
    this.nextBase = index + STATES + slotCount;
  }

  /** Creator only, before anyone else maps the slab: every slot free, generations 0. */
  format(): void {
    const i32 = this.i32;
    for (let s = 0; s < this.slotCount; s++) {
      Atomics.store(i32, this.base + STATES + s, 0);
      Atomics.store(i32, this.nextBase + s, s + 2 <= this.slotCount ? s + 2 : 0);
    }
    Atomics.store(i32, this.base + FREE_COUNT, 0); // unused (kept for the layout)
    Atomics.store(i32, this.base + HEAD, 1); // tag 0, slot 0
  }

  /** Slots in the FREE state now (a scan of the state words: for inspection, not hot paths). */
  get freeCount(): number {
    let n = 0;
    for (let s = 0; s < this.slotCount; s++)
      if ((Atomics.load(this.i32, this.base + STATES + s) & 3) === SLOT_FREE) n++;
    return n;
  }

  /** Slots reachable from the free list's head (a walk: for tests of the list itself). */
  listLength(): number {
    let n = 0;
    for (let top = Atomics.load(this.i32, this.base + HEAD) & 0xffff; top !== 0 && n <= this.slotCount; n++)
      top = Atomics.load(this.i32, this.nextBase + top - 1);
    return n;
  }

  /** State word of `slot` (generation << 8 | owner << 2 | state). */
  stateWord(slot: number): number {
    return Atomics.load(this.i32, this.base + STATES + slot);
  }

  /**
   * Takes a free slot for `owner` (0..63, e.g. a peer id, for reclaiming after a crash) and
   * returns its reference (slotOf / generationOf), or -1 when none is free.
   */
  alloc(owner = 0): number {
    const i32 = this.i32;
    const head = this.base + HEAD;
    for (;;) {
      // SYNC POINT: pairs with the compare-and-swap in free()/alloc(); the tag changes on
      // every successful swap, so a head that was popped and pushed back is not mistaken.
      const h = Atomics.load(i32, head);
      const top = h & 0xffff;
      if (top === 0) return -1;
      // Shared memory another process can write: a head or link that names no slot is refused
      // before it is used as an index (it would reach past the slab).
      if (top > this.slotCount) throw this.corrupt(`free-list head names slot ${top - 1}`);
      // A plain read: the pusher stored it before its compare-and-swap of the head, which our
      // load of the head follows; if it changed since, our swap below fails (the tag moved).
      const next = i32[this.nextBase + top - 1];
      if (next < 0 || next > this.slotCount) throw this.corrupt(`slot ${top - 1} links to slot ${next - 1}`);
      const tag = ((h >>> 16) + 1) & 0xffff;
      if (Atomics.compareExchange(i32, head, h, (tag << 16) | next) !== h) continue;
      const slot = top - 1;
      const at = this.base + STATES + slot;
      // The slot is ours since the swap; its last writer was free()'s compare-and-swap.
      const old = i32[at];
      const generation = ((old >>> 8) + 1) & 0xffffff;
      // A plain store (an Atomics.store costs ~20 ns in Node 20): the slot is ours alone until
      // a descriptor names it, and that descriptor's publication (an atomic store of the ring
      // position, SYNC POINT in the ring) orders this store before any reader's check(); a
      // later free()/markInFlight() by this agent follows it in program order.
      i32[at] = (generation << 8) | ((owner & 63) << 2) | SLOT_ALLOCATED;
      return generation * 65536 + slot;
    }
  }

  private corrupt(what: string): ShmFrameError {
    return new ShmFrameError(ErrorCode.CORRUPT, `slab of ${this.slotCount} slots is corrupt: ${what}`, {
      details: { slotCount: this.slotCount },
    });
  }

  /** ALLOCATED -> IN_FLIGHT for a slot handed to the peer. Returns a SlabStatus. */
  markInFlight(slot: number, generation: number): number {
    return this.transition(slot, generation, SLOT_ALLOCATED, SLOT_IN_FLIGHT);
  }

  /**
   * ALLOCATED -> IN_FLIGHT and the owner becomes `newOwner` (the hub tags a slot with the peer
   * it is sent to, so that peer's death frees exactly what it held). Returns a SlabStatus.
   */
  handOver(slot: number, generation: number, newOwner: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) return SlabStatus.OUT_OF_RANGE;
    const at = this.base + STATES + slot;
    const word = Atomics.load(this.i32, at);
    if (word >>> 8 !== (generation & 0xffffff)) return SlabStatus.STALE;
    if ((word & 3) !== SLOT_ALLOCATED) return SlabStatus.WRONG_STATE;
    const next = (word & ~0xff) | ((newOwner & 63) << 2) | SLOT_IN_FLIGHT;
    if (Atomics.compareExchange(this.i32, at, word, next) !== word) return SlabStatus.WRONG_STATE;
    return SlabStatus.OK;
  }

  /** IN_FLIGHT -> ALLOCATED owned by `owner` again: a hand-over whose descriptor could not be published. */
  retake(slot: number, generation: number, owner: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) return SlabStatus.OUT_OF_RANGE;
    const at = this.base + STATES + slot;
    const word = Atomics.load(this.i32, at);
    if (word >>> 8 !== (generation & 0xffffff)) return SlabStatus.STALE;
    if ((word & 3) !== SLOT_IN_FLIGHT) return SlabStatus.WRONG_STATE;
    const next = (word & ~0xff) | ((owner & 63) << 2) | SLOT_ALLOCATED;
    if (Atomics.compareExchange(this.i32, at, word, next) !== word) return SlabStatus.WRONG_STATE;
    return SlabStatus.OK;
  }

  /** IN_FLIGHT -> ALLOCATED: a send that could not publish its descriptor takes the slot back. */
  revert(slot: number, generation: number): number {
    return this.transition(slot, generation, SLOT_IN_FLIGHT, SLOT_ALLOCATED);
  }

  /** Checks that `slot` is held (ALLOCATED or IN_FLIGHT) with `generation`. Returns a SlabStatus. */
  check(slot: number, generation: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) return SlabStatus.OUT_OF_RANGE;
    const word = Atomics.load(this.i32, this.base + STATES + slot);
    if (word >>> 8 !== (generation & 0xffffff)) return SlabStatus.STALE;
    const state = word & 3;
    return state === SLOT_ALLOCATED || state === SLOT_IN_FLIGHT ? SlabStatus.OK : SlabStatus.WRONG_STATE;
  }

  private transition(slot: number, generation: number, from: number, to: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) return SlabStatus.OUT_OF_RANGE;
    const at = this.base + STATES + slot;
    const word = Atomics.load(this.i32, at);
    if (word >>> 8 !== (generation & 0xffffff)) return SlabStatus.STALE;
    if ((word & 3) !== from) return SlabStatus.WRONG_STATE;
    // The CAS makes two racing transitions of one slot (a double free) succeed once.
    if (Atomics.compareExchange(this.i32, at, word, (word & ~3) | to) !== word) return SlabStatus.WRONG_STATE;
    return SlabStatus.OK;
  }

  /**
   * Returns a held slot (ALLOCATED or IN_FLIGHT, with this generation) to the free list.
   * Returns a SlabStatus; anything but OK changed nothing (a double free, a stale reference).
   */
  free(slot: number, generation: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) return SlabStatus.OUT_OF_RANGE;
    const at = this.base + STATES + slot;
    // A plain read is enough: the compare-and-swap below only succeeds on this exact word.
    const word = this.i32[at];
    if (word >>> 8 !== (generation & 0xffffff)) return SlabStatus.STALE;
    const state = word & 3;
    if (state !== SLOT_ALLOCATED && state !== SLOT_IN_FLIGHT) return SlabStatus.WRONG_STATE;
    if (Atomics.compareExchange(this.i32, at, word, word & ~0xff) !== word) return SlabStatus.WRONG_STATE;
    this.refilled = this.push(slot);
    return SlabStatus.OK;
  }

  /** Frees every held slot whose owner is `owner` (a dead peer's), bumping nothing else. Returns how many. */
  reclaimOwner(owner: number): number {
    let n = 0;
    for (let slot = 0; slot < this.slotCount; slot++) {
      const word = Atomics.load(this.i32, this.base + STATES + slot);
      const state = word & 3;
      if ((state === SLOT_ALLOCATED || state === SLOT_IN_FLIGHT) && ((word >>> 2) & 63) === (owner & 63))
        if (this.free(slot, word >>> 8) === SlabStatus.OK) n++;
    }
    return n;
  }

  /** Pushes `slot`; true when the list was empty just before (the swap compared against an empty head). */
  private push(slot: number): boolean {
    const i32 = this.i32;
    const head = this.base + HEAD;
    // A plain first read: it is only the compare-and-swap's expected value, and a failed swap
    // returns the real head to retry with.
    let h = i32[head];
    for (;;) {
      // Plain: the compare-and-swap that publishes the slot orders this store before it.
      i32[this.nextBase + slot] = h & 0xffff;
      const tag = ((h >>> 16) + 1) & 0xffff;
      // SYNC POINT: pairs with the load of head in alloc(); next[slot] is stored first.
      const seen = Atomics.compareExchange(i32, head, h, (tag << 16) | (slot + 1));
      if (seen === h) return (h & 0xffff) === 0;
      h = seen;
    }
  }
}
