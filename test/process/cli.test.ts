/**
 * `shmbus ls` and `shmbus inspect`, run as the real command (dist/src/cli/main.js) against a
 * private segment directory holding live segments of this process, the leftovers of a
 * SIGKILLed producer and a file that is not shmbus's.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BlobStore, Channel, Session } from '../../src/index.js';
import { startFixture, uniqueName } from '../helpers/children.js';

const dir = mkdtempSync('/dev/shm/shmbus-cli-test-');
after(() => rmSync(dir, { recursive: true, force: true }));
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function shmbus(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Listed {
  name: string;
  kind: string;
  bytes: number;
  ownerPid: number;
  alive: boolean;
  summary: string;
  details: Record<string, unknown>;
  problem?: string;
}

test('ls lists every segment with kind, size, owner, liveness and a summary; inspect decodes one; --json for both', async () => {
  const n = uniqueName('cli');
  const tx = Channel.create(`${n}-ch`, { dir, capacity: 1 << 16 });
  const rx = Channel.open(`${n}-ch`, { dir });
  for (let i = 0; i < 20; i++) assert.equal(tx.trySend(new Uint8Array(100).fill(i)), true);
  for (let i = 0; i < 20; i++) assert.ok(rx.tryRecv() !== null);
  const session = Session.create(`${n}-sess`, { dir, slotSize: 4096, slotCount: 8 });
  const store = BlobStore.create(`${n}-blobs`, { dir, chunkSize: 1 << 16 });
  store.append(new Uint8Array(1000));
  // A producer killed: its channel stays, dead.
  const child = startFixture('channel-producer', [`${n}-dead`, '1', '1', '16', 'park', 'forever'], { SHMBUS_DIR: dir });
  await child.waitFor((m) => m.ready === true);
  child.kill('SIGKILL');
  await child.exited();
  writeFileSync(join(dir, 'shmbus.not-ours'), 'not a segment, '.repeat(20));
  try {
    const r = shmbus('ls', '--dir', dir, '--json');
    assert.equal(r.status, 0, r.stderr);
    const listed = JSON.parse(r.stdout) as Listed[];
    const by = (suffix: string) => listed.find((s) => s.name === `${n}-${suffix}`);
    const ch = by('ch');
    assert.equal(ch?.kind, 'channel');
    assert.equal(ch?.ownerPid, process.pid);
    assert.equal(ch?.alive, true);
    assert.match(ch?.summary ?? '', /consumer alive/);
    assert.equal(by('dead')?.alive, false);
    assert.equal(by('dead')?.ownerPid, child.proc.pid);
    assert.equal(by('sess')?.kind, 'session');
    assert.equal((by('sess')?.details as { slotCount: number } | undefined)?.slotCount, 8);
    assert.equal(by('blobs')?.kind, 'blob store');
    assert.ok(listed.some((s) => s.kind === 'blob chunk' && s.name.startsWith(`${n}-blobs.b`)));
    assert.equal(listed.find((s) => s.name === 'not-ours')?.problem, 'not a shmbus segment');

    const text = shmbus('ls', '--dir', dir);
    assert.equal(text.status, 0);
    assert.match(text.stdout, /^NAME\s+KIND\s+SIZE\s+PID\s+STATE\s+SUMMARY/);
    assert.match(text.stdout, new RegExp(`${n}-dead\\s+channel\\s+\\S+ KiB\\s+${child.proc.pid}\\s+dead`));
    assert.match(text.stdout, new RegExp(`${n}-ch\\s+channel\\s+\\S+ KiB\\s+${process.pid}\\s+alive`));

    const one = shmbus('inspect', `${n}-ch`, '--dir', dir, '--json');
    assert.equal(one.status, 0, one.stderr);
    const info = JSON.parse(one.stdout) as Listed & {
      details: {
        capacity: number;
        rings: { tail: number; head: number; fillBytes: number }[];
        consumer: { pid: number; alive: boolean };
      };
    };
    assert.equal(info.details.capacity, 1 << 16);
    assert.equal(info.details.consumer.pid, process.pid);
    assert.equal(info.details.consumer.alive, true);
    const ring = info.details.rings[0];
    assert.equal(ring.fillBytes, (ring.tail - ring.head + 2 * (1 << 16)) % (2 * (1 << 16)));
    const human = shmbus('inspect', `shmbus.${n}-ch`, '--dir', dir);
    assert.equal(human.status, 0);
    assert.match(human.stdout, /^name: .*-ch$/m);
    assert.match(human.stdout, new RegExp(`owner: pid ${process.pid} \\(alive\\)`));
    assert.match(human.stdout, /^ {2}receivedFrames: \d+$/m);

    const missing = shmbus('inspect', `${n}-nope`, '--dir', dir);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /no segment/);
    assert.equal(shmbus('ls', '--bogus').status, 2);
    assert.equal(shmbus('inspect').status, 2);
    assert.match(execFileSync(process.execPath, [cli, 'help'], { encoding: 'utf8' }), /inspect <name>/);
  } finally {
    rx.close();
    tx.close();
    session.close();
    store.close();
  }
});

test('ls of an empty or missing directory says so', () => {
  const empty = mkdtempSync('/dev/shm/shmbus-cli-empty-');
  try {
    assert.equal(shmbus('ls', '--dir', empty).stdout, 'no shmbus segments\n');
    assert.equal(shmbus('ls', '--dir', empty, '--json').stdout, '[]\n');
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});
