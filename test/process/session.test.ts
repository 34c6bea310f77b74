/**
 * Pair sessions across real processes: this process is one peer and a child (test/fixtures/
 * session-*.ts) the other, or two children talk to each other. Every payload checks itself
 * (session-pattern.ts: the pattern of sequence number and seed, every byte compared), every
 * wait has a deadline, crash tests SIGKILL the peer while this side waits, and nothing
 * asserts a duration.
 *
 * Every run of this file gets its own segment directory (a mkdtemp under /dev/shm, as
 * SHMBUS_DIR for this process and its children), so tests can assert which files exist and
 * can edit a segment's bytes; afterEach closes this process's peers, kills the children and
 * empties it.
 */
import assert from 'node:assert/strict';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import type { RingWriter } from '../../src/core/spsc-ring.js';
import { ErrorCode, Session, type SessionMessage, ShmError, ShmFrameError, ShmStateError } from '../../src/index.js';
import { KIND_OFFSET, Kind, MAGIC_OFFSET, PARAMS_LENGTH_OFFSET, VERSION_OFFSET } from '../../src/layout/segment.js';
import {
  AREA_AB_OFFSET,
  DESC_CHANNEL_OFFSET,
  DESC_FLAGS_OFFSET,
  DESC_GENERATION_OFFSET,
  DESC_HEADER_LENGTH,
  DESC_LENGTH_OFFSET,
  DESC_SLOT_OFFSET,
  INLINE_MAX_OFFSET,
  INLINE_SLOT,
  PROTOCOL_OFFSET,
  RING_CAPACITY_OFFSET,
  SEGMENT_LENGTH_PARAM_OFFSET,
  SESSION_PROTOCOL_MAJOR,
  SLAB_OFFSET_OFFSET,
  SLOT_COUNT_OFFSET,
  SLOT_SIZE_OFFSET,
  SLOTS_OFFSET_OFFSET,
  sessionGeometry,
  writeSessionParams,
} from '../../src/layout/session.js';
import { checkPattern, END_FLAG, payloadOf } from '../fixtures/session-pattern.js';
import { type Child, killAtStop, startFixture, uniqueName } from '../helpers/children.js';
import { testSeed } from '../helpers/prng.js';

const dir = mkdtempSync('/dev/shm/shmbus-session-test-');
process.env.SHMBUS_DIR = dir;

const children: Child[] = [];
const ends: Session[] = [];

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

const segmentFile = (name: string) => join(dir, `shmbus.${name}`);
const hasCode = (code: string) => (err: unknown) => {
  assert.ok(err instanceof ShmError, `expected a ShmError with ${code}, got ${String(err)}`);
  assert.equal(err.code, code, String(err));
  return true;
};
const has = (key: string) => (m: Record<string, unknown>) => key in m;
const WAIT = 60_000;

function create(name: string, options: Parameters<typeof Session.create>[1] = {}): Session {
  const s = Session.create(name, options);
  ends.push(s);
  return s;
}

function open(name: string, options: Parameters<typeof Session.open>[1] = {}): Session {
  const s = Session.open(name, options);
  ends.push(s);
  return s;
}

/** Starts a fixture and waits for its {ready} line (or fails with what it printed instead). */
async function start(fixture: string, name: string, config: Record<string, unknown>): Promise<Child> {
  const child = startFixture(fixture, [name, JSON.stringify(config)]);
  children.push(child);
  const first = await child.waitFor((m) => 'ready' in m || 'fatal' in m, WAIT);
  assert.equal(first.ready, true, `${fixture} did not start: ${JSON.stringify(first)}`);
  return child;
}

/** Resolves once `child` printed at least `n` lines matching `match`; returns them. */
async function count(
  child: Child,
  match: (m: Record<string, unknown>) => boolean,
  n: number,
): Promise<Record<string, unknown>[]> {
  await child.waitFor(() => child.messages.filter(match).length >= n, WAIT);
  return child.messages.filter(match);
}

/** Polls `condition` until it holds; fails after `timeoutMs` with `what`. */
async function until(condition: () => boolean, what: () => string, timeoutMs = WAIT): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Messages and refused descriptors a receiver child printed, in order. */
function events(child: Child): string[] {
  return child.messages
    .filter((m) => 'msg' in m || 'refused' in m)
    .map((m) => ('msg' in m ? `msg ${m.msg}` : `refused ${m.refused}`));
}

function received(child: Child): Record<string, unknown>[] {
  return child.messages.filter(has('msg'));
}

