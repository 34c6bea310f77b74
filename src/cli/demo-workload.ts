/**
 * The synthetic Solana stream of `shmbus demo` (src/cli/demo.ts) and the consumers' filters.
 *
 * ```ts
 * const w = new Workload();          // a fixed pool of accounts (seeded: the same on every run)
 * const u = w.next();                // { type: 'account', entry, input } | { type: 'transaction', input } | ...
 * const f = demoFilters(3);          // what consumers 0..2 subscribe
 * matches(f[1], u);                  // would consumer 1 get it? (sender-side filtering of the unix sockets)
 * ```
 * The pool mimics a mainnet slice: SPL token accounts (165 B) and mints (82 B), Token-2022
 * accounts (182 B), wallets (System program, 0 B), a few hot AMM pools (Raydium v4, 752 B),
 * Orca whirlpools (653 B) and Pyth price accounts (3,312 B). Every 8th update is a transaction
 * (200-1,232 B payload), every 2,000th a slot update. Pubkeys are random bytes from a seeded
 * PRNG; account data is generated once per account and stamped with the update's sequence
 * number, so an update costs no random fill. One thread; next() allocates the update object.
 */

import { prng } from '../core/prng.js';
import type { AccountUpdateInput, SlotUpdateInput, TransactionUpdateInput } from '../solana/index.js';
import { decodeBase58, encodeBase58 } from '../solana/index.js';

export const TOKEN_PROGRAM = 'TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA';
export const TOKEN_2022_PROGRAM = 'TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb';
export const SYSTEM_PROGRAM = '11111111111111111111111111111111';
export const RAYDIUM_AMM_V4 = '675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8';
export const ORCA_WHIRLPOOL = 'whirLbMiicVdio4qvUfM5KAg6Ct8VwpYzGff3uctyCc';
export const PYTH_ORACLE = 'FsJ3A3u2vn5cTVofAjvy6y5kwABJAqYWpe4975bi2epH';

/** The programs by name, for the view. */
export const PROGRAM_NAMES: Record<string, string> = {
  [TOKEN_PROGRAM]: 'Token',
  [TOKEN_2022_PROGRAM]: 'Token-2022',
  [SYSTEM_PROGRAM]: 'System',
  [RAYDIUM_AMM_V4]: 'Raydium AMM v4',
  [ORCA_WHIRLPOOL]: 'Orca Whirlpool',
  [PYTH_ORACLE]: 'Pyth oracle',
};

interface Category {
  what: string;
  owner: string;
  count: number;
  dataLength: number;
  /** Share of account updates, in percent. */
  weight: number;
}

/** The account pool: 5,338 accounts; weights sum to 100. */
const CATEGORIES: Category[] = [
  { what: 'token account', owner: TOKEN_PROGRAM, count: 4000, dataLength: 165, weight: 48 },
  { what: 'mint', owner: TOKEN_PROGRAM, count: 200, dataLength: 82, weight: 4 },
  { what: 'token-2022 account', owner: TOKEN_2022_PROGRAM, count: 500, dataLength: 182, weight: 7 },
  { what: 'wallet', owner: SYSTEM_PROGRAM, count: 500, dataLength: 0, weight: 10 },
  { what: 'AMM pool', owner: RAYDIUM_AMM_V4, count: 32, dataLength: 752, weight: 15 },
  { what: 'whirlpool', owner: ORCA_WHIRLPOOL, count: 58, dataLength: 653, weight: 6 },
  { what: 'price account', owner: PYTH_ORACLE, count: 48, dataLength: 3312, weight: 10 },
];

/** One account of the pool. `key` / `ownerKey`: the 32 bytes as a latin1 string (a Set key). */
export interface PoolAccount {
  pubkey: Uint8Array;
  owner: Uint8Array;
  key: string;
  ownerKey: string;
  category: number;
  data: Uint8Array;
  lamports: number;
}

export type DemoUpdate =
  | { type: 'account'; account: PoolAccount; input: AccountUpdateInput }
  | { type: 'transaction'; input: TransactionUpdateInput }
  | { type: 'slot'; input: SlotUpdateInput };

export const TRANSACTION_EVERY = 8;
export const SLOT_EVERY = 2000;
const FIRST_SLOT = 300_000_000;

/** The 32 bytes of a pubkey as a latin1 string: a cheap exact Set key. */
export function keyOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
}

function randomBytes(random: () => number, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (random() * 256) | 0;
  return b;
}

/** The fixed account pool (the same bytes on every run and in every process). */
export function accountPool(seed = 9): PoolAccount[] {
  const random = prng(seed);
  const pool: PoolAccount[] = [];
  for (const [category, c] of CATEGORIES.entries()) {
    const owner = decodeBase58(c.owner);
    for (let i = 0; i < c.count; i++) {
      const pubkey = randomBytes(random, 32);
      pool.push({
        pubkey,
        owner,
        key: keyOf(pubkey),
        ownerKey: keyOf(owner),
        category,
        data: randomBytes(random, c.dataLength),
        lamports: c.dataLength === 0 ? 1_000_000 + Math.floor(random() * 1e10) : 2_039_280,
      });
    }
  }
  return pool;
}

