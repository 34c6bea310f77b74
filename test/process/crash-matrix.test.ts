/**
 * The crash matrix: for every primitive, a peer is stopped exactly at a protocol point (the
 * test hooks of src/core/test-hooks.ts: SHMBUS_TEST_STOP_AT makes it SIGSTOP itself there and
 * say so on stderr) and SIGKILLed while stopped. Then the survivors are checked: their waits
 * end within their deadline with the documented error (never SHM_ERR_TIMEOUT, which would be
 * a hang cut short), everything committed before the kill arrives exactly once and intact
 * (self-checking payloads, every byte compared), nothing claimed or half-written arrives,
 * slots, rings, client slots and chunks come back, and the survivor goes on with a new peer
 * or re-creates the object under the same name. No file of the row is left at the end.
 *
 * One table (`rows`) makes the tests and the table in docs/RELIABILITY.md:
 *   node dist/test/process/crash-matrix.test.js --table
 * Every run has its own segment directory under /dev/shm (SHMBUS_DIR for the children too).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, test } from 'node:test';
import {
  BlobHandle,
  BlobStore,
  Channel,
  Client,
  Consumer,
  cleanStale,
  Daemon,
  ErrorCode,
  type FanoutMessage,
  Hub,
  HubPeer,
  Sender,
  Session,
  ShmError,
} from '../../src/index.js';
import { checkPayload, handleHex, payloadFor } from '../fixtures/blob-pattern.js';
import { checkState, command, Op } from '../fixtures/daemon-protocol.js';
import { checkPattern, fillPattern } from '../fixtures/session-pattern.js';
import { type Child, killAtStop, startFixture, uniqueName, waitStopped } from '../helpers/children.js';
import { checkFrame, fillFrame } from '../helpers/prng.js';

interface Row {
  primitive: string;
  /** The process killed and its role. */
  victim: string;
  /** SHMBUS_TEST_STOP_AT of the victim (`point` or `point:N`). */
  point: string;
  /** What the survivor saw. */
  saw: string;
  /** What was checked after the kill. */
  checked: string;
  run: () => Promise<void>;
}

const WAIT = 20_000;
/** Deadline of every survivor wait: reaching it (SHM_ERR_TIMEOUT) fails the row. */
const SURVIVOR_MS = 5_000;
const SEED = 0x5eed;

const dir = mkdtempSync('/dev/shm/shmbus-crash-matrix-');
process.env.SHMBUS_DIR = dir;
const children: Child[] = [];
const cleanups: (() => unknown)[] = [];
/** Closes what the row left open here (survivors, new peers) and kills any child left. */
async function teardown(): Promise<void> {
  for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop())
    try {
      await c();
    } catch {}
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await child.exited(WAIT);
  }
}
afterEach(teardown);
after(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const files = () => readdirSync(dir).sort();
const filesOf = (name: string) =>
  files().filter((f) => f === `shmbus.${name}` || f.startsWith(`shmbus.${name}.`) || f.startsWith(`shmbus.${name}~`));
const pendingOf = (name: string) => files().filter((f) => f.startsWith(`shmbus.${name}~`));
let sockets = 0;
const socketPath = () => join(dir, `s${++sockets}.sock`);
/** Frame sizes of the channel rows (as the fixture's). */
const frameSize = (seq: number) => 8 + (seq % 200);
function frameOf(seq: number, size = frameSize(seq)): Uint8Array {
  const f = new Uint8Array(size);
  fillFrame(f, seq);
  return f;
}
const seqOf = (frame: Uint8Array) => new DataView(frame.buffer, frame.byteOffset).getUint32(0, true);

function defer<T extends { close(): unknown }>(x: T): T {
  cleanups.push(() => x.close());
  return x;
}

/** Starts the victim with its stop point. */
function victim(role: string, config: object, point: string): Child {
  const child = startFixture('crash-point', [role, JSON.stringify(config)], {
    SHMBUS_DIR: dir,
    SHMBUS_TEST_STOP_AT: point,
  });
  children.push(child);
  return child;
}

/** `p`, marked handled now: it may settle while the test awaits something else (checked later). */
function later<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

async function rejectsWith(p: Promise<unknown>, code: string, what: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ShmError, `${what}: ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    return true;
  });
}

function throwsWith(fn: () => unknown, code: string, what: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ShmError, `${what}: ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    return true;
  });
}

async function until(cond: () => boolean, what: () => string, ms = SURVIVOR_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what()}`);
    await sleep(5);
  }
}

// ------------------------------------------------------------------ channel

/** A producer stopped on frame `K` (frames 0..K-1 committed); the consumer is this process. */
function channelProducerRow(point: string, mode: 'send' | 'claim' | 'claim-half', state: string): Row {
  const K = 40;
  const stop = mode === 'claim-half' ? point : `${point}:${K + 1}`;
  return {
    primitive: 'channel',
    victim:
      mode === 'send'
        ? 'producer (sendSync)'
        : mode === 'claim'
          ? 'producer (claim/commit)'
          : "producer (claim/commit; stopped by the fixture in the application's copy)",
    point: stop,
    saw: `frames 0..${K - 1} intact, then \`recv\` rejects SHM_ERR_PEER_DEAD`,
    checked: `${state}; nothing of frame ${K} delivered; \`create\` of the name replaces the segment and a new consumer receives from it`,
    run: async () => {
      const name = uniqueName('ch-producer');
      const child = victim('channel-producer', { name, count: 1000, mode, stopFrame: K }, stop);
      await child.waitFor((m) => m.ready === true, WAIT);
      const rx = defer(Channel.open(name, { livenessCheckMs: 20 }));
      const got: number[] = [];
      const reading = later(
        (async () => {
          for (;;) {
            const frame = await rx.recv({ timeoutMs: SURVIVOR_MS });
            assert.ok(frame !== null, 'end of stream from a producer that never closed');
            assert.equal(checkFrame(frame, got.length, frameSize(got.length)), null);
            got.push(got.length);
          }
        })(),
      );
      await killAtStop(child, stop);
      await rejectsWith(reading, ErrorCode.PEER_DEAD, 'the consumer waiting on a killed producer');
      assert.equal(got.length, K, 'every committed frame, and only those');
      assert.equal(rx.tryRecv(), null);
      // The name is taken over by a new producer; a new consumer gets its frames.
      const tx = defer(Channel.create(name, { capacity: 1 << 16 }));
      rx.close();
      const rx2 = defer(Channel.open(name));
      assert.equal(tx.trySend(frameOf(0)), true);
      const first = rx2.tryRecv();
      assert.ok(first !== null && checkFrame(first, 0, frameSize(0)) === null);
      tx.close();
      rx2.close();
      assert.deepEqual(filesOf(name), []);
    },
  };
}