describe('payloads: inline and in slots', () => {
  test('payloads up to inlineMax travel inline, larger ones in slots, every byte arrives both ways and every slot comes back', async () => {
    const seed = testSeed();
    const name = uniqueName('sizes');
    const sut = create(name, { inlineMax: 16, slotSize: 2048, slotCount: 8 });
    const b = await start('session-receiver', name, { seed, echo: true });
    const ready = b.messages[0];
    assert.deepEqual(
      [ready.slotSize, ready.slotCount, ready.inlineMax, ready.freeSlots],
      [2048, 8, 16, 8],
      `B discovers A's configuration from the header (seed ${seed})`,
    );

    const sizes = [0, 1, 15, 16, 17, 1000, 2047, 2048];
    for (const [seq, length] of sizes.entries()) {
      const options = { channel: seq, flags: seq * 3 + 1, timeoutMs: WAIT };
      if (seq === 5) {
        const view = await sut.alloc(length, { timeoutMs: WAIT });
        view.set(payloadOf(length, seed, seq));
        await sut.send(view, options);
      } else await sut.send(payloadOf(length, seed, seq), options);
    }

    const reports = await count(b, has('msg'), sizes.length);
    for (const [seq, length] of sizes.entries()) {
      const r = reports[seq];
      const at = `B's message ${seq} (${length} B, seed ${seed}): ${JSON.stringify(r)}`;
      assert.equal(r.msg, seq, at);
      assert.equal(r.length, length, at);
      assert.equal(r.flags, seq * 3 + 1, at);
      assert.equal(r.problem, null, at);
      if (length <= 16) assert.equal(r.slot, -1, `inline: ${at}`);
      else assert.ok((r.slot as number) >= 0 && (r.slot as number) < 8, `in a slot: ${at}`);
    }

    for (const [seq, length] of sizes.entries()) {
      const msg = await sut.recv({ timeoutMs: WAIT });
      const at = `A's echo ${seq} (${length} B, seed ${seed})`;
      assert.equal(msg.channel, seq, at);
      assert.equal(msg.flags, seq * 3 + 1, at);
      assert.equal(msg.length, length, at);
      assert.equal(msg.slot === -1, length <= 16, `${at}: slot ${msg.slot}`);
      assert.equal(checkPattern(msg.data, seed, seq, length), null, at);
      msg.release();
      msg.release(); // a second release of the same message object is a no-op
    }
    await until(
      () => sut.freeSlots === 8,
      () => `A sees ${sut.freeSlots} free slots`,
    );

    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    const end = await b.waitFor(has('end'), WAIT);
    assert.equal(end.freeSlots, 8, `B sees every slot back: ${JSON.stringify(end)}`);
    assert.equal(sut.freeSlots, 8);
    assert.deepEqual(await b.exited(WAIT), { code: 0, signal: null });
  });

  test('a 10 MiB payload crosses intact both ways, zero-copy and copied, and one byte more is refused', async () => {
    const seed = testSeed();
    const name = uniqueName('big');
    const slotSize = 10 * 1024 * 1024;
    // Three slots: B's echo of message 0 needs a slot while message 1 still holds the second.
    const sut = create(name, { inlineMax: 16, slotSize, slotCount: 3 });
    const b = await start('session-receiver', name, { seed, echo: true });

    const view = await sut.alloc(slotSize, { timeoutMs: WAIT });
    view.set(payloadOf(slotSize, seed, 0));
    await sut.send(view, { channel: 0, timeoutMs: WAIT });
    await sut.send(payloadOf(slotSize, seed, 1), { channel: 1, timeoutMs: WAIT });

    const reports = await count(b, has('msg'), 2);
    for (const r of reports) {
      assert.equal(r.problem, null, `seed ${seed}: ${JSON.stringify(r)}`);
      assert.equal(r.length, slotSize);
    }
    for (const seq of [0, 1]) {
      const msg = await sut.recv({ timeoutMs: WAIT });
      assert.equal(msg.channel, seq);
      assert.ok(msg.slot >= 0);
      assert.equal(checkPattern(msg.data, seed, seq, slotSize), null, `echo ${seq}, seed ${seed}`);
      msg.release();
    }
    await until(
      () => sut.freeSlots === 3,
      () => `A sees ${sut.freeSlots} free slots`,
    );

    await assert.rejects(sut.send(new Uint8Array(slotSize + 1), { timeoutMs: WAIT }), hasCode(ErrorCode.TOO_LARGE));
    assert.throws(() => sut.tryAlloc(slotSize + 1), hasCode(ErrorCode.TOO_LARGE));
    assert.equal(sut.freeSlots, 3, 'a refused payload takes no slot');

    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    const end = await b.waitFor(has('end'), WAIT);
    assert.equal(end.freeSlots, 3);
    assert.deepEqual(await b.exited(WAIT), { code: 0, signal: null });
  });
});

