/** The README quick start, run as written: examples/consumer.mjs and examples/producer.mjs. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
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
