/**
 * The hub across real processes: this process is the host (or a peer of a host child), the
 * peers are children (test/fixtures/hub-*.ts) that run a script of steps. Every payload
 * checks itself (session-pattern.ts: every byte compared), every wait has a deadline, crash
 * tests SIGKILL a child while it holds slots or while this side waits, and nothing asserts a
 * duration.
 *
 * Every run of this file gets its own segment directory (a mkdtemp under /dev/shm, as
 * SHMBUS_DIR for this process and its children), so tests can edit a segment's bytes and
 * inspect its slabs through a second mapping; afterEach closes this process's ends, kills
 * the children and empties it.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { SLOT_ALLOCATED, SLOT_FREE, Slab } from '../../src/core/slab.js';
import type { RingWriter } from '../../src/core/spsc-ring.js';
import { ErrorCode, Hub, type HubMessage, HubPeer, ShmError } from '../../src/index.js';
import {
  CLASS_COUNT_OFFSET,
  CLASSES_OFFSET,
  HOST_OWNER,
  HUB_INLINE_MAX_OFFSET,
  HUB_PROTOCOL_OFFSET,
  HUB_RING_CAPACITY_OFFSET,
  HUB_SEGMENT_LENGTH_OFFSET,
  type HubGeometry,
  MAX_PEERS_OFFSET,
  PEER_LENGTH_OFFSET,
  PEERS_OFFSET_OFFSET,
  readHubParams,
  type SizeClass,
} from '../../src/layout/hub.js';
import { Kind } from '../../src/layout/segment.js';
import {
  DESC_CHANNEL_OFFSET,
  DESC_FLAGS_OFFSET,
  DESC_GENERATION_OFFSET,
  DESC_HEADER_LENGTH,
  DESC_LENGTH_OFFSET,
  DESC_SLOT_OFFSET,
} from '../../src/layout/session.js';
import { Segment } from '../../src/segment/segment.js';
import { checkPattern, fillPattern, payloadOf } from '../fixtures/session-pattern.js';
import { type Child, killAtStop, startFixture, uniqueName } from '../helpers/children.js';
import { prng, testSeed } from '../helpers/prng.js';

const dir = mkdtempSync('/dev/shm/shmbus-hub-test-');
process.env.SHMBUS_DIR = dir;

const children: Child[] = [];
const ends: { close(): void }[] = [];

afterEach(async () => {
  for (const end of ends.splice(0)) {
    try {
      end.close();
    } catch {}
  }
  const running = children.splice(0);
  for (const child of running) child.kill('SIGKILL');
  await Promise.all(running.map((child) => child.exited(30_000)));
  for (const file of readdirSync(dir)) rmSync(join(dir, file), { force: true });
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const WAIT = 60_000;
/** Deadline for a wake-up that a parked end should get at once (it parks far longer than this). */
const WAKE = 30_000;
const segmentFile = (name: string) => join(dir, `shmbus.${name}`);
const has = (key: string) => (m: Record<string, unknown>) => key in m;
const hasCode = (code: string) => (err: unknown) => {
  assert.ok(err instanceof ShmError, `expected a ShmError with ${code}, got ${String(err)}`);
  assert.equal(err.code, code, String(err));
  return true;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function createHost(name: string, options: Parameters<typeof Hub.create>[1]): Hub {
  const sut = Hub.create(name, options);
  ends.push(sut);
  return sut;
}

function joinHere(name: string, options: Parameters<typeof HubPeer.join>[1] = {}): HubPeer {
  const peer = HubPeer.join(name, options);
  ends.push(peer);
  return peer;
}

/** A second mapping of hub `name` (no role taken) and its geometry, for inspecting the slabs. */
function inspect(name: string): { h: HubGeometry; slabs: Slab[]; seg: Segment } {
  const seg = Segment.open(name, Kind.HUB);
  ends.push(seg);
  const { h, problems } = readHubParams(seg.views.dv, seg.length);
  assert.ok(h !== null, `the hub header reads back: ${problems.join('; ')}`);
  const slabs = h.classes.map((c) => new Slab(seg.views.i32, c.slabOffset >> 2, c.slotCount));
  return { h, slabs, seg };
}

/** Class and slot index of a view into the hub mapping (the host's own allocations). */
function slotOfView(h: HubGeometry, view: Uint8Array): { cls: number; slot: number } {
  for (const [cls, c] of h.classes.entries()) {
    const offset = view.byteOffset - c.slotsOffset;
    if (offset >= 0 && offset < c.slotCount * c.slotSize) return { cls, slot: Math.floor(offset / c.slotSize) };
  }
  assert.fail(`view at ${view.byteOffset} is in no size class`);
}

/** Starts a fixture and waits for its {ready} line (or fails with what it printed instead). */
async function start(fixture: string, name: string, config: Record<string, unknown>): Promise<Child> {
  const child = startFixture(fixture, [name, JSON.stringify(config)]);
  children.push(child);
  const first = await child.waitFor((m) => 'ready' in m || 'fatal' in m, WAIT);
  assert.equal(first.ready, true, `${fixture} did not start: ${JSON.stringify(first)}`);
  return child;
}

/** Starts hub-peer with a script; waits for {ready}. */
function peer(name: string, seed: number, steps: unknown[], join: Record<string, unknown> = {}): Promise<Child> {
  return start('hub-peer', name, { seed, join, steps });
}

/** Starts hub-peer expecting it to fail to join; resolves with its {fatal} line. */
async function peerRefused(name: string, join: Record<string, unknown>): Promise<Record<string, unknown>> {
  const child = startFixture('hub-peer', [name, JSON.stringify({ seed: 0, join, steps: [] })]);
  children.push(child);
  return child.waitFor((m) => 'ready' in m || 'fatal' in m, WAIT);
}

/** The line child printed for step `step` that has `key` (waits for it). */
function stepLine(child: Child, step: number, key: string): Promise<Record<string, unknown>> {
  return child
    .waitFor((m) => m.step === step && (key in m || 'fatal' in m), WAIT)
    .then((m) => {
      assert.ok(!('fatal' in m) || key === 'fatal', `step ${step}: ${JSON.stringify(m)}`);
      return m;
    });
}

/** Resolves once `child` printed at least `n` lines matching `match`; returns them. */
async function count(
  child: Child,
  match: (m: Record<string, unknown>) => boolean,
  n: number,
): Promise<Record<string, unknown>[]> {
  await child.waitFor(() => child.messages.filter(match).length >= n || child.messages.some(has('fatal')), WAIT);
  // A fatal line the child prints AFTER the n-th match (a later, expected step) is not a
  // failure of these n; one before it is.
  const matches = child.messages.filter(match);
  const nth = matches.length >= n ? child.messages.indexOf(matches[n - 1]) : Number.POSITIVE_INFINITY;
  const fatalAt = child.messages.findIndex(has('fatal'));
  const fatal = fatalAt >= 0 && fatalAt < nth ? child.messages[fatalAt] : undefined;
  assert.equal(fatal, undefined, `child failed: ${JSON.stringify(fatal)}`);
  return matches;
}

/** Polls `condition` until it holds; fails after `timeoutMs` with `what`. */
async function until(condition: () => boolean, what: () => string, timeoutMs = WAIT): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what()}`);
    await sleep(10);
  }
}

/** A promise's outcome as it happens (it is also caught, so a rejection is never unhandled). */
function track<T>(promise: Promise<T>): { settled: boolean; promise: Promise<T> } {
  const t = { settled: false, promise };
  promise.then(
    () => {
      t.settled = true;
    },
    () => {
      t.settled = true;
    },
  );
  return t;
}

/** `promise`, or a rejection after `ms` (a deadline on a wait this process does itself). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Receives `n` messages on the host (each wait with a deadline). */
async function recvN(sut: Hub, n: number): Promise<HubMessage[]> {
  const out: HubMessage[] = [];
  while (out.length < n) out.push(await sut.recv({ timeoutMs: WAIT }));
  return out;
}

const SMALL: SizeClass[] = [
  { slotSize: 256, slotCount: 4 },
  { slotSize: 1024, slotCount: 2 },
  { slotSize: 4096, slotCount: 2 },
];

describe('size classes', () => {
  test('payloads up to inlineMax travel inline and larger ones land in the smallest class that fits, both ways, every byte intact', async () => {
    const seed = testSeed();
    const name = uniqueName('classes');
    const sut = createHost(name, { maxPeers: 2, inlineMax: 64, classes: SMALL });
    // [length, expected class or -1 inline]
    const cases: [number, number][] = [
      [0, -1],
      [1, -1],
      [64, -1],
      [65, 0],
      [256, 0],
      [257, 1],
      [1024, 1],
      [1025, 2],
      [4096, 2],
    ];
    const sizes = cases.map(([length]) => length);
    const p = await peer(name, seed, [{ recv: cases.length }, { send: sizes }]);
    assert.equal(sut.peers().length, 1, 'the host sees the peer');
    const peerId = p.messages[0].peerId as number;

    for (const [seq, length] of sizes.entries())
      await sut.send(peerId, payloadOf(length, seed, seq), { channel: seq, flags: seq + 7, timeoutMs: WAIT });
    const atPeer = await count(p, has('msg'), cases.length);
    for (const [seq, [length, cls]] of cases.entries()) {
      const r = atPeer[seq];
      const at = `host -> peer message ${seq} (${length} B, seed ${seed}): ${JSON.stringify(r)}`;
      assert.deepEqual([r.msg, r.length, r.flags, r.problem, r.peerId], [seq, length, seq + 7, null, -1], at);
      if (cls < 0) assert.equal(r.slot, -1, `inline: ${at}`);
      else assert.equal((r.slot as number) >>> 16, cls, `class ${cls}: ${at}`);
    }

    const atHost = await recvN(sut, cases.length);
    for (const [seq, [length, cls]] of cases.entries()) {
      const m = atHost[seq];
      const at = `peer -> host message ${seq} (${length} B, seed ${seed})`;
      assert.equal(m.peerId, peerId, at);
      assert.equal(m.channel, seq, at);
      assert.equal(checkPattern(m.data, seed, seq, length), null, at);
      if (cls < 0) assert.equal(m.slot, -1, `inline: ${at}`);
      else assert.equal(m.slot >>> 16, cls, `class ${cls}: ${at}`);
      m.release();
    }
    await until(
      () => sut.freeSlots().join() === '4,2,2',
      () => `every slot comes back (free ${sut.freeSlots()})`,
    );
  });

  test('when another process holds a whole class, allocation falls back to the next larger class, then returns null, and alloc() waits until a slot is freed', async () => {
    const seed = testSeed();
    const name = uniqueName('fallback');
    const sut = createHost(name, { maxPeers: 2, inlineMax: 64, classes: SMALL });
    const { h } = inspect(name);
    const a = await peer(
      name,
      seed,
      [
        { hold: 200, count: 4 }, // 0: every class-0 slot
        { recv: 1 }, // 1: the host's fallback message (released)
        { gate: true }, // 2
        { tryAlloc: 200 }, // 3: null: everything that fits is taken
        { gate: true }, // 4
        { free: 1 }, // 5: one class-0 slot back: the host's waiting alloc() gets it
        { gate: true }, // 6
        { alloc: 200, timeoutMs: 600_000 }, // 7: waits until the host frees one
        { free: 3 }, // 8: the rest of its class-0 slots
        { sendHeld: 1, base: 10 }, // 9: the slot it got, to the host
      ],
      { livenessCheckMs: 600_000 }, // a lost wake-up would leave alloc() parked until its deadline
    );
    const held = await stepLine(a, 0, 'held');
    assert.deepEqual([held.held, held.freeSlots], [4, [0, 2, 2]], `the peer holds class 0: ${JSON.stringify(held)}`);
    const peerId = a.messages[0].peerId as number;
    sut.peers();

    const v1 = sut.tryAlloc(200);
    assert.ok(v1 !== null);
    assert.equal(slotOfView(h, v1).cls, 1, 'class 0 exhausted by the peer: the host falls back to class 1');
    fillPattern(v1, seed, 0);
    await sut.send(peerId, v1, { channel: 0, timeoutMs: WAIT });
    const got = await stepLine(a, 1, 'msg');
    assert.equal((got.slot as number) >>> 16, 1, `the peer receives it in class 1: ${JSON.stringify(got)}`);
    assert.equal(got.problem, null);

    const mine: Uint8Array[] = [];
    for (const want of [1, 1, 2, 2]) {
      const v = sut.tryAlloc(200);
      assert.ok(v !== null, `a slot of class ${want}`);
      assert.equal(slotOfView(h, v).cls, want, 'smallest class with a free slot');
      mine.push(v);
    }
    assert.equal(sut.tryAlloc(200), null, 'every class that fits is exhausted');
    assert.equal(sut.tryAlloc(1), null, 'a 1-byte allocation still needs a slot');
    assert.deepEqual(sut.freeSlots(), [0, 0, 0]);
    a.kill('SIGUSR2');
    assert.equal((await stepLine(a, 3, 'tryAlloc')).tryAlloc, null, 'the peer sees the exhaustion too');

    const waiting = track(sut.alloc(200, { timeoutMs: WAIT }));
    await sleep(100);
    assert.equal(waiting.settled, false, 'alloc() waits while nothing fits');
    a.kill('SIGUSR2');
    assert.equal((await stepLine(a, 5, 'freed')).problem, null);
    const v2 = await within(waiting.promise, WAIT, "the host's alloc()");
    assert.equal(slotOfView(h, v2).cls, 0, 'the slot the peer freed');
    assert.equal(v2.length, 200);

    a.kill('SIGUSR2');
    await stepLine(a, 7, 'allocating');
    await sleep(100);
    assert.equal(a.messages.filter((m) => m.step === 7 && 'allocated' in m).length, 0, "the peer's alloc() waits");
    sut.free(mine[2]); // a class-2 slot
    await a.waitFor((m) => (m.step === 7 && 'allocated' in m) || 'fatal' in m, WAKE);
    assert.equal(a.messages.find(has('fatal')), undefined);
    const [m] = await recvN(sut, 1);
    assert.equal(m.slot >>> 16, 2, 'the peer got the class-2 slot the host freed');
    assert.equal(checkPattern(m.data, seed, 10, 200), null);
    m.release();
    sut.free(v2);
    for (const v of [mine[0], mine[1], mine[3]]) sut.free(v);
  });

  test("a peer waiting in alloc() is woken when another peer frees a slot (not only by its park's timeout)", async () => {
    const seed = testSeed();
    const name = uniqueName('peer-wake');
    const sut = createHost(name, { maxPeers: 2, inlineMax: 64, classes: SMALL });
    const a = await peer(name, seed, [{ hold: 8 }, { gate: true }, { free: 1 }]);
    assert.deepEqual((await stepLine(a, 0, 'held')).freeSlots, [0, 0, 0], 'peer A holds every slot');
    // B parks in one long slice (livenessCheckMs and its deadline far away): only a wake-up
    // from A's free() ends its wait before this test's deadline.
    const b = await peer(name, seed, [{ alloc: 100, timeoutMs: 600_000 }], { livenessCheckMs: 600_000 });
    sut.peers();
    await stepLine(b, 0, 'allocating');
    await sleep(200);
    a.kill('SIGUSR2');
    await stepLine(a, 2, 'freed');
    const outcome = await b.waitFor((m) => 'allocated' in m || 'fatal' in m, WAKE);
    assert.equal(outcome.allocated, 100, `B's alloc() got the slot A freed: ${JSON.stringify(outcome)}`);
  });

  test('a peer whose send() waits for room in its full descriptor ring is woken when the host drains it', async () => {
    const seed = testSeed();
    const name = uniqueName('up-room');
    const sut = createHost(name, { maxPeers: 2, inlineMax: 64, ringCapacity: 4096, classes: SMALL });
    const a = await peer(name, seed, [{ fill: true }, { send: [8], base: 7 }], { livenessCheckMs: 600_000 });
    const filled = (await stepLine(a, 0, 'filled')).filled as number;
    assert.ok(filled > 0);
    sut.peers();
    await sleep(200); // A is parked in send()
    assert.equal(a.messages.filter(has('sent')).length, 0, "A's send() waits for room");
    // A is woken as soon as the first descriptor is consumed, so its message may already
    // arrive during the drain (after all of the ones it filled the ring with).
    let drained = 0;
    let late: { channel: number; problem: string | null } | null = null;
    for (let m = sut.tryRecv(); m !== null; m = sut.tryRecv()) {
      if (m.channel === 7 && drained === filled)
        late = { channel: m.channel, problem: checkPattern(m.data, seed, 7, 8) };
      else assert.equal(checkPattern(m.data, seed, 50_000 + drained++, 8), null);
      m.release();
    }
    assert.equal(drained, filled);
    const outcome = await a.waitFor((m) => 'sent' in m || 'fatal' in m, WAKE);
    assert.equal(outcome.sent, 1, JSON.stringify(outcome));
    if (late === null) {
      const [m] = await recvN(sut, 1);
      late = { channel: m.channel, problem: checkPattern(m.data, seed, 7, 8) };
    }
    assert.deepEqual(late, { channel: 7, problem: null });
  });

  test("the host's send() waiting for room in a peer's full descriptor ring is woken when the peer drains it", async () => {
    const seed = testSeed();
    const name = uniqueName('down-room');
    const sut = createHost(name, {
      maxPeers: 2,
      inlineMax: 64,
      ringCapacity: 4096,
      classes: SMALL,
      livenessCheckMs: 600_000,
    });
    const a = await peer(name, seed, [{ gate: true }, { recv: 1_000_000 }]);
    const peerId = a.messages[0].peerId as number;
    let filled = 0;
    while (sut.trySend(peerId, payloadOf(8, seed, filled), { channel: filled })) filled++;
    assert.ok(filled > 0);
    const sending = track(sut.send(peerId, payloadOf(8, seed, filled), { channel: filled, timeoutMs: 600_000 }));
    await sleep(200);
    assert.equal(sending.settled, false, "the host's send() waits for room");
    a.kill('SIGUSR2');
    await within(sending.promise, WAKE, "the host's send() after the peer drained the ring");
    const got = await count(a, has('msg'), filled + 1);
    assert.deepEqual(
      got.map((r) => [r.msg, r.problem]),
      Array.from({ length: filled + 1 }, (_, seq) => [seq, null]),
    );
  });

  test('a payload larger than the largest class is refused with SHM_ERR_TOO_LARGE on both sides, and inline payloads need no slot', async () => {
    const seed = testSeed();
    const name = uniqueName('too-large');
    const sut = createHost(name, { maxPeers: 2, inlineMax: 64, classes: SMALL });
    const a = await peer(name, seed, [{ hold: 1 }, { recv: 2 }, { send: [64] }, { send: [4097] }]);
    assert.deepEqual((await stepLine(a, 0, 'held')).freeSlots, [0, 0, 0], 'the peer holds every slot');
    const peerId = a.messages[0].peerId as number;
    assert.throws(() => sut.tryAlloc(4097), hasCode(ErrorCode.TOO_LARGE));
    await assert.rejects(sut.alloc(4097, { timeoutMs: WAIT }), hasCode(ErrorCode.TOO_LARGE));
    assert.throws(() => sut.trySend(peerId, new Uint8Array(4097)), hasCode(ErrorCode.TOO_LARGE));
    assert.equal(sut.trySend(peerId, new Uint8Array(65)), false, 'a slot payload waits while no slot is free');

    // Inline payloads travel although no slot is free.
    await sut.send(peerId, payloadOf(64, seed, 0), { channel: 0, timeoutMs: WAIT });
    await sut.send(peerId, payloadOf(0, seed, 1), { channel: 1, timeoutMs: WAIT });
    const msgs = await count(a, has('msg'), 2);
    for (const r of msgs) assert.deepEqual([r.slot, r.problem], [-1, null], JSON.stringify(r));
    const [m] = await recvN(sut, 1);
    assert.deepEqual([m.slot, m.length, checkPattern(m.data, seed, 0, 64)], [-1, 64, null]);
    m.release();
    const fatal = await a.waitFor(has('fatal'), WAIT);
    assert.deepEqual([fatal.step, fatal.fatal], [3, ErrorCode.TOO_LARGE], JSON.stringify(fatal));
    assert.deepEqual(sut.freeSlots(), [0, 0, 0], 'no slot was taken by the inline messages or the refusals');
  });
});

