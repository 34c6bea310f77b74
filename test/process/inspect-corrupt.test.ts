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
after(() => {
  rmSync(live, { recursive: true, force: true });
  rmSync(fuzz, { recursive: true, force: true });
});

const INTERESTING = [0, 1, 7, 8, 64, 127, 128, 4096, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffff8, 65535, 65536];

test('listSegments never throws on corrupted segments of any kind, and every entry decodes or names its problem', async () => {
  const tx = Channel.create('ch', { dir: live, capacity: 4096, priorities: true });
  const rx = Channel.open('ch', { dir: live });
  for (let i = 0; i < 10; i++)
    tx.trySend(new Uint8Array(40).fill(i), { priority: (['critical', 'high', 'low'] as const)[i % 3] });
  rx.tryRecv();
  const store = BlobStore.create('blobs', { dir: live, chunkSize: 4096, maxChunks: 4 });
  store.append(new Uint8Array(100));
  const sender = await Sender.listen({
    path: join(live, 'feed.sock'),
    dir: live,
    capacity: 4096,
    kinds: { 3: 'opt-in', 4: 'always' },
  });
  const consumer = await Consumer.connect(join(live, 'feed.sock'), { subscribe: { keys: ['a'], kinds: [3] } });
  for (let i = 0; i < 5; i++) sender.publish({ kind: 1, key: 'a', payload: new Uint8Array(10) });
  const daemon = Daemon.create('daemon', {
    dir: live,
    dataSize: 64,
    maxClients: 2,
    cmdSlots: 2,
    cmdMaxBytes: 64,
    respCapacity: 4096,
  });
  daemon.writeData(new Uint8Array(8));
  const session = Session.create('session', { dir: live, slotSize: 256, slotCount: 8 });
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
  await sleep(50);
  const originals = readdirSync(live)
    .filter((f) => f.startsWith('shmbus.'))
    .map((f) => ({ file: f, bytes: readFileSync(join(live, f)) }));
  const kinds = new Set(listSegments({ dir: live }).map((s) => s.kind));
  for (const k of ['channel', 'blob store', 'blob chunk', 'fan-out sender', 'daemon', 'session', 'hub'])
    assert.ok(kinds.has(k), `a ${k} to corrupt (have ${[...kinds].join(', ')})`);
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
  await consumer.close();
  await sender.close();
  hub.close();
  session.close();
  daemon.close();
  store.close();
  rx.close();
  tx.close();
});
