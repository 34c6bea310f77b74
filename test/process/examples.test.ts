/** The README quick start, run as written: examples/consumer.mjs and examples/producer.mjs. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const run = promisify(execFile);

test('the quick start runs as written: the consumer prints all ten messages', async () => {
  const consumer = run(process.execPath, ['examples/consumer.mjs'], { cwd: root, timeout: 30_000 });
  const producer = run(process.execPath, ['examples/producer.mjs'], { cwd: root, timeout: 30_000 });
  const [c, p] = await Promise.all([consumer, producer]);
  assert.equal(p.stdout.trim(), 'sent 10 messages');
  assert.deepEqual(
    c.stdout.trim().split('\n'),
    Array.from({ length: 10 }, (_, i) => `received message ${i}`),
  );
  assert.equal(existsSync('/dev/shm/shmbus.quickstart'), false, 'the last end removed the file');
});

test('the fan-out example runs as written: the consumer gets only its key and the heartbeat', async () => {
  const consumer = run(process.execPath, ['examples/fanout-consumer.mjs'], { cwd: root, timeout: 30_000 });
  const sender = run(process.execPath, ['examples/fanout-sender.mjs'], { cwd: root, timeout: 30_000 });
  const [c, s] = await Promise.all([consumer, sender]);
  assert.equal(s.stdout.trim(), 'published 21 messages, delivered 11');
  assert.deepEqual(c.stdout.trim().split('\n'), [
    ...Array.from({ length: 10 }, (_, i) => `kind 1: BTC ${60_000 + i}`),
    'kind 9: heartbeat',
  ]);
  assert.equal(existsSync('/tmp/shmbus-example.sock'), false, 'the sender removed its socket');
});

test('the Solana example runs as written: owner filter, transaction opt-in, slots always on', async () => {
  const consumer = run(process.execPath, ['examples/solana-consumer.mjs'], { cwd: root, timeout: 30_000 });
  const sender = run(process.execPath, ['examples/solana-sender.mjs'], { cwd: root, timeout: 30_000 });
  const [c, s] = await Promise.all([consumer, sender]);
  assert.equal(s.stdout.trim(), 'published 2 accounts, 1 transaction, 1 slot');
  assert.deepEqual(c.stdout.trim().split('\n'), [
    'account 4vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi lamports 2039280n',
    'transaction in slot 1000n',
    'slot 1001n',
  ]);
});

test('the daemon example runs as written: state, request, new state', async () => {
  const client = run(process.execPath, ['examples/client.mjs'], { cwd: root, timeout: 30_000 });
  const daemon = run(process.execPath, ['examples/daemon.mjs'], { cwd: root, timeout: 30_000 });
  const [c, d] = await Promise.all([client, daemon]);
  assert.equal(d.stdout.trim(), 'daemon serving');
  assert.deepEqual(c.stdout.trim().split('\n'), [
    'state: {"price":100} version 1',
    'client 1: price is now 101',
    'state: {"price":101}',
  ]);
  assert.equal(existsSync('/dev/shm/shmbus.example-prices'), false, 'close() removed the segment');
});

test('the session example runs as written: three zero-copy frames and an inline reply', async () => {
  const b = run(process.execPath, ['examples/session-b.mjs'], { cwd: root, timeout: 30_000 });
  const a = run(process.execPath, ['examples/session-a.mjs'], { cwd: root, timeout: 30_000 });
  const [outB, outA] = await Promise.all([b, a]);
  assert.equal(outA.stdout.trim(), 'A got: thanks');
  const lines = outB.stdout.trim().split('\n');
  assert.equal(lines.length, 3);
  for (const [i, line] of lines.entries())
    assert.match(line, new RegExp(`^B got 1048576 bytes of ${i + 1} in slot \\d$`));
  assert.equal(existsSync('/dev/shm/shmbus.example-frames'), false, 'A removed the segment');
});

test('the blob store example runs as written: a handle through a channel, a copy and an in-place view', async () => {
  const reader = run(process.execPath, ['examples/blob-reader.mjs'], { cwd: root, timeout: 30_000 });
  const writer = run(process.execPath, ['examples/blob-writer.mjs'], { cwd: root, timeout: 30_000 });
  const [outR, outW] = await Promise.all([reader, writer]);
  assert.deepEqual(outR.stdout.trim().split('\n'), [
    'reader: resolved "hello world"',
    'reader: viewed 1048576 bytes in place, all 7s',
  ]);
  assert.equal(outW.stdout.trim(), 'writer: both blobs acknowledged');
  const left = readdirSync('/dev/shm').filter((f) => f.startsWith('shmbus.example-blob'));
  assert.deepEqual(left, [], 'the writer removed the store and the channel');
});
