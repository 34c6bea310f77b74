/**
 * The sender's side of the consumer table in its registration segment (layout/sender.ts):
 * who is connected, with which filter, how much each got, and who was evicted why, for
 * `shmbus inspect` / `shmbus top` to read without asking the sender.
 *
 * ```ts
 * const table = new ConsumerTable(registration.views, tableSlots);
 * const slot = table.claim();                       // -1: no entry left (more consumers than slots)
 * table.write(slot, { state: EntryState.LIVE, ... }); // identity and filter summary, under the seqlock
 * const stats = table.stats(slot);                  // [delivered, deliveredBytes]: plain f64 stores per delivery
 * ```
 * Identity and filter fields change only at handshake, (un)subscribe and eviction: off the
 * hot path. The per-delivery counters are two f64 stores into the mapping, as cheap as the
 * JS fields they replace; no system call, no allocation.
 * One thread (the sender's event loop).
 */
import type { SegmentViews } from '../core/spsc-ring.js';
import {
  CONSUMER_TABLE_OFFSET,
  ENTRY_CONNECTED_MS_OFFSET,
  ENTRY_CONSUMER_ID_OFFSET,
  ENTRY_DELIVERED_OFFSET,
  ENTRY_ENDED_MS_OFFSET,
  ENTRY_GROUPS_OFFSET,
  ENTRY_KEYS_OFFSET,
  ENTRY_KIND_COUNT_OFFSET,
  ENTRY_KINDS_LENGTH,
  ENTRY_KINDS_OFFSET,
  ENTRY_NAME_LENGTH_OFFSET,
  ENTRY_NAME_OFFSET,
  ENTRY_NAME_ROOM,
  ENTRY_PID_OFFSET,
  ENTRY_REASON_OFFSET,
  ENTRY_RING_NAME_LENGTH_OFFSET,
  ENTRY_RING_NAME_OFFSET,
  ENTRY_RING_NAME_ROOM,
  ENTRY_SEQ_OFFSET,
  ENTRY_STATE_OFFSET,
  ENTRY_UID_OFFSET,
  EntryState,
  EVICT_REASON_CODES,
  TABLE_ENTRY_LENGTH,
} from '../layout/sender.js';

const utf8 = new TextEncoder();

/** Encodes `s` into at most `room` bytes, cut on a character boundary. */
function encodeCut(s: string, room: number): Uint8Array {
  const out = new Uint8Array(room);
  const { written } = utf8.encodeInto(s, out);
  return out.subarray(0, written);
}

export interface EntryIdentity {
  consumerId: number;
  pid: number;
  uid: number;
  name: string;
  ring: string;
}

export interface EntryFilter {
  keys: number;
  groups: number;
  kinds: Iterable<number>;
}

export class ConsumerTable {
  private readonly dv: DataView;
  private readonly u8: Uint8Array;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;

  constructor(
    views: SegmentViews & { dv: DataView },
    readonly slots: number,
  ) {
    this.dv = views.dv;
    this.u8 = views.u8;
    this.i32 = views.i32;
    this.f64 = views.f64;
  }

  private base(slot: number): number {
    return CONSUMER_TABLE_OFFSET + slot * TABLE_ENTRY_LENGTH;
  }

  /** A FREE entry, else the one that ended longest ago; -1 if every entry is LIVE. */
  claim(): number {
    let best = -1;
    let bestEnded = Number.POSITIVE_INFINITY;
    for (let s = 0; s < this.slots; s++) {
      const at = this.base(s);
      const state = this.dv.getUint32(at + ENTRY_STATE_OFFSET, true);
      if (state === EntryState.FREE) return s;
      if (state === EntryState.LIVE) continue;
      const ended = this.dv.getFloat64(at + ENTRY_ENDED_MS_OFFSET, true);
      if (ended < bestEnded) {
        bestEnded = ended;
        best = s;
      }
    }
    return best;
  }