const channelConsumerRow: Row = {
  primitive: 'channel',
  victim: 'consumer',
  point: 'channel.holding-frame:41',
  saw: 'the producer fills the ring, then `send` rejects SHM_ERR_PEER_DEAD',
  checked:
    'a new consumer opens the channel and resumes at the last published head: frame 40 (held) and at most 15 before it again, then every later frame once, in order, intact, to the end of stream',
  run: async () => {
    const name = uniqueName('ch-consumer');
    const tx = defer(Channel.create(name, { capacity: 1 << 16, livenessCheckMs: 20 }));
    const child = victim('channel-consumer', { name }, 'channel.holding-frame:41');
    await child.waitFor((m) => m.ready === true, WAIT);
    let seq = 0;
    for (; seq < 100; seq++) assert.equal(tx.trySend(frameOf(seq)), true);
    await killAtStop(child, 'channel.holding-frame:41');
    let failure: unknown = null;
    for (; failure === null; seq++)
      await tx.send(frameOf(seq), { timeoutMs: SURVIVOR_MS }).catch((err) => {
        failure = err;
      });
    seq--; // the frame whose send failed was not written
    await rejectsWith(Promise.reject(failure), ErrorCode.PEER_DEAD, 'the producer of a dead consumer');
    const rx = defer(Channel.open(name));
    const first = rx.tryRecv();
    assert.ok(first !== null);
    const from = seqOf(first);
    assert.ok(from <= 40 && 40 - from < 16, `resumed at frame ${from}, the dead consumer held frame 40`);
    assert.equal(checkFrame(first, from, frameSize(from)), null);
    for (let next = from + 1; next < seq; next++) {
      const frame = rx.tryRecv();
      assert.ok(frame !== null, `frame ${next} of ${seq}`);
      assert.equal(checkFrame(frame, next, frameSize(next)), null);
    }
    for (let k = 0; k < 10; k++) await tx.send(frameOf(seq + k), { timeoutMs: SURVIVOR_MS });
    tx.close();
    for (let k = 0; k < 10; k++) {
      const frame = await rx.recv({ timeoutMs: SURVIVOR_MS });
      assert.ok(frame !== null && checkFrame(frame, seq + k, frameSize(seq + k)) === null);
    }
    assert.equal(await rx.recv({ timeoutMs: SURVIVOR_MS }), null, 'end of stream');
    rx.close();
    assert.deepEqual(filesOf(name), []);
  },
};

