/**
 * The Channel API suite again, with event-loop waits forced onto the addon's waiter thread
 * (SHMBUS_WAITER=thread): the fallback used where io_uring FUTEX_WAIT is unavailable must
 * keep every contract (timeouts, close during a pending recv, wake-ups).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

test('the Channel API suite passes with the waiter-thread fallback', () => {
  const suite = fileURLToPath(new URL('./channel-api.test.js', import.meta.url));
  const result = spawnSync(process.execPath, ['--test', '--test-reporter=dot', suite], {
    env: { ...process.env, SHMBUS_WAITER: 'thread' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(result.status, 0, `suite failed under SHMBUS_WAITER=thread:\n${result.stdout}\n${result.stderr}`);
});
