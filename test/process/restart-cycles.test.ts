/**
 * SIGKILL / restart cycles: a child creates a channel, session, daemon, hub, blob store or
 * fan-out sender (with a consumer: a ring) under one name and is SIGKILLed; the next child creates the same name again. Whatever the dead ones
 * left must be replaced, not piled up: after every cycle the files of that name are no more
 * (in number and bytes) than one live instance has, and once the last child is killed,
 * cleanStale() removes everything. SHMBUS_RESTART_CYCLES sets the cycles (default 10; the
 * stress run uses 100). Every run has its own segment directory under /dev/shm.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanStale } from '../../src/index.js';
import { startFixture, uniqueName } from '../helpers/children.js';

const dir = mkdtempSync('/dev/shm/shmbus-restart-test-');
process.env.SHMBUS_DIR = dir;
after(() => rmSync(dir, { recursive: true, force: true }));
const CYCLES = Number(process.env.SHMBUS_RESTART_CYCLES ?? 10);

function footprint(name: string): { files: number; bytes: number } {
  // (A sender's files are not named after it: its registration and its consumers' rings.)
  const sender = name.includes('restart-sender');
  const mine = readdirSync(dir).filter(
    (f) =>
      f === `shmbus.${name}` ||
      f.startsWith(`shmbus.${name}.`) ||
      f.startsWith(`shmbus.${name}~`) ||
      (sender && (f.startsWith('shmbus.sender.') || f.startsWith('shmbus.fanout-'))),
  );
  return { files: mine.length, bytes: mine.reduce((n, f) => n + statSync(join(dir, f)).size, 0) };
}

for (const kind of ['channel', 'session', 'daemon', 'hub', 'blob', 'sender']) {
  test(`${CYCLES} SIGKILL/restart cycles of a ${kind} leave no more than one instance's files`, async () => {
    const name = uniqueName(`restart-${kind}`);
    let first: { files: number; bytes: number } | null = null;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const child = startFixture('crash-create', [kind, name], { SHMBUS_DIR: dir });
      const ready = await child
        .waitFor((m) => m.ready === true || m.error !== undefined, 20_000)
        .catch((err) => {
          throw new Error(`cycle ${cycle}: ${err}; stderr: ${child.stderr.join('')}`);
        });
      try {
        assert.equal(ready.ready, true, `cycle ${cycle}: ${JSON.stringify(ready)}`);
        const now = footprint(name);
        first ??= now;
        assert.ok(
          now.files <= first.files && now.bytes <= first.bytes,
          `cycle ${cycle}: ${JSON.stringify(now)} after the first instance had ${JSON.stringify(first)}`,
        );
      } finally {
        child.kill('SIGKILL');
        await child.exited(20_000);
      }
    }
    const report = cleanStale();
    assert.deepEqual(footprint(name), { files: 0, bytes: 0 }, JSON.stringify(report));
  });
}
