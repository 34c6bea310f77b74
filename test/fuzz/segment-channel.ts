/**
 * Fuzz target `segment-channel`: a channel segment (src/channel/channel.ts) whose bytes a
 * hostile or corrupted peer rewrites while both ends have it mapped.
 *
 * World: Channel.create(name, { dir, capacity 1 KiB / 4 KiB / 64 KiB, one ring or three
 * priority classes }) with a few frames of random sizes already sent, and Channel.open() of
 * the consumer end (readyTimeoutMs 5, livenessCheckMs 5, a random wait strategy).
 *
 * Byte ranges patched (offsets from src/layout/segment.ts and src/layout/channel.ts):
 * - header      [0, 64)    magic, version, kind, headerLength, flags, segmentLength, owner, paramsLength
 * - params      [64, 108)  capacity, maxFrame, classCount, ringLength[3], dataOffset[3]
 * - producer    [128, 176) tailPosition[3], closed, pid, sentFrames/Bytes, fullCount
 * - consumer    [256, 296) headPosition[3], closed, pid, attachCount, receivedFrames/Bytes
 * - waits       [384, 392) + [512, 520) sleeping and seq words of DATA_WAIT and SPACE_WAIT
 * - records     every class ring, at 8-byte record boundaries (length i32, type i32)
 * - head record the record at each ring's current head position (its length and type)
 * - ring bytes  anywhere in the ring data
 *
 * Operations after each case's patches (2..8 of them): tryRecv, tryRecvInto, recvSync and
 * recv with a 1 ms timeout, drain, backpressure / stats / producerClosed / peerAlive,
 * trySend / claim + commit / sendSync (1 ms) / flush on the producer, and closing and
 * re-opening the consumer end (Channel.open validates the header and parameters again).
 * Invariants: every frame handed out lies inside one class ring of the receiver's geometry
 * (a view exactly as long as its record says, never clamped by the end of the mapping).
 */