const segmentRows: Row[] = [
  {
    primitive: 'segment (channel create)',
    victim: 'creator',
    point: 'segment.before-link',
    saw: '`open` fails SHM_ERR_NOT_FOUND (the name never existed)',
    checked: "the dead creator's `name~pid.random` file is removed by the next `create` of the name, which works",
    run: async () => {
      const name = uniqueName('seg-before');
      const child = victim('channel-create', { name }, 'segment.before-link');
      await killAtStop(child, 'segment.before-link');
      assert.equal(pendingOf(name).length, 1, 'the half-made file');
      throwsWith(() => Channel.open(name), ErrorCode.NOT_FOUND, 'open of a name never linked');
      const tx = defer(Channel.create(name, { capacity: 1 << 16 }));
      assert.deepEqual(pendingOf(name), []);
      const rx = defer(Channel.open(name));
      assert.equal(tx.trySend(frameOf(1)), true);
      const f = rx.tryRecv();
      assert.ok(f !== null && checkFrame(f, 1, frameSize(1)) === null);
      tx.close();
      rx.close();
      assert.deepEqual(filesOf(name), []);
    },
  },
  {
    primitive: 'segment (channel create)',
    victim: 'creator',
    point: 'segment.after-link',
    saw: '`open` works (the segment is complete: the version is published before the link); `recv` rejects SHM_ERR_PEER_DEAD',
    checked: 'the next `create` replaces the segment and removes the `~` file',
    run: async () => {
      const name = uniqueName('seg-after');
      const child = victim('channel-create', { name }, 'segment.after-link');
      await killAtStop(child, 'segment.after-link');
      assert.equal(pendingOf(name).length, 1, 'the `~` name not yet removed');
      const rx = defer(Channel.open(name, { livenessCheckMs: 20 }));
      await rejectsWith(rx.recv({ timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'recv from a dead creator');
      const tx = defer(Channel.create(name, { capacity: 1 << 16 }));
      assert.deepEqual(pendingOf(name), []);
      rx.close();
      const rx2 = defer(Channel.open(name));
      assert.equal(tx.trySend(frameOf(2)), true);
      const f = rx2.tryRecv();
      assert.ok(f !== null && checkFrame(f, 2, frameSize(2)) === null);
      tx.close();
      rx2.close();
      assert.deepEqual(filesOf(name), []);
    },
  },
];

// ------------------------------------------------------------------ fan-out

async function listen(path: string): Promise<Sender> {
  const sender = await Sender.listen({ path, capacity: 1 << 16, kinds: { 1: 'always' }, idleTimeoutMs: 0 });
  cleanups.push(() => sender.close());
  return sender;
}

/** `consumer` gets a message published by `sender` (published until it arrives: it may be reconnecting). */
async function exchange(sender: Sender, consumer: Consumer, seq: number): Promise<void> {
  const got = consumer.next();
  const payload = frameOf(seq, 100);
  let done = false;
  const publishing = (async () => {
    while (!done) {
      if (sender.consumerCount > 0) {
        sender.publish({ kind: 1, payload });
        return;
      }
      await sleep(5);
    }
  })();
  const timer = setTimeout(() => {
    done = true;
  }, SURVIVOR_MS);
  const m = (await got) as FanoutMessage | null;
  clearTimeout(timer);
  done = true;
  await publishing;
  assert.ok(m !== null, 'a message from the new sender');
  assert.equal(checkFrame(m.payload, seq, 100), null);
}

const ringFilesOf = (pid: number) => files().filter((f) => f.startsWith(`shmbus.fanout-${pid}-`));

async function drainConsumer(consumer: Consumer, into: number[]): Promise<unknown> {
  try {
    for (;;) {
      const m = await consumer.next();
      if (m === null) return null;
      assert.equal(checkFrame(m.payload, into.length, 100), null);
      into.push(into.length);
    }
  } catch (err) {
    return err;
  }
}

const fanoutRows: Row[] = [
  {
    primitive: 'fan-out',
    victim: 'sender, mid-handshake',
    point: 'fanout.sender.before-ready',
    saw: '`Consumer.connect` rejects SHM_ERR_DISCONNECTED (the sender closed during the handshake)',
    checked:
      'the ring the sender made for it (owner dead, never opened) is removed by `cleanStale()`; a new sender on the same socket path serves a new consumer',
    run: async () => {
      const path = socketPath();
      const child = victim('fanout-sender', { path, consumers: 1, count: 0 }, 'fanout.sender.before-ready');
      await child.waitFor((m) => m.ready === true, WAIT);
      const connecting = later(Consumer.connect(path, { connectTimeoutMs: SURVIVOR_MS }));
      await killAtStop(child, 'fanout.sender.before-ready');
      await rejectsWith(connecting, ErrorCode.DISCONNECTED, 'connect to a sender killed mid-handshake');
      const orphans = ringFilesOf(child.proc.pid as number);
      assert.equal(orphans.length, 1, 'the ring made for the consumer');
      const report = cleanStale({ dir });
      assert.deepEqual(
        report.removed.map((r) => r.file).filter((f) => orphans.includes(f)),
        orphans,
      );
      assert.deepEqual(ringFilesOf(child.proc.pid as number), []);
      const sender = await listen(path);
      const consumer = defer(await Consumer.connect(path));
      await exchange(sender, consumer, 7);
    },
  },
  {
    primitive: 'fan-out',
    victim: 'sender, mid-handshake',
    point: 'fanout.sender.after-ready',
    saw: "the consumer's `connect` resolved; then 'disconnected' (socket EOF) and its ring ends with the sender dead",
    checked:
      'the consumer removes the ring file when it retires it; with `reconnect` it reconnects to a new sender on the same path and receives',
    run: async () => {
      const path = socketPath();
      const child = victim('fanout-sender', { path, consumers: 99, count: 0 }, 'fanout.sender.after-ready');
      await child.waitFor((m) => m.ready === true, WAIT);
      const consumer = defer(
        await Consumer.connect(path, {
          connectTimeoutMs: SURVIVOR_MS,
          reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
        }),
      );
      const disconnected = new Promise((r) => consumer.once('disconnected', r));
      await killAtStop(child, 'fanout.sender.after-ready');
      await disconnected;
      const sender = await listen(path);
      await exchange(sender, consumer, 8);
      assert.equal(consumer.metrics().reconnects, 1);
      assert.deepEqual(ringFilesOf(child.proc.pid as number), [], "the dead sender's ring");
    },
  },
  {
    primitive: 'fan-out',
    victim: 'sender, mid-write into a ring',
    point: 'ring.after-copy:62',
    saw: 'consumer A (served first) messages 0..30, consumer B 0..29, then both SHM_ERR_DISCONNECTED',
    checked:
      'message 30 was committed to A only (B got its copy but not its record header): each consumer gets exactly what was committed to its ring, intact and in order; both rings are removed; a new sender takes over the socket path',
    run: async () => {
      const path = socketPath();
      const child = victim('fanout-sender', { path, consumers: 2, count: 1000 }, 'ring.after-copy:62');
      await child.waitFor((m) => m.ready === true, WAIT);
      const a = defer(await Consumer.connect(path, { name: 'A' }));
      const b = defer(await Consumer.connect(path, { name: 'B' }));
      const gotA: number[] = [];
      const gotB: number[] = [];
      const ends = Promise.all([drainConsumer(a, gotA), drainConsumer(b, gotB)]);
      await killAtStop(child, 'ring.after-copy:62');
      for (const end of await ends) await rejectsWith(Promise.reject(end), ErrorCode.DISCONNECTED, 'after the sender');
      assert.deepEqual([gotA.length, gotB.length], [31, 30]);
      assert.deepEqual(ringFilesOf(child.proc.pid as number), []);
      // A new sender takes over the dead one's socket path and serves a new consumer.
      const sender = await listen(path);
      const c = defer(await Consumer.connect(path));
      await exchange(sender, c, 10);
    },
  },
  ...(['fanout.consumer.after-hello', 'fanout.consumer.after-ready'] as const).map(
    (point): Row => ({
      primitive: 'fan-out',
      victim: 'consumer, mid-handshake',
      point,
      saw:
        point === 'fanout.consumer.after-hello'
          ? 'the sender handles HELLO (makes the ring, sends READY) or finds the socket closed'
          : "the sender has a live consumer; the socket's EOF drops it ('disconnect')",
      checked: 'the sender removes the ring and eventfd (no ring file left, consumerCount 0) and serves a new consumer',
      run: async () => {
        const path = socketPath();
        const sender = await listen(path);
        let joined = 0;
        sender.on('consumer', () => joined++);
        const child = victim('fanout-consumer', { path }, point);
        await killAtStop(child, point);
        await until(
          () => sender.consumerCount === 0 && ringFilesOf(process.pid).length === 0,
          () => `consumers ${sender.consumerCount}, rings ${ringFilesOf(process.pid)}`,
        );
        if (point === 'fanout.consumer.after-ready') {
          assert.equal(joined, 1);
          await until(
            () => sender.metrics().disconnects === 1,
            () => JSON.stringify(sender.metrics()),
          );
        }
        const consumer = defer(await Consumer.connect(path));
        await exchange(sender, consumer, 9);
      },
    }),
  ),
  {
    primitive: 'fan-out',
    victim: 'consumer holding a message',
    point: 'channel.holding-frame:21',
    saw: "the sender drops the consumer ('disconnect') and keeps publishing",
    checked: "the other consumer receives all 100 messages in order, intact; the dead one's ring is removed",
    run: async () => {
      const path = socketPath();
      const sender = await listen(path);
      const b = defer(await Consumer.connect(path, { name: 'B' }));
      const child = victim('fanout-consumer', { path }, 'channel.holding-frame:21');
      await until(
        () => sender.consumerCount === 2,
        () => `${sender.consumerCount} consumers`,
        WAIT,
      );
      const victimRing = sender.consumers().find((c) => c.pid === child.proc.pid)?.ring;
      assert.ok(victimRing);
      const payload = new Uint8Array(100);
      for (let seq = 0; seq < 50; seq++) {
        fillFrame(payload, seq);
        assert.equal(sender.publish({ kind: 1, payload }), 2);
      }
      await killAtStop(child, 'channel.holding-frame:21');
      await until(
        () => sender.consumerCount === 1,
        () => `${sender.consumerCount} consumers`,
      );
      for (let seq = 50; seq < 100; seq++) {
        fillFrame(payload, seq);
        assert.equal(sender.publish({ kind: 1, payload }), 1);
      }
      for (let seq = 0; seq < 100; seq++) {
        const m = (await b.next()) as FanoutMessage;
        assert.equal(checkFrame(m.payload, seq, 100), null);
      }
      assert.deepEqual(
        files().filter((f) => f === `shmbus.${victimRing}`),
        [],
      );
    },
  },
];

// ------------------------------------------------------------------ daemon / client

const DATA_SIZE = 1024;

function echoDaemon(name: string, recorded: string[] = []): Daemon {
  const d = defer(Daemon.create(name, { dataSize: DATA_SIZE, maxClients: 1, livenessCheckMs: 20 }));
  const server = d.serve((_, cmd) => {
    if (cmd[0] === Op.RECORD) {
      recorded.push(Buffer.from(cmd.subarray(1)).toString());
      return undefined;
    }
    recorded.push(`echo ${Buffer.from(cmd.subarray(1)).toString()}`);
    return cmd.slice();
  });
  cleanups.push(() => server.stop());
  return d;
}

async function echoes(c: Client, text: string): Promise<void> {
  const reply = await c.request(command(Op.ECHO, text), { timeoutMs: SURVIVOR_MS });
  assert.deepEqual(Array.from(reply), Array.from(command(Op.ECHO, text)));
}

/** A new daemon takes the name; a new client gets its requests answered. */
async function daemonRecreated(name: string): Promise<void> {
  echoDaemon(name);
  const c = defer(Client.connect(name, { livenessCheckMs: 20 }));
  await echoes(c, 'after');
}

/** `served`: the commands committed before the stop (RECORD bodies 0..served-1). */
function clientRow(point: string, served: number, request: boolean, saw: string, checked: string): Row {
  return {
    primitive: 'daemon / client',
    victim: 'client',
    point,
    saw,
    checked,
    run: async () => {
      const name = uniqueName('client');
      const recorded: string[] = [];
      const d = echoDaemon(name, recorded);
      const child = victim('client', { name, sends: request ? 0 : 100, request }, point);
      if (point === 'client.slot-locked') {
        await waitStopped(child, point);
        throwsWith(
          () => Client.connect(name, { connectTimeoutMs: 100 }),
          ErrorCode.REFUSED,
          'the only slot, locked by a live client',
        );
      }
      await killAtStop(child, point);
      const expected = Array.from({ length: served }, (_, i) => String(i));
      if (request) expected.push('echo victim');
      if (point.startsWith('client.slot-')) {
        if (point === 'client.slot-claimed')
          await until(
            () => d.stats().reclaimed === 1,
            () => JSON.stringify(d.stats()),
          );
        const c = defer(Client.connect(name, { livenessCheckMs: 20, connectTimeoutMs: SURVIVOR_MS }));
        await echoes(c, 'survivor');
        assert.deepEqual(recorded, ['echo survivor']);
        assert.equal(d.stats().reclaimed, point === 'client.slot-claimed' ? 1 : 0);
      } else {
        await until(
          () => d.stats().reclaimed === 1,
          () => JSON.stringify(d.stats()),
        );
        assert.deepEqual(recorded, expected, 'the commands the client committed, each once');
        assert.deepEqual(d.clients(), []);
        const c = defer(Client.connect(name, { livenessCheckMs: 20 }));
        await echoes(c, 'survivor');
        assert.deepEqual(recorded, [...expected, 'echo survivor']);
      }
    },
  };
}

const daemonRows: Row[] = [
  {
    primitive: 'daemon / client',
    victim: 'daemon, mid-publish of the state',
    point: 'state.mid-write:20',
    saw: '`readData` returns version 19 complete; `waitData` and `request` reject SHM_ERR_PEER_DEAD',
    checked:
      'every word of the snapshot matches its version (the cell of version 20 had its header, not its data); `create` of the name works and serves a new client',
    run: async () => {
      const name = uniqueName('daemon-state');
      const child = victim('daemon', { name, states: 100, serve: false }, 'state.mid-write:20');
      await child.waitFor((m) => m.ready === true, WAIT);
      const c = defer(Client.connect(name, { livenessCheckMs: 20 }));
      await killAtStop(child, 'state.mid-write:20');
      const buf = new Uint8Array(DATA_SIZE);
      const n = c.readData(buf);
      assert.equal(c.dataVersion, 19);
      assert.equal(checkState(buf, n, 19, DATA_SIZE), null);
      await rejectsWith(c.waitData({ sinceVersion: 19, timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'waitData');
      await rejectsWith(c.request(command(Op.ECHO, 'x'), { timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'request');
      c.close();
      await daemonRecreated(name);
    },
  },
  {
    primitive: 'daemon / client',
    victim: 'daemon, mid-response write',
    point: 'daemon.mid-reply:5',
    saw: 'requests 1-4 answered; request 5 rejects SHM_ERR_PEER_DEAD',
    checked: 'no partial reply is delivered; `create` of the name works and serves a new client',
    run: async () => {
      const name = uniqueName('daemon-reply');
      const child = victim('daemon', { name, states: 0, serve: true }, 'daemon.mid-reply:5');
      await child.waitFor((m) => m.ready === true, WAIT);
      const c = defer(Client.connect(name, { livenessCheckMs: 20 }));
      for (let i = 1; i <= 4; i++) await echoes(c, `r${i}`);
      const fifth = later(c.request(command(Op.ECHO, 'r5'), { timeoutMs: SURVIVOR_MS }));
      await killAtStop(child, 'daemon.mid-reply:5');
      await rejectsWith(fifth, ErrorCode.PEER_DEAD, 'the request being answered');
      c.close();
      await daemonRecreated(name);
    },
  },
  clientRow(
    'client.command-claimed:31',
    30,
    false,
    'commands 0..29 served; the serve loop goes on',
    "command 30 (claimed, not written) is never served; the dead client's slot is reclaimed (maxClients 1) and a new client is answered",
  ),
  clientRow(
    'ring.before-publish:31',
    30,
    false,
    'commands 0..29 served; the serve loop goes on',
    'command 30 (written, tail not published) is never served; the slot is reclaimed and a new client is answered',
  ),
  clientRow(
    'client.awaiting-reply',
    0,
    true,
    'the committed request is served once',
    "the slot is reclaimed; the new client in that slot gets its own reply, never the dead client's",
  ),
  clientRow(
    'client.slot-locked',
    0,
    false,
    'while the victim is stopped: `Client.connect` SHM_ERR_REFUSED (its only slot is locked by a live process)',
    'after the kill the slot is free at once (still FREE, lock gone): a new client connects, nothing to reclaim',
  ),
  clientRow(
    'client.slot-claimed',
    0,
    false,
    'a slot CLAIMED, the claim sequence not bumped',
    "the daemon's liveness sweep finds the dead client's slot all the same and frees it; a new client connects and is answered",
  ),
];

// ------------------------------------------------------------------ session

const SLOTS = 8;

function createSession(name: string): Session {
  return defer(
    Session.create(name, { slotSize: 4096, slotCount: SLOTS, inlineMax: 64, livenessCheckMs: 20, startupMs: WAIT }),
  );
}

async function sendPattern(s: Session | HubPeer, seq: number, length: number): Promise<void> {
  const view = await s.alloc(length, { timeoutMs: SURVIVOR_MS });
  fillPattern(view, SEED, seq);
  await s.send(view, { channel: seq, timeoutMs: SURVIVOR_MS });
}

/** A new B opens and both directions work; every slot is free again afterwards. */
async function sessionGoesOn(a: Session, name: string): Promise<void> {
  const b = defer(Session.open(name, { livenessCheckMs: 20 }));
  await sendPattern(b, 1000, 2000);
  const m = await a.recv({ timeoutMs: SURVIVOR_MS });
  assert.equal(checkPattern(m.data, SEED, 1000, 2000), null);
  m.release();
  await sendPattern(a, 1001, 2000);
  const n = await b.recv({ timeoutMs: SURVIVOR_MS });
  assert.equal(checkPattern(n.data, SEED, 1001, 2000), null);
  n.release();
  assert.equal(a.freeSlots, SLOTS);
  b.close();
}

function sessionSenderRow(point: string, state: string): Row {
  return {
    primitive: 'session',
    victim: 'peer B, sending',
    point,
    saw: 'messages 0..2 intact, then `recv` rejects SHM_ERR_PEER_DEAD',
    checked: `${state}: every slot comes back to the free list; a new B exchanges messages both ways`,
    run: async () => {
      const name = uniqueName('session-send');
      const a = createSession(name);
      const child = victim('session-b', { name, seed: SEED, sends: 10 }, point);
      await killAtStop(child, point);
      for (let seq = 0; seq < 3; seq++) {
        const m = await a.recv({ timeoutMs: SURVIVOR_MS });
        assert.equal(m.channel, seq);
        assert.equal(checkPattern(m.data, SEED, seq, 1000), null);
        m.release();
      }
      await rejectsWith(a.recv({ timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'recv from a dead B');
      assert.equal(a.freeSlots, SLOTS, 'slots after the dead B');
      await sessionGoesOn(a, name);
    },
  };
}

const sessionRows: Row[] = [
  {
    primitive: 'session',
    victim: 'peer B holding slots',
    point: 'session.holding-slot:3',
    saw: '`recv` rejects SHM_ERR_PEER_DEAD',
    checked: 'the 3 slots B allocated come back; a new B exchanges messages both ways',
    run: async () => {
      const name = uniqueName('session-hold');
      const a = createSession(name);
      const child = victim('session-b', { name, seed: SEED, hold: 5 }, 'session.holding-slot:3');
      await killAtStop(child, 'session.holding-slot:3');
      assert.equal(a.freeSlots, SLOTS - 3);
      await rejectsWith(a.recv({ timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'recv from a dead B');
      assert.equal(a.freeSlots, SLOTS);
      await sessionGoesOn(a, name);
    },
  },
  sessionSenderRow('session.in-flight:4', 'message 3 (slot IN_FLIGHT, no descriptor) never arrives'),
  sessionSenderRow('ring.before-publish:4', 'message 3 (descriptor written, tail not published) never arrives'),
  {
    primitive: 'session',
    victim: 'peer B holding a received message',
    point: 'session.holding-message:3',
    saw: '`recv` rejects SHM_ERR_PEER_DEAD',
    checked:
      'the slot of the message B held is freed; messages 3..5 still in the ring stay in flight and a new B receives exactly those, intact; then every slot is free',
    run: async () => {
      const name = uniqueName('session-recv');
      const a = createSession(name);
      for (let seq = 0; seq < 6; seq++) await sendPattern(a, seq, 1000);
      const child = victim('session-b', { name, seed: SEED, recv: 10 }, 'session.holding-message:3');
      await killAtStop(child, 'session.holding-message:3');
      await rejectsWith(a.recv({ timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'recv from a dead B');
      assert.equal(a.freeSlots, SLOTS - 3, 'messages 3..5 are still in flight');
      const b = defer(Session.open(name, { livenessCheckMs: 20 }));
      for (let seq = 3; seq < 6; seq++) {
        const m = await b.recv({ timeoutMs: SURVIVOR_MS });
        assert.equal(m.channel, seq);
        assert.equal(checkPattern(m.data, SEED, seq, 1000), null);
        m.release();
      }
      assert.equal(b.tryRecv(), null);
      assert.equal(a.freeSlots, SLOTS);
      b.close();
      await sessionGoesOn(a, name);
    },
  },
  {
    primitive: 'session',
    victim: 'peer A (creator), sending',
    point: 'ring.before-publish:4',
    saw: 'B receives messages 0..2 intact, then `recv` rejects SHM_ERR_PEER_DEAD',
    checked: 'message 3 never arrives; `create` of the name replaces the session and a new pair exchanges messages',
    run: async () => {
      const name = uniqueName('session-a');
      const child = victim('session-a', { name, seed: SEED, sends: 10 }, 'ring.before-publish:4');
      await killAtStop(child, 'ring.before-publish:4');
      const b = defer(Session.open(name, { livenessCheckMs: 20 }));
      for (let seq = 0; seq < 3; seq++) {
        const m = await b.recv({ timeoutMs: SURVIVOR_MS });
        assert.equal(m.channel, seq);
        assert.equal(checkPattern(m.data, SEED, seq, 1000), null);
        m.release();
      }
      await rejectsWith(b.recv({ timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'recv from a dead A');
      const a2 = createSession(name);
      b.close();
      await sessionGoesOn(a2, name);
      a2.close();
      assert.deepEqual(filesOf(name), []);
    },
  },
];

// ------------------------------------------------------------------ hub

function createHub(name: string): Hub {
  return defer(
    Hub.create(name, {
      maxPeers: 2,
      classes: [
        { slotSize: 1024, slotCount: 8 },
        { slotSize: 4096, slotCount: 8 },
      ],
      livenessCheckMs: 20,
    }),
  );
}

/** A new peer joins and both directions work; every slot is free again afterwards. */
async function hubGoesOn(host: Hub, name: string): Promise<void> {
  const peer = defer(HubPeer.join(name, { livenessCheckMs: 20 }));
  await sendPattern(peer, 2000, 3000);
  const m = await host.recv({ timeoutMs: SURVIVOR_MS });
  assert.equal(checkPattern(m.data, SEED, 2000, 3000), null);
  m.release();
  const view = await host.alloc(700, { timeoutMs: SURVIVOR_MS });
  fillPattern(view, SEED, 2001);
  await host.send(peer.peerId, view, { channel: 2001, timeoutMs: SURVIVOR_MS });
  const n = await peer.recv({ timeoutMs: SURVIVOR_MS });
  assert.equal(checkPattern(n.data, SEED, 2001, 700), null);
  n.release();
  assert.deepEqual(host.freeSlots(), [8, 8]);
  peer.close();
}

function hubSenderRow(point: string, state: string): Row {
  return {
    primitive: 'hub',
    victim: 'peer, sending',
    point,
    saw: 'the host receives messages 0..1 intact, then reclaims the dead peer',
    checked: `${state}: every slot of both classes comes back; a new peer exchanges messages both ways`,
    run: async () => {
      const name = uniqueName('hub-send');
      const host = createHub(name);
      const child = victim('hub-peer', { name, seed: SEED, sends: 10 }, point);
      await killAtStop(child, point);
      for (let seq = 0; seq < 2; seq++) {
        const m = await host.recv({ timeoutMs: SURVIVOR_MS });
        assert.equal(m.channel, seq);
        assert.equal(checkPattern(m.data, SEED, seq, 3000), null);
        m.release();
      }
      await until(
        () => {
          host.reclaim();
          return host.peers().length === 0;
        },
        () => JSON.stringify(host.peers()),
      );
      assert.equal(host.tryRecv(), null, 'message 2 never arrives');
      assert.deepEqual(host.freeSlots(), [8, 8], 'slots after the dead peer');
      await hubGoesOn(host, name);
    },
  };
}

const hubRows: Row[] = [
  {
    primitive: 'hub',
    victim: 'peer holding slots of both classes and 2 received messages',
    point: 'hub.holding-slot:4',
    saw: 'the host reclaims the dead peer on its next sweep',
    checked:
      'the 4 allocated slots (both classes) and the 2 slots of messages it held come back; its entry is free; a new peer exchanges messages both ways',
    run: async () => {
      const name = uniqueName('hub-hold');
      const host = createHub(name);
      const child = victim('hub-peer', { name, seed: SEED, recv: 2, hold: 8 }, 'hub.holding-slot:4');
      const ready = await child.waitFor((m) => m.ready === true, WAIT);
      for (let seq = 0; seq < 2; seq++) {
        const view = await host.alloc(3000, { timeoutMs: SURVIVOR_MS });
        fillPattern(view, SEED, seq);
        await host.send(ready.peerId as number, view, { channel: seq, timeoutMs: SURVIVOR_MS });
      }
      await killAtStop(child, 'hub.holding-slot:4');
      assert.deepEqual(host.freeSlots(), [6, 4]);
      await until(
        () => {
          host.reclaim();
          return host.peers().length === 0;
        },
        () => JSON.stringify(host.peers()),
      );
      assert.deepEqual(host.freeSlots(), [8, 8]);
      await hubGoesOn(host, name);
    },
  },
  hubSenderRow('hub.in-flight:3', 'message 2 (slot handed over to the host, no descriptor) never arrives'),
  hubSenderRow('ring.before-publish:3', 'message 2 (descriptor written, tail not published) never arrives'),
  {
    primitive: 'hub',
    victim: 'host, mid-reclaim of a dead peer',
    point: 'hub.mid-reclaim',
    saw: 'a peer waiting in `recv` gets SHM_ERR_PEER_DEAD',
    checked: '`create` of the name replaces the hub; a new peer exchanges messages both ways',
    run: async () => {
      const name = uniqueName('hub-host');
      const child = victim('hub-host', { name }, 'hub.mid-reclaim');
      await child.waitFor((m) => m.ready === true, WAIT);
      const gone = HubPeer.join(name, { livenessCheckMs: 20 });
      const peer = defer(HubPeer.join(name, { livenessCheckMs: 20 }));
      gone.tryAlloc(500);
      gone.close(); // its lock goes: the host reclaims it and stops half-way
      await killAtStop(child, 'hub.mid-reclaim');
      await rejectsWith(peer.recv({ timeoutMs: SURVIVOR_MS }), ErrorCode.PEER_DEAD, 'recv from a dead host');
      peer.close();
      const host = createHub(name);
      await hubGoesOn(host, name);
      host.close();
      assert.deepEqual(filesOf(name), []);
    },
  },
];

// ------------------------------------------------------------------ blob store

/** TTL of the blob rows: long enough for a loaded machine to resolve the victim's handles first. */
const TTL_MS = 1500;

function createStore(name: string, ttlMs = TTL_MS): BlobStore {
  return defer(BlobStore.create(name, { chunkSize: 4096, ttlMs, decayMs: 0, maxChunks: 8, leaseTimeoutMs: 500 }));
}

const chunkFilesOnDisk = (name: string) => filesOf(name).filter((f) => f !== `shmbus.${name}`);
const tableFiles = (store: BlobStore) => store.chunkFiles().map((p) => p.slice(dir.length + 1));

/** Every chunk in `chunks` (paths) is freed once acknowledged or expired; disk and table agree. */
async function chunksDrain(store: BlobStore, name: string, chunks: string[]): Promise<void> {
  await until(
    () => {
      store.cleanup();
      return chunks.every((c) => !store.chunkFiles().includes(c));
    },
    () => `chunks left ${chunks.filter((c) => store.chunkFiles().includes(c))}, stats ${JSON.stringify(store.stats())}`,
    SURVIVOR_MS + TTL_MS,
  );
  assert.deepEqual(chunkFilesOnDisk(name), tableFiles(store).sort(), 'files on disk = the table');
  store.close();
  assert.deepEqual(filesOf(name), []);
}

function blobWriterRow(point: string, state: string): Row {
  return {
    primitive: 'blob store',
    victim: 'writer (attached), appending 3000 B entries',
    point,
    saw: "its 2 completed handles resolve intact; this process's appends go on",
    checked: `${state}; every chunk that existed at the kill is freed once its entries are acknowledged or expired (TTL 1.5 s); no file outside the table`,
    run: async () => {
      const name = uniqueName('blob-writer');
      const store = createStore(name);
      const child = victim('blob-writer', { name, seed: SEED, count: 10, size: 3000 }, point);
      await killAtStop(child, point);
      const handles = child.messages.filter((m) => m.h !== undefined);
      assert.equal(handles.length, 2);
      const hs = handles.map((m) => BlobHandle.fromBytes(Buffer.from(m.h as string, 'hex')));
      for (const [seq, h] of hs.entries()) {
        const got = store.resolve(h);
        assert.ok(got !== null);
        assert.equal(checkPayload(got, SEED, 7, seq, 3000), null);
      }
      const atKill = store.chunkFiles();
      for (let seq = 0; seq < 2; seq++) {
        const h = store.append(payloadFor(SEED, 8, seq, 3000));
        const got = store.resolve(h);
        assert.ok(got !== null && checkPayload(got, SEED, 8, seq, 3000) === null);
        hs.push(h);
      }
      for (const h of hs) store.ack(h);
      await chunksDrain(store, name, atKill);
    },
  };
}

const blobRows: Row[] = [
  blobWriterRow(
    'blob.after-reserve:3',
    'the 3rd append (bytes reserved, `writers` 1, nothing written) returned no handle',
  ),
  blobWriterRow('blob.mid-copy:3', 'the 3rd append (entry header written, payload not) returned no handle'),
  blobWriterRow(
    'blob.before-count:3',
    'the 3rd append (entry complete, not counted, `writers` still 1) returned no handle',
  ),
  {
    primitive: 'blob store',
    victim: 'reader holding a view (lease)',
    point: 'blob.holding-view',
    saw: 'a dead lease: the acknowledged, sealed chunk is kept',
    checked: 'the entry still resolves intact; cleanup keeps the chunk until leaseTimeoutMs (500 ms), then frees it',
    run: async () => {
      const name = uniqueName('blob-view');
      const store = createStore(name, 60_000); // the handle must not expire before the child views it
      const h = store.append(payloadFor(SEED, 1, 0, 3000));
      const leased = store.chunkFiles();
      const child = victim('blob-viewer', { name, handle: handleHex(h) }, 'blob.holding-view');
      await killAtStop(child, 'blob.holding-view');
      store.ack(h);
      store.append(payloadFor(SEED, 1, 1, 3000)); // the head moves on: the leased chunk is sealed
      store.cleanup();
      assert.ok(
        leased.every((c) => store.chunkFiles().includes(c)),
        'a lease younger than leaseTimeoutMs keeps its chunk',
      );
      const got = store.resolve(h);
      assert.ok(got !== null && checkPayload(got, SEED, 1, 0, 3000) === null);
      await chunksDrain(store, name, leased);
    },
  },
  ...(
    [
      ['blob.chunk-claimed', 'a table entry CREATING under a dead pid, no file'],
      ['blob.chunk-created', 'a table entry CREATING under a dead pid, its chunk file linked'],
      ['segment.before-link', "a table entry CREATING under a dead pid, the chunk's `~` file"],
    ] as const
  ).map(
    ([point, state]): Row => ({
      primitive: 'blob store',
      victim: 'writer creating a chunk',
      point,
      saw: state,
      checked:
        "`cleanup()` frees the entry and removes the dead creator's files; appends go on; no file outside the table",
      run: async () => {
        const name = uniqueName('blob-create');
        const store = createStore(name);
        const child = victim('blob-writer', { name, seed: SEED, count: 1, size: 100 }, point);
        await killAtStop(child, point);
        assert.equal(store.stats().chunks, 1, 'the CREATING entry');
        if (point !== 'blob.chunk-claimed') assert.equal(filesOf(name).length, 2, `${filesOf(name)}`);
        store.cleanup();
        assert.equal(store.stats().chunks, 0);
        assert.deepEqual(filesOf(name), [`shmbus.${name}`]);
        const h = store.append(payloadFor(SEED, 2, 0, 100));
        const got = store.resolve(h);
        assert.ok(got !== null && checkPayload(got, SEED, 2, 0, 100) === null);
        store.ack(h);
        await chunksDrain(store, name, []);
      },
    }),
  ),
];

const rows: Row[] = [
  channelProducerRow('channel.after-claim', 'claim', 'frame 40 claimed (negative length), nothing written'),
  channelProducerRow('channel.mid-copy', 'claim-half', 'frame 40 claimed and half filled'),
  channelProducerRow('channel.before-commit', 'claim', 'frame 40 filled, header still negative'),
  channelProducerRow('ring.after-copy', 'send', 'frame 40 copied, record header not written'),
  channelProducerRow('ring.before-publish', 'send', 'frame 40 complete, tail not published'),
  channelConsumerRow,
  ...segmentRows,
  ...fanoutRows,
  ...daemonRows,
  ...sessionRows,
  ...hubRows,
  ...blobRows,
];

// ------------------------------------------------------------------ stalled, not dead

/**
 * The same stops, then SIGCONT instead of SIGKILL: a live but stalled process (stopped longer
 * than every timeout around it) is never taken for dead. The survivor's waits time out
 * (SHM_ERR_TIMEOUT, never PEER_DEAD or DISCONNECTED), nothing it holds is reclaimed, and once
 * continued the stalled process finishes what it was doing: every message arrives once, intact
 * and in order.
 */
const STALL_MS = 1_500;

async function continueAfterStall(child: Child): Promise<void> {
  await sleep(STALL_MS);
  child.kill('SIGCONT');
}

async function timesOut(p: Promise<unknown>, what: string): Promise<void> {
  await rejectsWith(p, ErrorCode.TIMEOUT, `${what} (the stalled peer is alive)`);
}

/** Nothing arrives and nothing ends while the sender is stopped; null if so. */
async function quietFor<T>(p: Promise<T>, ms: number): Promise<T | 'quiet'> {
  return Promise.race([p, sleep(ms).then(() => 'quiet' as const)]);
}

interface StallRow {
  primitive: string;
  victim: string;
  point: string;
  saw: string;
  checked: string;
  run: () => Promise<void>;
}

/** Receives messages `from`..`to - 1` (channel = seq), each `length` bytes of its pattern, and releases them. */
async function receivePatterns(s: Session | Hub, from: number, to: number, length: number): Promise<void> {
  for (let seq = from; seq < to; seq++) {
    const m = await s.recv({ timeoutMs: SURVIVOR_MS });
    assert.equal(m.channel, seq);
    assert.equal(checkPattern(m.data, SEED, seq, length), null);
    m.release();
  }
}

const stallRows: StallRow[] = [
  {
    primitive: 'session',
    victim: 'peer B, sending',
    point: 'session.in-flight:4',
    saw: 'messages 0..2, then `recv` rejects SHM_ERR_TIMEOUT (B is alive: `peerAlive()`)',
    checked:
      "B's in-flight slot is not reclaimed; after SIGCONT messages 3..9 arrive intact, in order; every slot comes back",
    run: async () => {
      const name = uniqueName('stall-session');
      const a = createSession(name);
      const child = victim('session-b', { name, seed: SEED, sends: 10 }, 'session.in-flight:4');
      await waitStopped(child, 'session.in-flight:4');
      await receivePatterns(a, 0, 3, 1000);
      await timesOut(a.recv({ timeoutMs: STALL_MS }), 'recv while B is stopped');
      assert.equal(a.peerAlive(), true);
      assert.equal(a.freeSlots, SLOTS - 1, "B's in-flight slot stays B's");
      child.kill('SIGCONT');
      await receivePatterns(a, 3, 10, 1000);
      assert.equal(a.freeSlots, SLOTS);
    },
  },
  {
    primitive: 'session',
    victim: 'peer B holding slots',
    point: 'session.holding-slot:3',
    saw: '`recv` and `alloc` of the last free slots reject SHM_ERR_TIMEOUT',
    checked:
      'the slots B holds stay allocated to B (nothing reclaimed); after SIGCONT B goes on and A still exchanges messages with it',
    run: async () => {
      const name = uniqueName('stall-session-hold');
      const a = createSession(name);
      const child = victim('session-b', { name, seed: SEED, hold: 3, recv: 1 }, 'session.holding-slot:3');
      await waitStopped(child, 'session.holding-slot:3');
      assert.equal(a.freeSlots, SLOTS - 3);
      await timesOut(a.recv({ timeoutMs: STALL_MS }), 'recv while B is stopped');
      const held = [];
      for (let k = 0; k < SLOTS - 3; k++) held.push(await a.alloc(100, { timeoutMs: SURVIVOR_MS }));
      await timesOut(a.alloc(100, { timeoutMs: 200 }), 'alloc of a slot B holds');
      assert.equal(a.freeSlots, 0);
      for (const v of held) a.free(v);
      await continueAfterStall(child);
      await sendPattern(a, 7, 1000);
      await child.waitFor((m) => m.got === 7, WAIT);
      assert.equal(a.freeSlots, SLOTS - 3, 'B still holds its 3 slots, alive');
    },
  },
  {
    primitive: 'hub',
    victim: 'peer, sending',
    point: 'hub.in-flight:3',
    saw: 'messages 0..1, then `recv` rejects SHM_ERR_TIMEOUT',
    checked:
      "the slot in flight is not reclaimed (host's free slots [8, 7]); after SIGCONT messages 2..9 arrive intact, in order; every slot comes back",
    run: async () => {
      const name = uniqueName('stall-hub');
      const host = createHub(name);
      const child = victim('hub-peer', { name, seed: SEED, sends: 10 }, 'hub.in-flight:3');
      await waitStopped(child, 'hub.in-flight:3');
      await receivePatterns(host, 0, 2, 3000);
      await timesOut(host.recv({ timeoutMs: STALL_MS }), 'recv while the peer is stopped');
      assert.deepEqual(host.freeSlots(), [8, 7]);
      child.kill('SIGCONT');
      await receivePatterns(host, 2, 10, 3000);
      assert.deepEqual(host.freeSlots(), [8, 8]);
    },
  },
  {
    primitive: 'fan-out',
    victim: 'sender, mid-write into a ring',
    point: 'ring.after-copy:31',
    saw: `messages 0..29, then nothing for ${STALL_MS} ms: no message, no end, no error`,
    checked: 'the consumer stays connected; after SIGCONT messages 30..99 arrive intact, in order, exactly once',
    run: async () => {
      const path = socketPath();
      const child = victim('fanout-sender', { path, consumers: 1, count: 100 }, 'ring.after-copy:31');
      await child.waitFor((m) => m.ready === true, WAIT);
      const consumer = defer(await Consumer.connect(path));
      await waitStopped(child, 'ring.after-copy:31');
      for (let seq = 0; seq < 30; seq++) {
        const m = await consumer.next();
        assert.ok(m !== null);
        assert.equal(checkFrame(m.payload, seq, 100), null);
      }
      const next = later(consumer.next());
      assert.equal(await quietFor(next, STALL_MS), 'quiet');
      child.kill('SIGCONT');
      const first = await next;
      assert.ok(first !== null);
      assert.equal(checkFrame(first.payload, 30, 100), null);
      for (let seq = 31; seq < 100; seq++) {
        const m = await consumer.next();
        assert.ok(m !== null);
        assert.equal(checkFrame(m.payload, seq, 100), null);
      }
      assert.equal(await quietFor(later(consumer.next()), 200), 'quiet', 'nothing after message 99');
    },
  },
];

if (process.argv.includes('--table')) {
  const cell = (s: string) => s.replaceAll('|', '\\|');
  console.log('| primitive | killed | stopped at | the survivor saw | checked |');
  console.log('|---|---|---|---|---|');
  for (const r of rows)
    console.log(`| ${cell(r.primitive)} | ${cell(r.victim)} | \`${r.point}\` | ${cell(r.saw)} | ${cell(r.checked)} |`);
  console.log('\n| primitive | stopped (SIGSTOP, then SIGCONT) | at | the other side saw | checked |');
  console.log('|---|---|---|---|---|');
  for (const r of stallRows)
    console.log(`| ${cell(r.primitive)} | ${cell(r.victim)} | \`${r.point}\` | ${cell(r.saw)} | ${cell(r.checked)} |`);
} else {
  for (const r of rows)
    test(`${r.primitive}: ${r.victim} killed at ${r.point}`, async () => {
      try {
        await r.run();
      } finally {
        await teardown();
      }
      // Once the survivors closed, whatever the victim left was removed or replaced.
      assert.deepEqual(files(), [], 'files left after the row');
    });
  for (const r of stallRows)
    test(`${r.primitive}: ${r.victim} stopped at ${r.point} past every timeout, then continued`, async () => {
      try {
        await r.run();
      } finally {
        await teardown();
      }
    });
}