  /** Runs `write` between the two seq stores, so readers never take a half-written entry. */
  private update(slot: number, write: (at: number) => void): void {
    const at = this.base(slot);
    const seqIndex = (at + ENTRY_SEQ_OFFSET) >> 2;
    const seq = this.i32[seqIndex];
    // SYNC POINT: pairs with the first Atomics.load(seq) in readConsumerEntry(); odd: changing.
    Atomics.store(this.i32, seqIndex, (seq + 1) | 1);
    write(at);
    // SYNC POINT: pairs with the second Atomics.load(seq) in readConsumerEntry(); every field above is written.
    Atomics.store(this.i32, seqIndex, ((seq + 1) | 1) + 1);
  }

  /** A new consumer in `slot`: LIVE, its identity, an empty filter, zero counters. */
  open(slot: number, who: EntryIdentity): void {
    this.update(slot, (at) => {
      const dv = this.dv;
      this.u8.fill(0, at + ENTRY_STATE_OFFSET, at + TABLE_ENTRY_LENGTH);
      dv.setUint32(at + ENTRY_STATE_OFFSET, EntryState.LIVE, true);
      dv.setUint32(at + ENTRY_CONSUMER_ID_OFFSET, who.consumerId, true);
      dv.setUint32(at + ENTRY_PID_OFFSET, who.pid, true);
      dv.setInt32(at + ENTRY_UID_OFFSET, who.uid, true);
      const ring = encodeCut(who.ring, ENTRY_RING_NAME_ROOM);
      this.u8.set(ring, at + ENTRY_RING_NAME_OFFSET);
      dv.setUint32(at + ENTRY_RING_NAME_LENGTH_OFFSET, ring.length, true);
      const name = encodeCut(who.name, ENTRY_NAME_ROOM);
      this.u8.set(name, at + ENTRY_NAME_OFFSET);
      dv.setUint32(at + ENTRY_NAME_LENGTH_OFFSET, name.length, true);
      dv.setFloat64(at + ENTRY_CONNECTED_MS_OFFSET, Date.now(), true);
    });
  }

  /** The filter summary after a SUBSCRIBE / UNSUBSCRIBE was applied. */
  setFilter(slot: number, filter: EntryFilter): void {
    this.update(slot, (at) => {
      const dv = this.dv;
      dv.setUint32(at + ENTRY_KEYS_OFFSET, filter.keys, true);
      dv.setUint32(at + ENTRY_GROUPS_OFFSET, filter.groups, true);
      this.u8.fill(0, at + ENTRY_KINDS_OFFSET, at + ENTRY_KINDS_OFFSET + ENTRY_KINDS_LENGTH);
      let count = 0;
      for (const k of filter.kinds) {
        if (!(k >= 0 && k <= 255)) continue;
        this.u8[at + ENTRY_KINDS_OFFSET + (k >> 3)] |= 1 << (k & 7);
        count++;
      }
      dv.setUint32(at + ENTRY_KIND_COUNT_OFFSET, count, true);
    });
  }

  /** The consumer left: EVICTED with `reason`, or GONE (reason null). The entry keeps the rest until reused. */
  end(slot: number, reason: string | null): void {
    this.update(slot, (at) => {
      const dv = this.dv;
      const code = reason === null ? 0 : Math.max(0, EVICT_REASON_CODES.indexOf(reason as never));
      dv.setUint32(at + ENTRY_STATE_OFFSET, reason === null ? EntryState.GONE : EntryState.EVICTED, true);
      dv.setUint32(at + ENTRY_REASON_OFFSET, code, true);
      dv.setFloat64(at + ENTRY_ENDED_MS_OFFSET, Date.now(), true);
    });
  }

  /** [delivered, deliveredBytes] of `slot`, a view into the mapping (the sender adds to it per delivery). */
  stats(slot: number): Float64Array {
    return this.f64.subarray(
      (this.base(slot) + ENTRY_DELIVERED_OFFSET) >> 3,
      ((this.base(slot) + ENTRY_DELIVERED_OFFSET) >> 3) + 2,
    );
  }
}