import { Channel, type ChannelReceiver, type ChannelSender, type WaitStrategy } from '../../src/channel/channel.js';
import {
  CONSUMER_BLOCK_OFFSET,
  DATA_WAIT_OFFSET,
  HEAD_POSITION_OFFSET,
  PRODUCER_BLOCK_OFFSET,
  RECEIVED_BYTES_OFFSET,
  SPACE_WAIT_OFFSET,
} from '../../src/layout/channel.js';
import { HEADER_LENGTH, PARAMS_OFFSET } from '../../src/layout/segment.js';
import { type CaseContext, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import type { Rng } from './mutate.js';
import { fuzzDir, inside, type Patcher, type Region, runOps, runWorlds, type World } from './segment-common.js';

export const NAME = 'segment-channel';
export const DEFAULT_CASES = 300;

interface ChannelWorldState extends World {
  name: string;
  path: string;
  tx: ChannelSender | null;
  rx: ChannelReceiver | null;
  wait: WaitStrategy;
  scratch: Uint8Array;
}

function openOptions(w: { wait: WaitStrategy }) {
  return { dir: fuzzDir(), readyTimeoutMs: 5, livenessCheckMs: 5, wait: w.wait, spinIterations: 50 };
}

function regionsOf(w: ChannelWorldState, patcher: Patcher): Region[] {
  const g = w.tx?.geometry ?? w.rx?.geometry;
  const path = w.path;
  const regions: Region[] = [
    { name: 'header', path, start: 0, end: PARAMS_OFFSET, weight: 1, limits: [HEADER_LENGTH, 1, 0] },
    {
      name: 'params',
      path,
      start: PARAMS_OFFSET,
      end: PARAMS_OFFSET + 44,
      weight: 1.5,
      limits: g === undefined ? [] : [g.capacity, g.maxFrame, ...g.ringLengths, ...g.dataIndices],
    },
    {
      name: 'producer',
      path,
      start: PRODUCER_BLOCK_OFFSET,
      end: PRODUCER_BLOCK_OFFSET + 48,
      weight: 2,
      stride8: false,
      limits: g === undefined ? [] : g.ringLengths.flatMap((l) => [l, 2 * l]),
    },
    {
      name: 'consumer',
      path,
      start: CONSUMER_BLOCK_OFFSET,
      end: RECEIVED_BYTES_OFFSET + 8,
      weight: 2,
      limits: g === undefined ? [] : g.ringLengths.flatMap((l) => [l, 2 * l]),
    },
    { name: 'data-wait', path, start: DATA_WAIT_OFFSET, end: DATA_WAIT_OFFSET + 8, weight: 0.5 },
    { name: 'space-wait', path, start: SPACE_WAIT_OFFSET, end: SPACE_WAIT_OFFSET + 8, weight: 0.5 },
  ];
  if (g !== undefined)
    for (let c = 0; c < g.classCount && c < 3; c++) {
      const base = g.dataIndices[c];
      const length = g.ringLengths[c];
      regions.push({
        name: `records${c}`,
        path,
        start: base,
        end: base + length,
        weight: 2 / g.classCount,
        stride8: true,
        limits: [length, 8, 16, g.maxFrame + 8],
      });
      // The record the consumer reads next.
      const head = patcher.u32(path, HEAD_POSITION_OFFSET + 4 * c);
      const offset = head < 2 * length ? (head >= length ? head - length : head) : 0;
      regions.push({
        name: `head-record${c}`,
        path,
        start: base + (offset & ~7),
        end: base + (offset & ~7) + 8,
        weight: 3 / g.classCount,
        limits: [length - offset, 8, 2, 1],
      });
      regions.push({ name: `ring${c}`, path, start: base, end: base + length, weight: 0.5 / g.classCount });
    }
  return regions;
}

function checkFrame(ctx: CaseContext, rx: ChannelReceiver, frame: Uint8Array, op: string): void {
  const g = rx.geometry;
  let ok = false;
  for (let c = 0; c < g.classCount && c < 3; c++)
    if (inside(frame, g.dataIndices[c], g.dataIndices[c] + g.ringLengths[c])) ok = true;
  ctx.check(ok, op, () => `a frame of ${frame.length} bytes at ${frame.byteOffset} is outside every ring`);
  ctx.tally('frames');
}

function create(rng: Rng, name: string, ctx: CaseContext): ChannelWorldState | null {
  const dir = fuzzDir();
  const capacity = rng.pick([1024, 4096, 65536]);
  const priorities = rng.chance(0.3);
  const tx = Channel.create(name, { dir, capacity, priorities, wait: 'spin' });
  const w: ChannelWorldState = {
    name,
    path: Channel.pathOf(name, { dir }),
    tx,
    rx: null,
    wait: rng.pick(['spin', 'adaptive', 'park'] as const),
    scratch: new Uint8Array(capacity),
    regions: (patcher) => regionsOf(w, patcher),
    close: (c) => closeWorld(w, c),
  };
  const maxFrame = tx.geometry.maxFrame;
  for (let n = rng.range(0, 12); n > 0; n--) {
    const size = rng.chance(0.8) ? rng.int(Math.min(64, maxFrame) + 1) : rng.int(maxFrame + 1);
    ctx.attempt('fill', () =>
      tx.trySend(
        rng.bytes(size),
        priorities ? { priority: rng.pick(['critical', 'high', 'low'] as const) } : undefined,
      ),
    );
  }
  w.rx = ctx.attempt('Channel.open', () => Channel.open(name, openOptions(w))) ?? null;
  return w;
}

function closeWorld(w: ChannelWorldState, ctx: CaseContext): void {
  const rx = w.rx;
  const tx = w.tx;
  w.rx = null;
  w.tx = null;
  if (rx !== null) ctx.attempt('rx.close', () => rx.close());
  if (tx !== null) ctx.attempt('tx.close', () => tx.close());
  Channel.remove(w.name, { dir: fuzzDir() });
}

const OPS: ReadonlyArray<readonly [number, (a: { w: ChannelWorldState; rng: Rng; ctx: CaseContext }) => unknown]> = [
  [
    4,
    ({ w, ctx }) => {
      const rx = w.rx;
      if (rx === null) return;
      for (let n = 0; n < 4; n++) {
        const frame = ctx.attempt('tryRecv', () => rx.tryRecv());
        if (frame === undefined || frame === null) return;
        checkFrame(ctx, rx, frame, 'tryRecv');
      }
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      const rx = w.rx;
      if (rx === null) return;
      const dst = rng.chance(0.8) ? w.scratch : new Uint8Array(rng.int(64));
      const n = ctx.attempt('tryRecvInto', () => rx.tryRecvInto(dst, 0));
      if (n !== undefined) ctx.check(n <= dst.length, 'tryRecvInto', `returned ${n} for a ${dst.length}-byte dst`);
    },
  ],
  [
    1.5,
    ({ w, ctx }) => {
      const rx = w.rx;
      if (rx === null) return;
      const frame = ctx.attempt('recvSync', () => rx.recvSync({ timeoutMs: 1 }));
      if (frame) checkFrame(ctx, rx, frame, 'recvSync');
    },
  ],
  [
    1,
    async ({ w, ctx }) => {
      const rx = w.rx;
      if (rx === null) return;
      const frame = await ctx.attemptAsync('recv', () => rx.recv({ timeoutMs: 1 }));
      if (frame) checkFrame(ctx, rx, frame, 'recv');
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      const rx = w.rx;
      if (rx === null) return;
      ctx.attempt('drain', () => rx.drain((frame) => checkFrame(ctx, rx, frame, 'drain'), rng.range(1, 8)));
    },
  ],
  [
    1,
    ({ w, ctx }) => {
      const rx = w.rx;
      if (rx === null) return;
      const fill = ctx.attempt('rx.backpressure', () => rx.backpressure());
      if (fill !== undefined) ctx.check(fill >= 0 && fill <= 1, 'rx.backpressure', `fill ${fill}`);
      ctx.attempt('rx.stats', () => rx.stats());
      ctx.attempt('rx.producerClosed', () => rx.producerClosed());
      ctx.attempt('rx.peerAlive', () => rx.peerAlive());
    },
  ],
  [
    2,
    ({ w, rng, ctx }) => {
      const tx = w.tx;
      if (tx === null) return;
      const size = rng.int(Math.min(tx.geometry.maxFrame, 200) + 1);
      const prioritized = tx.geometry.classCount > 1;
      ctx.attempt('trySend', () =>
        tx.trySend(
          rng.bytes(size),
          prioritized ? { priority: rng.pick(['critical', 'high', 'low'] as const) } : undefined,
        ),
      );
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      const tx = w.tx;
      if (tx === null) return;
      const n = rng.int(Math.min(tx.geometry.maxFrame, 100) + 1);
      const view = ctx.attempt('claim', () => tx.claim(n));
      if (view === undefined || view === null) return;
      ctx.check(view.length === n, 'claim', `claimed ${n}, got a view of ${view.length}`);
      view.fill(0x5a);
      if (rng.chance(0.8)) ctx.attempt('commit', () => tx.commit(rng.int(n + 1)));
      else ctx.attempt('abort', () => tx.abort());
    },
  ],
  [
    0.5,
    ({ w, rng, ctx }) => {
      const tx = w.tx;
      if (tx === null) return;
      ctx.attempt('sendSync', () =>
        tx.sendSync(rng.bytes(rng.int(Math.min(tx.geometry.maxFrame, 64) + 1)), { timeoutMs: 1 }),
      );
      ctx.attempt('tx.flush', () => tx.flush());
      const fill = ctx.attempt('tx.backpressure', () => tx.backpressure());
      if (fill !== undefined) ctx.check(fill >= 0 && fill <= 1, 'tx.backpressure', `fill ${fill}`);
      ctx.attempt('tx.consumerAttached', () => tx.consumerAttached());
    },
  ],
  [
    1.5,
    ({ w, ctx }) => {
      // The consumer leaves and comes back: the header and parameters are validated again.
      const rx = w.rx;
      w.rx = null;
      if (rx !== null) ctx.attempt('rx.close', () => rx.close());
      w.rx = ctx.attempt('Channel.open', () => Channel.open(w.name, openOptions(w))) ?? null;
    },
  ],
];

async function exercise(w: ChannelWorldState, rng: Rng, ctx: CaseContext): Promise<void> {
  await runOps(rng, OPS, { w, rng, ctx });
}

export async function run(options: RunOptions): Promise<TargetResult> {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  await runWorlds(sut, { create, exercise }, 'fzc');
  options.watchdog?.idle();
  return resultOf(sut);
}