describe('stale, double and forged releases and descriptors', () => {
  test('a double release is a no-op on the message, and a release with a stale generation, a wrong state or an out-of-range slot is refused with SHM_ERR_CORRUPT', async () => {
    const seed = testSeed();
    const name = uniqueName('stale');
    await start('session-idle', name, { create: { slotCount: 1, slotSize: 64, inlineMax: 16 }, seed, send: [40] });
    const sut = open(name);
    const msg = await sut.recv({ timeoutMs: WAIT });
    assert.equal(checkPattern(msg.data, seed, 0, 40), null);
    assert.equal(msg.slot, 0);
    const { slot, generation } = msg;
    assert.equal(sut.freeSlots, 0);

    msg.release();
    assert.equal(sut.freeSlots, 1);
    msg.release();
    assert.equal(sut.freeSlots, 1, 'the second release changed nothing');

    const view = sut.tryAlloc(8);
    assert.ok(view !== null, 'the released slot can be allocated again');
    assert.equal(sut.freeSlots, 0);
    const refused = (status: string) => (err: unknown) => {
      assert.ok(err instanceof ShmFrameError, String(err));
      assert.equal(err.code, ErrorCode.CORRUPT);
      assert.equal(err.details.status, status, String(err));
      return true;
    };
    assert.throws(() => sut.releaseSlot(slot, generation, view), refused('stale generation'));
    assert.throws(() => sut.releaseSlot(1, generation + 1, view), refused('slot out of range'));
    assert.throws(() => sut.releaseSlot(-1, generation + 1, view), refused('slot out of range'));
    assert.equal(sut.freeSlots, 0, 'the reallocated slot was not freed by the stale reference');

    sut.free(view);
    assert.equal(sut.freeSlots, 1);
    assert.throws(() => sut.releaseSlot(slot, generation + 1, view), refused('not in flight (double release?)'));
    assert.equal(sut.freeSlots, 1, 'a double free does not push the slot twice');
    const again = sut.tryAlloc(8);
    assert.ok(again !== null);
    assert.equal(sut.tryAlloc(8), null, 'the free list holds the one slot once');
    sut.free(again);
  });

  test('forged descriptors (out-of-range slot, free slot, replayed, stale generation, unsent slot, oversize, inline length mismatch, short) are refused with SHM_ERR_CORRUPT and the receiver keeps receiving', async () => {
    const seed = testSeed();
    const name = uniqueName('forged');
    const geometry = { ringCapacity: 64 * 1024, slotSize: 256, slotCount: 4, inlineMax: 16 };
    const sut = create(name, geometry);
    const g = sessionGeometry(geometry);
    const b = await start('session-receiver', name, { seed, keepGoing: true });

    // A's own descriptor ring writer: forged records go where A's next record would, so the
    // ring stays consistent for the good messages that follow.
    const writer = (sut as unknown as { writer: RingWriter }).writer;
    const dv = new DataView(writer.u8.buffer);
    const forge = (d: { slot: number; generation: number; length: number }, inline?: Uint8Array, frame?: number) => {
      const n = frame ?? DESC_HEADER_LENGTH + (inline?.length ?? 0);
      const at = writer.claim(n);
      assert.ok(at >= 0, 'ring room for a forged descriptor');
      if (n >= DESC_HEADER_LENGTH) {
        dv.setUint32(at + DESC_CHANNEL_OFFSET, 999, true);
        dv.setUint32(at + DESC_FLAGS_OFFSET, 0, true);
        dv.setUint32(at + DESC_SLOT_OFFSET, d.slot, true);
        dv.setUint32(at + DESC_GENERATION_OFFSET, d.generation, true);
        dv.setUint32(at + DESC_LENGTH_OFFSET, d.length, true);
        if (inline) writer.u8.set(inline, at + DESC_HEADER_LENGTH);
      } else writer.u8.fill(0xab, at, at + n);
      writer.commit(n);
    };
    const refusedCount = () => b.messages.filter(has('refused')).length;

    await sut.send(payloadOf(4, seed, 0), { channel: 0, timeoutMs: WAIT });
    forge({ slot: 0xfffffffe, generation: 1, length: 100 });
    forge({ slot: geometry.slotCount, generation: 1, length: 100 });
    forge({ slot: 0, generation: 0, length: 100 }); // a slot that is free
    await sut.send(payloadOf(100, seed, 1), { channel: 1, timeoutMs: WAIT });
    const [, first] = await count(b, has('msg'), 2);
    await until(
      () => sut.freeSlots === geometry.slotCount,
      () => `B released message 1 (free slots ${sut.freeSlots})`,
    );
    const s1 = first.slot as number;
    const g1 = first.generation as number;
    assert.ok(s1 >= 0, JSON.stringify(first));

    forge({ slot: s1, generation: g1, length: 100 }); // message 1's descriptor replayed after its release
    await count(b, has('refused'), 4);
    assert.equal(sut.freeSlots, geometry.slotCount, 'the replay freed nothing twice');

    const view = sut.tryAlloc(100);
    assert.ok(view !== null);
    const s2 = (view.byteOffset - g.slotsOffset) / geometry.slotSize;
    assert.ok(Number.isInteger(s2) && s2 >= 0 && s2 < geometry.slotCount, `slot of the view: ${s2}`);
    // The slot is ALLOCATED (not yet sent) at some generation > g1 if it is s1 again.
    for (let gen = s2 === s1 ? g1 : 0; gen <= (s2 === s1 ? g1 + 1 : 3); gen++)
      forge({ slot: s2, generation: gen, length: 100 }); // stale generations, or the unsent slot's own
    const forgedForS2 = (s2 === s1 ? g1 + 1 : 3) - (s2 === s1 ? g1 : 0) + 1;
    await count(b, has('refused'), 4 + forgedForS2);
    const freeBefore = sut.freeSlots;
    view.set(payloadOf(100, seed, 2));
    await sut.send(view, { channel: 2, timeoutMs: WAIT }); // the allocated slot is still A's to send
    assert.equal(freeBefore, geometry.slotCount - 1, 'the refused descriptors did not free the unsent slot');

    forge({ slot: 0, generation: 0, length: geometry.slotSize + 1 });
    forge({ slot: INLINE_SLOT, generation: 0, length: 10 }, Uint8Array.of(1, 2, 3, 4));
    forge({ slot: 0, generation: 0, length: 0 }, undefined, 8);
    await sut.send(payloadOf(3, seed, 3), { channel: 3, timeoutMs: WAIT });
    await sut.send(payloadOf(200, seed, 4), { channel: 4, timeoutMs: WAIT });
    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    const end = await b.waitFor(has('end'), WAIT);

    const forged = Array.from({ length: forgedForS2 }, () => 'refused SHM_ERR_CORRUPT');
    const refusedSeen = refusedCount();
    assert.deepEqual(
      events(b),
      [
        'msg 0',
        'refused SHM_ERR_CORRUPT',
        'refused SHM_ERR_CORRUPT',
        'refused SHM_ERR_CORRUPT',
        'msg 1',
        'refused SHM_ERR_CORRUPT',
        ...forged,
        'msg 2',
        'refused SHM_ERR_CORRUPT',
        'refused SHM_ERR_CORRUPT',
        'refused SHM_ERR_CORRUPT',
        'msg 3',
        'msg 4',
      ],
      `seed ${seed}, ${refusedSeen} refused: ${JSON.stringify(b.messages.filter(has('refused')).map((m) => m.message))}`,
    );
    for (const r of b.messages.filter(has('refused'))) assert.equal(r.errorName, 'ShmFrameError', String(r.message));
    for (const r of received(b)) assert.equal(r.problem, null, `seed ${seed}: ${JSON.stringify(r)}`);
    assert.equal(received(b)[2].slot, s2);
    assert.equal(end.freeSlots, geometry.slotCount, 'no forged descriptor freed or leaked a slot');
    assert.equal(sut.freeSlots, geometry.slotCount);
    assert.deepEqual(await b.exited(WAIT), { code: 0, signal: null });
  });
});

