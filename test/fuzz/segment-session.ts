/**
 * Fuzz target `segment-session`: a session segment (src/session/session.ts) rewritten by a
 * hostile or corrupted peer while peer A and peer B have it mapped.
 *
 * World: Session.create(name, { dir, slotSize 64 / 256, slotCount 1 / 4 / 16, inlineMax
 * 0 / 32 / 256, ringCapacity 1 KiB / 4 KiB }) as peer A, Session.open() as peer B, and a few
 * messages already sent each way (inline and in slots), some received and held.
 *
 * Byte ranges patched (offsets from src/layout/segment.ts, session.ts, channel.ts, slab.ts):
 * - header        [0, 64)            the common segment header
 * - params        [64, 104)          protocol, ringCapacity, slotSize, slotCount, inlineMax,
 *                                    areaAB, areaBA, slabOffset, slotsOffset, segmentLength
 * - peer blocks   [128, 144) / [256, 272)  pid, closed, opens, reopenHead of A and of B
 * - slot waits    [384, 392) / [512, 520)  sleeping and seq of each peer's slot wait
 * - ab / ba       each direction's channel blocks: tailPosition, closed, pid, totals
 *                 (producer), headPosition, closed, attachCount, totals (consumer), waits
 * - ab / ba ring  record headers and descriptors at 8-byte boundaries (length, type, channel,
 *                 flags, slot, generation, length, inline bytes)
 * - head desc     the descriptor at each ring's current head position
 * - slab          head (tag | slot + 1), the state word of every slot (generation | owner |
 *                 state) and the free list's next links
 * - slots         slot payload bytes
 *
 * Operations (2..8 per case): tryRecv on either peer (messages held, released at random),
 * tryAlloc + trySend or free, trySend of inline and slot-sized payloads, recv / alloc / send
 * with a 1 ms timeout, peerAlive, freeSlots, and closing and re-opening peer B (the open
 * validates the parameters; A then reclaims what the previous B held).
 * Invariants: a received slot message is a view inside its slot, of its descriptor's length;
 * tryAlloc(n) returns a view of exactly n bytes at the start of a slot inside the slot area.
 */

