/**
 * Fan-out streaming across real processes: a Sender and Consumers in different processes
 * (test/fixtures/fanout-consumer.ts, test/fixtures/fanout-sender.ts), raw unix-socket
 * clients that break the control protocol, and crashes (SIGKILL) of either side.
 *
 * Every test gets its own socket path under os.tmpdir() and its own ring directory (a
 * mkdtemp under /dev/shm, passed as `dir` and as SHMBUS_DIR to children), so leftover ring
 * files can be asserted and everything is removed afterwards. Children talk JSON lines; a
 * consumer child obeys commands sent to it as fan-out messages on its `ctl` key. Negative
 * checks (something is NOT delivered) observe for a while and then prove the consumer is
 * alive with a matching message published after the non-matching ones (rings are FIFO).
 * Every wait has a deadline; nothing asserts a duration.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { compressBlock } from '../../src/fanout/compress.js';
import { ControlReader, ControlSplitter, ControlWriter, encodeFilterRequest } from '../../src/fanout/control.js';
import {
  BlobStore,
  Consumer,
  ErrorCode,
  type FanoutMessage,
  Sender,
  type SenderOptions,
  ShmError,
  ShmStateError,
} from '../../src/index.js';
import {
  FLAG_LZ4,
  FLAGS_OFFSET,
  FRAME_HEADER_LENGTH,
  FRAME_TAG_OFFSET,
  FRAME_VERSION_OFFSET,
  GROUP_LENGTH_OFFSET,
  KEY_LENGTH_OFFSET,
  KIND_OFFSET,
  MAX_CONTROL_FRAME,
  RAW_LENGTH_OFFSET,
  SENDER_NANOS_OFFSET,
  TAG_MESSAGE,
  Tag,
  WIRE_LENGTH_OFFSET,
} from '../../src/layout/fanout.js';
import { type Child, startFixture } from '../helpers/children.js';
import { prng, testSeed } from '../helpers/prng.js';
import { slow } from '../helpers/slow.js';

const DEADLINE_MS = 20_000;
const OPT_IN_KIND = 5;
const ALWAYS_KIND = 9;
const utf8 = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------
// Helpers

/** Undone after each test, last first: consumers, children, senders, sockets, directories. */
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  const failures: unknown[] = [];
  for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) {
    try {
      await cleanup();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
});

let sockets = 0;
function socketPath(): string {
  sockets += 1;
  const path = join(tmpdir(), `shmbus-fo-${process.pid}-${sockets}.sock`);
  cleanups.push(() => rmSync(path, { force: true }));
  return path;
}