describe('messages between the host and several peers', () => {
  test('several peers receive from the host and send to it at once; every byte arrives, none is lost or duplicated, and the host takes turns between the peers', async () => {
    const seed = testSeed();
    const name = uniqueName('many');
    const classes = [
      { slotSize: 1024, slotCount: 128 },
      { slotSize: 16 * 1024, slotCount: 64 },
      { slotSize: 64 * 1024, slotCount: 32 },
    ];
    const sut = createHost(name, { maxPeers: 4, inlineMax: 128, classes });
    const random = prng(seed);
    const sizeOf = () => {
      const r = random();
      if (r < 0.3) return Math.floor(random() * 129);
      if (r < 0.7) return 129 + Math.floor(random() * (1024 - 129));
      if (r < 0.9) return 1025 + Math.floor(random() * (16 * 1024 - 1025));
      return 16 * 1024 + 1 + Math.floor(random() * (48 * 1024));
    };
    const PEERS = 3;
    const DOWN = 40;
    const UP = 10;
    const upSizes = Array.from({ length: PEERS }, () => Array.from({ length: UP }, sizeOf));
    const downSizes = Array.from({ length: PEERS }, () => Array.from({ length: DOWN }, sizeOf));
    const kids: Child[] = [];
    for (let k = 0; k < PEERS; k++)
      kids.push(await peer(name, seed + k, [{ recv: DOWN }, { send: upSizes[k] }], { peerId: k + 1 }));
    const ids = kids.map((c) => c.messages[0].peerId as number);
    assert.deepEqual(ids, [1, 2, 3], 'explicit peer ids');

    // Host -> each peer, interleaved, so the peers receive while the host sends to the others.
    for (let seq = 0; seq < DOWN; seq++)
      for (let k = 0; k < PEERS; k++)
        await sut.send(ids[k], payloadOf(downSizes[k][seq], seed + k, seq), { channel: seq, timeoutMs: WAIT });
    for (let k = 0; k < PEERS; k++) {
      const got = await count(kids[k], has('msg'), DOWN);
      assert.deepEqual(
        got.map((r) => [r.msg, r.length, r.problem]),
        downSizes[k].map((length, seq) => [seq, length, null]),
        `peer ${ids[k]} got every message intact and in order (seed ${seed})`,
      );
    }

    // Every peer sends everything before the host reads, so every up ring is non-empty.
    for (const kid of kids) await count(kid, has('sent'), 1);
    const order: number[] = [];
    const seen = ids.map(() => new Set<number>());
    for (let n = 0; n < PEERS * UP; n++) {
      const m = sut.tryRecv();
      assert.ok(m !== null, `message ${n} of ${PEERS * UP} is there`);
      const k = ids.indexOf(m.peerId);
      assert.ok(k >= 0, `from a joined peer: ${m.peerId}`);
      const at = `message ${m.channel} from peer ${m.peerId} (seed ${seed + k})`;
      assert.ok(!seen[k].has(m.channel), `not a duplicate: ${at}`);
      assert.equal(m.channel, seen[k].size, `in order: ${at}`);
      seen[k].add(m.channel);
      assert.equal(checkPattern(m.data, seed + k, m.channel, upSizes[k][m.channel]), null, at);
      order.push(m.peerId);
      m.release();
    }
    assert.equal(sut.tryRecv(), null, 'nothing else arrived');
    for (let n = 0; n + PEERS <= order.length; n += PEERS)
      assert.deepEqual(
        [...order.slice(n, n + PEERS)].sort(),
        [...ids].sort(),
        `round robin: every group of ${PEERS} takes one from each peer (${order.join(',')})`,
      );
    await until(
      () => sut.freeSlots().join() === '128,64,32',
      () => `every slot comes back (free ${sut.freeSlots()})`,
    );
  });

  test('the host and 3 peers sending and receiving at once over classes of 8, 6 and 4 slots lose, duplicate, reorder and corrupt nothing, and every slot comes back', async () => {
    // Both directions at once, so the host and the peers allocate from the same free lists
    // while the others free into them, and each slot is reused hundreds of times: the
    // interleavings of hand-over, descriptor publication, release and reallocation that one
    // direction at a time (the test above) leaves out.
    const seed = testSeed();
    const name = uniqueName('duplex');
    const classes = [
      { slotSize: 256, slotCount: 8 },
      { slotSize: 2048, slotCount: 6 },
      { slotSize: 16 * 1024, slotCount: 4 },
    ];
    const sut = createHost(name, { maxPeers: 4, inlineMax: 32, classes });
    const random = prng(seed);
    const sizeOf = () => {
      const r = random();
      if (r < 0.2) return Math.floor(random() * 33);
      if (r < 0.6) return 33 + Math.floor(random() * (256 - 33));
      if (r < 0.9) return 257 + Math.floor(random() * (2048 - 257));
      return 2049 + Math.floor(random() * (16 * 1024 - 2049));
    };
    const PEERS = 3;
    const N = 1000;
    const down = Array.from({ length: PEERS }, () => Array.from({ length: N }, sizeOf));
    const up = Array.from({ length: PEERS }, () => Array.from({ length: N }, sizeOf));
    const kids: Child[] = [];
    for (let k = 0; k < PEERS; k++)
      kids.push(await start('hub-duplex', name, { seed: seed + k, peerId: k + 1, down: down[k], up: up[k] }));

    const sendAll = async () => {
      for (let seq = 0; seq < N; seq++)
        for (let k = 0; k < PEERS; k++)
          await sut.send(k + 1, payloadOf(down[k][seq], seed + k, seq), { channel: seq, timeoutMs: WAIT });
    };
    const problems: string[] = [];
    const next = new Array(PEERS + 1).fill(0);
    const recvAll = async () => {
      for (let n = 0; n < PEERS * N; n++) {
        const m = await sut.recv({ timeoutMs: WAIT });
        const k = m.peerId - 1;
        const at = `message ${m.channel} from peer ${m.peerId} (seed ${seed})`;
        if (m.channel !== next[m.peerId]++) problems.push(`out of order: ${at}`);
        const problem = checkPattern(m.data, seed + k + 1000, m.channel, up[k]?.[m.channel]);
        if (problem !== null) problems.push(`${at}: ${problem}`);
        m.release();
      }
    };
    await within(Promise.all([sendAll(), recvAll()]), 10 * WAIT, 'the host sending and receiving');
    assert.deepEqual(problems.slice(0, 5), [], 'the host got every message intact and in order');
    assert.equal(sut.tryRecv(), null, 'nothing else arrived');
    for (const kid of kids) {
      const done = await kid.waitFor((m) => 'done' in m || 'fatal' in m, WAIT);
      assert.deepEqual(
        [done.received, done.sent, done.problems],
        [N, N, []],
        `peer ${kid.messages[0].peerId} (seed ${seed}): ${JSON.stringify(done)}`,
      );
    }
    await until(
      () => sut.freeSlots().join() === '8,6,4',
      () => `every slot comes back (free ${sut.freeSlots()})`,
    );
  });

  test('peers() lists the joined peers and their pids; an explicit peerId is honoured, a taken one gives SHM_ERR_BUSY, one peer more than maxPeers gives SHM_ERR_REFUSED', async () => {
    const name = uniqueName('join');
    const sut = createHost(name, { maxPeers: 3, inlineMax: 64, classes: SMALL });
    assert.deepEqual(sut.peers(), []);
    const p2 = await peer(name, 0, [], { peerId: 2 });
    const p0 = await peer(name, 0, []);
    const p1 = await peer(name, 0, []);
    assert.deepEqual(
      [p2, p0, p1].map((c) => c.messages[0].peerId),
      [2, 0, 1],
      'the explicit id, then the first free entries',
    );
    assert.deepEqual(
      sut.peers().sort((x, y) => x.peerId - y.peerId),
      [p0, p1, p2].map((c, i) => ({ peerId: i, pid: c.proc.pid })),
    );
    const busy = await peerRefused(name, { peerId: 2 });
    assert.equal(busy.fatal, ErrorCode.BUSY, JSON.stringify(busy));
    const full = await peerRefused(name, {});
    assert.equal(full.fatal, ErrorCode.REFUSED, JSON.stringify(full));
    assert.throws(() => joinHere(name, { peerId: 3 }), hasCode(ErrorCode.INVALID_ARGUMENT));
    assert.equal(sut.peers().length, 3, 'the refused joins left nothing behind');
  });

  test('tryRecv() on its own receives from a peer that joined after the host was created', async () => {
    const seed = testSeed();
    const name = uniqueName('tryrecv');
    const sut = createHost(name, { maxPeers: 2, inlineMax: 64, classes: SMALL });
    const a = await peer(name, seed, [{ send: [10, 300] }]);
    await count(a, has('sent'), 1);
    const got: HubMessage[] = [];
    await until(
      () => {
        const m = sut.tryRecv();
        if (m !== null) got.push(m);
        return got.length === 2;
      },
      () => `a polling host got ${got.length} of 2 messages`,
      10_000,
    );
    for (const [seq, m] of got.entries()) {
      assert.equal(checkPattern(m.data, seed, seq), null);
      m.release();
    }
  });
});