import {
  CONSUMER_BLOCK_OFFSET,
  DATA_WAIT_OFFSET,
  HEAD_POSITION_OFFSET,
  PRODUCER_BLOCK_OFFSET,
  SPACE_WAIT_OFFSET,
} from '../../src/layout/channel.js';
import { PARAMS_OFFSET } from '../../src/layout/segment.js';
import {
  PEER_A_BLOCK_OFFSET,
  PEER_B_BLOCK_OFFSET,
  type SessionGeometry,
  SLOT_WAIT_A_OFFSET,
  SLOT_WAIT_B_OFFSET,
  sessionGeometry,
} from '../../src/layout/session.js';
import { slabLength } from '../../src/layout/slab.js';
import { segmentPath } from '../../src/segment/names.js';
import { Session, type SessionMessage } from '../../src/session/session.js';
import { type CaseContext, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import type { Rng } from './mutate.js';
import { fuzzDir, inside, type Patcher, type Region, runOps, runWorlds, type World } from './segment-common.js';

export const NAME = 'segment-session';
export const DEFAULT_CASES = 300;

interface SessionWorld extends World {
  name: string;
  path: string;
  g: SessionGeometry;
  a: Session | null;
  b: Session | null;
  held: { peer: Session; m: SessionMessage }[];
  allocated: { peer: Session; view: Uint8Array }[];
}

function openOptions() {
  return { dir: fuzzDir(), readyTimeoutMs: 5, livenessCheckMs: 5, wait: 'spin' as const, spinIterations: 20 };
}

function areaRegions(path: string, label: string, area: SessionGeometry['ab'], patcher: Patcher): Region[] {
  const base = area.blocksBase;
  const length = area.g.ringLengths[0];
  const data = area.g.dataIndices[0];
  const head = patcher.u32(path, base + HEAD_POSITION_OFFSET);
  const offset = head < 2 * length ? (head >= length ? head - length : head) & ~7 : 0;
  return [
    {
      name: `${label}-producer`,
      path,
      start: base + PRODUCER_BLOCK_OFFSET,
      end: base + PRODUCER_BLOCK_OFFSET + 48,
      weight: 1.5,
      limits: [length, 2 * length],
    },
    {
      name: `${label}-consumer`,
      path,
      start: base + CONSUMER_BLOCK_OFFSET,
      end: base + CONSUMER_BLOCK_OFFSET + 40,
      weight: 1.5,
      limits: [length, 2 * length],
    },
    { name: `${label}-waits`, path, start: base + DATA_WAIT_OFFSET, end: base + SPACE_WAIT_OFFSET + 8, weight: 0.3 },
    {
      name: `${label}-ring`,
      path,
      start: data,
      end: data + length,
      weight: 1.5,
      stride8: true,
      limits: [length, 32, 24],
    },
    {
      name: `${label}-head-desc`,
      path,
      start: data + offset,
      end: Math.min(data + length, data + offset + 32),
      weight: 2.5,
      limits: [length - offset, 32, 0xffffffff],
    },
  ];
}

function regionsOf(w: SessionWorld, patcher: Patcher): Region[] {
  const { g, path } = w;
  const slab = g.slabOffset;
  return [
    { name: 'header', path, start: 0, end: PARAMS_OFFSET, weight: 0.5 },
    {
      name: 'params',
      path,
      start: PARAMS_OFFSET,
      end: PARAMS_OFFSET + 40,
      weight: 1,
      limits: [g.ringCapacity, g.slotSize, g.slotCount, g.inlineMax, g.slabOffset, g.slotsOffset, g.segmentLength],
    },
    { name: 'peer-a', path, start: PEER_A_BLOCK_OFFSET, end: PEER_A_BLOCK_OFFSET + 16, weight: 1, limits: [0, 1] },
    { name: 'peer-b', path, start: PEER_B_BLOCK_OFFSET, end: PEER_B_BLOCK_OFFSET + 16, weight: 1, limits: [0, 1] },
    { name: 'slot-waits', path, start: SLOT_WAIT_A_OFFSET, end: SLOT_WAIT_B_OFFSET + 8, weight: 0.3 },
    ...areaRegions(path, 'ab', g.ab, patcher),
    ...areaRegions(path, 'ba', g.ba, patcher),
    {
      name: 'slab',
      path,
      start: slab,
      end: slab + slabLength(g.slotCount),
      weight: 3,
      limits: [g.slotCount, g.slotCount + 1, 0xffff, 0x10000],
    },
    { name: 'slots', path, start: g.slotsOffset, end: g.segmentLength, weight: 0.5 },
  ];
}

function checkMessage(ctx: CaseContext, w: SessionWorld, m: SessionMessage, op: string): void {
  const g = w.g;
  ctx.tally('messages');
  if (m.slot < 0) return;
  const start = g.slotsOffset + m.slot * g.slotSize;
  ctx.check(
    m.slot < g.slotCount && inside(m.data, start, start + g.slotSize),
    op,
    () =>
      `message in slot ${m.slot}: ${m.length} bytes at ${m.data.byteOffset} (slot area ${start}..${start + g.slotSize})`,
  );
}

function checkAlloc(ctx: CaseContext, w: SessionWorld, view: Uint8Array, n: number, op: string): void {
  const g = w.g;
  ctx.tally('allocs');
  const offset = view.byteOffset - g.slotsOffset;
  ctx.check(
    view.length === n && offset >= 0 && offset % g.slotSize === 0 && offset / g.slotSize < g.slotCount,
    op,
    () =>
      `alloc(${n}) gave a view of ${view.length} bytes at ${view.byteOffset} (slots ${g.slotsOffset}, ${g.slotCount} x ${g.slotSize})`,
  );
}

function create(rng: Rng, name: string, ctx: CaseContext): SessionWorld {
  const dir = fuzzDir();
  const slotSize = rng.pick([64, 256]);
  const slotCount = rng.pick([1, 4, 16]);
  const inlineMax = rng.pick([0, 32, 256]);
  const ringCapacity = rng.pick([1024, 4096]);
  const a = Session.create(name, { ...openOptions(), slotSize, slotCount, inlineMax, ringCapacity, startupMs: 50 });
  const w: SessionWorld = {
    name,
    path: segmentPath(name, dir),
    g: sessionGeometry({ ringCapacity, slotSize, slotCount, inlineMax }),
    a,
    b: null,
    held: [],
    allocated: [],
    regions: (patcher) => regionsOf(w, patcher),
    close: (c) => closeWorld(w, c),
  };
  w.b = ctx.attempt('Session.open', () => Session.open(name, openOptions())) ?? null;
  for (let n = rng.range(0, 6); n > 0; n--) {
    const from = rng.chance(0.6) ? a : w.b;
    if (from === null) continue;
    ctx.attempt('fill', () => from.trySend(rng.bytes(rng.int(slotSize + 1)), { channel: rng.int(4) }));
  }
  return w;
}

function closeWorld(w: SessionWorld, ctx: CaseContext): void {
  for (const h of w.held) ctx.attempt('release', () => h.m.release());
  w.held.length = 0;
  w.allocated.length = 0;
  const { a, b } = w;
  w.a = null;
  w.b = null;
  if (b !== null) ctx.attempt('b.close', () => b.close());
  if (a !== null) ctx.attempt('a.close', () => a.close());
  // A unlinks the segment on close; a world whose A failed to close leaves it to fuzzDir()'s removal.
}

type Args = { w: SessionWorld; rng: Rng; ctx: CaseContext };

function peer(w: SessionWorld, rng: Rng): Session | null {
  return rng.chance(0.5) ? w.a : w.b;
}

function receive(args: Args, s: Session | null, op: string): void {
  const { w, rng, ctx } = args;
  if (s === null) return;
  for (let n = rng.range(1, 3); n > 0; n--) {
    const m = ctx.attempt(op, () => s.tryRecv());
    if (m === undefined || m === null) return;
    checkMessage(ctx, w, m, op);
    if (rng.chance(0.5)) ctx.attempt('release', () => m.release());
    else w.held.push({ peer: s, m });
  }
}

const OPS: ReadonlyArray<readonly [number, (a: Args) => unknown]> = [
  [3, (args) => receive(args, args.w.b, 'b.tryRecv')],
  [2, (args) => receive(args, args.w.a, 'a.tryRecv')],
  [
    1.5,
    ({ w, rng, ctx }) => {
      if (w.held.length === 0) return;
      const [h] = w.held.splice(rng.int(w.held.length), 1);
      ctx.attempt('release', () => h.m.release());
    },
  ],
  [
    2,
    ({ w, rng, ctx }) => {
      const s = peer(w, rng);
      if (s === null) return;
      const n = rng.int(w.g.slotSize + 1);
      const view = ctx.attempt('tryAlloc', () => s.tryAlloc(n));
      if (view === undefined || view === null) return;
      checkAlloc(ctx, w, view, n, 'tryAlloc');
      const r = rng.float();
      if (r < 0.6) {
        view.fill(0x3c);
        ctx.attempt('trySend(slot)', () => s.trySend(view, { channel: 1 }));
      } else if (r < 0.8) ctx.attempt('free', () => s.free(view));
      else w.allocated.push({ peer: s, view });
    },
  ],
  [
    2,
    ({ w, rng, ctx }) => {
      const s = peer(w, rng);
      if (s === null) return;
      const n = rng.chance(0.5) ? rng.int(w.g.inlineMax + 1) : rng.int(w.g.slotSize + 1);
      ctx.attempt('trySend', () => s.trySend(rng.bytes(n), { channel: rng.u32(), flags: rng.u32() }));
    },
  ],
  [
    1,
    async ({ w, ctx }) => {
      const b = w.b;
      if (b === null) return;
      const m = await ctx.attemptAsync('b.recv', () => b.recv({ timeoutMs: 1 }));
      if (m !== undefined) {
        checkMessage(ctx, w, m, 'b.recv');
        ctx.attempt('release', () => m.release());
      }
    },
  ],
  [
    0.7,
    async ({ w, rng, ctx }) => {
      const s = peer(w, rng);
      if (s === null) return;
      const n = rng.int(w.g.slotSize + 1);
      const view = await ctx.attemptAsync('alloc', () => s.alloc(n, { timeoutMs: 1 }));
      if (view !== undefined) {
        checkAlloc(ctx, w, view, n, 'alloc');
        ctx.attempt('free', () => s.free(view));
      }
    },
  ],
  [
    0.7,
    async ({ w, rng, ctx }) => {
      const s = peer(w, rng);
      if (s === null) return;
      await ctx.attemptAsync('send', () => s.send(rng.bytes(rng.int(w.g.slotSize + 1)), { timeoutMs: 1 }));
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      if (w.allocated.length === 0) return;
      const [x] = w.allocated.splice(rng.int(w.allocated.length), 1);
      if (rng.chance(0.5)) ctx.attempt('free', () => x.peer.free(x.view));
      else ctx.attempt('trySend(slot)', () => x.peer.trySend(x.view));
    },
  ],
  [
    1,
    ({ w, ctx }) => {
      for (const s of [w.a, w.b]) {
        if (s === null) continue;
        ctx.attempt('peerAlive', () => s.peerAlive());
        const free = ctx.attempt('freeSlots', () => s.freeSlots);
        if (free !== undefined)
          ctx.check(free >= 0 && free <= w.g.slotCount, 'freeSlots', `${free} free of ${w.g.slotCount}`);
      }
    },
  ],
  [
    1.5,
    ({ w, ctx }) => {
      // Peer B leaves and a new B opens: the parameters are validated again, A reclaims.
      const b = w.b;
      w.b = null;
      if (b !== null) {
        w.held = w.held.filter((h) => h.peer !== b);
        w.allocated = w.allocated.filter((x) => x.peer !== b);
        ctx.attempt('b.close', () => b.close());
      }
      w.b = ctx.attempt('Session.open', () => Session.open(w.name, openOptions())) ?? null;
    },
  ],
];

async function exercise(w: SessionWorld, rng: Rng, ctx: CaseContext): Promise<void> {
  await runOps(rng, OPS, { w, rng, ctx });
}

export async function run(options: RunOptions): Promise<TargetResult> {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  await runWorlds(sut, { create, exercise }, 'fzs');
  options.watchdog?.idle();
  return resultOf(sut);
}
