/**
 * Fuzz target `segment-blob`: a blob store (src/blob/store.ts) whose control segment and
 * chunk files a hostile or corrupted process rewrites, and hostile handles (as a sender's
 * frame would carry them) resolved against it.
 *
 * World: BlobStore.create(name, { dir, chunkSize 256 / 1024 / 4096, maxChunks 1 / 2 / 4, ttlMs
 * 60 s or 50 ms, decayMs 0 / 10, leaseTimeoutMs 60 s or 20 ms, prefetchAt 0.5 / 1 }), a second
 * BlobStore.attach() of it, and a few blobs appended (1..40 recipients) by either.
 *
 * Byte ranges patched (offsets from src/layout/segment.ts and src/layout/blob.ts):
 * - control header  [0, 64)
 * - control params  [64, 96)    protocol, chunkSize, maxChunks, ttlMs, decayMs, prefetch, leaseTimeout, tableOffset
 * - store block     [128, 160)  writeHead, nextGeneration, closed, prefetching, counters
 * - table           [192, 192 + 32 * maxChunks)  state, generation, creatorPid, creatorStart, createdMs per chunk
 * - chunk header    [0, 64) of a chunk file
 * - chunk params    [64, 84)    protocol, generation, tableIndex, chunkSize, dataOffset
 * - chunk block     [128, 168)  used, entries, acked, writers, sealed, firstWrite, emptySince,
 *                               leases, lastLease, lastWrite
 * - entry headers   at the offsets of known handles: length, check, recipients, remaining, ack bitmap
 * - chunk data      anywhere in the data area
 * Handles: known ones, and their 24 bytes mutated (chunk, offset, size, generation, timestamp).
 *
 * Operations (2..8 per case): resolve, view (held or released), ack (any recipient index),
 * isAcknowledged, append from either side, cleanup from either side, stats, chunkFiles,
 * re-attaching, BlobHandle.fromBytes of random bytes, cleanupNamespace.
 * Invariants: resolve() returns null or exactly handle.size bytes; view() returns null or a
 * view of exactly handle.size bytes inside the chunk's data area (by the viewing store's own
 * geometry: one attached after a corruption of the control's parameters honours what it read).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BlobHandle } from '../../src/blob/handle.js';
import { BlobStore, type BlobView } from '../../src/blob/store.js';
import {
  ackAreaLength,
  CHUNK_ACKS_OFFSET,
  CHUNK_BLOCK_OFFSET,
  chunkDataOffset,
  ENTRY_HEADER_LENGTH,
  HANDLE_LENGTH,
  STORE_BLOCK_OFFSET,
  TABLE_ENTRY_LENGTH,
  TABLE_OFFSET,
} from '../../src/layout/blob.js';
import { PARAMS_OFFSET } from '../../src/layout/segment.js';
import { FILE_PREFIX, segmentPath } from '../../src/segment/names.js';
import { pageSize } from '../../src/segment/segment.js';
import { type CaseContext, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import { type Field, mutate, type Rng } from './mutate.js';
import { fuzzDir, inside, type Patcher, type Region, runOps, runWorlds, type World } from './segment-common.js';

export const NAME = 'segment-blob';
export const DEFAULT_CASES = 300;

interface BlobWorld extends World {
  name: string;
  path: string;
  s: BlobStore;
  r: BlobStore | null;
  chunkSize: number;
  maxChunks: number;
  handles: BlobHandle[];
  views: BlobView[];
}

const HANDLE_FIELDS: Field[] = [
  { at: 0, width: 4 },
  { at: 4, width: 4 },
  { at: 8, width: 4 },
  { at: 12, width: 4 },
  { at: 16, width: 4 },
  { at: 20, width: 4 },
];

function chunkPaths(w: BlobWorld): string[] {
  const prefix = `${FILE_PREFIX}${w.name}.b`;
  try {
    return readdirSync(fuzzDir())
      .filter((f) => f.startsWith(prefix) && !f.includes('~'))
      .map((f) => join(fuzzDir(), f));
  } catch {
    return [];
  }
}

function regionsOf(w: BlobWorld, patcher: Patcher): Region[] {
  const path = w.path;
  const regions: Region[] = [
    { name: 'control-header', path, start: 0, end: PARAMS_OFFSET, weight: 0.1 },
    {
      name: 'control-params',
      path,
      start: PARAMS_OFFSET,
      end: PARAMS_OFFSET + 32,
      weight: 0.5,
      limits: [w.chunkSize, w.maxChunks, TABLE_OFFSET, 1000],
    },
    {
      name: 'store-block',
      path,
      start: STORE_BLOCK_OFFSET,
      end: STORE_BLOCK_OFFSET + 32,
      weight: 1,
      limits: [w.maxChunks, 0],
    },
    {
      name: 'table',
      path,
      start: TABLE_OFFSET,
      end: TABLE_OFFSET + w.maxChunks * TABLE_ENTRY_LENGTH,
      weight: 2,
      limits: [0, 1, 2, 3, 4, 5, 6, 7, patcher.u32(path, TABLE_OFFSET + 4), process.pid << 3],
    },
  ];
  const chunks = chunkPaths(w);
  for (const chunk of chunks) {
    const share = 1 / chunks.length;
    regions.push(
      { name: 'chunk-header', path: chunk, start: 0, end: PARAMS_OFFSET, weight: 0.1 * share },
      {
        name: 'chunk-params',
        path: chunk,
        start: PARAMS_OFFSET,
        end: PARAMS_OFFSET + 20,
        weight: 0.6 * share,
        limits: [w.chunkSize, dataOffsetOf(w), w.maxChunks],
      },
      {
        name: 'chunk-block',
        path: chunk,
        start: CHUNK_BLOCK_OFFSET,
        end: CHUNK_BLOCK_OFFSET + 40,
        weight: 2.5 * share,
        limits: [w.chunkSize, 0x7fffffff, 0x80000000, 0xffffffff, 1 << 20, 1 << 30],
      },
      {
        name: 'chunk-acks',
        path: chunk,
        start: CHUNK_ACKS_OFFSET,
        end: CHUNK_ACKS_OFFSET + ackAreaLength(w.chunkSize),
        weight: 0.5 * share,
        limits: [0, 1, 2, 3, 0x7fffffff, 0xffffffff],
      },
      {
        name: 'chunk-data',
        path: chunk,
        start: dataOffsetOf(w),
        end: dataOffsetOf(w) + w.chunkSize,
        weight: 0.5 * share,
      },
    );
  }
  // The entry headers of known handles, in whichever chunk file holds them now.
  for (const h of w.handles.slice(-6)) {
    const chunk = join(fuzzDir(), `${FILE_PREFIX}${w.name}.b${h.generation}`);
    if (!chunks.includes(chunk)) continue;
    const at = dataOffsetOf(w) + h.offset;
    regions.push({
      name: 'entry-header',
      path: chunk,
      start: at,
      end: at + ENTRY_HEADER_LENGTH,
      weight: 0.6,
      limits: [h.size, 0, 1, 32, 33, 1024, 1025],
    });
  }
  return regions;
}

function dataOffsetOf(w: BlobWorld): number {
  return chunkDataOffset(w.chunkSize, pageSize());
}

function create(rng: Rng, name: string, ctx: CaseContext): BlobWorld {
  const dir = fuzzDir();
  const chunkSize = rng.pick([256, 1024, 4096]);
  const maxChunks = rng.pick([1, 2, 4]);
  const short = rng.chance(0.3);
  const s = BlobStore.create(name, {
    dir,
    chunkSize,
    maxChunks,
    ttlMs: short ? 50 : 60_000,
    decayMs: rng.pick([0, 10]),
    leaseTimeoutMs: short ? 20 : 60_000,
    prefetchAt: rng.pick([0.5, 1]),
  });
  const w: BlobWorld = {
    name,
    path: segmentPath(name, dir),
    s,
    r: ctx.attempt('BlobStore.attach', () => BlobStore.attach(name, { dir })) ?? null,
    chunkSize,
    maxChunks,
    handles: [],
    views: [],
    regions: (patcher) => regionsOf(w, patcher),
    close: (c) => closeWorld(w, c),
  };
  for (let n = rng.range(1, 6); n > 0; n--) append(w, rng, ctx, rng.chance(0.7) ? s : w.r);
  return w;
}

function closeWorld(w: BlobWorld, ctx: CaseContext): void {
  for (const v of w.views.splice(0)) ctx.attempt('view.release', () => v.release());
  const r = w.r;
  w.r = null;
  if (r !== null) ctx.attempt('r.close', () => r.close());
  ctx.attempt('s.close', () => w.s.close());
}

function append(w: BlobWorld, rng: Rng, ctx: CaseContext, store: BlobStore | null): void {
  if (store === null) return;
  const recipients = rng.chance(0.7) ? rng.range(1, 3) : rng.range(1, 40);
  const max = Math.max(1, Math.floor(w.chunkSize / 3));
  const h = ctx.attempt('append', () => store.append(rng.bytes(rng.range(1, max)), { recipients }));
  if (h !== undefined) {
    w.handles.push(h);
    if (w.handles.length > 32) w.handles.shift();
  }
}

/** A known handle, or one whose bytes were mutated (a hostile frame's reference). */
function handleOf(w: BlobWorld, rng: Rng): BlobHandle | null {
  const known = w.handles.length > 0 ? rng.pick(w.handles) : null;
  if (known !== null && rng.chance(0.6)) return known;
  const base = known?.toBytes() ?? rng.bytes(HANDLE_LENGTH);
  const bytes = mutate(rng, base, {
    fields: HANDLE_FIELDS,
    limits: [w.chunkSize, w.maxChunks, dataOffsetOf(w), 1 << 30, 2 ** 31],
    rounds: rng.range(1, 3),
  });
  if (bytes.length !== HANDLE_LENGTH) return BlobHandle.readFrom(base, 0);
  return BlobHandle.fromBytes(bytes);
}

