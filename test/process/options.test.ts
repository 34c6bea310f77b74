/** Every public constructor refuses out-of-range options with SHM_ERR_INVALID_ARGUMENT and leaves no file behind. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { after, test } from 'node:test';
import { Client, Consumer, Daemon, ErrorCode, Hub, Sender, Session, ShmArgumentError } from '../../src/index.js';
import { setupShmConsumer } from '../../src/solana/index.js';

const dir = mkdtempSync('/dev/shm/shmbus-options-');
after(() => rmSync(dir, { recursive: true, force: true }));

function isInvalid(err: unknown): boolean {
  assert.ok(err instanceof ShmArgumentError, `expected ShmArgumentError, got ${String(err)}`);
  assert.equal(err.code, ErrorCode.INVALID_ARGUMENT);
  return true;
}

test('Daemon, Session and Hub refuse out-of-range options and create nothing', () => {
  const cases: [string, () => unknown][] = [
    ['daemon dataSize', () => Daemon.create('o-d', { dir, dataSize: 4 })],
    ['daemon maxClients', () => Daemon.create('o-d', { dir, maxClients: 0 })],
    ['daemon cmdSlots', () => Daemon.create('o-d', { dir, cmdSlots: 0 })],
    ['daemon cmdMaxBytes', () => Daemon.create('o-d', { dir, cmdMaxBytes: 1.5 })],
    ['daemon respCapacity', () => Daemon.create('o-d', { dir, respCapacity: 3000 })],
    ['daemon wait', () => Daemon.create('o-d', { dir, wait: 'sometimes' as never })],
    ['session slotSize', () => Session.create('o-s', { dir, slotSize: 100 })],
    ['session slotCount', () => Session.create('o-s', { dir, slotCount: 70_000 })],
    ['session inlineMax', () => Session.create('o-s', { dir, inlineMax: -1 })],
    ['session ringCapacity', () => Session.create('o-s', { dir, ringCapacity: 1000 })],
    ['session ring too small for inlineMax', () => Session.create('o-s', { dir, ringCapacity: 1024, inlineMax: 4096 })],
    ['hub maxPeers', () => Hub.create('o-h', { dir, maxPeers: 63 })],
    ['hub no classes', () => Hub.create('o-h', { dir, classes: [] })],
    [
      'hub classes out of order',
      () =>
        Hub.create('o-h', {
          dir,
          classes: [
            { slotSize: 1024, slotCount: 1 },
            { slotSize: 512, slotCount: 1 },
          ],
        }),
    ],
    ['hub class slotCount', () => Hub.create('o-h', { dir, classes: [{ slotSize: 1024, slotCount: 0 }] })],
  ];
  for (const [what, fn] of cases) assert.throws(fn, isInvalid, what);
  assert.deepEqual(readdirSync(dir), []);
});

test('Sender.listen, Consumer.connect and setupShmConsumer refuse bad options before touching the system', async () => {
  const cases: [string, () => Promise<unknown>][] = [
    ['sender path too long', () => Sender.listen({ path: `/tmp/${'x'.repeat(120)}.sock` })],
    ['sender capacity', () => Sender.listen({ path: '/tmp/shmbus-o.sock', capacity: 1000 })],
    ['sender kind out of range', () => Sender.listen({ path: '/tmp/shmbus-o.sock', kinds: { 300: 'always' } })],
    ['sender kind mode', () => Sender.listen({ path: '/tmp/shmbus-o.sock', kinds: { 1: 'bogus' as never } })],
    ['sender allowUids', () => Sender.listen({ path: '/tmp/shmbus-o.sock', allowUids: ['root' as never] })],
    ['sender blobs', () => Sender.listen({ path: '/tmp/shmbus-o.sock', blobs: {} as never })],
    ['sender blobThreshold', () => Sender.listen({ path: '/tmp/shmbus-o.sock', blobThreshold: 0 })],
    ['consumer path', () => Consumer.connect('')],
    ['solana queueCapacity', () => setupShmConsumer('/tmp/shmbus-o-none.sock', { queueCapacity: 0 })],
  ];
  for (const [what, fn] of cases) await assert.rejects(fn(), isInvalid, what);
});

test('live ends refuse bad per-call arguments and keep working', async () => {
  const daemon = Daemon.create('o-live', { dir, cmdMaxBytes: 64 });
  const server = daemon.serve((_, cmd) => cmd);
  const client = Client.connect('o-live', { dir });
  const a = Session.create('o-sess', { dir, slotSize: 64, slotCount: 2 });
  try {
    assert.throws(() => client.send(Uint8Array.of(1), { priority: 'urgent' as never }), isInvalid);
    await assert.rejects(client.request('text' as never), isInvalid);
    assert.throws(() => a.trySend(Uint8Array.of(1), { channel: -1 }), isInvalid);
    assert.throws(() => a.trySend(Uint8Array.of(1), { flags: 2 ** 32 }), isInvalid);
    assert.throws(() => a.tryAlloc(-1), isInvalid);
    assert.throws(() => a.free(new Uint8Array(8)), isInvalid);
    assert.deepEqual([...(await client.request(Uint8Array.of(7), { timeoutMs: 5000 }))], [7]);
  } finally {
    client.close();
    await server.stop();
    daemon.close();
    a.close();
  }
  assert.deepEqual(readdirSync(dir), []);
});
