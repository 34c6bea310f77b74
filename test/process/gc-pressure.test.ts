/**
 * Views used after close, under GC pressure: a child (--expose-gc) creates and closes
 * channels, sessions and blob stores hundreds of times, keeps views past close(), uses them
 * and forces collections. It must finish (no segfault, no SIGBUS) with every stale view
 * detached (length 0, reads undefined, writes dropped).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const dir = mkdtempSync('/dev/shm/shmbus-gc-test-');
after(() => rmSync(dir, { recursive: true, force: true }));

test('views used after close() under forced garbage collection read nothing and never crash the process', () => {
  const fixture = fileURLToPath(new URL('../fixtures/gc-pressure.js', import.meta.url));
  const rounds = 300;
  const out = execFileSync(process.execPath, ['--expose-gc', fixture, String(rounds)], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, SHMBUS_DIR: dir },
  });
  const report = JSON.parse(out.trim().split('\n').pop() as string);
  assert.deepEqual(report.errors, []);
  assert.equal(report.rounds, rounds);
  // A frame, a sent slot, a received slot and a blob view per round.
  assert.equal(report.detached, 4 * rounds);
  assert.deepEqual(readdirSync(dir), [], 'every close removed its files');
});
