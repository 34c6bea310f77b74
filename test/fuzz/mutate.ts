/**
 * Input generation for the fuzz targets: a seeded random source, and mutations of valid
 * inputs (made by the real encoders) in the style of AFL's havoc stage.
 *
 * ```ts
 * const rng = caseRng(seed, 17);                          // case 17 of a run: deterministic
 * const frame = new ControlWriter(Tag.PING).finish();
 * const input = mutate(rng, frame, { fields: [{ at: 0, width: 4 }], limits: [MAX_CONTROL_FRAME] });
 * hex(input, 64);                                         // '0400000001…(+2 bytes)' for a finding report
 * ```
 * Mutations: bit flips; bytes set to 0x00 / 0xff / 0x7f / 0x80 / 0x01 / random; u8, u16 and u32
 * fields (the structure's own length fields when the caller names them, else any offset)
 * set to interesting values (0, 1, 0x7f.., 0x80.., 0xff.., 0x7fffffff, 0xffffffff, the
 * input's length +-1, each caller limit -1 / +0 / +1) or nudged by +-1..16; truncation;
 * extension (zeros, 0xff, random, a repeat of the tail); insertion and deletion of ranges;
 * duplication of a range; splicing with another valid input. One to six of them are stacked.
 * Everything is a pure function of the random source: a seed and case index replay a case.
 */
import { prng } from '../helpers/prng.js';

/** A seeded random source with the helpers the generators need. */
export class Rng {
  private readonly next: () => number;

  constructor(seed: number) {
    this.next = prng(seed);
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.next();
  }