describe('a peer killed while holding slots', () => {
  /**
   * Sets up: peer A holds slots it allocated (unsent) and messages from the host (unreleased),
   * sent one message to the host (the host holds it); peer B and the host hold slots of their
   * own. Returns what each holds.
   */
  async function killedPeerSetup(name: string, seed: number, livenessCheckMs: number) {
    const classes = [
      { slotSize: 256, slotCount: 8 },
      { slotSize: 2048, slotCount: 4 },
    ];
    const sut = createHost(name, { maxPeers: 2, inlineMax: 32, classes, livenessCheckMs });
    const { h, slabs } = inspect(name);
    const a = await peer(name, seed, [
      { recv: 3, keep: true }, // 0: three messages from the host, kept
      { hold: 100, count: 2 }, // 1: two class-0 slots, unsent
      { hold: 1000, count: 1 }, // 2: one class-1 slot, unsent
      { send: [200] }, // 3: one message to the host (the host keeps it)
    ]);
    const b = await peer(name, seed + 1, [
      { hold: 100, count: 1 },
      { recv: 10, keepGoing: true },
    ]);
    const aId = a.messages[0].peerId as number;
    const bId = b.messages[0].peerId as number;
    await stepLine(b, 0, 'held');

    // The host's own slots, filled with a pattern: they must survive A's reclaim.
    const hostOwn = [sut.tryAlloc(100), sut.tryAlloc(1500)] as Uint8Array[];
    assert.ok(hostOwn.every((v) => v !== null));
    hostOwn.forEach((v, k) => {
      fillPattern(v, seed, 900 + k);
    });
    for (const [seq, length] of [100, 250, 2000].entries())
      await sut.send(aId, payloadOf(length, seed, seq), { channel: seq, timeoutMs: WAIT });
    const toA = await count(a, has('msg'), 3);
    await stepLine(a, 3, 'sent');
    const [fromA] = await recvN(sut, 1);
    assert.equal(checkPattern(fromA.data, seed, 0, 200), null);
    const words = () => slabs.map((s) => Array.from({ length: s.slotCount }, (_, i) => s.stateWord(i)));
    return { sut, h, slabs, a, b, aId, bId, hostOwn, toA, fromA, words };
  }

  test("after host.reclaim() every slot the killed peer held is free, the host's and other peers' slots are intact and sendable, stale descriptors are refused and a new peer joins its entry", async () => {
    const seed = testSeed();
    const name = uniqueName('reclaim');
    const { sut, h, slabs, a, b, aId, bId, hostOwn, toA, fromA, words } = await killedPeerSetup(name, seed, 100);
    const before = words();
    const ownedBy = (w: number[][], owner: number) =>
      w.flatMap((cls, c) =>
        cls.flatMap((word, slot) =>
          (word & 3) !== SLOT_FREE && ((word >>> 2) & 63) === owner ? [`${c}/${slot}`] : [],
        ),
      );
    const heldByA = ownedBy(before, aId);
    assert.equal(heldByA.length, 6, `A holds 3 received + 3 allocated slots: ${heldByA}`);
    // class 0: A 2 received + 2 allocated, B 1, the host 1 + A's message; class 1: A 1 + 1, the host 1
    assert.deepEqual(sut.freeSlots(), [8 - 7, 4 - 3], 'free slots before the kill');

    a.kill('SIGKILL');
    await a.exited(WAIT);
    assert.deepEqual(ownedBy(words(), aId), heldByA, 'nothing is freed before the host reclaims');
    sut.reclaim();
    const after = words();
    assert.deepEqual(ownedBy(after, aId), [], 'A owns nothing any more');
    assert.deepEqual(sut.freeSlots(), [8 - 3, 4 - 1], 'exactly the 6 slots A held are free again');
    for (const key of heldByA) {
      const [c, slot] = key.split('/').map(Number);
      assert.equal(after[c][slot] & 3, SLOT_FREE, `slot ${key} of A is free`);
    }
    for (const [c, cls] of before.entries())
      for (const [slot, word] of cls.entries())
        if ((word & 3) !== SLOT_FREE && ((word >>> 2) & 63) !== aId)
          assert.equal(after[c][slot], word, `slot ${c}/${slot} of another owner is untouched`);
    assert.deepEqual(
      slabs.map((s) => s.listLength()),
      sut.freeSlots(),
      'the free lists hold exactly the free slots',
    );
    assert.equal(checkPattern(fromA.data, seed, 0, 200), null, "A's message the host holds is intact");
    fromA.release();

    // The host's own slots are still allocated to it with the same generation, and sendable.
    for (const [k, v] of hostOwn.entries()) {
      const { cls, slot } = slotOfView(h, v);
      const word = slabs[cls].stateWord(slot);
      assert.deepEqual([word & 3, (word >>> 2) & 63], [SLOT_ALLOCATED, HOST_OWNER], `host slot ${cls}/${slot}`);
      assert.equal(checkPattern(v, seed, 900 + k), null, `host slot ${cls}/${slot} content intact`);
      fillPattern(v, seed + 1, k);
      await sut.send(bId, v, { channel: k, timeoutMs: WAIT });
    }

    // Descriptors still naming slots A held: refused, whether the slot is free now or was
    // reallocated since (a new generation); they free nothing.
    const again = sut.tryAlloc(2000);
    assert.ok(again !== null);
    const re = slotOfView(h, again);
    const reKey = `${re.cls}/${re.slot}`;
    assert.ok(heldByA.includes(reKey), `the host got a slot A was killed holding (${reKey}; A held ${heldByA})`);
    const writer = (sut as unknown as { links: ({ writer: RingWriter } | null)[] }).links[bId]?.writer;
    assert.ok(writer, "the host's ring to B");
    const dv = new DataView(writer.u8.buffer);
    const forge = (key: number, generation: number) => {
      const at = writer.claim(DESC_HEADER_LENGTH);
      assert.ok(at >= 0);
      dv.setUint32(at + DESC_CHANNEL_OFFSET, 999, true);
      dv.setUint32(at + DESC_FLAGS_OFFSET, 0, true);
      dv.setUint32(at + DESC_SLOT_OFFSET, key, true);
      dv.setUint32(at + DESC_GENERATION_OFFSET, generation, true);
      dv.setUint32(at + DESC_LENGTH_OFFSET, 100, true);
      writer.commit(DESC_HEADER_LENGTH);
    };
    forge((re.cls << 16) | re.slot, before[re.cls][re.slot] >>> 8); // reallocated to the host since
    forge(toA[0].slot as number, toA[0].generation as number); // received by A, free now
    forge(toA[2].slot as number, toA[2].generation as number); // received by A, class 1
    const reWord = slabs[re.cls].stateWord(re.slot);
    await sut.send(bId, payloadOf(50, seed + 1, 2), { channel: 2, timeoutMs: WAIT });
    const refusals = await count(b, has('refused'), 3);
    for (const r of refusals) assert.equal(r.refused, ErrorCode.CORRUPT, JSON.stringify(r));
    const atB = await count(b, has('msg'), 3);
    assert.deepEqual(
      atB.map((r) => [r.msg, r.problem]),
      [
        [0, null],
        [1, null],
        [2, null],
      ],
      "B gets the host's slots intact",
    );
    assert.equal(slabs[re.cls].stateWord(re.slot), reWord, 'the stale descriptor did not touch the reallocated slot');
    sut.free(again);

    // A's entry is free again: a new peer can join it by its id.
    const c = await peer(name, seed, [{ send: [300] }], { peerId: aId });
    assert.equal(c.messages[0].peerId, aId);
    const [m] = await recvN(sut, 1);
    assert.deepEqual([m.peerId, checkPattern(m.data, seed, 0, 300)], [aId, null]);
    m.release();
  });

  test("a host waiting in recv() reclaims a killed peer's slots by itself (its sweep every livenessCheckMs)", async () => {
    const seed = testSeed();
    const name = uniqueName('sweep');
    const { sut, a, b, fromA } = await killedPeerSetup(name, seed, 50);
    fromA.release();
    const free0 = sut.freeSlots();
    const waiting = track(sut.recv({ timeoutMs: WAIT }));
    a.kill('SIGKILL');
    await a.exited(WAIT);
    await until(
      () => sut.freeSlots().join() === [free0[0] + 4, free0[1] + 2].join(),
      () => `the waiting host freed A's 6 slots (free ${sut.freeSlots()}, before ${free0})`,
    );
    assert.equal(waiting.settled, false, 'recv() still waits: nothing was sent');
    assert.deepEqual(
      sut.peers().map((p) => p.peerId),
      [b.messages[0].peerId],
      'only B is still joined',
    );
    const again = await peer(name, seed, [{ send: [40] }]);
    assert.equal(again.messages[0].peerId, a.messages[0].peerId, "the new peer takes A's entry");
    const m = await within(waiting.promise, WAIT, 'recv');
    assert.deepEqual([m.peerId, checkPattern(m.data, seed, 0, 40)], [again.messages[0].peerId, null]);
    m.release();
  });
});