/** The stream: account updates over the pool by category weight, transactions, slot updates. */
export class Workload {
  readonly pool: PoolAccount[];
  private readonly byCategory: PoolAccount[][];
  private readonly random = prng(2026);
  private readonly cumulative: number[] = [];
  private readonly signature = new Uint8Array(64);
  private readonly txPayloads: Uint8Array[] = [];
  seq = 0;
  slot = FIRST_SLOT;

  constructor(pool: PoolAccount[] = accountPool()) {
    this.pool = pool;
    this.byCategory = CATEGORIES.map((_, i) => pool.filter((a) => a.category === i));
    let sum = 0;
    for (const c of CATEGORIES) {
      sum += c.weight;
      this.cumulative.push(sum);
    }
    for (let i = 0; i < 16; i++) this.txPayloads.push(randomBytes(this.random, 200 + Math.floor(this.random() * 1033)));
  }

  /** Accounts of a category (by its `what`), for filters. */
  accountsOf(what: string): PoolAccount[] {
    return this.byCategory[CATEGORIES.findIndex((c) => c.what === what)] ?? [];
  }

  next(): DemoUpdate {
    const seq = ++this.seq;
    if (seq % SLOT_EVERY === 0) return { type: 'slot', input: { slot: ++this.slot } };
    if (seq % TRANSACTION_EVERY === 0) {
      this.signature[0] = seq;
      this.signature[1] = seq >>> 8;
      this.signature[2] = seq >>> 16;
      return {
        type: 'transaction',
        input: {
          slot: this.slot,
          index: seq % 4096,
          signature: this.signature,
          isVote: seq % 3 === 0,
          payload: this.txPayloads[seq % this.txPayloads.length],
        },
      };
    }
    const r = this.random() * 100;
    let category = 0;
    while (r >= this.cumulative[category]) category++;
    const accounts = this.byCategory[category];
    const account = accounts[Math.floor(this.random() * accounts.length)];
    if (account.data.length >= 4) {
      account.data[0] = seq;
      account.data[1] = seq >>> 8;
      account.data[2] = seq >>> 16;
      account.data[3] = seq >>> 24;
    }
    return {
      type: 'account',
      account,
      input: {
        pubkey: account.pubkey,
        owner: account.owner,
        lamports: account.lamports + (seq % 1000),
        executable: false,
        rentEpoch: 0,
        slot: this.slot,
        writeVersion: seq,
        data: account.data,
      },
    };
  }
}

/** What one demo consumer subscribes (base58 keys: it travels to the child as JSON). */
export interface DemoFilter {
  label: string;
  pubkeys: string[];
  owners: string[];
  transactions: boolean;
}

/**
 * The filters of consumers 0..count-1: a few hot pubkeys; an owner program; an owner plus
 * transactions; more pubkeys than the Bloom threshold plus an owner; two owners;
 * transactions only; then the same shapes again over other accounts.
 */
export function demoFilters(count: number, workload: Workload): DemoFilter[] {
  const amm = workload.accountsOf('AMM pool');
  const tokens = workload.accountsOf('token account');
  const b58 = (a: PoolAccount) => encodeBase58(a.pubkey);
  const shapes = (round: number): DemoFilter[] => [
    {
      label: '8 AMM pool pubkeys',
      pubkeys: amm.slice(round * 8, round * 8 + 8).map(b58),
      owners: [],
      transactions: false,
    },
    { label: 'owner Token program', pubkeys: [], owners: [TOKEN_PROGRAM], transactions: false },
    { label: 'owner Pyth + transactions', pubkeys: [], owners: [PYTH_ORACLE], transactions: true },
    {
      label: '64 token accounts + owner Token-2022',
      pubkeys: tokens.slice(round * 64, round * 64 + 64).map(b58),
      owners: [TOKEN_2022_PROGRAM],
      transactions: false,
    },
    {
      label: 'owners System + Orca Whirlpool',
      pubkeys: [],
      owners: [SYSTEM_PROGRAM, ORCA_WHIRLPOOL],
      transactions: false,
    },
    { label: 'transactions only', pubkeys: [], owners: [], transactions: true },
  ];
  const filters: DemoFilter[] = [];
  for (let round = 0; filters.length < count; round++) filters.push(...shapes(round));
  return filters.slice(0, count);
}

/** A filter as Sets of latin1 keys, for exact matching on either side. */
export interface FilterSets {
  pubkeys: Set<string>;
  owners: Set<string>;
  transactions: boolean;
}

export function filterSets(f: DemoFilter): FilterSets {
  return {
    pubkeys: new Set(f.pubkeys.map((k) => keyOf(decodeBase58(k)))),
    owners: new Set(f.owners.map((k) => keyOf(decodeBase58(k)))),
    transactions: f.transactions,
  };
}

/** The delivery rule of shmbus/solana: pubkey OR owner; transactions opt-in; slots always. */
export function matches(f: FilterSets, u: DemoUpdate): boolean {
  if (u.type === 'slot') return true;
  if (u.type === 'transaction') return f.transactions;
  return f.pubkeys.has(u.account.key) || f.owners.has(u.account.ownerKey);
}
