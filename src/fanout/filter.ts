/**
 * Sender-side subscription filters of fan-out streaming.
 *
 * ```ts
 * const f = new SubscriptionFilter();
 * f.add({ kinds: [], keys: [keyBytes], groups: [] });
 * const m = new MessageKey();
 * m.set(keyBytes, null);
 * f.matches('filtered', 2, m);   // true: its key is subscribed
 * ```
 * Rules: a message of a `filtered` kind matches if its key OR its group is subscribed (an
 * empty filter matches nothing); an `opt-in` kind matches once the consumer opted in to that
 * kind (and stays so until it unsubscribes the kind); an `always` kind matches every
 * consumer. Above BLOOM_THRESHOLD keys + groups, a Bloom filter rejects most non-matching
 * messages before the exact set look-up; delivery stays exact (a Bloom hit is confirmed in the
 * sets, a Bloom miss is never a subscribed key).
 * One thread (the sender's); matches() allocates nothing.
 */
import type { FilterDelta } from './control.js';

export type KindMode = 'filtered' | 'opt-in' | 'always';

/** More keys + groups than this and the Bloom filter is consulted first (as the reference: 16). */
export const BLOOM_THRESHOLD = 16;
const BLOOM_BITS_PER_ITEM = 16;
const BLOOM_PROBES = 8;
const BLOOM_MIN_BITS = 1024;
const BLOOM_MAX_BITS = 1 << 20;

/** FNV-1a over the bytes (32-bit). */
export function hashBytes(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

/** A second, independent-enough hash for double hashing (odd, so probes cycle the table). */
function secondHash(h: number): number {
  let x = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return ((x ^ (x >>> 16)) | 1) >>> 0;
}

/** The bytes as a string usable as a Set key (one char per byte). */
export function keyString(bytes: Uint8Array): string {
  if (bytes.length > 64) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

export class Bloom {
  private readonly bits: Uint32Array;
  private readonly mask: number;

  constructor(items: number) {
    let size = BLOOM_MIN_BITS;
    while (size < items * BLOOM_BITS_PER_ITEM && size < BLOOM_MAX_BITS) size *= 2;
    this.bits = new Uint32Array(size >>> 5);
    this.mask = size - 1;
  }

  add(hash: number): void {
    const step = secondHash(hash);
    let h = hash;
    for (let i = 0; i < BLOOM_PROBES; i++) {
      const bit = h & this.mask;
      this.bits[bit >>> 5] |= 1 << (bit & 31);
      h = (h + step) >>> 0;
    }
  }

  has(hash: number): boolean {
    const step = secondHash(hash);
    let h = hash;
    for (let i = 0; i < BLOOM_PROBES; i++) {
      const bit = h & this.mask;
      if ((this.bits[bit >>> 5] & (1 << (bit & 31))) === 0) return false;
      h = (h + step) >>> 0;
    }
    return true;
  }

  get sizeBits(): number {
    return this.mask + 1;
  }
}

/** Byte equality (keys are at most 1 KiB; usually 32 bytes). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * An exact set of byte strings keyed by their 32-bit hash: a look-up is one Map probe on a
 * number plus a byte comparison on a hit, with no string built per message.
 */
export class KeySet {
  private readonly byHash = new Map<number, Uint8Array[]>();
  size = 0;

  add(bytes: Uint8Array, hash = hashBytes(bytes)): boolean {
    const bucket = this.byHash.get(hash);
    if (bucket === undefined) {
      this.byHash.set(hash, [bytes.slice()]);
    } else {
      for (const k of bucket) if (sameBytes(k, bytes)) return false;
      bucket.push(bytes.slice());
    }
    this.size++;
    return true;
  }

  delete(bytes: Uint8Array, hash = hashBytes(bytes)): boolean {
    const bucket = this.byHash.get(hash);
    if (bucket === undefined) return false;
    for (let i = 0; i < bucket.length; i++)
      if (sameBytes(bucket[i], bytes)) {
        bucket.splice(i, 1);
        if (bucket.length === 0) this.byHash.delete(hash);
        this.size--;
        return true;
      }
    return false;
  }

  has(bytes: Uint8Array, hash: number): boolean {
    const bucket = this.byHash.get(hash);
    if (bucket === undefined) return false;
    for (let i = 0; i < bucket.length; i++) if (sameBytes(bucket[i], bytes)) return true;
    return false;
  }

  /** Every hash present (for building the Bloom filter). */
  hashes(): IterableIterator<number> {
    return this.byHash.keys();
  }
}

/** A message's key and group, prepared once per message for every consumer's filter. */
export class MessageKey {
  key: Uint8Array | null = null;
  keyHash = 0;
  group: Uint8Array | null = null;
  groupHash = 0;

  set(key: Uint8Array | null, group: Uint8Array | null): void {
    this.key = key === null || key.length === 0 ? null : key;
    this.keyHash = this.key === null ? 0 : hashBytes(this.key);
    this.group = group === null || group.length === 0 ? null : group;
    this.groupHash = this.group === null ? 0 : hashBytes(this.group);
  }
}

/** One consumer's subscriptions. */
export class SubscriptionFilter {
  readonly keys = new KeySet();
  readonly groups = new KeySet();
  readonly kinds = new Set<number>();
  private bloom: Bloom | null = null;
  /** Bloom pre-rejections (messages the exact sets never had to look at). */
  bloomRejects = 0;

  get size(): number {
    return this.keys.size + this.groups.size;
  }

  /** Adds keys, groups and opt-in kinds (set union: duplicates are ignored). */
  add(delta: FilterDelta): void {
    for (const k of delta.kinds) this.kinds.add(k);
    for (const k of delta.keys) this.keys.add(k);
    for (const g of delta.groups) this.groups.add(g);
    this.rebuild();
  }

  /** Removes keys, groups and opt-in kinds (absent ones are ignored). */
  remove(delta: FilterDelta): void {
    for (const k of delta.kinds) this.kinds.delete(k);
    for (const k of delta.keys) this.keys.delete(k);
    for (const g of delta.groups) this.groups.delete(g);
    this.rebuild();
  }

  private rebuild(): void {
    if (this.size <= BLOOM_THRESHOLD) {
      this.bloom = null;
      return;
    }
    const bloom = new Bloom(this.size);
    for (const h of this.keys.hashes()) bloom.add(h);
    for (const h of this.groups.hashes()) bloom.add(h);
    this.bloom = bloom;
  }

  get bloomBits(): number {
    return this.bloom?.sizeBits ?? 0;
  }

  matches(mode: KindMode, kind: number, m: MessageKey): boolean {
    if (mode === 'always') return true;
    if (mode === 'opt-in') return this.kinds.has(kind);
    const key = m.key;
    const group = m.group;
    const bloom = this.bloom;
    if (bloom !== null) {
      const keyMaybe = key !== null && bloom.has(m.keyHash);
      const groupMaybe = group !== null && bloom.has(m.groupHash);
      if (!keyMaybe && !groupMaybe) {
        this.bloomRejects++;
        return false;
      }
      return (
        (keyMaybe && this.keys.has(key as Uint8Array, m.keyHash)) ||
        (groupMaybe && this.groups.has(group as Uint8Array, m.groupHash))
      );
    }
    return (key !== null && this.keys.has(key, m.keyHash)) || (group !== null && this.groups.has(group, m.groupHash));
  }
}