describe('a peer killed while sending', () => {
  for (const point of ['hub.in-flight:2', 'ring.before-publish:2'])
    test(`a peer SIGKILLed at ${point} (slot handed over to the host, descriptor not published) leaks no slot: the host's reclaim frees it`, async () => {
      const name = uniqueName('orphan');
      const sut = createHost(name, {
        maxPeers: 2,
        classes: [
          { slotSize: 1024, slotCount: 8 },
          { slotSize: 4096, slotCount: 8 },
        ],
        livenessCheckMs: 20,
      });
      const child = startFixture('crash-point', ['hub-peer', JSON.stringify({ name, seed: 3, sends: 5 })], {
        SHMBUS_TEST_STOP_AT: point,
      });
      children.push(child);
      await killAtStop(child, point, WAIT);
      assert.deepEqual(sut.freeSlots(), [8, 6], 'one message in the ring, one slot handed over without a descriptor');
      const m = await sut.recv({ timeoutMs: WAIT });
      assert.equal(checkPattern(m.data, 3, 0, 3000), null);
      m.release();
      await until(
        () => {
          sut.reclaim();
          return sut.peers().length === 0;
        },
        () => JSON.stringify(sut.peers()),
      );
      assert.equal(sut.tryRecv(), null, 'the unpublished message never arrives');
      assert.deepEqual(sut.freeSlots(), [8, 8]);
    });
});

