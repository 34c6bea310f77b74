/**
 * Readers map what only the producer writes read-only: a channel receiver's ring data, a
 * fan-out consumer's ring data and a read-only blob-store attacher's chunk data. A reader
 * that writes into a payload it received (a bug in the reader) dies of SIGSEGV at that write;
 * the producer, the other readers and the bytes they see are unharmed. Each child prints
 * {"survived":true} if its write did not fault, which fails the test.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, test } from 'node:test';
import { BlobStore, Channel, Consumer, ErrorCode, Sender } from '../../src/index.js';
import { type Child, startFixture, uniqueName } from '../helpers/children.js';

const dir = mkdtempSync('/dev/shm/shmbus-readonly-test-');
process.env.SHMBUS_DIR = dir;
after(() => rmSync(dir, { recursive: true, force: true }));
const children: Child[] = [];
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop()) await c();
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await child.exited(20_000);
  }
});

function start(args: string[]): Child {
  const child = startFixture('stray-write', args, { SHMBUS_DIR: dir });
  children.push(child);
  return child;
}

const bytes = (text: string) => new TextEncoder().encode(text);
const hexOf = (text: string) => Buffer.from(text).toString('hex');

async function diesOfSegv(child: Child): Promise<void> {
  await child.waitFor((m) => m.writing === true);
  const exit = await child.exited(20_000);
  assert.equal(
    child.messages.some((m) => m.survived === true),
    false,
    'the write into a received payload did not fault',
  );
  assert.deepEqual(exit, { code: null, signal: 'SIGSEGV' }, `stderr: ${child.stderr.join('')}`);
}

test('a channel receiver that writes into a frame dies of SIGSEGV; the producer goes on and the next receiver reads intact frames', async () => {
  const name = uniqueName('ro-channel');
  const tx = Channel.create(name, { capacity: 1 << 16 });
  cleanups.push(() => tx.close());
  const reader = start(['channel', name]);
  await reader.waitFor((m) => m.ready === true);
  for (const text of ['one', 'two', 'WRITE-ME', 'three']) assert.equal(tx.trySend(bytes(text)), true);
  await diesOfSegv(reader);
  assert.deepEqual(
    reader.messages.filter((m) => 'got' in m).map((m) => m.got),
    [hexOf('one'), hexOf('two')],
  );
  // The producer is alive and its ring intact: a new receiver (the dead one's role lock is
  // free) gets every frame the dead one did not release, byte for byte, and what comes next.
  assert.equal(tx.trySend(bytes('four')), true);
  const rx = Channel.open(name);
  cleanups.push(() => rx.close());
  const seen: string[] = [];
  for (let f = rx.tryRecv(); f !== null; f = rx.tryRecv()) seen.push(Buffer.from(f).toString());
  assert.deepEqual(seen.slice(seen.indexOf('WRITE-ME')), ['WRITE-ME', 'three', 'four']);
  // The receiver's own stray write faults here too (its ring data is read-only in this process).
  assert.equal(tx.trySend(bytes('five')), true);
});

test('a fan-out consumer that writes into a payload dies of SIGSEGV; the sender and the other consumers are unharmed', async () => {
  const path = join(tmpdir(), `shmbus-ro-${process.pid}.sock`);
  cleanups.push(() => rmSync(path, { force: true }));
  const sender = await Sender.listen({ path, dir, capacity: 1 << 16 });
  cleanups.push(() => sender.close());
  const stray = start(['fanout', path]);
  await stray.waitFor((m) => m.ready === true);
  const good = await Consumer.connect(path, { subscribe: { keys: ['k'] } });
  cleanups.push(() => good.close());
  const texts = ['a1', 'a2', 'WRITE-ME', 'a3', 'a4'];
  for (const text of texts) assert.equal(sender.publish({ kind: 1, key: 'k', payload: bytes(text) }), 2);
  await diesOfSegv(stray);
  assert.deepEqual(
    stray.messages.filter((m) => 'got' in m).map((m) => m.got),
    [hexOf('a1'), hexOf('a2')],
  );
  // The sender notices the dead consumer and goes on with the live one.
  const deadline = Date.now() + 20_000;
  while (sender.metrics().consumers !== 1) {
    assert.ok(Date.now() < deadline, `consumers: ${sender.metrics().consumers}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(sender.publish({ kind: 1, key: 'k', payload: bytes('a5') }), 1);
  const seen: string[] = [];
  for (const _ of [...texts, 'a5']) {
    const m = await good.next();
    assert.ok(m !== null);
    seen.push(Buffer.from(m.payload).toString());
  }
  assert.deepEqual(seen, [...texts, 'a5']);
});

test('a read-only blob-store attacher that writes into a view dies of SIGSEGV; the blob is intact and its acknowledgements still work', async () => {
  const name = uniqueName('ro-blob');
  const store = BlobStore.create(name, { chunkSize: 64 * 1024 });
  cleanups.push(() => store.close());
  const plain = store.append(bytes('plain blob'));
  const target = store.append(bytes('WRITE-ME blob'), { recipients: 2 });
  const reader = start(['blob', name]);
  await reader.waitFor((m) => m.ready === true);
  reader.proc.stdin?.write(`${JSON.stringify({ handle: Buffer.from(plain.toBytes()).toString('hex') })}\n`);
  await reader.waitFor((m) => m.got === hexOf('plain blob'));
  reader.proc.stdin?.write(`${JSON.stringify({ handle: Buffer.from(target.toBytes()).toString('hex') })}\n`);
  await diesOfSegv(reader);
  assert.deepEqual(store.resolve(target), bytes('WRITE-ME blob'));
  assert.equal(store.ack(target, 0), true);
  assert.equal(store.isAcknowledged(target), false);
  assert.equal(store.ack(target, 1), true);
  assert.equal(store.isAcknowledged(target), true);
  // Read-only here too: reads and acknowledgements work, appends are refused.
  const ro = BlobStore.attach(name, { readOnly: true });
  cleanups.push(() => ro.close());
  assert.deepEqual(ro.resolve(plain), bytes('plain blob'));
  assert.equal(ro.ack(plain), true);
  assert.equal(store.isAcknowledged(plain), true);
  assert.throws(
    () => ro.append(bytes('x')),
    (err: Error & { code?: string }) => err.code === ErrorCode.INVALID_ARGUMENT,
  );
});
