/**
 * Layout of a slot slab (the free list and slot states of core/slab.ts), embedded in session
 * and hub segments. All words are Int32, accessed with Atomics:
 * ```
 *  +0 head   tag u16 << 16 | (slot + 1) u16   (0 in the low half = empty)
 *  +4 (reserved, 0)
 *  +8 state[slotCount]  generation u24 << 8 | owner u6 << 2 | state u2
 *  ... next[slotCount]  (slot + 1) of the next free slot, 0 = end
 * ```
 */
export const SLAB_HEAD_WORD = 0;
export const SLAB_FREE_WORD = SLAB_HEAD_WORD + 1;
export const SLAB_STATES_WORD = SLAB_FREE_WORD + 1;
export const SLAB_MAX_SLOTS = 0xffff;

/** Int32 words a slab of `slotCount` slots needs. */
export function slabWords(slotCount: number): number {
  return SLAB_STATES_WORD + 2 * slotCount;
}

/** Bytes a slab of `slotCount` slots needs. */
export function slabLength(slotCount: number): number {
  return 4 * slabWords(slotCount);
}