function reader(w: BlobWorld, rng: Rng): BlobStore | null {
  return rng.chance(0.7) ? w.r : w.s;
}

type Args = { w: BlobWorld; rng: Rng; ctx: CaseContext };

const OPS: ReadonlyArray<readonly [number, (a: Args) => unknown]> = [
  [
    3,
    ({ w, rng, ctx }) => {
      const store = reader(w, rng);
      const h = handleOf(w, rng);
      if (store === null || h === null) return;
      const copy = ctx.attempt('resolve', () => store.resolve(h));
      if (copy === undefined || copy === null) return;
      ctx.tally('resolved');
      ctx.check(copy.length === h.size, 'resolve', () => `${copy.length} bytes for a handle of ${h.size}`);
    },
  ],
  [
    2,
    ({ w, rng, ctx }) => {
      const store = reader(w, rng);
      const h = handleOf(w, rng);
      if (store === null || h === null) return;
      const v = ctx.attempt('view', () => store.view(h));
      if (v === undefined || v === null) return;
      ctx.tally('views');
      // The data area of the store that made the view: a store attached after its control was
      // corrupted takes the chunk size it finds there (and only maps chunks made to that size).
      const start = chunkDataOffset(store.capacity, pageSize());
      ctx.check(
        inside(v.data, start, start + store.capacity, h.size),
        'view',
        () =>
          `a view of ${v.data.length} bytes at ${v.data.byteOffset} for a handle of ${h.size} (data area ${start}..${start + store.capacity}; the world's chunk size ${w.chunkSize})`,
      );
      if (rng.chance(0.5)) ctx.attempt('view.release', () => v.release());
      else w.views.push(v);
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      if (w.views.length === 0) return;
      const [v] = w.views.splice(rng.int(w.views.length), 1);
      ctx.attempt('view.release', () => v.release());
    },
  ],
  [
    2,
    ({ w, rng, ctx }) => {
      const store = reader(w, rng);
      const h = handleOf(w, rng);
      if (store === null || h === null) return;
      const recipient = rng.pick([0, 1, 2, 31, 32, 39, 40, 1023, 1024, -1, rng.u32(), 0.5]);
      ctx.attempt('ack', () => store.ack(h, recipient));
      ctx.attempt('isAcknowledged', () => store.isAcknowledged(h));
    },
  ],
  [2, ({ w, rng, ctx }) => append(w, rng, ctx, rng.chance(0.6) ? w.s : w.r)],
  [
    1.5,
    ({ w, rng, ctx }) => {
      const store = reader(w, rng);
      if (store === null) return;
      const freed = ctx.attempt('cleanup', () => store.cleanup());
      if (freed !== undefined)
        ctx.check(freed >= 0 && freed <= w.maxChunks, 'cleanup', `freed ${freed} of ${w.maxChunks} chunks`);
    },
  ],
  [
    0.7,
    ({ w, rng, ctx }) => {
      const store = reader(w, rng);
      if (store === null) return;
      ctx.attempt('stats', () => store.stats());
      ctx.attempt('chunkFiles', () => store.chunkFiles());
    },
  ],
  [
    1,
    ({ w, ctx }) => {
      // The attacher leaves and comes back (attach validates the parameters again).
      const r = w.r;
      w.r = null;
      if (r !== null) ctx.attempt('r.close', () => r.close());
      w.r = ctx.attempt('BlobStore.attach', () => BlobStore.attach(w.name, { dir: fuzzDir() })) ?? null;
    },
  ],
  [
    0.3,
    ({ w, rng, ctx }) => {
      ctx.attempt('BlobHandle.fromBytes', () =>
        BlobHandle.fromBytes(rng.bytes(rng.chance(0.8) ? HANDLE_LENGTH : rng.int(40))),
      );
      ctx.attempt('cleanupNamespace', () => BlobStore.cleanupNamespace(w.name, { dir: fuzzDir() }));
    },
  ],
];

async function exercise(w: BlobWorld, rng: Rng, ctx: CaseContext): Promise<void> {
  await runOps(rng, OPS, { w, rng, ctx });
}

export async function run(options: RunOptions): Promise<TargetResult> {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  await runWorlds(sut, { create, exercise }, 'fzb');
  options.watchdog?.idle();
  return resultOf(sut);
}