describe('backpressure', () => {
  test('with its 4 slots held by a receiver that does not release, the 5th send waits, completes once one is released, and order holds', async () => {
    const seed = testSeed();
    const name = uniqueName('backpressure');
    const sut = create(name, { inlineMax: 16, slotSize: 1024, slotCount: 4 });
    const b = await start('session-receiver', name, { seed, hold: true });

    for (let seq = 0; seq < 4; seq++) await sut.send(payloadOf(600, seed, seq), { channel: seq, timeoutMs: WAIT });
    await count(b, has('msg'), 4);
    assert.equal(sut.freeSlots, 0);
    assert.equal(sut.trySend(payloadOf(600, seed, 4), { channel: 4 }), false, 'trySend finds no slot');
    assert.equal(sut.freeSlots, 0, 'the refused trySend holds no slot');

    let releases = 0;
    const releaseOne = async () => {
      releases++;
      b.kill('SIGUSR2');
      await count(b, has('released'), releases);
    };
    for (let seq = 4; seq < 10; seq++) {
      const fifth = track(sut.send(payloadOf(600, seed, seq), { channel: seq, timeoutMs: 120_000 }));
      await sleep(300);
      assert.equal(fifth.settled, false, `send ${seq} waits while every slot is held`);
      assert.equal(received(b).length, seq, 'the receiver got nothing more');
      await releaseOne();
      await within(fifth.promise, WAIT, `send ${seq} after a release`);
      await count(b, has('msg'), seq + 1);
    }

    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    const end = await b.waitFor(has('end'), WAIT);
    assert.deepEqual(
      received(b).map((m) => m.msg),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    for (const r of received(b)) assert.equal(r.problem, null, `seed ${seed}: ${JSON.stringify(r)}`);
    assert.deepEqual(
      b.messages.filter(has('released')).map((m) => m.released),
      [0, 1, 2, 3, 4, 5],
    );
    assert.equal(end.freeSlots, 4);
    assert.equal(sut.freeSlots, 4);
  });
});

type WaitKind = 'recv' | 'alloc' | 'send (ring full)' | 'send (no free slot)';

/**
 * Sets up `sut` so that `kind` has to wait on a peer that never reads; the peer is a
 * session-idle child that hogs every slot when `kind` is alloc.
 */
function waitOn(sut: Session, kind: WaitKind): Promise<unknown> {
  switch (kind) {
    case 'recv':
      return sut.recv({ timeoutMs: 120_000 });
    case 'alloc':
      return sut.alloc(8, { timeoutMs: 120_000 });
    case 'send (ring full)': {
      let n = 0;
      while (sut.trySend(Uint8Array.of(n & 0xff), { channel: n })) n++;
      assert.ok(n > 0);
      return sut.send(Uint8Array.of(1), { timeoutMs: 120_000 });
    }
    case 'send (no free slot)': {
      for (let i = 0; i < sut.slotCount; i++)
        assert.ok(sut.trySend(new Uint8Array(sut.inlineMax + 1), { channel: i }), `slot message ${i} sent`);
      assert.equal(sut.freeSlots, 0);
      return sut.send(new Uint8Array(sut.inlineMax + 1), { timeoutMs: 120_000 });
    }
  }
}

describe('dead and closed peers', () => {
  const kinds: WaitKind[] = ['recv', 'alloc', 'send (ring full)', 'send (no free slot)'];
  const geometry = { ringCapacity: 1024, inlineMax: 16, slotSize: 64, slotCount: 4, livenessCheckMs: 50 };

  for (const kind of kinds) {
    test(`a SIGKILLed B ends A's pending ${kind} with SHM_ERR_PEER_DEAD and A gets every slot back`, async () => {
      const name = uniqueName('bdies');
      const sut = create(name, geometry);
      const b = await start('session-idle', name, { open: {}, hogSlots: kind === 'alloc' });
      const waiting = track(waitOn(sut, kind));
      await sleep(300);
      assert.equal(waiting.settled, false, `${kind} waits while B is alive`);
      assert.equal(sut.peerAlive(), true);

      b.kill('SIGKILL');
      assert.equal((await b.exited(WAIT)).signal, 'SIGKILL');
      await assert.rejects(within(waiting.promise, WAIT, kind), hasCode(ErrorCode.PEER_DEAD));
      assert.equal(sut.peerAlive(), false);
      // Slots B allocated or consumed come back; messages B never read stay in flight for the
      // next B (a B that reopens receives them).
      const unread = kind === 'send (no free slot)' ? geometry.slotCount : 0;
      assert.equal(sut.freeSlots, geometry.slotCount - unread, 'what B held is reclaimed, what it never read is kept');
      await assert.rejects(sut.recv({ timeoutMs: WAIT }), hasCode(ErrorCode.PEER_DEAD));
    });
  }

  for (const kind of kinds) {
    test(`a SIGKILLed A ends B's pending ${kind} with SHM_ERR_PEER_DEAD and B gets every slot back`, async () => {
      const name = uniqueName('adies');
      const a = await start('session-idle', name, { create: geometry, hogSlots: kind === 'alloc' });
      const sut = open(name, { livenessCheckMs: 50 });
      const waiting = track(waitOn(sut, kind));
      await sleep(300);
      assert.equal(waiting.settled, false, `${kind} waits while A is alive`);
      assert.equal(sut.peerAlive(), true);

      a.kill('SIGKILL');
      assert.equal((await a.exited(WAIT)).signal, 'SIGKILL');
      await assert.rejects(within(waiting.promise, WAIT, kind), hasCode(ErrorCode.PEER_DEAD));
      assert.equal(sut.peerAlive(), false);
      assert.equal(sut.freeSlots, geometry.slotCount, 'slots A allocated, or B sent to A, are reclaimed');
      sut.close();
      assert.equal(existsSync(segmentFile(name)), true, "B's close never unlinks, even after A died");
    });
  }

  test('a B that never opens counts as alive during startupMs, then waits end with SHM_ERR_PEER_DEAD', async () => {
    const patient = create(uniqueName('startup-long'), { startupMs: 600_000, livenessCheckMs: 20 });
    assert.equal(patient.peerAlive(), true);
    await assert.rejects(patient.recv({ timeoutMs: 300 }), hasCode(ErrorCode.TIMEOUT));
    assert.equal(patient.peerAlive(), true);

    const sut = create(uniqueName('startup-short'), { startupMs: 500, livenessCheckMs: 20 });
    await assert.rejects(within(sut.recv({ timeoutMs: 120_000 }), WAIT, 'recv'), (err: unknown) => {
      hasCode(ErrorCode.PEER_DEAD)(err);
      assert.match(String(err), /did not open/);
      return true;
    });
    assert.equal(sut.peerAlive(), false);
  });

  test('a B that closes cleanly ends A’s pending recv with SHM_ERR_PEER_CLOSED; its close leaves the segment and A’s removes it', async () => {
    const name = uniqueName('bcloses');
    const sut = create(name, { livenessCheckMs: 50 });
    const b = await start('session-idle', name, { open: {} });
    const waiting = track(sut.recv({ timeoutMs: 120_000 }));
    await sleep(200);
    assert.equal(waiting.settled, false);
    b.kill('SIGUSR2');
    await assert.rejects(within(waiting.promise, WAIT, 'recv'), hasCode(ErrorCode.PEER_CLOSED));
    assert.deepEqual(await b.exited(WAIT), { code: 0, signal: null });
    assert.equal(existsSync(segmentFile(name)), true, "B's close does not unlink");
    assert.equal(sut.peerAlive(), false);
    sut.close();
    assert.equal(existsSync(segmentFile(name)), false, "A's close unlinks");
  });

  test('an A that closes cleanly ends B’s pending recv with SHM_ERR_PEER_CLOSED and removes the segment', async () => {
    const name = uniqueName('acloses');
    const a = await start('session-idle', name, { create: {} });
    const sut = open(name, { livenessCheckMs: 50 });
    const waiting = track(sut.recv({ timeoutMs: 120_000 }));
    await sleep(200);
    assert.equal(waiting.settled, false);
    a.kill('SIGUSR2');
    await assert.rejects(within(waiting.promise, WAIT, 'recv'), hasCode(ErrorCode.PEER_CLOSED));
    assert.deepEqual(await a.exited(WAIT), { code: 0, signal: null });
    assert.equal(existsSync(segmentFile(name)), false, "A's close unlinked while B still had it open");
    sut.close();
  });
});

describe('what a peer leaves behind', () => {
  for (const how of ['SIGKILL', 'close'] as const) {
    const code = how === 'SIGKILL' ? ErrorCode.PEER_DEAD : ErrorCode.PEER_CLOSED;
    test(`every message a B sent before its ${how} reaches A, and only then do A's waits end with ${code}`, async () => {
      const seed = testSeed();
      const name = uniqueName(`leftover-${how}`);
      const slotCount = 8;
      const sut = create(name, { inlineMax: 16, slotSize: 256, slotCount, livenessCheckMs: 50 });
      const sizes = [8, 100, 16, 17, 256, 0];
      const b = await start('session-idle', name, { open: {}, seed, send: sizes });
      if (how === 'SIGKILL') {
        b.kill('SIGKILL');
        assert.equal((await b.exited(WAIT)).signal, 'SIGKILL');
      } else {
        b.kill('SIGUSR2');
        assert.deepEqual(await b.exited(WAIT), { code: 0, signal: null });
      }
      assert.equal(sut.peerAlive(), false, 'A notices first (and reclaims what is the dead peer’s)');
      for (const [seq, length] of sizes.entries()) {
        const msg = await sut.recv({ timeoutMs: WAIT });
        assert.equal(msg.channel, seq);
        assert.equal(checkPattern(msg.data, seed, seq, length), null, `message ${seq}, seed ${seed}`);
        msg.release();
      }
      await assert.rejects(sut.recv({ timeoutMs: WAIT }), hasCode(code));
      assert.equal(sut.freeSlots, slotCount);
    });
  }

  test('messages a SIGKILLed A sent stay readable at B and go back to the free list when B releases them', async () => {
    const seed = testSeed();
    const name = uniqueName('held');
    const a = await start('session-idle', name, {
      create: { inlineMax: 16, slotSize: 128, slotCount: 4 },
      seed,
      send: [100, 128, 17],
    });
    const sut = open(name, { livenessCheckMs: 50 });
    const held: SessionMessage[] = [];
    for (let i = 0; i < 3; i++) held.push(await sut.recv({ timeoutMs: WAIT }));
    assert.equal(sut.freeSlots, 1);
    a.kill('SIGKILL');
    await a.exited(WAIT);
    assert.equal(sut.peerAlive(), false);
    assert.equal(sut.freeSlots, 1, 'B did not reclaim the slots it holds');
    for (const [seq, msg] of held.entries()) {
      assert.equal(checkPattern(msg.data, seed, seq, [100, 128, 17][seq]), null, `message ${seq}, seed ${seed}`);
      msg.release();
    }
    assert.equal(sut.freeSlots, 4);
    await assert.rejects(sut.recv({ timeoutMs: WAIT }), hasCode(ErrorCode.PEER_DEAD));
  });

  test('release() of a message held when its session closed fails, if at all, with a typed error', async () => {
    const name = uniqueName('late-release');
    await start('session-idle', name, { create: { inlineMax: 16, slotSize: 64, slotCount: 2 }, send: [40] });
    const sut = open(name);
    const msg = await sut.recv({ timeoutMs: WAIT });
    assert.equal(msg.slot >= 0, true);
    sut.close();
    try {
      msg.release();
    } catch (err) {
      assert.ok(err instanceof ShmError, `release() after close threw a ${(err as Error).name}: ${String(err)}`);
    }
  });

  test('slots a B still held when it closed cleanly are back on A’s free list once another B drained the ring', async () => {
    const seed = testSeed();
    const name = uniqueName('closed-held');
    const slotCount = 8;
    const sut = create(name, { inlineMax: 16, slotSize: 128, slotCount });
    for (let seq = 0; seq < 6; seq++) await sut.send(payloadOf(100, seed, seq), { channel: seq, timeoutMs: WAIT });
    const b1 = await start('session-receiver', name, { seed, hold: true, closeAfter: 3 });
    const closed = await b1.waitFor(has('closedHolding'), WAIT);
    assert.equal(closed.closedHolding, 3);
    assert.deepEqual(await b1.exited(WAIT), { code: 0, signal: null });
    assert.equal(sut.peerAlive(), false);

    const b2 = await start('session-receiver', name, { seed, keepGoing: true });
    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    await b2.waitFor(has('end'), WAIT);
    assert.deepEqual(events(b2), ['msg 3', 'msg 4', 'msg 5'], 'a clean close resumes exactly after what B consumed');
    assert.deepEqual(await b2.exited(WAIT), { code: 0, signal: null });
    assert.equal(
      sut.freeSlots,
      slotCount,
      'the 3 slots of the messages the first B held at close are lost unless someone frees them',
    );
  });

  test('a second A is refused with SHM_ERR_EXISTS while the first lives, and replaces a SIGKILLed one', async () => {
    const name = uniqueName('exists');
    const a1 = await start('session-idle', name, { create: { livenessCheckMs: 50 } });
    const old = open(name, { livenessCheckMs: 50 });
    assert.throws(() => Session.create(name), hasCode(ErrorCode.EXISTS));
    a1.kill('SIGKILL');
    await a1.exited(WAIT);
    const sut = create(name, { inlineMax: 16 });
    assert.equal(old.peerAlive(), false, 'the B of the replaced segment sees its A dead');
    await assert.rejects(old.recv({ timeoutMs: WAIT }), hasCode(ErrorCode.PEER_DEAD));
    const b = await start('session-receiver', name, { seed: 1 });
    await sut.send(payloadOf(5, 1, 0), { channel: 0, timeoutMs: WAIT });
    const [r] = await count(b, has('msg'), 1);
    assert.equal(r.problem, null);
  });
});

describe('a B that replaces a SIGKILLed one', () => {
  test('a second live B is refused with SHM_ERR_BUSY, and one that replaces a SIGKILLed B is accepted', async () => {
    const name = uniqueName('busy');
    assert.throws(() => Session.open(name), hasCode(ErrorCode.NOT_FOUND));
    const sut = create(name, { livenessCheckMs: 50 });
    const b1 = await start('session-idle', name, { open: {} });
    assert.throws(() => open(name), hasCode(ErrorCode.BUSY));
    b1.kill('SIGKILL');
    await b1.exited(WAIT);
    const b2 = open(name);
    assert.equal(sut.peerAlive(), true, 'A sees the new B alive');
    await sut.send(Uint8Array.of(7), { timeoutMs: WAIT });
    assert.deepEqual([...(await b2.recv({ timeoutMs: WAIT })).data], [7]);
  });

  test('a second B receives exactly the messages the SIGKILLed first B did not consume', async () => {
    const seed = testSeed();
    const name = uniqueName('resume');
    const sut = create(name, { inlineMax: 16, slotSize: 128, slotCount: 32 });
    const total = 40;
    const consumed = 5;
    // Even sequence numbers inline, odd ones in slots.
    for (let seq = 0; seq < total; seq++)
      await sut.send(payloadOf(seq % 2 === 0 ? 8 : 100, seed, seq), { channel: seq, timeoutMs: WAIT });
    const b1 = await start('session-receiver', name, { seed, stopAfter: consumed });
    await b1.waitFor(has('stopped'), WAIT);
    assert.deepEqual(
      received(b1).map((m) => m.msg),
      [0, 1, 2, 3, 4],
    );
    b1.kill('SIGKILL');
    await b1.exited(WAIT);

    // A does not wait on anything in between, so it never notices the death.
    const b2 = await start('session-receiver', name, { seed, keepGoing: true });
    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    await b2.waitFor(has('end'), WAIT);
    const expected = Array.from({ length: total - consumed }, (_, i) => `msg ${consumed + i}`);
    assert.deepEqual(events(b2), expected, 'no message lost, none delivered twice, no stale descriptor');
    for (const r of received(b2)) assert.equal(r.problem, null, `seed ${seed}: ${JSON.stringify(r)}`);
  });

  test('after A has seen the first B die, the messages it never read are delivered to the second B', async () => {
    const seed = testSeed();
    const name = uniqueName('kept');
    const slotCount = 16;
    const sut = create(name, { inlineMax: 16, slotSize: 128, slotCount, livenessCheckMs: 50 });
    const b1 = await start('session-idle', name, { open: {} });
    const total = 20;
    for (let seq = 0; seq < total; seq++)
      await sut.send(payloadOf(seq % 2 === 0 ? 8 : 100, seed, seq), { channel: seq, timeoutMs: WAIT });
    assert.equal(sut.freeSlots, slotCount - total / 2);
    b1.kill('SIGKILL');
    await b1.exited(WAIT);
    await assert.rejects(sut.recv({ timeoutMs: WAIT }), hasCode(ErrorCode.PEER_DEAD));
    assert.equal(sut.freeSlots, slotCount - total / 2, 'the slots of unread messages stay in flight');

    const b2 = await start('session-receiver', name, { seed, keepGoing: true });
    for (let seq = total; seq < total + 4; seq++)
      await sut.send(payloadOf(seq % 2 === 0 ? 8 : 100, seed, seq), { channel: seq, timeoutMs: WAIT });
    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    const end = await b2.waitFor(has('end'), WAIT);

    const expected: string[] = [];
    for (let seq = 0; seq < total + 4; seq++) expected.push(`msg ${seq}`);
    assert.deepEqual(events(b2), expected);
    for (const r of received(b2)) assert.equal(r.problem, null, `seed ${seed}: ${JSON.stringify(r)}`);
    assert.equal(end.freeSlots, slotCount);
    assert.equal(sut.freeSlots, slotCount);
  });

  test('slots a SIGKILLed B held unreleased are back on the free list once a second B has drained the ring', async () => {
    const seed = testSeed();
    const name = uniqueName('leak');
    const slotCount = 32;
    const sut = create(name, { inlineMax: 16, slotSize: 128, slotCount });
    for (let seq = 0; seq < 24; seq++) await sut.send(payloadOf(100, seed, seq), { channel: seq, timeoutMs: WAIT });
    const b1 = await start('session-receiver', name, { seed, hold: true, stopAfter: 20 });
    await b1.waitFor(has('stopped'), WAIT);
    b1.kill('SIGKILL');
    await b1.exited(WAIT);

    const b2 = await start('session-receiver', name, { seed, keepGoing: true });
    await sut.send(new Uint8Array(0), { flags: END_FLAG, timeoutMs: WAIT });
    await b2.waitFor(has('end'), WAIT);
    assert.deepEqual(await b2.exited(WAIT), { code: 0, signal: null });
    assert.equal(sut.peerAlive(), false, 'the second B closed');
    assert.equal(
      sut.freeSlots,
      slotCount,
      `slots stuck in flight: B2 got ${JSON.stringify(events(b2))}; every B is gone and every message was consumed`,
    );
  });

  /** A session-b crash-point victim that sends slot messages and is SIGKILLed at `point` on the 3rd. */
  async function killSendingB(name: string, point: string): Promise<void> {
    const child = startFixture('crash-point', ['session-b', JSON.stringify({ name, seed: 1, sends: 5 })], {
      SHMBUS_TEST_STOP_AT: point,
    });
    children.push(child);
    await killAtStop(child, point, WAIT);
  }

  for (const point of ['session.in-flight:3', 'ring.before-publish:3'])
    test(`a B SIGKILLed at ${point} (slot in flight, descriptor not published) leaks no slot: A frees it when it finds B dead, and so does a new B that opens first`, async () => {
      for (const whoFirst of ['A', 'new B']) {
        const name = uniqueName('orphan');
        const sut = create(name, { slotSize: 4096, slotCount: 8, livenessCheckMs: 20 });
        await killSendingB(name, point);
        assert.equal(sut.freeSlots, 8 - 3, 'two messages in the ring, one slot in flight without a descriptor');
        if (whoFirst === 'A') assert.equal(sut.peerAlive(), false);
        const b2 = open(name);
        for (let seq = 0; seq < 2; seq++) {
          const m = await sut.recv({ timeoutMs: WAIT });
          assert.equal(checkPattern(m.data, 1, seq, 1000), null);
          m.release();
        }
        assert.equal(sut.tryRecv(), null, 'the unpublished message never arrives');
        assert.equal(sut.freeSlots, 8, `${whoFirst} reclaimed first`);
        b2.close();
        sut.close();
      }
    });

  test('A noticing that a new B replaced the old one does not take away the slots the new B has allocated', async () => {
    const name = uniqueName('reopen-alloc');
    const sut = create(name, { slotSize: 4096, slotCount: 4 });
    const b1 = open(name);
    assert.equal(sut.peerAlive(), true, 'A saw the first B');
    b1.close();
    const b2 = open(name);
    const view = b2.tryAlloc(100);
    assert.ok(view !== null);
    view.fill(7);
    assert.equal(sut.peerAlive(), true, 'A notices the new B');
    assert.equal(sut.freeSlots, 3, 'the new B’s slot is still allocated');
    assert.equal(b2.trySend(view), true);
    const m = sut.tryRecv();
    assert.ok(m !== null);
    assert.deepEqual([m.length, m.data.every((b) => b === 7)], [100, true]);
    m.release();
    assert.equal(sut.freeSlots, 4);
  });

  test('a message’s data throws SHM_ERR_CLOSED once released, inline and in a slot', async () => {
    const seed = testSeed();
    const name = uniqueName('released');
    await start('session-idle', name, { create: { inlineMax: 16 }, seed, send: [8, 100] });
    const sut = open(name);
    const messages: SessionMessage[] = [await sut.recv({ timeoutMs: WAIT }), await sut.recv({ timeoutMs: WAIT })];
    assert.deepEqual(
      messages.map((m) => m.slot === -1),
      [true, false],
    );
    for (const [seq, msg] of messages.entries()) {
      assert.equal(checkPattern(msg.data, seed, seq), null);
      assert.equal(msg.released, false);
      msg.release();
      assert.equal(msg.released, true);
      assert.equal(msg.length, 0);
      assert.throws(
        () => msg.data,
        (err: unknown) => err instanceof ShmStateError && err.code === ErrorCode.CLOSED,
      );
    }
  });
});

describe('header validation', () => {
  const geometry = { ringCapacity: 64 * 1024, slotSize: 4096, slotCount: 4, inlineMax: 100 };
  const g = sessionGeometry(geometry);
  type Edit = (dv: DataView) => void;
  const u32 =
    (offset: number, value: number): Edit =>
    (dv) =>
      dv.setUint32(offset, value, true);
  const cases: { what: string; code: string | null; edit: Edit }[] = [
    { what: 'a wrong magic', code: ErrorCode.CORRUPT, edit: (dv) => dv.setUint8(MAGIC_OFFSET, 0x58) },
    { what: 'another layout version', code: ErrorCode.VERSION_MISMATCH, edit: u32(VERSION_OFFSET, 2) },
    { what: 'another segment kind', code: ErrorCode.KIND_MISMATCH, edit: u32(KIND_OFFSET, Kind.CHANNEL) },
    {
      what: 'session protocol major + 1',
      code: ErrorCode.VERSION_MISMATCH,
      edit: u32(PROTOCOL_OFFSET, (SESSION_PROTOCOL_MAJOR + 1) << 16),
    },
    { what: 'session protocol major 0', code: ErrorCode.VERSION_MISMATCH, edit: u32(PROTOCOL_OFFSET, 3) },
    {
      what: 'a paramsLength shorter than the session parameters',
      code: ErrorCode.CORRUPT,
      edit: u32(PARAMS_LENGTH_OFFSET, 8),
    },
    { what: 'slotCount 0', code: ErrorCode.CORRUPT, edit: u32(SLOT_COUNT_OFFSET, 0) },
    { what: 'slotCount 65536', code: ErrorCode.CORRUPT, edit: u32(SLOT_COUNT_OFFSET, 65536) },
    { what: 'slotCount + 1', code: ErrorCode.CORRUPT, edit: u32(SLOT_COUNT_OFFSET, geometry.slotCount + 1) },
    { what: 'a slotSize that is not a multiple of 8', code: ErrorCode.CORRUPT, edit: u32(SLOT_SIZE_OFFSET, 4100) },
    {
      what: 'a ringCapacity that is not a power of two',
      code: ErrorCode.CORRUPT,
      edit: u32(RING_CAPACITY_OFFSET, 3000),
    },
    { what: 'inlineMax above 65536', code: ErrorCode.CORRUPT, edit: u32(INLINE_MAX_OFFSET, 1 << 20) },
    { what: 'an inlineMax the ring is too small for', code: ErrorCode.CORRUPT, edit: u32(INLINE_MAX_OFFSET, 65536) },
    { what: 'a moved A->B area', code: ErrorCode.CORRUPT, edit: u32(AREA_AB_OFFSET, g.ab.blocksBase + 128 + 128) },
    { what: 'a moved slab', code: ErrorCode.CORRUPT, edit: u32(SLAB_OFFSET_OFFSET, g.slabOffset + 8) },
    { what: 'moved slots', code: ErrorCode.CORRUPT, edit: u32(SLOTS_OFFSET_OFFSET, g.slotsOffset + 4096) },
    {
      what: 'a segmentLength parameter that disagrees with the geometry',
      code: ErrorCode.CORRUPT,
      edit: u32(SEGMENT_LENGTH_PARAM_OFFSET, g.segmentLength + 4096),
    },
    {
      what: 'a consistent geometry larger than the file',
      code: ErrorCode.CORRUPT,
      edit: (dv) => writeSessionParams(dv, sessionGeometry({ ...geometry, slotCount: geometry.slotCount * 2 })),
    },
    {
      what: 'another minor version (accepted)',
      code: null,
      edit: u32(PROTOCOL_OFFSET, (SESSION_PROTOCOL_MAJOR << 16) | 7),
    },
    {
      what: 'minor version 0xffff (accepted)',
      code: null,
      edit: u32(PROTOCOL_OFFSET, (SESSION_PROTOCOL_MAJOR << 16) | 0xffff),
    },
  ];

  /** Writes `edit` over the segment's first 128 bytes and returns a function restoring them. */
  function editHeader(name: string, edit: Edit): () => void {
    const path = segmentFile(name);
    const original = new Uint8Array(128);
    const fd = openSync(path, 'r+');
    try {
      assert.equal(readSync(fd, original, 0, 128, 0), 128);
      const edited = original.slice();
      edit(new DataView(edited.buffer));
      writeSync(fd, edited, 0, 128, 0);
    } finally {
      closeSync(fd);
    }
    return () => {
      const back = openSync(path, 'r+');
      writeSync(back, original, 0, 128, 0);
      closeSync(back);
    };
  }

  for (const c of cases) {
    const title =
      c.code === null
        ? `opens a session header with ${c.what}`
        : `refuses a session header with ${c.what} with ${c.code}, and opens it once restored`;
    test(title, async () => {
      const name = uniqueName('header');
      await start('session-idle', name, { create: geometry });
      const restore = editHeader(name, c.edit);
      if (c.code === null) {
        const sut = open(name);
        assert.deepEqual([sut.slotSize, sut.slotCount, sut.inlineMax], [4096, 4, 100]);
        assert.equal(sut.peerAlive(), true);
        sut.close();
      } else assert.throws(() => Session.open(name), hasCode(c.code));
      restore();
      const sut = open(name);
      assert.deepEqual(
        [sut.slotSize, sut.slotCount, sut.inlineMax],
        [4096, 4, 100],
        'the refused opens left nothing held: the B role is free',
      );
    });
  }

  test('refuses a truncated session file with SHM_ERR_TRUNCATED', async () => {
    const name = uniqueName('truncated');
    const a = await start('session-idle', name, { create: geometry });
    a.kill('SIGKILL'); // nobody may touch the pages that truncation removes
    await a.exited(WAIT);
    for (const length of [g.segmentLength - 4096, g.slotsOffset, 100]) {
      const fd = openSync(segmentFile(name), 'r+');
      ftruncateSync(fd, length);
      closeSync(fd);
      assert.throws(() => Session.open(name), hasCode(ErrorCode.TRUNCATED), `truncated to ${length} B`);
    }
  });

  test('B discovers ringCapacity, slotSize, slotCount and inlineMax from the header A wrote', async () => {
    const name = uniqueName('discover');
    await start('session-idle', name, {
      create: { ringCapacity: 4096, slotSize: 520, slotCount: 7, inlineMax: 200 },
    });
    const sut = open(name);
    assert.deepEqual([sut.slotSize, sut.slotCount, sut.inlineMax, sut.freeSlots], [520, 7, 200, 7]);
    const g2 = sessionGeometry({ ringCapacity: 4096, slotSize: 520, slotCount: 7, inlineMax: 200 });
    const view = sut.tryAlloc(520);
    assert.ok(view !== null);
    assert.equal((view.byteOffset - g2.slotsOffset) % 520, 0, 'slots where A laid them out');
    sut.free(view);
  });
});

describe('both directions at once', () => {
  for (const wait of ['adaptive', 'park'] as const) {
    test(`two processes each send 5,000 messages of seeded sizes around and above the inline threshold while receiving the other's (${wait}), and every one arrives in order`, async () => {
      const seedA = testSeed();
      const seedB = seedA ^ 0x5bd1e995;
      const name = uniqueName('duplex');
      const total = 5000;
      const options = { ringCapacity: 1024, slotSize: 4096, slotCount: 8, inlineMax: 64, wait, livenessCheckMs: 100 };
      const a = await start('session-stream', name, { create: options, count: total, seed: seedA, peerSeed: seedB });
      const b = await start('session-stream', name, { open: { wait }, count: total, seed: seedB, peerSeed: seedA });
      const [doneA, doneB] = await Promise.all([a.waitFor(has('done'), 300_000), b.waitFor(has('done'), 300_000)]);
      const at = `seeds A ${seedA} B ${seedB}`;
      assert.deepEqual([doneA.sent, doneA.received, doneA.problem], [total, total, null], `A: ${at}`);
      assert.deepEqual([doneB.sent, doneB.received, doneB.problem], [total, total, null], `B: ${at}`);
      const final = await a.waitFor(has('closedSeen'), WAIT);
      assert.equal(final.closedSeen, ErrorCode.PEER_CLOSED, at);
      assert.equal(final.freeSlots, 8, `every slot is back: ${at}`);
      assert.deepEqual(await a.exited(WAIT), { code: 0, signal: null });
      assert.deepEqual(await b.exited(WAIT), { code: 0, signal: null });
    });
  }
});