describe('concurrent allocation', () => {
  test('8 peer processes allocating and freeing for 10 s (and each at least 1,000 times) never hold the same slot at once, and afterwards every slot is on its free list', async () => {
    const seed = testSeed();
    const name = uniqueName('churn');
    const classes = [
      { slotSize: 64, slotCount: 48 },
      { slotSize: 512, slotCount: 24 },
      { slotSize: 4096, slotCount: 12 },
    ];
    const sut = createHost(name, { maxPeers: 8, inlineMax: 0, classes });
    const { slabs } = inspect(name);
    const config = {
      seed,
      durationMs: 10_000,
      minAllocs: 1000,
      maxHeld: 8,
      sizes: [8, 40, 64, 65, 300, 512, 513, 2000, 4096],
      sendRatio: 0.1,
    };
    const kids: Child[] = [];
    for (let k = 0; k < 8; k++) kids.push(await start('hub-churn', name, config));
    // All start together, once every one has joined, and this host drains from then on: a
    // churner started early would otherwise spend its time with every slot in flight to a host
    // that is still starting the others (1-2 s each under the sanitizers), and allocate nothing.
    for (const kid of kids) kid.kill('SIGUSR2');
    const problems: string[] = [];
    let received = 0;
    const allDone = () => kids.every((kid) => kid.messages.some((m) => 'done' in m || 'fatal' in m));
    const drain = (m: HubMessage) => {
      const dv = new DataView(m.data.buffer, m.data.byteOffset, m.length);
      const head = dv.getUint32(0, true);
      const tail = dv.getUint32(m.length - 4, true);
      if (head !== tail || head >>> 24 !== m.peerId + 1)
        problems.push(`from peer ${m.peerId} slot ${m.slot}: marker ${head.toString(16)}/${tail.toString(16)}`);
      received++;
      m.release();
    };
    const deadline = Date.now() + 10_000 + WAIT;
    while (!allDone()) {
      assert.ok(Date.now() < deadline, 'the churners finish');
      try {
        drain(await sut.recv({ timeoutMs: 200 }));
      } catch (err) {
        if (!(err instanceof ShmError && err.code === ErrorCode.TIMEOUT)) throw err;
      }
    }
    for (let m = sut.tryRecv(); m !== null; m = sut.tryRecv()) drain(m);
    await Promise.all(kids.map((kid) => kid.exited(WAIT)));
    for (let m = sut.tryRecv(); m !== null; m = sut.tryRecv()) drain(m);
    const reports = kids.map((kid) => kid.messages.find((m) => 'done' in m || 'fatal' in m) as Record<string, unknown>);
    for (const r of reports) {
      const at = `seed ${seed}: ${JSON.stringify(r)}`;
      assert.equal(r.done, true, at);
      assert.deepEqual([r.mismatches, r.duplicates, r.firstProblem], [0, 0, null], at);
      assert.ok((r.allocs as number) >= config.minAllocs, at);
    }
    assert.deepEqual(problems, [], `the host found no foreign marker (seed ${seed})`);
    const sent = reports.reduce((n, r) => n + (r.sent as number), 0);
    assert.equal(received, sent, 'every slot sent to the host arrived');
    const counts = classes.map((c) => c.slotCount);
    assert.deepEqual(sut.freeSlots(), counts, 'free count per class (nothing left for a reclaim to free)');
    assert.deepEqual(
      slabs.map((s) => s.listLength()),
      counts,
      'free-list walk per class, before any reclaim',
    );
    sut.reclaim();
    assert.deepEqual(sut.freeSlots(), counts, 'free count per class after the host swept the exited peers');
    assert.deepEqual(
      slabs.map((s) => s.freeCount),
      counts,
    );
    assert.deepEqual(
      slabs.map((s) => s.listLength()),
      counts,
      'free-list walk per class',
    );
    assert.ok(
      reports.some((r) => (r.exhausted as number) > 0),
      'the classes ran out at times (the fallback and null paths were exercised)',
    );
  });
});

