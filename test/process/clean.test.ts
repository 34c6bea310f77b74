/**
 * `shmbus clean` / cleanStale(): stale files of SIGKILLed processes are removed and reported;
 * anything a live process holds is kept. Real processes are killed; every run has its own
 * segment directory (a mkdtemp under /dev/shm, SHMBUS_DIR for the children).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BlobStore, Channel, Consumer, cleanStale, Sender } from '../../src/index.js';
import { type Child, startFixture, uniqueName } from '../helpers/children.js';

const dir = mkdtempSync('/dev/shm/shmbus-clean-test-');
process.env.SHMBUS_DIR = dir;
const children: Child[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop()) c();
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await child.exited(20_000);
  }
  for (const f of readdirSync(dir)) rmSync(join(dir, f), { force: true });
});
after(() => rmSync(dir, { recursive: true, force: true }));

function start(name: string, args: string[]): Child {
  const child = startFixture(name, args, { SHMBUS_DIR: dir });
  children.push(child);
  return child;
}

async function killed(child: Child): Promise<void> {
  child.kill('SIGKILL');
  await child.exited(20_000);
}

const files = () => readdirSync(dir).sort();

test('removes what SIGKILLed processes left and keeps every file a live process holds', async () => {
  const n = uniqueName('clean');
  // 1. A producer killed before any consumer came: stale.
  const dead = start('channel-producer', [`${n}-dead`, '1', '1', '16', 'park', 'forever']);
  await dead.waitFor((m) => m.ready === true);
  await killed(dead);
  // 2. A producer killed while its consumer (this process) still has the channel open: kept.
  const producer = start('channel-producer', [`${n}-half`, '1', '1', '16', 'park', 'forever']);
  await producer.waitFor((m) => m.ready === true);
  const consumer = Channel.open(`${n}-half`);
  cleanups.push(() => consumer.close());
  await killed(producer);
  // 3. A live channel of this process: kept.
  const live = Channel.create(`${n}-live`);
  cleanups.push(() => {
    live.close();
    Channel.remove(`${n}-live`);
  });
  // 4. A blob store whose creator was killed: control and chunks stale.
  const store = start('blob-peer', [`${n}-store`, JSON.stringify({ create: { chunkSize: 256 }, text: ['a', 'b'] })]);
  await store.waitFor((m) => m.ready === true);
  const blob = BlobStore.attach(`${n}-store`);
  blob.append(new Uint8Array(200)); // a second chunk, made by this (live) process
  blob.close();
  await killed(store);
  // 5. A live blob store (this process) with two chunks: kept, chunks included.
  const own = BlobStore.create(`${n}-own`, { chunkSize: 256 });
  cleanups.push(() => own.close());
  own.append(new Uint8Array(200));
  own.append(new Uint8Array(200));
  // 6. A half-made file of a dead creator, and a foreign file that only looks like ours.
  writeFileSync(join(dir, `shmbus.${n}-x~999999.abcdef`), new Uint8Array(4096));
  writeFileSync(join(dir, `shmbus.${n}-foreign`), 'not a segment');

  const before = files();
  const dry = cleanStale({ dryRun: true });
  assert.deepEqual(files(), before, 'a dry run removed something');
  const report = cleanStale();
  assert.deepEqual(
    report.removed.map((r) => r.file).sort(),
    dry.removed.map((r) => r.file).sort(),
    'the dry run and the real run disagree',
  );
  const removed = new Set(report.removed.map((r) => r.file));
  const expectRemoved = [
    `shmbus.${n}-dead`,
    `shmbus.${n}-store`,
    `shmbus.${n}-x~999999.abcdef`,
    ...before.filter((f) => f.startsWith(`shmbus.${n}-store.b`)),
  ];
  for (const f of expectRemoved) assert.ok(removed.has(f), `${f} was not removed: ${JSON.stringify(report)}`);
  assert.equal(removed.size, expectRemoved.length, `removed more than the stale files: ${[...removed]}`);
  const after = files();
  for (const f of [`shmbus.${n}-half`, `shmbus.${n}-live`, `shmbus.${n}-own`, `shmbus.${n}-foreign`])
    assert.ok(after.includes(f), `${f} is gone`);
  assert.equal(after.filter((f) => f.startsWith(`shmbus.${n}-own.b`)).length, own.chunkFiles().length);
  const dead1 = report.removed.find((r) => r.file === `shmbus.${n}-dead`);
  assert.equal(dead1?.kind, 'channel');
  assert.ok((dead1?.bytes ?? 0) > 0);
  // The live ones still work.
  own.append(Uint8Array.of(1));
  assert.equal(live.trySend(Uint8Array.of(1)), true);
  // Nothing stale is left: a second run removes nothing.
  assert.deepEqual(cleanStale().removed, []);
});

test('the shmbus clean command reports in text and JSON', async () => {
  const n = uniqueName('clean-cli');
  const dead = start('channel-producer', [n, '1', '1', '16', 'park', 'forever']);
  await dead.waitFor((m) => m.ready === true);
  await killed(dead);
  const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
  const dry = execFileSync(process.execPath, [cli, 'clean', '--dir', dir, '--dry-run'], { encoding: 'utf8' });
  assert.match(dry, new RegExp(`would remove shmbus\\.${n} \\(channel, \\d+ B, owner pid \\d+\\)`));
  assert.ok(files().includes(`shmbus.${n}`));
  const json = JSON.parse(execFileSync(process.execPath, [cli, 'clean', '--dir', dir, '--json'], { encoding: 'utf8' }));
  assert.deepEqual(
    json.removed.map((r: { file: string }) => r.file),
    [`shmbus.${n}`],
  );
  assert.equal(files().includes(`shmbus.${n}`), false);
});

test("removes a SIGKILLed fan-out sender's socket and registration, keeps a live sender's", async () => {
  const tag = `${process.pid}-${Date.now()}`;
  const deadPath = join(tmpdir(), `shmbus-clean-dead-${tag}.sock`);
  const livePath = join(tmpdir(), `shmbus-clean-live-${tag}.sock`);
  cleanups.push(() => rmSync(deadPath, { force: true }));
  const dead = start('fanout-sender', [deadPath, JSON.stringify({ gen: 1, keys: ['k'], everyMs: 50 })]);
  await dead.waitFor((m) => m.listening === true);
  const live = await Sender.listen({ path: livePath, dir });
  cleanups.push(() => void live.close());
  const registrations = () => files().filter((f) => f.startsWith('shmbus.sender.'));
  assert.equal(registrations().length, 2);
  await killed(dead);
  assert.ok(existsSync(deadPath), 'a SIGKILLed sender leaves its socket file');

  const dry = cleanStale({ dir, dryRun: true });
  assert.ok(existsSync(deadPath), 'a dry run removes nothing');
  assert.deepEqual(dry.removed.map((r) => r.kind).sort(), ['fan-out sender', 'socket'], JSON.stringify(dry));
  const report = cleanStale({ dir });
  const socket = report.removed.find((r) => r.kind === 'socket');
  assert.equal(socket?.file, deadPath);
  assert.match(socket?.reason ?? '', /nobody listens/);
  assert.equal(existsSync(deadPath), false);
  assert.equal(registrations().length, 1, 'the live sender keeps its registration');
  assert.ok(existsSync(livePath), 'and its socket');
  assert.ok(report.kept.some((k) => k.file.startsWith('shmbus.sender.') && /alive/.test(k.reason)));
  // The live sender still serves.
  const consumer = await Consumer.connect(livePath, { subscribe: { keys: ['k'] } });
  cleanups.push(() => void consumer.close());
  assert.equal(live.publish({ kind: 1, key: 'k', payload: Uint8Array.of(7) }), 1);
  assert.deepEqual([...((await consumer.next())?.payload ?? [])], [7]);
});

test('a stale registration whose socket path is now served by a new sender removes the registration only', async () => {
  const path = join(tmpdir(), `shmbus-clean-rebound-${process.pid}-${Date.now()}.sock`);
  const otherDir = mkdtempSync('/dev/shm/shmbus-clean-other-');
  cleanups.push(() => rmSync(otherDir, { recursive: true, force: true }));
  const dead = start('fanout-sender', [path, JSON.stringify({ gen: 1 })]);
  await dead.waitFor((m) => m.listening === true);
  await killed(dead);
  // A new sender on the same socket path, registered in another directory.
  const fresh = await Sender.listen({ path, dir: otherDir });
  cleanups.push(() => void fresh.close());
  const report = cleanStale({ dir });
  assert.deepEqual(
    report.removed.map((r) => r.kind),
    ['fan-out sender'],
  );
  assert.ok(
    report.kept.some((k) => k.file === path && k.reason === 'a process listens on it'),
    JSON.stringify(report),
  );
  assert.ok(existsSync(path));
});
