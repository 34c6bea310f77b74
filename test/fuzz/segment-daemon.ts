/**
 * Fuzz target `segment-daemon`: a daemon segment (src/rpc/daemon.ts, src/rpc/client.ts)
 * rewritten by a hostile client (its command rings, its slot) or a hostile daemon (state
 * cells, response rings) while the daemon serves and a client is connected.
 *
 * World: Daemon.create(name, { dir, dataSize 8 / 64 / 256, maxClients 1 / 2 / 4, cmdSlots 2,
 * cmdMaxBytes 8 / 64, respCapacity 1 KiB }) serving an echo handler (which now and then
 * throws, answers a string or a wrong type, or answers asynchronously), one state written,
 * and Client.connect() (connectTimeoutMs 5).
 *
 * Byte ranges patched (offsets from src/layout/segment.ts, daemon.ts, channel.ts):
 * - header        [0, 64)
 * - params        [64, 108)   protocolVersion, dataSize, stateCells, cellLength, stateOffset,
 *                             maxClients, cmdCapacity, respCapacity, cmdMaxBytes, slotLength, slotsOffset
 * - daemon block  [128, 148)  pid, closed, nextClientId, reclaimRequest, claimSeq
 * - cmd wait      [256, 264)  sleeping, seq
 * - state seq     [384, 388)
 * - cells         the four state cells: length, version, data
 * - per client slot: slot block (state, clientId, pid, generation), state wait, the command
 *   area's producer / consumer blocks (three tail and head positions), its three rings'
 *   records, the response area's blocks and ring records, and the record at each ring's head
 *
 * Operations (2..8 per case): readData (with and without a buffer), latestVersion, waitData
 * (1 ms), request (5 ms, any priority), send, requestSync (1 ms), writeData, clients, stats,
 * reclaim, daemonAlive, closing and re-connecting the client, a second client coming and
 * going. The serve loop ending is checked after every case: a ShmError ending it is an
 * `unavailable` finding (one hostile client must not stop the daemon for all), anything else
 * a `throw` finding; serving then restarts.
 * Invariants: readData never returns more than dataSize bytes.
 */

