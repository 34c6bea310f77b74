/**
 * A live but stalled process is not a dead one: a producer, a blob-store writer and a daemon
 * are stopped with SIGSTOP for longer than every timeout around them, then continued with
 * SIGCONT. Nothing may treat them as dead (liveness is a lock, never a timeout), nothing may
 * be corrupted, and their work must go on. Where a timeout does free something under a stalled
 * process (the blob store's TTL), the stalled writer's late bytes must never show up as another
 * entry's. Every run has its own segment directory under /dev/shm.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { after, afterEach, test } from 'node:test';
import { BlobHandle, BlobStore, Channel, Client, ErrorCode, ShmError } from '../../src/index.js';
import { checkPayload } from '../fixtures/blob-pattern.js';
import { command, Op } from '../fixtures/daemon-protocol.js';
import { type Child, startFixture, uniqueName } from '../helpers/children.js';
import { checkFrame, testSeed } from '../helpers/prng.js';

const dir = mkdtempSync('/dev/shm/shmbus-stalled-test-');
process.env.SHMBUS_DIR = dir;
after(() => rmSync(dir, { recursive: true, force: true }));
const children: Child[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop()) c();
  for (const child of children.splice(0)) {
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await child.exited(20_000);
  }
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function start(name: string, args: string[]): Child {
  const child = startFixture(name, args, { SHMBUS_DIR: dir });
  children.push(child);
  return child;
}

test('a producer stopped past every timeout is not dead: the consumer times out, then the stream goes on intact', async () => {
  const name = uniqueName('stalled-producer');
  const producer = start('channel-producer', [name, '1', String(testSeed()), '200', 'park', 'forever']);
  await producer.waitFor((m) => m.ready === true, 20_000);
  const rx = Channel.open(name, { livenessCheckMs: 20 });
  cleanups.push(() => rx.close());
  let seq = 0;
  const take = async (n: number) => {
    for (const end = seq + n; seq < end; seq++) {
      const frame = await rx.recv({ timeoutMs: 10_000 });
      assert.ok(frame !== null, `frame ${seq}: end of stream`);
      assert.equal(checkFrame(frame, seq), null);
    }
  };
  await take(1000);
  producer.kill('SIGSTOP');
  await sleep(100); // whatever was in flight lands in the ring
  for (let frame = rx.tryRecv(); frame !== null; frame = rx.tryRecv(), seq++)
    assert.equal(checkFrame(frame, seq), null, 'a frame drained while the producer was stopped');
  // Stopped for 1.5 s, 75 liveness checks: a wait ends by its own timeout, never PEER_DEAD.
  await assert.rejects(rx.recv({ timeoutMs: 1500 }), (err: unknown) => {
    assert.ok(err instanceof ShmError && err.code === ErrorCode.TIMEOUT, String(err));
    return true;
  });
  assert.equal(rx.peerAlive(), true);
  producer.kill('SIGCONT');
  // The stream resumes exactly where it stopped: no frame lost, torn or repeated.
  await take(1000);
});

test('a blob-store writer stopped past the TTL: its late append goes elsewhere and no handle ever gives another entry’s bytes', async () => {
  const seed = testSeed();
  const name = uniqueName('stalled-blob');
  const ttlMs = 300;
  const store = BlobStore.create(name, { chunkSize: 4096, ttlMs, decayMs: 0, maxChunks: 64 });
  cleanups.push(() => store.close());
  const writer = start('blob-writer', [
    name,
    JSON.stringify({ writer: 1, count: 400, seed, minSize: 1, maxSize: 600, pauseMaxMs: 2, deadlineMs: 60_000 }),
  ]);
  await writer.waitFor((m) => m.ready === true, 20_000);
  await writer.waitFor(() => writer.messages.filter((m) => m.h !== undefined).length >= 50, 20_000);
  writer.kill('SIGSTOP');
  // Past the TTL, with cleanups running and this process appending into the same store.
  const mine: { h: BlobHandle; seq: number; size: number }[] = [];
  const deadline = Date.now() + 3 * ttlMs;
  for (let seq = 0; Date.now() < deadline; seq++) {
    const bytes = new Uint8Array(1 + (seq % 500)).fill(seq & 0xff);
    mine.push({ h: store.append(bytes), seq, size: bytes.length });
    store.cleanup();
    await sleep(5);
  }
  writer.kill('SIGCONT');
  const done = await writer.waitFor((m) => m.done === true || m.fatal !== undefined, 60_000);
  assert.equal(done.done, true, JSON.stringify(done));
  assert.deepEqual(done.problems, [], 'the writer’s own handles resolved to other bytes');
  for (const m of writer.messages.filter((x) => x.h !== undefined)) {
    const h = BlobHandle.fromBytes(Buffer.from(m.h as string, 'hex'));
    const got = store.resolve(h);
    if (got !== null) assert.equal(checkPayload(got, seed, 1, m.seq as number, m.size as number), null);
  }
  for (const { h, seq, size } of mine) {
    const got = store.resolve(h);
    if (got !== null) assert.deepEqual([got.length, got[0]], [size, seq & 0xff]);
  }
});

test('a daemon stopped past every timeout: requests time out, none is lost or answered twice, and it serves again after SIGCONT', async () => {
  const name = uniqueName('stalled-daemon');
  const daemon = start('daemon-server', [name, JSON.stringify({ mode: 'serve' })]);
  const ready = await daemon.waitFor((m) => m.ready === true || m.fatal !== undefined, 20_000);
  assert.equal(ready.ready, true, JSON.stringify(ready));
  const client = Client.connect(name);
  cleanups.push(() => client.close());
  // ECHO replies with the client id and the whole command: check the command came back.
  const ask = async (i: number, timeoutMs = 5_000) =>
    Array.from((await client.request(command(Op.ECHO, Uint8Array.of(i)), { timeoutMs })).subarray(4));
  const echo = (i: number) => Array.from(command(Op.ECHO, Uint8Array.of(i)));
  assert.deepEqual(await ask(1), echo(1));
  daemon.kill('SIGSTOP');
  await assert.rejects(ask(2, 800), (err: unknown) => {
    assert.ok(err instanceof ShmError && err.code === ErrorCode.TIMEOUT, String(err));
    return true;
  });
  daemon.kill('SIGCONT');
  // The late reply to the timed-out request is dropped; every new request gets its own reply.
  for (let i = 3; i < 50; i++) assert.deepEqual(await ask(i), echo(i));
});