describe('a dead or closed host', () => {
  /** A host child and three peers here: one waiting in recv, one in alloc, one in send. */
  async function waitingPeers(name: string) {
    const host = await start('hub-host', name, {
      create: { maxPeers: 4, inlineMax: 64, ringCapacity: 4096, classes: SMALL },
    });
    const receiver = joinHere(name, { livenessCheckMs: 50 });
    const allocator = joinHere(name, { livenessCheckMs: 50 });
    const sender = joinHere(name, { livenessCheckMs: 50 });
    while (allocator.tryAlloc(1) !== null) {}
    assert.deepEqual(allocator.freeSlots(), [0, 0, 0]);
    let n = 0;
    while (sender.trySend(new Uint8Array(8))) n++;
    assert.ok(n > 0, 'the ring to the host filled up');
    const waits: Record<string, { settled: boolean; promise: Promise<unknown> }> = {
      recv: track(receiver.recv({ timeoutMs: WAIT })),
      alloc: track(allocator.alloc(1, { timeoutMs: WAIT })),
      send: track(sender.send(new Uint8Array(8), { timeoutMs: WAIT })),
    };
    await sleep(100);
    for (const [what, t] of Object.entries(waits)) assert.equal(t.settled, false, `${what} waits`);
    return { host, waits };
  }

  test('peers waiting in recv, alloc and send get SHM_ERR_PEER_DEAD when the host is SIGKILLed, and a later join gets SHM_ERR_PEER_DEAD', async () => {
    const name = uniqueName('host-dead');
    const { host, waits } = await waitingPeers(name);
    host.kill('SIGKILL');
    await host.exited(WAIT);
    for (const [what, t] of Object.entries(waits))
      await assert.rejects(within(t.promise, WAIT, what), hasCode(ErrorCode.PEER_DEAD), what);
    assert.throws(() => joinHere(name), hasCode(ErrorCode.PEER_DEAD));
    const late = await peerRefused(name, {});
    assert.equal(late.fatal, ErrorCode.PEER_DEAD, JSON.stringify(late));
  });

  test('host close() ends the waits with SHM_ERR_PEER_CLOSED and removes the hub', async () => {
    const name = uniqueName('host-closed');
    const { host, waits } = await waitingPeers(name);
    host.kill('SIGUSR2');
    await host.waitFor(has('closed'), WAIT);
    for (const [what, t] of Object.entries(waits))
      await assert.rejects(within(t.promise, WAIT, what), hasCode(ErrorCode.PEER_CLOSED), what);
    assert.throws(() => joinHere(name), hasCode(ErrorCode.NOT_FOUND));
  });

  test('join refuses a hub whose header parameters are corrupt with SHM_ERR_CORRUPT (and another protocol major with SHM_ERR_VERSION_MISMATCH)', async () => {
    const name = uniqueName('corrupt');
    createHost(name, { maxPeers: 2, inlineMax: 64, classes: SMALL });
    const file = segmentFile(name);
    const fd = openSync(file, 'r+');
    try {
      const u32 = (at: number) => {
        const b = Buffer.alloc(4);
        readSync(fd, b, 0, 4, at);
        return b.readUInt32LE(0);
      };
      const put = (at: number, value: number) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(value >>> 0, 0);
        writeSync(fd, b, 0, 4, at);
      };
      const cases: [string, number, number, string][] = [
        ['maxPeers 0', MAX_PEERS_OFFSET, 0, ErrorCode.CORRUPT],
        ['maxPeers 63', MAX_PEERS_OFFSET, 63, ErrorCode.CORRUPT],
        ['ringCapacity not a power of two', HUB_RING_CAPACITY_OFFSET, 3000, ErrorCode.CORRUPT],
        ['inlineMax too large', HUB_INLINE_MAX_OFFSET, 1 << 20, ErrorCode.CORRUPT],
        ['classCount 0', CLASS_COUNT_OFFSET, 0, ErrorCode.CORRUPT],
        ['classCount 9', CLASS_COUNT_OFFSET, 9, ErrorCode.CORRUPT],
        ['class 0 slotSize 60', CLASSES_OFFSET, 60, ErrorCode.CORRUPT],
        ['class 1 slotCount 0', CLASSES_OFFSET + 16 + 4, 0, ErrorCode.CORRUPT],
        ['class 2 slotCount larger than the file', CLASSES_OFFSET + 32 + 4, 60_000, ErrorCode.CORRUPT],
        ['class 1 slotsOffset', CLASSES_OFFSET + 16 + 12, 4096, ErrorCode.CORRUPT],
        ['peersOffset', PEERS_OFFSET_OFFSET, 0, ErrorCode.CORRUPT],
        ['peerLength', PEER_LENGTH_OFFSET, 128, ErrorCode.CORRUPT],
        ['segmentLength', HUB_SEGMENT_LENGTH_OFFSET, 1 << 30, ErrorCode.CORRUPT],
        ['protocol major 2', HUB_PROTOCOL_OFFSET, 2 << 16, ErrorCode.VERSION_MISMATCH],
      ];
      for (const [what, at, value, code] of cases) {
        const original = u32(at);
        put(at, value);
        try {
          const r = await peerRefused(name, {});
          assert.equal(r.fatal, code, `${what}: ${JSON.stringify(r)}`);
        } finally {
          put(at, original);
        }
      }
      const ok = await peer(name, 0, []);
      assert.equal(ok.messages[0].ready, true, 'the restored header is accepted');
    } finally {
      closeSync(fd);
    }
  });
});