import { CONSUMER_BLOCK_OFFSET, HEAD_POSITION_OFFSET, PRODUCER_BLOCK_OFFSET } from '../../src/layout/channel.js';
import {
  CELL_DATA_OFFSET,
  CMD_WAIT_OFFSET,
  DAEMON_BLOCK_OFFSET,
  type DaemonGeometry,
  SLOT_STATE_WAIT_OFFSET,
  STATE_SEQ_OFFSET,
  slotAreas,
} from '../../src/layout/daemon.js';
import { PARAMS_OFFSET } from '../../src/layout/segment.js';
import { Client } from '../../src/rpc/client.js';
import { Daemon, type Handler, type ServeHandle } from '../../src/rpc/daemon.js';
import { segmentPath } from '../../src/segment/names.js';
import { type CaseContext, isTyped, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import type { Rng } from './mutate.js';
import { fuzzDir, type Patcher, type Region, runOps, runWorlds, type World } from './segment-common.js';

export const NAME = 'segment-daemon';
export const DEFAULT_CASES = 300;

interface DaemonWorld extends World {
  name: string;
  path: string;
  d: Daemon;
  g: DaemonGeometry;
  server: ServeHandle | null;
  /** How the serve loop ended, if it did (checked after every case). */
  ended: { err: unknown } | null;
  clients: Client[];
  closed: boolean;
}

function options() {
  return { dir: fuzzDir(), readyTimeoutMs: 5, livenessCheckMs: 5, wait: 'spin' as const, spinIterations: 20 };
}

const handler: Handler = (clientId, cmd) => {
  const tag = cmd.length > 0 ? cmd[0] % 16 : 0;
  if (tag === 1) throw new Error(`handler refuses command of client ${clientId}`);
  if (tag === 2) return `reply to ${cmd.length} bytes`;
  if (tag === 3) return 42 as unknown as Uint8Array; // a wrong reply type: the daemon answers an error
  if (tag === 4) return Promise.resolve(cmd.slice());
  if (tag === 5) return undefined;
  return cmd.slice();
};

function serve(w: DaemonWorld): void {
  const server = w.d.serve(handler);
  w.server = server;
  server.done.then(
    () => {},
    (err) => {
      if (w.server === server) w.ended = { err };
    },
  );
}

function ringRegions(
  path: string,
  label: string,
  area: ReturnType<typeof slotAreas>['cmd'],
  patcher: Patcher,
): Region[] {
  const regions: Region[] = [
    {
      name: `${label}-producer`,
      path,
      start: area.blocksBase + PRODUCER_BLOCK_OFFSET,
      end: area.blocksBase + PRODUCER_BLOCK_OFFSET + 48,
      weight: 0.6,
      limits: area.g.ringLengths.flatMap((l) => [l, 2 * l]),
    },
    {
      name: `${label}-consumer`,
      path,
      start: area.blocksBase + CONSUMER_BLOCK_OFFSET,
      end: area.blocksBase + CONSUMER_BLOCK_OFFSET + 40,
      weight: 0.6,
      limits: area.g.ringLengths.flatMap((l) => [l, 2 * l]),
    },
  ];
  for (let c = 0; c < area.g.classCount; c++) {
    const base = area.g.dataIndices[c];
    const length = area.g.ringLengths[c];
    regions.push({ name: `${label}-ring${c}`, path, start: base, end: base + length, weight: 0.4, stride8: true });
    const head = patcher.u32(path, area.blocksBase + HEAD_POSITION_OFFSET + 4 * c);
    const offset = head < 2 * length ? (head >= length ? head - length : head) & ~7 : 0;
    regions.push({
      name: `${label}-head${c}`,
      path,
      start: base + offset,
      end: Math.min(base + length, base + offset + 16),
      weight: 0.6,
      limits: [length - offset, 8, 16],
    });
  }
  return regions;
}

function regionsOf(w: DaemonWorld, patcher: Patcher): Region[] {
  const { g, path } = w;
  const regions: Region[] = [
    { name: 'header', path, start: 0, end: PARAMS_OFFSET, weight: 0.4 },
    {
      name: 'params',
      path,
      start: PARAMS_OFFSET,
      end: PARAMS_OFFSET + 44,
      weight: 0.8,
      limits: [g.dataSize, g.maxClients, g.cmdCapacity, g.respCapacity, g.cmdMaxBytes, g.slotLength, g.slotsOffset],
    },
    {
      name: 'daemon-block',
      path,
      start: DAEMON_BLOCK_OFFSET,
      end: DAEMON_BLOCK_OFFSET + 20,
      weight: 1,
      limits: [0, 1],
    },
    { name: 'cmd-wait', path, start: CMD_WAIT_OFFSET, end: CMD_WAIT_OFFSET + 8, weight: 0.3 },
    {
      name: 'state-seq',
      path,
      start: STATE_SEQ_OFFSET,
      end: STATE_SEQ_OFFSET + 4,
      weight: 1,
      limits: [patcher.u32(path, STATE_SEQ_OFFSET), 0],
    },
    {
      name: 'cells',
      path,
      start: g.stateOffset,
      end: g.slotsOffset,
      weight: 1.5,
      stride8: true,
      limits: [g.dataSize, g.cellLength, g.cellLength - CELL_DATA_OFFSET, patcher.u32(path, STATE_SEQ_OFFSET)],
    },
  ];
  for (let i = 0; i < g.maxClients; i++) {
    const { base, cmd, resp } = slotAreas(g, i);
    regions.push(
      { name: `slot${i}`, path, start: base, end: base + 16, weight: 0.6, limits: [0, 1, 2] },
      {
        name: `slot${i}-state-wait`,
        path,
        start: base + SLOT_STATE_WAIT_OFFSET,
        end: base + SLOT_STATE_WAIT_OFFSET + 8,
        weight: 0.2,
      },
      ...ringRegions(path, `slot${i}-cmd`, cmd, patcher),
      ...ringRegions(path, `slot${i}-resp`, resp, patcher),
    );
  }
  return regions;
}

function connect(w: DaemonWorld, ctx: CaseContext): Client | null {
  const c = ctx.attempt('Client.connect', () => Client.connect(w.name, { ...options(), connectTimeoutMs: 5 }));
  if (c === undefined) return null;
  w.clients.push(c);
  return c;
}

function create(rng: Rng, name: string, ctx: CaseContext): DaemonWorld {
  const dataSize = rng.pick([8, 64, 256]);
  const d = Daemon.create(name, {
    ...options(),
    dataSize,
    maxClients: rng.pick([1, 2, 4]),
    cmdSlots: 2,
    cmdMaxBytes: rng.pick([8, 64]),
    respCapacity: 1024,
  });
  const w: DaemonWorld = {
    name,
    path: segmentPath(name, fuzzDir()),
    d,
    g: d.geometry,
    server: null,
    ended: null,
    clients: [],
    closed: false,
    regions: (patcher) => regionsOf(w, patcher),
    close: (c) => closeWorld(w, c),
  };
  d.writeData(rng.bytes(rng.int(dataSize + 1)));
  serve(w);
  connect(w, ctx);
  return w;
}

async function closeWorld(w: DaemonWorld, ctx: CaseContext): Promise<void> {
  const server = w.server;
  w.server = null;
  if (server !== null) await ctx.attemptAsync('server.stop', () => server.stop());
  for (const c of w.clients.splice(0)) ctx.attempt('client.close', () => c.close());
  ctx.attempt('daemon.close', () => w.d.close());
  w.closed = true;
}

type Args = { w: DaemonWorld; rng: Rng; ctx: CaseContext };

function client(w: DaemonWorld, rng: Rng): Client | null {
  return w.clients.length === 0 ? null : rng.pick(w.clients);
}

function command(w: DaemonWorld, rng: Rng): Uint8Array {
  return rng.bytes(rng.int(w.g.cmdMaxBytes + 1));
}

const PRIORITIES = ['critical', 'high', 'low'] as const;

const OPS: ReadonlyArray<readonly [number, (a: Args) => unknown]> = [
  [
    2,
    ({ w, rng, ctx }) => {
      const c = client(w, rng);
      if (c === null) return;
      if (rng.chance(0.5)) {
        const data = ctx.attempt('readData', () => c.readData());
        if (data !== undefined) {
          ctx.tally('states');
          ctx.check(data.length <= w.g.dataSize, 'readData', `${data.length} bytes, dataSize ${w.g.dataSize}`);
        }
      } else {
        const buf = new Uint8Array(rng.int(w.g.dataSize + 8));
        const n = ctx.attempt('readData(buf)', () => c.readData(buf));
        if (n !== undefined)
          ctx.check(n >= 0 && n <= w.g.dataSize, 'readData(buf)', `length ${n}, dataSize ${w.g.dataSize}`);
      }
      ctx.attempt('latestVersion', () => c.latestVersion());
    },
  ],
  [
    0.7,
    async ({ w, rng, ctx }) => {
      const c = client(w, rng);
      if (c === null) return;
      await ctx.attemptAsync('waitData', () => c.waitData({ timeoutMs: 1 }));
    },
  ],
  [
    2.5,
    async ({ w, rng, ctx }) => {
      const c = client(w, rng);
      if (c === null) return;
      const reply = await ctx.attemptAsync('request', () =>
        c.request(command(w, rng), { timeoutMs: 5, priority: rng.pick(PRIORITIES) }),
      );
      if (reply !== undefined) ctx.tally('replies');
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      const c = client(w, rng);
      if (c === null) return;
      ctx.attempt('send', () => c.send(command(w, rng), { priority: rng.pick(PRIORITIES) }));
    },
  ],
  [
    0.3,
    ({ w, rng, ctx }) => {
      // The daemon serves on this same thread: a blocking request can only time out, or find a reply already there.
      const c = client(w, rng);
      if (c === null) return;
      ctx.attempt('requestSync', () => c.requestSync(command(w, rng), { timeoutMs: 1 }));
    },
  ],
  [
    1.5,
    ({ w, rng, ctx }) => {
      if (w.closed) return;
      ctx.attempt('writeData', () => w.d.writeData(rng.bytes(rng.int(w.g.dataSize + 1))));
    },
  ],
  [
    1,
    ({ w, ctx }) => {
      if (w.closed) return;
      ctx.attempt('clients', () => w.d.clients());
      ctx.attempt('stats', () => w.d.stats());
      ctx.attempt('reclaim', () => w.d.reclaim());
      for (const c of w.clients) ctx.attempt('daemonAlive', () => c.daemonAlive());
    },
  ],
  [
    1,
    ({ w, rng, ctx }) => {
      // The client leaves and comes back (Client.connect validates the parameters again).
      const c = client(w, rng);
      if (c !== null) {
        w.clients.splice(w.clients.indexOf(c), 1);
        ctx.attempt('client.close', () => c.close());
      }
      connect(w, ctx);
    },
  ],
  [
    0.5,
    ({ w, rng, ctx }) => {
      // Another client comes, or one goes.
      if (w.clients.length < 3 && rng.chance(0.6)) connect(w, ctx);
      else {
        const c = client(w, rng);
        if (c === null) return;
        w.clients.splice(w.clients.indexOf(c), 1);
        ctx.attempt('client.close', () => c.close());
      }
    },
  ],
];

async function exercise(w: DaemonWorld, rng: Rng, ctx: CaseContext): Promise<void> {
  await runOps(rng, OPS, { w, rng, ctx });
  // Let the serve loop see what the case did, then look at how it is.
  await new Promise(setImmediate);
  const ended = w.ended;
  if (ended !== null) {
    w.ended = null;
    // However typed its error, a serve loop that ends stops the daemon for every client.
    if (isTyped(ended.err))
      ctx.fail(
        'unavailable',
        'serve loop',
        `serve() ended with ${ended.err.code}: ${ended.err.message}`,
        'serve loop ended',
      );
    else ctx.caught('serve loop', ended.err);
    if (!w.closed) ctx.attempt('serve', () => serve(w));
  }
}

export async function run(options: RunOptions): Promise<TargetResult> {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  await runWorlds(sut, { create, exercise }, 'fzd');
  options.watchdog?.idle();
  return resultOf(sut);
}
