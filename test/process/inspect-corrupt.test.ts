/**
 * `listSegments()` over corrupted copies of real segments of every kind: whatever bytes a
 * segment holds (a buggy or hostile peer, a torn write), the listing returns, every entry
 * either decodes or carries a `problem`, and it serialises to JSON (what `shmbus ls --json`
 * and `shmbus top --json` print). Seeded: the seed is printed on failure (SHMBUS_SEED replays it).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobStore, Channel, Consumer, Daemon, Hub, listSegments, Sender, Session } from '../../src/index.js';
import { prng, testSeed } from '../helpers/prng.js';

const live = mkdtempSync('/dev/shm/shmbus-inspect-live-');
const fuzz = mkdtempSync('/dev/shm/shmbus-inspect-fuzz-');

/** Closes what the test opened, also when it fails (a listening sender would keep the process alive). */
const closers: (() => unknown)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close();
  rmSync(live, { recursive: true, force: true });
  rmSync(fuzz, { recursive: true, force: true });
});

const INTERESTING = [0, 1, 7, 8, 64, 127, 128, 4096, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffff8, 65535, 65536];

test('listSegments never throws on corrupted segments of any kind, and every entry decodes or names its problem', async () => {
  const tx = Channel.create('ch', { dir: live, capacity: 4096, priorities: true });
  const rx = Channel.open('ch', { dir: live });
  closers.push(
    () => tx.close(),
    () => rx.close(),
  );
  for (let i = 0; i < 10; i++)
    tx.trySend(new Uint8Array(40).fill(i), { priority: (['critical', 'high', 'low'] as const)[i % 3] });
  const store = BlobStore.create('blobs', { dir: live, chunkSize: 4096, maxChunks: 4 });
  closers.push(() => store.close());
  store.append(new Uint8Array(100));
  const sender = await Sender.listen({
    path: join(live, 'feed.sock'),
    dir: live,
    capacity: 4096,
    kinds: { 3: 'opt-in', 4: 'always' },
  });
  closers.push(() => sender.close());
  const consumer = await Consumer.connect(join(live, 'feed.sock'), { subscribe: { keys: ['a'], kinds: [3] } });
  closers.push(() => consumer.close());
  for (let i = 0; i < 5; i++) sender.publish({ kind: 1, key: 'a', payload: new Uint8Array(10) });
  const daemon = Daemon.create('daemon', {
    dir: live,
    dataSize: 64,
    maxClients: 2,
    cmdSlots: 2,
    cmdMaxBytes: 64,
    respCapacity: 4096,
  });
  closers.push(() => daemon.close());
  daemon.writeData(new Uint8Array(8));
  const session = Session.create('session', { dir: live, slotSize: 256, slotCount: 8 });
  closers.push(() => session.close());
  session.tryAlloc(100);
  const hub = Hub.create('hub', {
    dir: live,
    maxPeers: 2,
    ringCapacity: 4096,
    classes: [
      { slotSize: 256, slotCount: 8 },
      { slotSize: 1024, slotCount: 2 },
    ],
  });
  closers.push(() => hub.close());
  await sleep(50);
  const originals = readdirSync(live)
    .filter((f) => f.startsWith('shmbus.'))
    .map((f) => ({ file: f, bytes: readFileSync(join(live, f)) }));
  const intact = listSegments({ dir: live });
  const kinds = new Set(intact.map((s) => s.kind));
  for (const k of ['channel', 'blob store', 'blob chunk', 'fan-out sender', 'daemon', 'session', 'hub'])
    assert.ok(kinds.has(k), `a ${k} to corrupt (have ${[...kinds].join(', ')})`);
  // The intact ones decode to what was done to them.
  // biome-ignore lint/suspicious/noExplicitAny: details are per kind
  const details = (kind: string, name?: string): any =>
    intact.find((x) => x.kind === kind && (name === undefined || x.name === name))?.details;
  // Ten frames round-robin over critical, high, low, none received yet.
  assert.deepEqual(
    details('channel', 'ch').rings.map((r: { framesInFlight: number }) => r.framesInFlight),
    [4, 3, 3],
  );
  const s = details('fan-out sender');
  assert.deepEqual([s.kindModes['opt-in'], s.kindModes.always], [[3], [4]]);
  assert.equal(s.perConsumer.length, 1);
  assert.deepEqual([s.perConsumer[0].keys, s.perConsumer[0].kinds, s.perConsumer[0].delivered], [1, [3], 5]);
  assert.equal(details('daemon').stateVersion, 1);
  assert.deepEqual([details('session').slots.held, details('session').slots.byPeer.A.held], [1, 1]);
  const h = details('hub');
  assert.deepEqual(
    h.classes.map((c: { slots: number; free: number }) => [c.slots, c.free]),
    [
      [8, 8],
      [2, 2],
    ],
  );
  assert.equal(h.host.alive, true);
  // The copies of a sender's ring and of a store's chunk, under their names, so the links resolve.
  for (const o of originals) copyFileSync(join(live, o.file), join(fuzz, o.file));

  const seed = testSeed();
  const rng = prng(seed);
  const int = (n: number) => Math.floor(rng() * n);
  const problems = new Map<string, number>();
  let decoded = 0;
  try {
    for (let c = 0; c < 600; c++) {
      const o = originals[int(originals.length)];
      const bytes = Buffer.from(o.bytes);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      const patches = 1 + int(6);
      for (let p = 0; p < patches; p++) {
        // Mostly the header's parameters and the blocks after it; keep magic and version most of the time.
        const span = rng() < 0.7 ? Math.min(bytes.length, 1024) : bytes.length;
        let at = int(span - 4) & ~3;
        if (at < 12 && rng() < 0.95) at = 12 + (int(span - 16) & ~3);
        const v = rng() < 0.6 ? INTERESTING[int(INTERESTING.length)] : int(2 ** 32);
        if (rng() < 0.2) dv.setFloat64(at & ~7, rng() < 0.5 ? Number.NaN : -1e300, true);
        else dv.setUint32(at, v >>> 0, true);
      }
      const name = `shmbus.${o.file.slice('shmbus.'.length)}`;
      writeFileSync(join(fuzz, name), bytes);
      const listed = listSegments({ dir: fuzz });
      assert.equal(listed.length, originals.length);
      for (const s of listed) {
        assert.equal(typeof s.summary, 'string');
        if (s.problem !== undefined)
          problems.set(s.problem.split(':')[0], (problems.get(s.problem.split(':')[0]) ?? 0) + 1);
        else decoded++;
      }
      JSON.stringify(listed);
      // Back to the original for the next case.
      writeFileSync(join(fuzz, name), o.bytes);
      assert.equal(statSync(join(fuzz, name)).size, o.bytes.length);
    }
  } catch (err) {
    console.error(`inspect-corrupt seed ${seed} (replay: SHMBUS_SEED=${seed})`);
    throw err;
  }
  assert.ok(decoded > 0);
  assert.ok((problems.get('corrupt') ?? 0) > 0, `some corruption is caught: ${JSON.stringify([...problems])}`);
});
