/**
 * Who may open what: every segment and socket is owner-only (0600) by default, `mode` /
 * `socketMode` opt into sharing, and a sender's allowUids turns a connecting uid away before
 * it allocates anything. The other user is `nobody` (uid/gid 65534): a child process started
 * with that uid (the test process must be root; otherwise the tests that need it skip).
 *
 * One segment directory per run (a mkdtemp under /dev/shm, made world-traversable so that
 * permission, not the directory, decides), SHMBUS_DIR for this process and its children.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { BlobStore, Channel, Consumer, Daemon, Sender, Session } from '../../src/index.js';
import { type Child, startFixture, uniqueName } from '../helpers/children.js';

const dir = mkdtempSync('/dev/shm/shmbus-perm-test-');
chmodSync(dir, 0o755);
process.env.SHMBUS_DIR = dir;
const NOBODY = { uid: 65534, gid: 65534 };
const asRoot = process.getuid?.() === 0;
const needsRoot = asRoot ? {} : { skip: 'needs root to start a child as another user' };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop()) await c();
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the as-other-user fixture as nobody and returns its one report. */
async function asNobody(op: string, target: string): Promise<Record<string, unknown>> {
  const child: Child = startFixture('as-other-user', [op, target], { SHMBUS_DIR: dir }, NOBODY);
  cleanups.push(() => child.kill('SIGKILL'));
  return child.waitFor((m) => m.ok !== undefined || m.error !== undefined, 20_000);
}

const modeOf = (path: string) => statSync(path).mode & 0o777;

describe('owner-only by default', () => {
  test('every kind of segment is created 0600 and a blob store chunk too', () => {
    const made: { close(): unknown }[] = [];
    try {
      const n = uniqueName('perm-kinds');
      made.push(Channel.create(`${n}-c`));
      made.push(Session.create(`${n}-s`, { slotSize: 4096, slotCount: 4 }));
      made.push(Daemon.create(`${n}-d`));
      const store = BlobStore.create(`${n}-b`, { chunkSize: 4096 });
      made.push(store);
      store.append(Uint8Array.of(1));
      const files = readdirSync(dir).filter((f) => f.startsWith(`shmbus.${n}`));
      assert.equal(files.length, 5, files.join());
      for (const f of files) assert.equal(modeOf(join(dir, f)), 0o600, f);
    } finally {
      for (const m of made) m.close();
    }
  });

  test('another user cannot open a default channel, session, daemon or blob store', needsRoot, async () => {
    const n = uniqueName('perm-deny');
    const ch = Channel.create(`${n}-c`);
    cleanups.push(() => ch.close());
    const session = Session.create(`${n}-s`, { slotSize: 4096, slotCount: 4 });
    cleanups.push(() => session.close());
    const daemon = Daemon.create(`${n}-d`);
    cleanups.push(() => daemon.close());
    const store = BlobStore.create(`${n}-b`, { chunkSize: 4096 });
    cleanups.push(() => store.close());
    for (const [op, target] of [
      ['channel-open', `${n}-c`],
      ['session-open', `${n}-s`],
      ['daemon-connect', `${n}-d`],
      ['blob-attach', `${n}-b`],
    ]) {
      const report = await asNobody(op, target);
      assert.equal(report.error, 'SHM_ERR_PERMISSION', `${op}: ${JSON.stringify(report)}`);
      assert.match(String(report.message), /permission denied/);
    }
  });

  test('mode 0o666 opts a channel into sharing: the other user receives a frame', needsRoot, async () => {
    const n = uniqueName('perm-share');
    const tx = Channel.create(n, { mode: 0o666 });
    cleanups.push(() => tx.close());
    assert.equal(modeOf(join(dir, `shmbus.${n}`)), 0o666);
    const pending = asNobody('channel-recv', n);
    assert.equal(await tx.send(Uint8Array.of(7, 8), { timeoutMs: 10_000 }), undefined);
    const report = await pending;
    assert.deepEqual(report, { ok: true, frame: [7, 8] });
  });
});

describe('the fan-out control socket', () => {
  const socket = () => join(tmpdir(), `${uniqueName('perm-sock')}.sock`);

  test('is 0600 by default and another user cannot connect', needsRoot, async () => {
    const path = socket();
    const sender = await Sender.listen({ path, dir });
    cleanups.push(() => sender.close());
    assert.equal(modeOf(path), 0o600);
    const report = await asNobody('consumer-connect', path);
    assert.equal(report.error, 'SHM_ERR_PERMISSION', JSON.stringify(report));
    assert.equal(sender.consumerCount, 0);
  });

  test('allowUids turns another user away before any ring is made, and lets the owner in', needsRoot, async () => {
    const path = socket();
    const sender = await Sender.listen({ path, dir, socketMode: 0o666, allowUids: [process.getuid?.() ?? 0] });
    cleanups.push(() => sender.close());
    const before = readdirSync(dir).length;
    const report = await asNobody('consumer-connect', path);
    assert.equal(report.error, 'SHM_ERR_REFUSED', JSON.stringify(report));
    assert.match(String(report.message), /65534/);
    assert.equal(readdirSync(dir).length, before, 'a ring segment was made for a refused uid');
    assert.equal(sender.metrics().refused, 1);
    const own = await Consumer.connect(path, { reconnect: false });
    cleanups.push(() => own.close());
    assert.equal(sender.consumerCount, 1);
  });
});