function privateDir(): string {
  const dir = mkdtempSync('/dev/shm/shmbus-fo-');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Ring segment files in `dir` (not the sender's registration, `shmbus.sender.<hash>`). */
function rings(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.startsWith('shmbus.') && !f.startsWith('shmbus.sender.'))
    .sort();
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(predicate: () => boolean, what: string, ms = DEADLINE_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

/** The next `event` of `emitter` (rejects after the deadline). */
function nextEvent<T>(emitter: NodeJS.EventEmitter, event: string, ms = DEADLINE_MS): Promise<T> {
  return within(new Promise<T>((resolve) => emitter.once(event, resolve)), ms, `event '${event}'`);
}

async function listen(options: Partial<SenderOptions> = {}): Promise<{ sut: Sender; dir: string; path: string }> {
  const dir = privateDir();
  const path = socketPath();
  const sut = await Sender.listen({
    path,
    dir,
    capacity: 1 << 16,
    kinds: { [OPT_IN_KIND]: 'opt-in', [ALWAYS_KIND]: 'always' },
    ...options,
  });
  cleanups.push(() => sut.close());
  return { sut, dir, path };
}

interface ConsumerConfig {
  subscribe?: { keys?: string[]; groups?: string[]; kinds?: number[] };
  style?: 'iterator' | 'message' | 'poll';
  ctl?: string | false;
  stall?: boolean;
  pingIntervalMs?: number;
  reconnect?: boolean;
  name?: string;
}

function consumerChild(path: string, dir: string, config: ConsumerConfig = {}): Child {
  const child = startFixture('fanout-consumer', [path, JSON.stringify(config)], { SHMBUS_DIR: dir });
  cleanups.push(async () => {
    child.kill('SIGKILL');
    await child.exited(DEADLINE_MS);
  });
  return child;
}

/** A consumer child that connected (its subscriptions are applied when this resolves). */
async function connected(path: string, dir: string, config: ConsumerConfig = {}): Promise<Child> {
  const child = consumerChild(path, dir, config);
  const first = await child.waitFor((m) => m.connected === true || m.connectError !== undefined, DEADLINE_MS);
  assert.equal(first.connected, true, `consumer child did not connect: ${JSON.stringify(first)}`);
  return child;
}

function senderChild(
  path: string,
  dir: string,
  config: { gen: number; keys?: string[]; everyMs?: number; maxKeysPerConsumer?: number; freezeMs?: number },
): Child {
  const child = startFixture('fanout-sender', [path, JSON.stringify(config)], { SHMBUS_DIR: dir });
  cleanups.push(async () => {
    child.kill('SIGKILL');
    await child.exited(DEADLINE_MS);
  });
  return child;
}

/** What a consumer child printed for one data message. */
interface Got {
  kind: number;
  key: string | null;
  group: string | null;
  len: number;
  hex: string | null;
  sha256: string;
  compressed: boolean;
  senderMs: number;
}

function got(child: Child): Got[] {
  return child.messages.filter((m) => m.m !== undefined).map((m) => m.m as Got);
}

/** The JSON payload of a message printed by a consumer child. */
function json(g: Got): Record<string, unknown> {
  assert.ok(g.hex !== null, 'payload too large to print');
  return JSON.parse(Buffer.from(g.hex, 'hex').toString('utf8'));
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** A JSON payload {seq, ...extra}, padded with spaces to at least `size` bytes. */
function seqPayload(seq: number, size = 0, extra: Record<string, unknown> = {}): Uint8Array {
  const text = JSON.stringify({ seq, ...extra });
  return utf8(text.padEnd(size, ' '));
}

/** Waits for the consumer child to print a message whose JSON payload has this seq (and key). */
function waitForSeq(child: Child, key: string, seq: number): Promise<Record<string, unknown>> {
  return child.waitFor((m) => {
    const g = m.m as Got | undefined;
    return g !== undefined && g.key === key && g.hex !== null && json(g).seq === seq;
  }, DEADLINE_MS);
}

let commands = 0;
/** Sends a command to a consumer child as a fan-out message on its ctl key; resolves with its ack. */
async function command(
  sender: Sender,
  child: Child,
  op: 'subscribe' | 'unsubscribe' | 'metrics' | 'close',
  spec?: { keys?: string[]; groups?: string[]; kinds?: number[] },
  ctlKey = 'ctl',
): Promise<Record<string, unknown>> {
  const id = ++commands;
  const reached = sender.publish({ kind: 1, key: ctlKey, payload: utf8(JSON.stringify({ id, op, spec })) });
  assert.equal(reached, 1, `command ${op} reached ${reached} consumers`);
  const ack = await child.waitFor((m) => m.ack === id, DEADLINE_MS);
  assert.equal(ack.error, undefined, `command ${op} failed: ${JSON.stringify(ack.error)}`);
  return ack;
}

/** Bytes of a repeated log line: compresses well under LZ4. */
function compressible(n: number): Uint8Array {
  const line = utf8('{"slot":250000000,"level":"info","msg":"account updated"}\n');
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = line[i % line.length];
  return out;
}

function randomBytes(random: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(random() * 256);
  return out;
}

/** A generic fan-out frame built by hand from the layout (src/layout/fanout.ts). */
function craftFrame(o: {
  key: string;
  wire: Uint8Array;
  rawLength: number;
  flags: number;
  version?: number;
  tag?: number;
}): Uint8Array {
  const key = utf8(o.key);
  const frame = new Uint8Array(FRAME_HEADER_LENGTH + key.length + o.wire.length);
  const dv = new DataView(frame.buffer);
  dv.setUint8(FRAME_VERSION_OFFSET, o.version ?? 1);
  dv.setUint8(FRAME_TAG_OFFSET, o.tag ?? TAG_MESSAGE);
  dv.setBigUint64(SENDER_NANOS_OFFSET, BigInt(Date.now()) * 1_000_000n, true);
  dv.setUint8(KIND_OFFSET, 1);
  dv.setUint8(FLAGS_OFFSET, o.flags);
  dv.setUint16(KEY_LENGTH_OFFSET, key.length, true);
  dv.setUint16(GROUP_LENGTH_OFFSET, 0, true);
  dv.setUint32(RAW_LENGTH_OFFSET, o.rawLength, true);
  dv.setUint32(WIRE_LENGTH_OFFSET, o.wire.length, true);
  frame.set(key, FRAME_HEADER_LENGTH);
  frame.set(o.wire, FRAME_HEADER_LENGTH + key.length);
  return frame;
}

interface ControlFrame {
  tag: number;
  reason?: string;
  message?: string;
}

/**
 * A raw unix-socket client (not the Consumer class): connects, writes `chunks` one by one,
 * and resolves with the control frames it received once the SENDER closed the connection.
 * With `afterReady`, the first chunk must be a HELLO and the rest is written only once the
 * READY answer arrived (so the sender sees them as separate reads, as a real peer's would be).
 */
async function rawClient(
  path: string,
  chunks: Uint8Array[],
  options: { end?: boolean; afterReady?: boolean } = {},
): Promise<ControlFrame[]> {
  const socket = net.connect(path);
  cleanups.push(() => {
    socket.destroy();
  });
  const splitter = new ControlSplitter(MAX_CONTROL_FRAME);
  const frames: ControlFrame[] = [];
  let onFrame = () => {};
  socket.on('data', (b: Buffer) => {
    for (const body of splitter.push(b)) {
      const r = new ControlReader(body);
      if (r.tag === Tag.REFUSED || r.tag === Tag.EVICTED)
        frames.push({ tag: r.tag, reason: r.string('reason'), message: r.string('message') });
      else frames.push({ tag: r.tag });
      onFrame();
    }
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await within(
    new Promise<void>((resolve) => socket.once('connect', () => resolve())),
    DEADLINE_MS,
    'raw client connect',
  );
  const [first, ...rest] = chunks;
  if (first !== undefined) socket.write(first);
  if (options.afterReady) {
    await within(
      new Promise<void>((resolve) => {
        onFrame = () => {
          if (frames.some((f) => f.tag === Tag.READY)) resolve();
        };
        onFrame();
      }),
      DEADLINE_MS,
      'READY for the raw client',
    );
  }
  for (const chunk of rest) socket.write(chunk);
  if (options.end) socket.end();
  await within(closed, DEADLINE_MS, 'the sender closing the raw connection');
  return frames;
}

const hello = (name = 'raw') => new ControlWriter(Tag.HELLO).u32(0).string(name).finish();

// ---------------------------------------------------------------------------------------
// Filtering and delivery

describe('fan-out filtering and delivery across processes', () => {
  test('delivers a matching message intact with every field and never a non-matching one', async () => {
    const { sut, dir, path } = await listen();
    const child = await connected(path, dir, { subscribe: { keys: ['alpha', 'ключ-😀'], groups: ['g-red'] } });
    const misses = [
      { kind: 1, key: 'beta', payload: utf8('other key') },
      { kind: 1, key: 'alph', payload: utf8('a prefix of a subscribed key') },
      { kind: 1, key: 'alphaa', payload: utf8('an extension of a subscribed key') },
      { kind: 1, key: 'ALPHA', payload: utf8('another case') },
      { kind: 1, key: 'x', group: 'g-blue', payload: utf8('other group') },
      { kind: 1, key: null, group: null, payload: utf8('neither key nor group') },
      { kind: 1, key: 'g-red', payload: utf8('a subscribed group name used as a key') },
      { kind: 1, key: 'none', group: 'alpha', payload: utf8('a subscribed key name used as a group') },
      { kind: OPT_IN_KIND, key: 'alpha', payload: utf8('an opt-in kind the consumer did not opt in to') },
    ];
    for (const m of misses) assert.equal(sut.publish(m), 0, new TextDecoder().decode(m.payload));
    await sleep(300);
    assert.deepEqual(got(child), [], 'nothing may arrive for non-matching messages');

    const binary = Uint8Array.from({ length: 300 }, (_, i) => (i * 7 + 3) & 0xff); // every byte value
    const hits = [
      { kind: 1, key: 'alpha', group: 'g-none', payload: binary },
      { kind: 1, key: 'zzz', group: 'g-red', payload: utf8('matched by its group') },
      { kind: 200, key: 'alpha', group: null, payload: new Uint8Array(0) },
      { kind: 1, key: 'alpha', group: 'g-red', payload: utf8('key and group both match: delivered once') },
      { kind: 0, key: 'ключ-😀', group: null, payload: utf8('a multi-byte UTF-8 key') },
    ];
    const before = Date.now();
    for (const m of hits) assert.equal(sut.publish(m), 1);
    assert.equal(sut.publish({ kind: 1, key: 'alpha', payload: utf8('end') }), 1);
    await child.waitFor((m) => (m.m as Got | undefined)?.hex === hex(utf8('end')), DEADLINE_MS);
    const after = Date.now();

    const all = got(child);
    assert.equal(all.length, hits.length + 1, `exactly the matching messages arrive: ${JSON.stringify(all)}`);
    hits.forEach((h, i) => {
      const g = all[i];
      assert.deepEqual(
        { kind: g.kind, key: g.key, group: g.group, len: g.len, hex: g.hex, compressed: g.compressed },
        {
          kind: h.kind,
          key: h.key,
          group: h.group,
          len: h.payload.length,
          hex: hex(h.payload),
          compressed: false,
        },
        `message ${i}`,
      );
      assert.equal(g.sha256, sha256(h.payload));
      assert.ok(
        g.senderMs >= before - 1 && g.senderMs <= after + 1,
        `sender stamp ${g.senderMs} in [${before}, ${after}]`,
      );
    });
    const m = sut.metrics();
    assert.equal(m.dispatched, hits.length + 1);
    assert.equal(m.unmatched, misses.length);
  });

  test('an always kind reaches a consumer without subscriptions; an opt-in kind only after opting in, and the opt-in is sticky', async () => {
    const { sut, dir, path } = await listen();
    const bare = await connected(path, dir, { ctl: false });
    const child = await connected(path, dir, { subscribe: { keys: ['k'] } });

    assert.equal(sut.publish({ kind: ALWAYS_KIND, payload: seqPayload(0) }), 2, 'always: both consumers');
    await bare.waitFor((m) => (m.m as Got | undefined)?.kind === ALWAYS_KIND, DEADLINE_MS);

    assert.equal(sut.publish({ kind: OPT_IN_KIND, key: 'k', payload: seqPayload(0) }), 0, 'not opted in yet');
    await sleep(200);
    await command(sut, child, 'subscribe', { kinds: [OPT_IN_KIND] });
    assert.equal(sut.publish({ kind: OPT_IN_KIND, payload: seqPayload(1) }), 1, 'opted in');
    // Several subscription changes later, the opt-in still holds.
    await command(sut, child, 'subscribe', { keys: ['k2'] });
    await command(sut, child, 'subscribe', { groups: ['g'] });
    await command(sut, child, 'unsubscribe', { keys: ['k', 'k2'] });
    await command(sut, child, 'subscribe', { kinds: [OPT_IN_KIND] }); // a duplicate opt-in changes nothing
    assert.equal(sut.publish({ kind: OPT_IN_KIND, payload: seqPayload(2) }), 1, 'still opted in');
    await command(sut, child, 'unsubscribe', { kinds: [OPT_IN_KIND] });
    assert.equal(sut.publish({ kind: OPT_IN_KIND, payload: seqPayload(3) }), 0, 'opted out');
    await sleep(200);
    assert.equal(sut.publish({ kind: ALWAYS_KIND, payload: seqPayload(4) }), 2);
    await child.waitFor((m) => (m.m as Got | undefined)?.kind === ALWAYS_KIND && json(m.m as Got).seq === 4);
    await bare.waitFor((m) => (m.m as Got | undefined)?.kind === ALWAYS_KIND && json(m.m as Got).seq === 4);

    assert.deepEqual(
      got(child).map((g) => [g.kind, json(g).seq]),
      [
        [ALWAYS_KIND, 0],
        [OPT_IN_KIND, 1],
        [OPT_IN_KIND, 2],
        [ALWAYS_KIND, 4],
      ],
    );
    assert.deepEqual(
      got(bare).map((g) => [g.kind, json(g).seq]),
      [
        [ALWAYS_KIND, 0],
        [ALWAYS_KIND, 4],
      ],
    );
  });

  test('two consumers with disjoint filters never see each other’s messages', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const { sut, dir, path } = await listen();
    const a = await connected(path, dir, { subscribe: { keys: ['a1', 'a2'], groups: ['ga'] }, ctl: 'ctl-a' });
    const b = await connected(path, dir, { subscribe: { keys: ['b1'], groups: ['gb'] }, ctl: 'ctl-b' });
    const shapes: { key: string; group: string | null; toA: boolean; toB: boolean }[] = [
      { key: 'a1', group: null, toA: true, toB: false },
      { key: 'a2', group: 'g0', toA: true, toB: false },
      { key: 'x', group: 'ga', toA: true, toB: false },
      { key: 'b1', group: null, toA: false, toB: true },
      { key: 'y', group: 'gb', toA: false, toB: true },
      { key: 'a1', group: 'gb', toA: true, toB: true },
      { key: 'b1', group: 'ga', toA: true, toB: true },
      { key: 'z', group: 'g9', toA: false, toB: false },
    ];
    const expectA: number[] = [];
    const expectB: number[] = [];
    for (let i = 0; i < 300; i++) {
      const s = shapes[Math.floor(random() * shapes.length)];
      const reached = sut.publish({ kind: 1, key: s.key, group: s.group, payload: seqPayload(i) });
      assert.equal(reached, Number(s.toA) + Number(s.toB), `seed ${seed}: message ${i} (${JSON.stringify(s)})`);
      if (s.toA) expectA.push(i);
      if (s.toB) expectB.push(i);
    }
    sut.publish({ kind: 1, key: 'a1', payload: seqPayload(-1) });
    sut.publish({ kind: 1, key: 'b1', payload: seqPayload(-1) });
    await waitForSeq(a, 'a1', -1);
    await waitForSeq(b, 'b1', -1);
    const seqs = (c: Child) =>
      got(c)
        .map((g) => json(g).seq as number)
        .filter((s) => s >= 0);
    assert.deepEqual(seqs(a), expectA, `seed ${seed}: consumer A`);
    assert.deepEqual(seqs(b), expectB, `seed ${seed}: consumer B`);
  });

  test('unsubscribe stops delivery of that key only, and subscribing again restores it', async () => {
    const { sut, dir, path } = await listen();
    const child = await connected(path, dir, { subscribe: { keys: ['u1', 'u2'] } });
    sut.publish({ kind: 1, key: 'u1', payload: seqPayload(0) });
    await waitForSeq(child, 'u1', 0);
    await command(sut, child, 'unsubscribe', { keys: ['u1'] });
    assert.equal(sut.publish({ kind: 1, key: 'u1', payload: seqPayload(1) }), 0);
    await sleep(200);
    assert.equal(sut.publish({ kind: 1, key: 'u2', payload: seqPayload(2) }), 1);
    await waitForSeq(child, 'u2', 2);
    await command(sut, child, 'subscribe', { keys: ['u1'] });
    assert.equal(sut.publish({ kind: 1, key: 'u1', payload: seqPayload(3) }), 1);
    await waitForSeq(child, 'u1', 3);
    assert.deepEqual(
      got(child).map((g) => [g.key, json(g).seq]),
      [
        ['u1', 0],
        ['u2', 2],
        ['u1', 3],
      ],
    );
  });

  test('1,000 subscribed keys among 10,000 others deliver exactly the subscribed ones (Bloom pre-reject)', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:';
    const randomKey = () => {
      const n = 1 + Math.floor(random() * 24);
      let s = '';
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(random() * alphabet.length)];
      return s;
    };
    const subscribed = new Set<string>();
    while (subscribed.size < 1000) subscribed.add(`s${randomKey()}`);
    const others = new Set<string>();
    // Near misses of subscribed keys first (prefixes, extensions, case), then random keys.
    for (const k of [...subscribed].slice(0, 300)) {
      for (const near of [k.slice(0, -1), `${k}x`, k.toUpperCase(), ` ${k}`])
        if (near.length > 0 && !subscribed.has(near)) others.add(near);
    }
    while (others.size < 10_000) {
      const k = randomKey();
      if (!subscribed.has(k) && k !== 'ctl' && k !== 'end') others.add(k);
    }
    const { sut, dir, path } = await listen({ capacity: 1 << 20 });
    const child = await connected(path, dir, { subscribe: { keys: [...subscribed, 'end'] } });
    const info = sut.consumers()[0];
    assert.equal(info.keys, 1002);
    assert.ok(info.bloomBits > 0, 'above 16 keys the Bloom filter is in use');

    const all = [...subscribed, ...others];
    for (let i = all.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [all[i], all[j]] = [all[j], all[i]];
    }
    const expected: string[] = [];
    for (const key of all) {
      const reached = sut.publish({ kind: 1, key, payload: utf8(key) });
      assert.equal(reached, subscribed.has(key) ? 1 : 0, `seed ${seed}: key ${JSON.stringify(key)}`);
      if (subscribed.has(key)) expected.push(key);
    }
    sut.publish({ kind: 1, key: 'end', payload: utf8('end') });
    await child.waitFor((m) => (m.m as Got | undefined)?.key === 'end', DEADLINE_MS);
    const keys = got(child)
      .filter((g) => g.key !== 'end')
      .map((g) => g.key);
    assert.equal(keys.length, 1000, `seed ${seed}: received ${keys.length}`);
    assert.deepEqual(keys, expected, `seed ${seed}: exactly the subscribed keys, in publish order`);
    for (const g of got(child)) assert.equal(Buffer.from(g.hex ?? '', 'hex').toString(), g.key);
    assert.ok(sut.consumers()[0].bloomRejects > 0, 'the Bloom filter rejected non-matching keys');
    assert.equal(sut.metrics().unmatched, 10_000);
  });

  test('the message event style and poll() both deliver every message in order', async () => {
    const { sut, dir, path } = await listen();
    const viaEvents = await connected(path, dir, { subscribe: { keys: ['s'] }, style: 'message', ctl: 'ctl-e' });
    const viaPoll = await connected(path, dir, { subscribe: { keys: ['s'] }, style: 'poll', ctl: 'ctl-p' });
    for (let i = 0; i < 50; i++) assert.equal(sut.publish({ kind: 1, key: 's', payload: seqPayload(i, 64) }), 2);
    await waitForSeq(viaEvents, 's', 49);
    await waitForSeq(viaPoll, 's', 49);
    const expected = Array.from({ length: 50 }, (_, i) => i);
    assert.deepEqual(
      got(viaEvents).map((g) => json(g).seq),
      expected,
    );
    assert.deepEqual(
      got(viaPoll).map((g) => json(g).seq),
      expected,
    );
    // Closing ends both styles.
    await command(sut, viaEvents, 'close', undefined, 'ctl-e');
    await command(sut, viaPoll, 'close', undefined, 'ctl-p');
    await viaEvents.waitFor((m) => m.ended === true, DEADLINE_MS);
    await viaPoll.waitFor((m) => m.ended === true, DEADLINE_MS);
    assert.deepEqual(await viaEvents.exited(DEADLINE_MS), { code: 0, signal: null });
    assert.deepEqual(await viaPoll.exited(DEADLINE_MS), { code: 0, signal: null });
  });
});

// ---------------------------------------------------------------------------------------
// Compression

describe('fan-out LZ4 compression end to end', () => {
  test('compresses exactly the payloads the rule says and every payload arrives identical', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const { sut, dir, path } = await listen({ capacity: 1 << 21 });
    const child = await connected(path, dir, { subscribe: { keys: ['big'] } });
    const mixed = new Uint8Array(600_000);
    mixed.set(randomBytes(random, 8192));
    mixed.set(compressible(600_000 - 8192), 8192);
    const cases = [
      { what: '511,999 compressible bytes (under 500 KiB)', payload: compressible(511_999), compressed: false },
      { what: '512,000 compressible bytes', payload: compressible(512_000), compressed: true },
      { what: '512,000 random bytes', payload: randomBytes(random, 512_000), compressed: false },
      { what: 'a random first 8 KiB, compressible rest', payload: mixed, compressed: false },
      {
        what: '1,000,000 compressible bytes (only fits compressed)',
        payload: compressible(1_000_000),
        compressed: true,
      },
    ];
    for (const [i, c] of cases.entries()) {
      assert.equal(sut.publish({ kind: 1, key: 'big', payload: c.payload }), 1, c.what);
      await within(
        until(() => got(child).length === i + 1, c.what),
        DEADLINE_MS,
        c.what,
      );
      const g = got(child)[i];
      assert.equal(g.len, c.payload.length, `${c.what}: length`);
      assert.equal(g.sha256, sha256(c.payload), `seed ${seed}: ${c.what}: content`);
      assert.equal(g.compressed, c.compressed, `${c.what}: compressed`);
    }
    const m = sut.metrics();
    assert.equal(m.compressedFrames, 2);
    assert.ok(m.compressionRatio > 10, `compression ratio ${m.compressionRatio}`);
    assert.ok(m.dispatchedBytes < 2_000_000, `wire bytes ${m.dispatchedBytes} show the compressed sizes`);
  });

  test('a corrupt frame is rejected with a typed ShmFrameError and the stream goes on', async () => {
    const { sut, dir, path } = await listen({ capacity: 1 << 21 });
    const child = await connected(path, dir, { subscribe: { keys: ['lz'] } });
    const raw = compressible(600_000);
    const block = compressBlock(raw);
    const key = utf8('lz');

    // The hand-made frame format is right: an honest crafted LZ4 frame arrives intact.
    assert.equal(
      sut.publishFrame(1, key, null, craftFrame({ key: 'lz', wire: block, rawLength: raw.length, flags: FLAG_LZ4 })),
      1,
    );
    await until(() => got(child).length === 1, 'the honest crafted frame');
    assert.equal(got(child)[0].sha256, sha256(raw));
    assert.equal(got(child)[0].compressed, true);

    const bad = [
      {
        what: 'LZ4 with a raw length one too large',
        frame: craftFrame({ key: 'lz', wire: block, rawLength: raw.length + 1, flags: FLAG_LZ4 }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'LZ4 with a raw length one too small',
        frame: craftFrame({ key: 'lz', wire: block, rawLength: raw.length - 1, flags: FLAG_LZ4 }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'LZ4 with half the block missing',
        frame: craftFrame({
          key: 'lz',
          wire: block.subarray(0, block.length >> 1),
          rawLength: raw.length,
          flags: FLAG_LZ4,
        }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'LZ4 declaring 4 GiB',
        frame: craftFrame({ key: 'lz', wire: block, rawLength: 0xffff_ffff, flags: FLAG_LZ4 }),
        code: ErrorCode.TOO_LARGE,
      },
      {
        what: 'LZ4 declaring more than 255 times its block',
        frame: craftFrame({ key: 'lz', wire: block, rawLength: block.length * 255 + 1, flags: FLAG_LZ4 }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'LZ4 with garbage bytes',
        frame: craftFrame({ key: 'lz', wire: new Uint8Array(64).fill(0xff), rawLength: 1000, flags: FLAG_LZ4 }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'an unknown flag bit',
        frame: craftFrame({ key: 'lz', wire: utf8('abc'), rawLength: 3, flags: 2 }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'uncompressed with raw length != wire length',
        frame: craftFrame({ key: 'lz', wire: utf8('abc'), rawLength: 4, flags: 0 }),
        code: ErrorCode.CORRUPT,
      },
      {
        what: 'frame version 2',
        frame: craftFrame({ key: 'lz', wire: utf8('abc'), rawLength: 3, flags: 0, version: 2 }),
        code: ErrorCode.VERSION_MISMATCH,
      },
      { what: 'a frame shorter than the header', frame: new Uint8Array(10).fill(1), code: ErrorCode.TRUNCATED },
    ];
    for (const [i, b] of bad.entries()) {
      assert.equal(sut.publishFrame(1, key, null, b.frame), 1, b.what);
      assert.equal(sut.publish({ kind: 1, key: 'lz', payload: seqPayload(i) }), 1);
      await waitForSeq(child, 'lz', i);
    }
    const lines = child.messages.filter((m) => m.event === 'rejected' || m.m !== undefined).slice(1);
    assert.equal(lines.length, bad.length * 2, JSON.stringify(lines));
    for (const [i, b] of bad.entries()) {
      const event = lines[2 * i];
      assert.equal(event.event, 'rejected', `${b.what}: a 'rejected' event before the next good message`);
      assert.equal(event.name, 'ShmFrameError', `${b.what}: ${JSON.stringify(event)}`);
      assert.equal(event.code, b.code, `${b.what}: ${JSON.stringify(event)}`);
      assert.equal(json(lines[2 * i + 1].m as Got).seq, i, `${b.what}: the next good message`);
    }
    const ack = await command(sut, child, 'metrics');
    assert.equal((ack.metrics as { rejected: number }).rejected, bad.length);
    assert.equal((ack.metrics as { state: string }).state, 'connected');
  });
});

// ---------------------------------------------------------------------------------------
// Slow, dead and silent consumers

describe('fan-out eviction and cleanup across processes', () => {
  test('a consumer that stops reading is evicted when its ring fills while a draining one receives everything', async () => {
    const { sut, dir, path } = await listen({ capacity: 8192 });
    const stalled = consumerChild(path, dir, { subscribe: { keys: ['ev'] }, stall: true, ctl: false });
    await stalled.waitFor((m) => m.stalled === true, DEADLINE_MS);
    const draining = await connected(path, dir, { subscribe: { keys: ['ev'] }, ctl: false });
    const evictions: { pid: number; reason: string; delivered: number }[] = [];
    sut.on('evicted', (info) => evictions.push(info));

    const TOTAL = 300;
    const BATCH = 10;
    for (let seq = 0; seq < TOTAL; seq += BATCH) {
      for (let i = seq; i < seq + BATCH; i++) {
        const reached = sut.publish({ kind: 1, key: 'ev', payload: seqPayload(i, 100) });
        assert.ok(reached >= 1, `message ${i} reached the draining consumer`);
      }
      await waitForSeq(draining, 'ev', seq + BATCH - 1);
    }
    const seqs = got(draining).map((g) => json(g).seq);
    assert.deepEqual(
      seqs,
      Array.from({ length: TOTAL }, (_, i) => i),
      'no loss, no duplicates, order kept',
    );

    assert.equal(evictions.length, 1, JSON.stringify(evictions));
    assert.equal(evictions[0].pid, stalled.proc.pid);
    assert.equal(evictions[0].reason, 'ring-full');
    const m = sut.metrics();
    assert.equal(m.evictions['ring-full'], 1);
    assert.equal(m.consumers, 1);
    assert.equal(sut.consumers()[0].pid, draining.proc.pid);
    const told = await stalled.waitFor((x) => x.event === 'evicted', DEADLINE_MS);
    assert.equal(told.code, ErrorCode.EVICTED);
    assert.equal(told.reason, 'ring-full');
    assert.deepEqual(rings(dir), [`shmbus.${sut.consumers()[0].ring}`], "the evicted consumer's ring is removed");

    // Reading now: what was in the ring before the eviction, in order, then SHM_ERR_EVICTED.
    stalled.kill('SIGUSR1');
    const end = await stalled.waitFor((x) => x.endError !== undefined || x.ended !== undefined, DEADLINE_MS);
    assert.equal(end.endError, ErrorCode.EVICTED);
    assert.equal(end.reason, 'ring-full');
    assert.deepEqual(
      got(stalled).map((g) => json(g).seq),
      Array.from({ length: evictions[0].delivered }, (_, i) => i),
    );
  });

  test("a SIGKILLed consumer's ring file is removed and the others are still served", async () => {
    const { sut, dir, path } = await listen();
    const a = await connected(path, dir, { subscribe: { keys: ['a'] }, ctl: false });
    const b = await connected(path, dir, { subscribe: { keys: ['b'] }, ctl: false });
    assert.equal(rings(dir).length, 2);
    const bRing = sut.consumers().find((c) => c.pid === b.proc.pid)?.ring;
    const gone = nextEvent<{ pid: number }>(sut, 'disconnect');
    a.kill('SIGKILL');
    await a.exited(DEADLINE_MS);
    assert.equal((await gone).pid, a.proc.pid);
    await until(() => rings(dir).length === 1, 'ring removal');
    assert.deepEqual(rings(dir), [`shmbus.${bRing}`]);
    assert.equal(sut.publish({ kind: 1, key: 'a', payload: seqPayload(0) }), 0);
    assert.equal(sut.publish({ kind: 1, key: 'b', payload: seqPayload(1) }), 1);
    await waitForSeq(b, 'b', 1);
    const m = sut.metrics();
    assert.equal(m.disconnects, 1);
    assert.equal(m.consumers, 1);
  });

  test('a silent consumer (no pings) is evicted as idle while one with default pings survives', async () => {
    // The default pings come every idleTimeoutMs / 3: a slower run (SHMBUS_TEST_SLOW) needs
    // the same margin in its own scale for the pinging consumer to survive.
    const idleTimeoutMs = slow(600);
    const { sut, dir, path } = await listen({ idleTimeoutMs });
    // Listening before the silent consumer connects: it can be evicted while the second
    // consumer's process is still starting (over idleTimeoutMs under the sanitizers).
    const evicted = nextEvent<{ pid: number; reason: string }>(sut, 'evicted');
    evicted.catch(() => {}); // awaited below; not unhandled if a connect fails first
    const silent = await connected(path, dir, { subscribe: { keys: ['i'] }, pingIntervalMs: 1_000_000_000 });
    const chatty = await connected(path, dir, { subscribe: { keys: ['i'] }, ctl: 'ctl-c' });
    const told = await silent.waitFor((m) => m.event === 'evicted', DEADLINE_MS);
    assert.equal(told.code, ErrorCode.EVICTED);
    assert.equal(told.reason, 'idle');
    const info = await evicted;
    assert.equal(info.pid, silent.proc.pid);
    assert.equal(info.reason, 'idle');
    await sleep(2.5 * idleTimeoutMs); // well over two idle timeouts
    assert.deepEqual(
      sut.consumers().map((c) => c.pid),
      [chatty.proc.pid],
    );
    assert.equal(sut.metrics().evictions.idle, 1);
    assert.equal(sut.publish({ kind: 1, key: 'i', payload: seqPayload(7) }), 1);
    await waitForSeq(chatty, 'i', 7);
  });

  test('a sender that closes ends each consumer stream cleanly and leaves no files', async () => {
    const { sut, dir, path } = await listen();
    const a = await connected(path, dir, { subscribe: { keys: ['x'] } });
    const b = await connected(path, dir, { subscribe: { keys: ['x'] }, style: 'poll' });
    sut.publish({ kind: 1, key: 'x', payload: seqPayload(0) });
    await waitForSeq(a, 'x', 0);
    await waitForSeq(b, 'x', 0);
    await sut.close();
    await a.waitFor((m) => m.ended === true || m.endError !== undefined, DEADLINE_MS);
    assert.equal(
      a.messages.find((m) => m.endError !== undefined),
      undefined,
      'a CLOSING sender is no error',
    );
    await b.waitFor((m) => m.ended === true, DEADLINE_MS);
    assert.deepEqual(await a.exited(DEADLINE_MS), { code: 0, signal: null });
    assert.deepEqual(await b.exited(DEADLINE_MS), { code: 0, signal: null });
    assert.deepEqual(rings(dir), []);
    assert.equal(existsSync(path), false, 'the socket file is removed');
  });
});

// ---------------------------------------------------------------------------------------
// Sender restarts

describe('fan-out reconnection', () => {
  test('a consumer reconnects to a restarted sender and keeps its subscription without subscribing again', async () => {
    const dir = privateDir();
    const path = socketPath();
    const first = senderChild(path, dir, { gen: 1, keys: ['k-sub', 'k-other'], everyMs: 20 });
    await first.waitFor((m) => m.listening === true, DEADLINE_MS);
    const sut = await Consumer.connect(path, {
      subscribe: { keys: ['k-sub'] },
      reconnect: { initialDelayMs: 50, maxDelayMs: 250 },
    });
    cleanups.push(() => sut.close());
    const events: string[] = [];
    const received: { key: string; gen: number; seq: number }[] = [];
    sut.on('disconnected', () => events.push('disconnected'));
    sut.on('reconnected', () => events.push('reconnected'));
    sut.on('evicted', () => events.push('evicted'));
    sut.on('message', (m: FanoutMessage) =>
      received.push({
        key: new TextDecoder().decode(m.key ?? new Uint8Array()),
        ...JSON.parse(new TextDecoder().decode(m.payload)),
      }),
    );
    await until(() => received.filter((r) => r.gen === 1).length >= 5, 'messages from the first sender');

    first.kill('SIGKILL');
    await first.exited(DEADLINE_MS);
    assert.ok(existsSync(path), 'a SIGKILLed sender leaves its socket file');
    await until(() => events.includes('disconnected'), "the consumer's 'disconnected' event");
    const second = senderChild(path, dir, { gen: 2, keys: ['k-sub', 'k-other'], everyMs: 20 });
    const listening = await second.waitFor((m) => m.listening === true || m.listenError !== undefined, DEADLINE_MS);
    assert.equal(listening.listening, true, `the stale socket is replaced: ${JSON.stringify(listening)}`);
    await until(() => received.filter((r) => r.gen === 2).length >= 5, 'messages from the restarted sender');

    assert.deepEqual(events, ['disconnected', 'reconnected']);
    assert.deepEqual(new Set(received.map((r) => r.key)), new Set(['k-sub']), 'only the subscribed key, ever');
    const gens = received.map((r) => r.gen);
    assert.deepEqual(gens, [...gens].sort(), 'every old message before the new ones');
    for (const gen of [1, 2]) {
      const seqs = received.filter((r) => r.gen === gen).map((r) => r.seq);
      for (let i = 1; i < seqs.length; i++)
        assert.equal(seqs[i], seqs[i - 1] + 1, `gen ${gen}: no loss or duplicate in ${seqs}`);
    }
    assert.equal(sut.metrics().reconnects, 1);
    assert.equal(sut.state, 'connected');
    assert.deepEqual(
      sut.subscriptions().keys.map((k) => new TextDecoder().decode(k)),
      ['k-sub'],
    );
  });

  test('a reader keeping up with a full ring still lets timers run: the iteration yields to the event loop every 1,024 messages', async () => {
    const { sut, path } = await listen({ capacity: 1 << 21 });
    const consumer = await Consumer.connect(path, { subscribe: { keys: ['burst'] } });
    cleanups.push(() => consumer.close());
    const total = 5000;
    for (let i = 0; i < total; i++)
      assert.equal(sut.publish({ kind: 1, key: 'burst', payload: seqPayload(i) }), 1, `message ${i} delivered`);
    // Every message is in the ring now, so each next() could resolve at once, on microtasks only.
    let count = 0;
    let timerSawCount = -1;
    setImmediate(() => {
      timerSawCount = count;
    });
    for await (const m of consumer) {
      assert.equal(JSON.parse(new TextDecoder().decode(m.payload)).seq, count);
      if (++count === total) break;
    }
    assert.ok(timerSawCount >= 0 && timerSawCount < total, `the timer ran after ${timerSawCount} of ${total} messages`);
  });

  test('consumer.close() ends a pending iteration', async () => {
    const dir = privateDir();
    const path = socketPath();
    const sender = senderChild(path, dir, { gen: 1, keys: ['other'], everyMs: 20 });
    await sender.waitFor((m) => m.listening === true, DEADLINE_MS);
    const sut = await Consumer.connect(path, { subscribe: { keys: ['quiet'] } });
    cleanups.push(() => sut.close());
    const iterator = sut[Symbol.asyncIterator]();
    let settled = false;
    const pending = iterator.next().then((r) => {
      settled = true;
      return r;
    });
    await sleep(200);
    assert.equal(settled, false, 'nothing to read: the iteration is pending');
    await sut.close();
    const result = await within(pending, DEADLINE_MS, 'the pending iteration');
    assert.equal(result.done, true);
    assert.equal(await sut.next(), null);
    assert.equal(sut.poll(), null);
    await assert.rejects(
      sut.subscribe({ keys: ['x'] }),
      (e: unknown) => e instanceof ShmStateError && e.code === ErrorCode.CLOSED,
    );
  });
});

// ---------------------------------------------------------------------------------------
// Admission

describe('fan-out admission', () => {
  test('maxConsumers: the next consumer is refused with SHM_ERR_REFUSED until one leaves', async () => {
    const { sut, dir, path } = await listen({ maxConsumers: 2 });
    const a = await connected(path, dir, { subscribe: { keys: ['m'] }, ctl: 'ctl-a' });
    await connected(path, dir, { subscribe: { keys: ['m'] }, ctl: 'ctl-b' });
    const third = consumerChild(path, dir, { subscribe: { keys: ['m'] } });
    const refused = await third.waitFor((m) => m.connectError !== undefined || m.connected === true, DEADLINE_MS);
    assert.equal(refused.connectError, ErrorCode.REFUSED, JSON.stringify(refused));
    assert.equal(refused.reason, 'max-consumers');
    assert.match(String(refused.message), /at most 2 consumers/);
    assert.deepEqual(await third.exited(DEADLINE_MS), { code: 0, signal: null });
    assert.equal(sut.metrics().refused, 1);
    assert.equal(sut.consumerCount, 2);

    const left = nextEvent<{ pid: number }>(sut, 'disconnect');
    await command(sut, a, 'close', undefined, 'ctl-a');
    assert.equal((await left).pid, a.proc.pid);
    const fourth = await connected(path, dir, { subscribe: { keys: ['m'] }, ctl: 'ctl-d' });
    assert.equal(sut.publish({ kind: 1, key: 'm', payload: seqPayload(1) }), 2);
    await waitForSeq(fourth, 'm', 1);
  });

  test('a consumer whose uid is not in allowUids is refused with SHM_ERR_REFUSED reason uid', async () => {
    const uid = process.getuid?.() ?? 0;
    const { sut, dir, path } = await listen({ allowUids: [uid + 1] });
    const child = consumerChild(path, dir, {});
    const refused = await child.waitFor((m) => m.connectError !== undefined || m.connected === true, DEADLINE_MS);
    assert.equal(refused.connectError, ErrorCode.REFUSED, JSON.stringify(refused));
    assert.equal(refused.reason, 'uid');
    assert.match(String(refused.message), new RegExp(`uid ${uid}`));
    assert.equal(sut.consumerCount, 0);
    assert.deepEqual(rings(dir), []);

    const open = await listen({ allowUids: [uid + 1, uid] });
    await connected(open.path, open.dir, {});
    assert.equal(open.sut.consumerCount, 1);
  });

  test('the socket file is created with mode 0600 by default and with socketMode when given', async () => {
    const { path } = await listen();
    const st = statSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    const wider = await listen({ socketMode: 0o660 });
    assert.equal(statSync(wider.path).mode & 0o777, 0o660);
  });

  test('a second Sender.listen on a live path fails with SHM_ERR_EXISTS; the socket of a SIGKILLed sender is replaced', async () => {
    const dir = privateDir();
    const path = socketPath();
    const live = senderChild(path, dir, { gen: 1, keys: ['k'], everyMs: 20 });
    await live.waitFor((m) => m.listening === true, DEADLINE_MS);
    await assert.rejects(
      Sender.listen({ path, dir }),
      (e: unknown) => e instanceof ShmError && e.code === ErrorCode.EXISTS && e.message.includes(path),
    );
    // The live sender was not disturbed by the probe.
    const probe = await Consumer.connect(path, { subscribe: { keys: ['k'] } });
    cleanups.push(() => probe.close());
    const first = await within(probe.next(), DEADLINE_MS, 'a message from the live sender');
    assert.equal(new TextDecoder().decode(first?.key ?? new Uint8Array()), 'k');

    live.kill('SIGKILL');
    await live.exited(DEADLINE_MS);
    assert.ok(existsSync(path), 'the stale socket file is still there');
    const sut = await Sender.listen({ path, dir });
    cleanups.push(() => sut.close());
    const child = await connected(path, dir, { subscribe: { keys: ['k'] } });
    assert.equal(sut.publish({ kind: 1, key: 'k', payload: seqPayload(3) }), 1);
    await waitForSeq(child, 'k', 3);
  });

  test('subscribing more keys than maxKeysPerConsumer evicts that consumer with reason too-many-keys', async () => {
    const { sut, dir, path } = await listen({ maxKeysPerConsumer: 10 });
    const child = await connected(path, dir, { subscribe: { keys: ['k1'] } });
    const other = await connected(path, dir, { subscribe: { keys: ['k1'] }, ctl: 'ctl-o' });
    const id = ++commands;
    const keys = Array.from({ length: 10 }, (_, i) => `many-${i}`);
    sut.publish({
      kind: 1,
      key: 'ctl',
      payload: utf8(JSON.stringify({ id, op: 'subscribe', spec: { keys } })),
    });
    const told = await child.waitFor((m) => m.event === 'evicted', DEADLINE_MS);
    assert.equal(told.code, ErrorCode.EVICTED);
    assert.equal(told.reason, 'too-many-keys');
    const ack = await child.waitFor((m) => m.ack === id, DEADLINE_MS);
    const error = ack.error as { code: string; reason: string | null } | undefined;
    assert.ok(error !== undefined, 'the subscribe call fails');
    // The sender said why (EVICTED, too-many-keys); the failed call should carry that, not a bare "lost the connection".
    assert.deepEqual(
      { code: error.code, reason: error.reason },
      { code: ErrorCode.EVICTED, reason: 'too-many-keys' },
      JSON.stringify(ack.error),
    );
    assert.equal(sut.metrics().evictions['too-many-keys'], 1);
    assert.equal(sut.publish({ kind: 1, key: 'k1', payload: seqPayload(1) }), 1);
    await waitForSeq(other, 'k1', 1);
  });
  test('an evicted consumer nobody closes stops its latency timer once drained', async () => {
    const { path } = await listen({ maxKeysPerConsumer: 2 });
    const sut = await Consumer.connect(path, { subscribe: { keys: ['a'] } });
    cleanups.push(() => sut.close());
    const timer = () => (sut as unknown as { latencyTimer: unknown }).latencyTimer;
    assert.notEqual(timer(), null, 'a connected consumer publishes its latency');
    await assert.rejects(sut.subscribe({ keys: ['b', 'c', 'd'] }), { code: ErrorCode.EVICTED });
    await assert.rejects(sut.next(), { code: ErrorCode.EVICTED });
    await until(() => timer() === null, 'the latency timer stopped');
  });

  test('Consumer.connect subscribing more keys than the sender allows fails with that reason and leaks no descriptors', async () => {
    const dir = privateDir();
    const path = socketPath();
    const sender = senderChild(path, dir, { gen: 1, maxKeysPerConsumer: 3 });
    await sender.waitFor((m) => m.listening === true, DEADLINE_MS);
    // Across processes: the child reports the error it got.
    const child = consumerChild(path, dir, { subscribe: { keys: ['a', 'b', 'c', 'd'] }, ctl: false });
    const result = await child.waitFor((m) => m.connectError !== undefined || m.connected === true, DEADLINE_MS);
    assert.equal(result.connected, undefined, 'four keys over a limit of three cannot be accepted');
    assert.equal(result.reason, 'too-many-keys', JSON.stringify(result));
    assert.ok(
      result.connectError === ErrorCode.EVICTED || result.connectError === ErrorCode.REFUSED,
      JSON.stringify(result),
    );
    assert.deepEqual(await child.exited(DEADLINE_MS), { code: 0, signal: null }, 'nothing left open in the child');
  });

  test('a Consumer.connect that the sender turns down leaks no file descriptors', async () => {
    const dir = privateDir();
    const path = socketPath();
    const sender = senderChild(path, dir, { gen: 1, maxKeysPerConsumer: 3 });
    await sender.waitFor((m) => m.listening === true, DEADLINE_MS);
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 3; i++)
      await assert.rejects(Consumer.connect(path, { subscribe: { keys: ['a', 'b', 'c', 'd'] } }));
    await sleep(200);
    assert.equal(
      fds(),
      before,
      'file descriptors after three turned-down connects (each left a ring fd and an eventfd)',
    );
  });

  test('close() during a reconnection handshake stays closed', async () => {
    const dir = privateDir();
    const path = socketPath();
    const first = senderChild(path, dir, { gen: 1, keys: ['k'], everyMs: 20 });
    await first.waitFor((m) => m.listening === true, DEADLINE_MS);
    const sut = await Consumer.connect(path, {
      subscribe: { keys: ['k'] },
      reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
    });
    cleanups.push(() => sut.close());
    const events: string[] = [];
    sut.on('disconnected', () => events.push('disconnected'));
    sut.on('reconnected', () => events.push('reconnected'));
    first.kill('SIGKILL');
    await first.exited(DEADLINE_MS);
    await until(() => events.includes('disconnected'), "'disconnected'");
    // The new sender accepts connections into its backlog but answers HELLO only after 1.5 s.
    const second = senderChild(path, dir, { gen: 2, keys: ['k'], everyMs: 20, freezeMs: 1500 });
    await second.waitFor((m) => m.listening === true, DEADLINE_MS);
    await sleep(500); // the consumer is now waiting for READY
    assert.equal(sut.state, 'reconnecting');
    await sut.close();
    assert.equal(sut.state, 'closed');
    // The frozen sender wakes up and answers the HELLO that was already sent.
    const served = await second.waitFor((m) => m.consumer !== undefined, DEADLINE_MS);
    await sleep(300);
    assert.equal(sut.state, 'closed', 'a closed consumer must not come back to life');
    assert.deepEqual(events, ['disconnected']);
    await second.waitFor((m) => m.gone === served.consumer, DEADLINE_MS);
    assert.equal(await within(sut.next(), DEADLINE_MS, 'next() after close'), null);
  });
});

// ---------------------------------------------------------------------------------------
// A hostile control plane

describe('fan-out control protocol against a raw socket client', () => {
  const u32 = (v: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    return b;
  };
  const cat = (...parts: Uint8Array[]) => Uint8Array.from(Buffer.concat(parts));
  const truncatedHello = cat(u32(2 + 4 + 2 + 1), Uint8Array.of(1, Tag.HELLO, 0, 0, 0, 0, 100, 0), utf8('a'));
  const cases: { what: string; chunks: Uint8Array[]; end?: boolean; verdict: number | null; afterReady?: boolean }[] = [
    { what: 'an oversized length prefix', chunks: [cat(u32(0xfffffff0), utf8('xxxx'))], verdict: Tag.REFUSED },
    {
      what: 'a length prefix just over the 16 MiB limit',
      chunks: [u32(MAX_CONTROL_FRAME + 1)],
      verdict: Tag.REFUSED,
    },
    { what: 'a bad version', chunks: [cat(u32(2), Uint8Array.of(2, Tag.HELLO))], verdict: Tag.REFUSED },
    { what: 'an unknown tag before HELLO', chunks: [cat(u32(2), Uint8Array.of(1, 99))], verdict: Tag.REFUSED },
    { what: 'a zero-length frame', chunks: [u32(0)], verdict: Tag.REFUSED },
    {
      what: 'garbage bytes (an HTTP request)',
      chunks: [utf8('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
      verdict: Tag.REFUSED,
    },
    { what: 'a truncated HELLO body', chunks: [truncatedHello], verdict: Tag.REFUSED },
    {
      what: 'a HELLO with trailing bytes',
      chunks: [cat(u32(2 + 4 + 2 + 1 + 3), Uint8Array.of(1, Tag.HELLO, 0, 0, 0, 0, 1, 0), utf8('a'), utf8('xyz'))],
      verdict: Tag.REFUSED,
    },
    {
      what: 'SUBSCRIBE without HELLO',
      chunks: [encodeFilterRequest(Tag.SUBSCRIBE, 1, { kinds: [], keys: [utf8('live')], groups: [] })],
      verdict: Tag.REFUSED,
    },
    {
      what: 'an unknown tag after HELLO',
      chunks: [hello(), cat(u32(2), Uint8Array.of(1, 99))],
      verdict: Tag.EVICTED,
      afterReady: true,
    },
    {
      what: 'a sender-only tag (READY) after HELLO',
      chunks: [hello(), cat(u32(2), Uint8Array.of(1, Tag.READY))],
      verdict: Tag.EVICTED,
      afterReady: true,
    },
    {
      what: 'a SUBSCRIBE claiming 4 billion keys after HELLO',
      chunks: [hello(), cat(new ControlWriter(Tag.SUBSCRIBE).u32(1).u16(0).u32(0xffffffff).finish())],
      verdict: Tag.EVICTED,
      afterReady: true,
    },
    {
      what: 'a SUBSCRIBE with an empty key after HELLO',
      chunks: [hello(), new ControlWriter(Tag.SUBSCRIBE).u32(1).u16(0).u32(1).u16(0).u32(0).finish()],
      verdict: Tag.EVICTED,
      afterReady: true,
    },
    {
      what: 'garbage after HELLO',
      chunks: [hello(), utf8('\u0000\u0000\u0000\u0003garbage!')],
      verdict: Tag.EVICTED,
      afterReady: true,
    },
    {
      what: 'a frame cut off and the connection half-closed',
      chunks: [hello().subarray(0, 7)],
      end: true,
      verdict: null,
    },
  ];

  for (const c of cases) {
    test(`${c.what} closes only that connection`, async () => {
      const { sut, dir, path } = await listen({ handshakeTimeoutMs: 3000 });
      const child = await connected(path, dir, { subscribe: { keys: ['live'] } });
      const protocolErrors: unknown[] = [];
      sut.on('protocolError', (e) => protocolErrors.push(e));
      sut.publish({ kind: 1, key: 'live', payload: seqPayload(0) });
      await waitForSeq(child, 'live', 0);

      const frames = await rawClient(path, c.chunks, { end: c.end, afterReady: c.afterReady });
      const tags = frames.map((f) => f.tag);
      if (c.verdict === null) {
        assert.deepEqual(tags, []);
        assert.equal(protocolErrors.length, 0);
      } else {
        assert.deepEqual(tags, c.afterReady ? [Tag.READY, c.verdict] : [c.verdict], JSON.stringify(frames));
        assert.equal(frames.at(-1)?.reason, 'protocol', JSON.stringify(frames));
        assert.equal(protocolErrors.length, 1);
      }

      // The real consumer in the other process is untouched.
      assert.equal(sut.publish({ kind: 1, key: 'live', payload: seqPayload(1) }), 1);
      await waitForSeq(child, 'live', 1);
      assert.deepEqual(
        sut.consumers().map((x) => x.pid),
        [child.proc.pid],
      );
      await until(() => rings(dir).length === 1, 'no ring of the raw client left behind');
      assert.deepEqual(rings(dir), [`shmbus.${sut.consumers()[0].ring}`]);
    });
  }

  test('a client that never says HELLO is refused after the handshake timeout', async () => {
    const { sut, dir, path } = await listen({ handshakeTimeoutMs: 300 });
    const child = await connected(path, dir, { subscribe: { keys: ['live'] } });
    const frames = await rawClient(path, []);
    assert.deepEqual(
      frames.map((f) => [f.tag, f.reason]),
      [[Tag.REFUSED, 'protocol']],
    );
    assert.equal(sut.publish({ kind: 1, key: 'live', payload: seqPayload(1) }), 1);
    await waitForSeq(child, 'live', 1);
  });
});

describe('fan-out of large payloads through a blob store', () => {
  test('a 4 MiB payload reaches 8 consumer processes identical, is stored once, and is freed after all acked', async () => {
    const dir = privateDir();
    const store = BlobStore.create(`fo-blob-${process.pid}`, { dir, chunkSize: (4 << 20) + 4096, decayMs: 0 });
    cleanups.push(() => store.close());
    // 64 KiB rings: the 4 MiB payload cannot have travelled through them.
    const { sut, path } = await listen({ blobs: store, blobThreshold: 64 * 1024 });
    const children = await Promise.all(
      Array.from({ length: 8 }, () => connected(path, dir, { subscribe: { keys: ['big'] } })),
    );
    const seed = testSeed();
    const random = prng(seed);
    const payload = new Uint8Array(4 << 20);
    for (let i = 0; i < payload.length; i += 4) payload[i] = random() & 0xff;
    assert.equal(sut.publish({ kind: 1, key: 'big', payload }), 8, `seed ${seed}`);
    const digest = sha256(payload);
    for (const child of children) {
      await child.waitFor((m) => (m.m as Got | undefined)?.len === payload.length, DEADLINE_MS);
      const g = got(child)[0];
      assert.equal(g.sha256, digest, `a consumer got different bytes (seed ${seed})`);
      assert.equal(g.compressed, false);
    }
    const metrics = sut.metrics();
    assert.equal(metrics.blobMessages, 1);
    assert.ok(metrics.dispatchedBytes < 8 * 1024, `rings carried ${metrics.dispatchedBytes} bytes, not handles`);
    assert.equal(store.stats().appends, 1, 'stored once');
    const [blobChunk] = store.chunkFiles();
    // Seal the blob's chunk (a full-chunk append goes to a new one); nobody acked yet.
    store.ack(store.append(new Uint8Array(store.maxAppend)));
    assert.equal(store.cleanup(), 0, 'freed before the consumers acknowledged');
    // Each consumer acknowledges when it takes its next message.
    assert.equal(sut.publish({ kind: 1, key: 'big', payload: utf8('next') }), 8);
    for (const child of children) await child.waitFor((m) => (m.m as Got | undefined)?.len === 4, DEADLINE_MS);
    assert.equal(store.cleanup(), 1, 'the blob chunk was not freed after all 8 acknowledged');
    assert.ok(!existsSync(blobChunk) && !store.chunkFiles().includes(blobChunk), 'the chunk file is still there');
    for (const child of children)
      assert.deepEqual(
        child.messages.filter((m) => m.event === 'rejected'),
        [],
      );
  });

  test('when the blob store is full the sender copies payloads into the rings instead, and every one arrives', async () => {
    const dir = privateDir();
    const store = BlobStore.create(`fo-blob-full-${process.pid}`, { dir, chunkSize: 1 << 20, maxChunks: 1 });
    cleanups.push(() => store.close());
    const { sut, path } = await listen({ blobs: store, blobThreshold: 1024, capacity: 1 << 16 });
    const reader = await connected(path, dir, { subscribe: { keys: ['k'] } });
    // A 2 KiB payload goes through the store; once the one 1 MiB chunk is full the sender
    // copies payloads into the rings instead, and every one still arrives.
    const payloads: Uint8Array[] = [];
    for (let i = 0; i < 600; i++) {
      const p = new Uint8Array(2048).fill(i & 0xff);
      p[0] = i >> 8;
      payloads.push(p);
      sut.publish({ kind: 1, key: 'k', payload: p });
      if (i % 16 === 15) await reader.waitFor(() => got(reader).length === i + 1, DEADLINE_MS);
    }
    await until(() => got(reader).length === payloads.length, 'all 600 messages');
    const received = got(reader);
    for (let i = 0; i < payloads.length; i++) assert.equal(received[i].sha256, sha256(payloads[i]), `message ${i}`);
    const m = sut.metrics();
    assert.ok(m.blobMessages > 0 && m.blobFallbacks > 0, JSON.stringify(m));
    assert.equal(m.blobMessages + m.blobFallbacks, payloads.length);
  });
});