  /** Uniform integer in [0, n) (n >= 1). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Uniform integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** A uniform u32. */
  u32(): number {
    return (this.next() * 0x1_0000_0000) >>> 0;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** A length skewed towards small values (most inputs are short, a few are long). */
  size(max: number): number {
    const r = this.next();
    if (r < 0.6) return this.int(Math.min(max, 16) + 1);
    if (r < 0.9) return this.int(Math.min(max, 256) + 1);
    return this.int(max + 1);
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const v = this.u32();
      out[i] = v;
      out[i + 1] = v >>> 8;
      out[i + 2] = v >>> 16;
      out[i + 3] = v >>> 24;
    }
    for (; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /** A u64 as a bigint, skewed towards the edges. */
  u64(): bigint {
    const r = this.next();
    if (r < 0.1) return 0n;
    if (r < 0.2) return 0xffff_ffff_ffff_ffffn;
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
}

/** Mixes a run seed and a case index into the case's own seed (murmur3's finaliser). */
export function caseSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The random source of case `index` of a run seeded with `seed`. */
export function caseRng(seed: number, index: number): Rng {
  return new Rng(caseSeed(seed, index));
}

/** A field the mutator should aim at: an integer of `width` bytes (1, 2 or 4) at byte `at`, little-endian. */
export interface Field {
  at: number;
  width: 1 | 2 | 4;
}

export interface MutateOptions {
  /** Length / count / tag fields of the structure (hit with interesting values more often). */
  fields?: readonly Field[];
  /** Limits of the structure (max frame, max key length, ...): tried at limit - 1, limit, limit + 1. */
  limits?: readonly number[];
  /** Valid inputs to splice with. */
  others?: readonly Uint8Array[];
  /** Upper bound of the mutated length (default: input length * 2 + 64). */
  maxLength?: number;
  /** Stacked mutations (default 1..6). */
  rounds?: number;
}

export const INTERESTING_U8 = [0, 1, 2, 0x7f, 0x80, 0xfe, 0xff] as const;
export const INTERESTING_U16 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x3ff, 0x400, 0x401, 0x7fff, 0x8000, 0xffff] as const;
export const INTERESTING_U32 = [
  0, 1, 2, 3, 4, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0x7fffff, 0xffffff, 0x1000000, 0x7fffffff, 0x80000000,
  0xfffffffe, 0xffffffff,
] as const;

/** An interesting value for a field of `width` bytes of an input of `length` bytes. */
export function interesting(rng: Rng, width: 1 | 2 | 4, length: number, limits: readonly number[] = []): number {
  const r = rng.float();
  if (r < 0.25 && limits.length > 0) return rng.pick(limits) + rng.range(-1, 1);
  if (r < 0.35) return length + rng.range(-2, 2);
  if (r < 0.4) return rng.u32();
  return rng.pick(width === 1 ? INTERESTING_U8 : width === 2 ? INTERESTING_U16 : INTERESTING_U32);
}

function writeField(out: Uint8Array, at: number, width: 1 | 2 | 4, value: number): void {
  for (let i = 0; i < width && at + i < out.length; i++) out[at + i] = (value >>> (8 * i)) & 0xff;
}

function readField(out: Uint8Array, at: number, width: 1 | 2 | 4): number {
  let v = 0;
  for (let i = 0; i < width && at + i < out.length; i++) v |= out[at + i] << (8 * i);
  return v >>> 0;
}

/** The bytes of `parts`, one after the other. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One havoc mutation of `input` (returns a new array; `input` is not changed). */
export function mutateOnce(rng: Rng, input: Uint8Array, o: MutateOptions = {}): Uint8Array {
  const maxLength = o.maxLength ?? input.length * 2 + 64;
  const n = input.length;
  const out = input.slice();
  const choice = rng.int(12);
  switch (choice) {
    case 0: {
      // Bit flips.
      if (n === 0) return out;
      for (let k = rng.range(1, 8); k > 0; k--) {
        const bit = rng.int(n * 8);
        out[bit >>> 3] ^= 1 << (bit & 7);
      }
      return out;
    }
    case 1: {
      // A byte set to an edge value or a random one.
      if (n === 0) return out;
      for (let k = rng.range(1, 4); k > 0; k--)
        out[rng.int(n)] = rng.chance(0.8) ? rng.pick([0x00, 0xff, 0x7f, 0x80, 0x01]) : rng.int(256);
      return out;
    }
    case 2:
    case 3:
    case 4: {
      // A known field (or any aligned/unaligned offset) set to an interesting value.
      if (n === 0) return out;
      const field: Field =
        o.fields !== undefined && o.fields.length > 0 && rng.chance(0.7)
          ? rng.pick(o.fields)
          : { at: rng.int(n), width: rng.pick([1, 2, 4] as const) };
      if (field.at >= n) return out;
      if (rng.chance(0.2)) {
        const delta = rng.range(1, 16) * (rng.chance(0.5) ? 1 : -1);
        writeField(out, field.at, field.width, readField(out, field.at, field.width) + delta);
      } else writeField(out, field.at, field.width, interesting(rng, field.width, n, o.limits));
      return out;
    }
    case 5: {
      // Truncation: cut anywhere (often just the last few bytes).
      if (n === 0) return out;
      const keep = rng.chance(0.5) ? Math.max(0, n - rng.range(1, 8)) : rng.int(n);
      return out.slice(0, keep);
    }
    case 6: {
      // Extension at the end.
      const add = Math.min(rng.size(256) + 1, Math.max(0, maxLength - n));
      const kind = rng.int(4);
      const tail =
        kind === 0
          ? new Uint8Array(add)
          : kind === 1
            ? new Uint8Array(add).fill(0xff)
            : kind === 2
              ? rng.bytes(add)
              : out.slice(Math.max(0, n - add));
      return concat(out, tail).slice(0, maxLength);
    }
    case 7: {
      // Insertion of random bytes at a random position.
      const at = rng.int(n + 1);
      const add = Math.min(rng.size(64) + 1, Math.max(0, maxLength - n));
      return concat(out.subarray(0, at), rng.bytes(add), out.subarray(at));
    }
    case 8: {
      // Deletion of a range.
      if (n === 0) return out;
      const at = rng.int(n);
      const len = rng.range(1, Math.min(n - at, 32));
      return concat(out.subarray(0, at), out.subarray(at + len));
    }
    case 9: {
      // Duplication of a range (repeated fields, repeated frames).
      if (n === 0) return out;
      const at = rng.int(n);
      const len = rng.range(1, Math.min(n - at, 64));
      const dup = out.slice(at, at + len);
      return concat(out.subarray(0, at + len), dup, out.subarray(at + len)).slice(0, maxLength);
    }
    case 10: {
      // Splice with another valid input: a prefix of one, a suffix of the other.
      const other = o.others !== undefined && o.others.length > 0 ? rng.pick(o.others) : out;
      const a = rng.int(n + 1);
      const b = rng.int(other.length + 1);
      return concat(out.subarray(0, a), other.subarray(b)).slice(0, maxLength);
    }
    default: {
      // A run of bytes overwritten with random ones.
      if (n === 0) return out;
      const at = rng.int(n);
      const len = rng.range(1, Math.min(n - at, 16));
      out.set(rng.bytes(len), at);
      return out;
    }
  }
}

/** One to six stacked havoc mutations. */
export function mutate(rng: Rng, input: Uint8Array, o: MutateOptions = {}): Uint8Array {
  let out = input;
  for (let k = o.rounds ?? rng.range(1, 6); k > 0; k--) out = mutateOnce(rng, out, o);
  return out === input ? input.slice() : out;
}

/** Hex of the first `max` bytes, with the count of the rest: how findings print their input. */
export function hex(bytes: Uint8Array, max = 256): string {
  const shown = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, max)).toString('hex');
  return bytes.length > max ? `${shown}…(+${bytes.length - max} bytes)` : shown;
}

/** Parses hex as printed by hex() (without a truncation marker). */
export function fromHex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text.replace(/[^0-9a-f]/gi, ''), 'hex'));
}

/** Puts `bytes` at a random offset of a larger buffer (and sometimes a SharedArrayBuffer): decoders must honour byteOffset. */
export function placed(rng: Rng, bytes: Uint8Array): Uint8Array {
  const r = rng.float();
  if (r < 0.5) return bytes;
  const before = rng.range(1, 13);
  const after = rng.int(9);
  const buffer =
    r < 0.8 ? new ArrayBuffer(before + bytes.length + after) : new SharedArrayBuffer(before + bytes.length + after);
  const u8 = new Uint8Array(buffer);
  u8.fill(0xa5);
  u8.set(bytes, before);
  return u8.subarray(before, before + bytes.length);
}
