/**
 * Channel across real processes: a million frames of random sizes under every wait
 * strategy, event-loop receiving, a worker thread, and SIGKILL of either end.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Channel, ErrorCode, ShmSegmentError, ShmStateError } from '../../src/index.js';
import { leftovers, startFixture, uniqueName } from '../helpers/children.js';
import { checkFrame, fillFrame, testSeed } from '../helpers/prng.js';

const names: string[] = [];
function name(prefix: string): string {
  const n = uniqueName(prefix);
  names.push(n);
  return n;
}

afterEach(() => {
  for (const n of names.splice(0)) Channel.remove(n);
});

const FRAMES = 1_000_000;

describe('a million frames between two processes', () => {
  for (const [wait, mode] of [
    ['spin', 'sync'],
    ['adaptive', 'sync'],
    ['park', 'sync'],
    ['adaptive', 'drain'],
  ] as const) {
    test(`arrive complete and in order with wait=${wait} (consumer ${mode})`, async () => {
      const n = name(`million-${wait}`);
      const seed = testSeed();
      const producer = startFixture('channel-producer', [n, String(FRAMES), String(seed), '200', wait, 'sync'], {
        WAIT_FOR_CONSUMER: '1',
      });
      await producer.waitFor((m) => m.ready === true);
      const consumer = startFixture('channel-consumer', [n, wait, mode]);
      const result = await consumer.waitFor((m) => m.done === true || m.error !== undefined, 240_000);
      assert.deepEqual(
        { received: result.received, problem: result.problem, error: result.error },
        { received: FRAMES, problem: null, error: undefined },
        `seed ${seed}`,
      );
      assert.deepEqual(await producer.exited(), { code: 0, signal: null });
      assert.deepEqual(await consumer.exited(), { code: 0, signal: null });
    });
  }
});

describe('receiving on the event loop', () => {
  test('await recv() delivers every frame while the event loop keeps serving timers', async () => {
    const n = name('async');
    const seed = testSeed();
    const count = 200_000;
    const producer = startFixture('channel-producer', [n, String(count), String(seed), '300', 'adaptive', 'async'], {
      WAIT_FOR_CONSUMER: '1',
    });
    await producer.waitFor((m) => m.ready === true);
    const sut = Channel.open(n);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let received = 0;
    let problem: string | null = null;
    const started = Date.now();
    try {
      for await (const frame of sut) {
        problem ??= checkFrame(frame, received);
        received++;
      }
    } finally {
      clearInterval(timer);
      sut.close();
    }
    assert.equal(problem, null, `seed ${seed}`);
    assert.equal(received, count);
    const elapsed = Date.now() - started;
    // The loop was never blocked for long: timers fired throughout (at least one per 50 ms).
    assert.ok(ticks >= Math.floor(elapsed / 50), `only ${ticks} timer ticks in ${elapsed} ms`);
    await producer.exited();
  });

  // Event-loop waits use an io_uring FUTEX_WAIT where the kernel has it, else a waiter
  // thread (SHMBUS_WAITER=thread forces it): both must wake across processes.
  for (const waiter of ['default', 'thread'] as const) {
    const env: Record<string, string> = waiter === 'thread' ? { SHMBUS_WAITER: 'thread' } : {};
    test(`a parked recv() is woken by a frame sent from another process (${waiter} waiter)`, async () => {
      const n = name('wake');
      const sut = Channel.create(n, { wait: 'park' });
      const consumer = startFixture('channel-consumer', [n, 'park', 'async'], env);
      await consumer.waitFor((m) => m.ready === true);
      // Let the consumer park before each send.
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 10));
        const frame = new Uint8Array(16);
        fillFrame(frame, i);
        assert.ok(sut.trySend(frame));
      }
      sut.close();
      const result = await consumer.waitFor((m) => m.done === true || m.error !== undefined);
      assert.deepEqual({ received: result.received, problem: result.problem }, { received: 20, problem: null });
    });

    test(`a parked send() is woken when the consumer makes room (${waiter} waiter)`, async () => {
      const saved = process.env.SHMBUS_WAITER;
      if (waiter === 'thread') process.env.SHMBUS_WAITER = 'thread';
      try {
        const n = name('space');
        const sut = Channel.create(n, { capacity: 4096, wait: 'park' });
        const consumer = startFixture('channel-consumer', [n, 'park', 'sync'], { SLOW: '1' });
        await consumer.waitFor((m) => m.ready === true);
        const frame = new Uint8Array(500);
        for (let i = 0; i < 5000; i++) {
          fillFrame(frame, i);
          await sut.send(frame, { timeoutMs: 30_000 });
        }
        assert.ok(sut.stats().fullCount > 0, 'the ring was full at least once');
        sut.close();
        const result = await consumer.waitFor((m) => m.done === true || m.error !== undefined);
        assert.deepEqual({ received: result.received, problem: result.problem }, { received: 5000, problem: null });
      } finally {
        if (saved === undefined) delete process.env.SHMBUS_WAITER;
        else process.env.SHMBUS_WAITER = saved;
      }
    });
  }
});

describe('worker threads', () => {
  test('recvSync in a worker thread receives from a producer process', async () => {
    const n = name('worker');
    const seed = testSeed();
    const count = 100_000;
    const producer = startFixture('channel-producer', [n, String(count), String(seed), '100', 'adaptive', 'sync'], {
      WAIT_FOR_CONSUMER: '1',
    });
    await producer.waitFor((m) => m.ready === true);
    const worker = new Worker(fileURLToPath(new URL('../fixtures/channel-worker.js', import.meta.url)), {
      workerData: { name: n },
    });
    const result = await new Promise<{ received: number; problem: string | null }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('worker did not finish in 60 s')), 60_000);
      worker.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      worker.once('error', reject);
    });
    await worker.terminate();
    assert.deepEqual(result, { received: count, problem: null }, `seed ${seed}`);
    await producer.exited();
  });
});

describe('crashes', () => {
  test('a consumer gets every committed frame, then PEER_DEAD, when the producer is SIGKILLed mid-stream', async () => {
    const n = name('kill-producer');
    const seed = testSeed();
    const producer = startFixture('channel-producer', [n, '0', String(seed), '300', 'adaptive', 'forever'], {
      WAIT_FOR_CONSUMER: '1',
    });
    await producer.waitFor((m) => m.ready === true);
    const sut = Channel.open(n, { livenessCheckMs: 20 });
    let received = 0;
    let problem: string | null = null;
    let failure: unknown = null;
    try {
      for (;;) {
        const frame = sut.recvSync({ timeoutMs: 30_000 });
        if (frame === null) break;
        problem ??= checkFrame(frame, received);
        received++;
        if (received === 50_000) producer.kill('SIGKILL');
      }
    } catch (err) {
      failure = err;
    }
    sut.close();
    assert.equal(problem, null, `seed ${seed}`);
    assert.ok(received >= 50_000);
    assert.ok(failure instanceof ShmStateError, `expected PEER_DEAD, got ${failure}`);
    assert.equal((failure as ShmStateError).code, ErrorCode.PEER_DEAD);
    assert.equal((await producer.exited()).signal, 'SIGKILL');
  });

  test('an async consumer gets PEER_DEAD after the last committed frame when the producer dies', async () => {
    const n = name('kill-producer-async');
    const producer = startFixture('channel-producer', [n, '0', '7', '64', 'adaptive', 'forever'], {
      WAIT_FOR_CONSUMER: '1',
    });
    await producer.waitFor((m) => m.ready === true);
    const sut = Channel.open(n, { livenessCheckMs: 20 });
    let received = 0;
    let problem: string | null = null;
    await assert.rejects(
      (async () => {
        for await (const frame of sut) {
          problem ??= checkFrame(frame, received);
          if (++received === 20_000) producer.kill('SIGKILL');
        }
      })(),
      (err: unknown) => err instanceof ShmStateError && err.code === ErrorCode.PEER_DEAD,
    );
    sut.close();
    assert.equal(problem, null);
  });

  test('a producer learns that its consumer was SIGKILLed: send rejects with PEER_DEAD', async () => {
    const n = name('kill-consumer');
    const sut = Channel.create(n, { capacity: 4096, livenessCheckMs: 20 });
    const consumer = startFixture('channel-consumer', [n, 'adaptive', 'sync'], { SLOW: '1' });
    await consumer.waitFor((m) => m.ready === true);
    consumer.kill('SIGKILL');
    await consumer.exited();
    const frame = new Uint8Array(200);
    await assert.rejects(
      (async () => {
        for (let i = 0; i < 1000; i++) await sut.send(frame, { timeoutMs: 10_000 });
      })(),
      (err: unknown) => err instanceof ShmStateError && err.code === ErrorCode.PEER_DEAD,
    );
    assert.throws(
      () => {
        for (let i = 0; i < 1000; i++) sut.sendSync(frame, { timeoutMs: 10_000 });
      },
      (err: unknown) => err instanceof ShmStateError && err.code === ErrorCode.PEER_DEAD,
    );
    assert.equal(sut.peerAlive(), false);
    sut.close();
    assert.deepEqual(
      leftovers().filter((f) => f.endsWith(n)),
      [],
      'the producer removed the file',
    );
  });

  test('create replaces the segment of a SIGKILLed owner, and refuses a live one', async () => {
    const n = name('stale');
    const owner = startFixture('channel-producer', [n, '0', '1', '8', 'park', 'forever'], { WAIT_FOR_CONSUMER: '1' });
    await owner.waitFor((m) => m.ready === true);
    assert.throws(
      () => Channel.create(n),
      (err: unknown) => err instanceof ShmSegmentError && err.code === ErrorCode.EXISTS && /alive/.test(err.message),
    );
    owner.kill('SIGKILL');
    await owner.exited();
    const sut = Channel.create(n, { capacity: 2048 });
    const rx = Channel.open(n, { expect: { capacity: 2048 } });
    assert.ok(sut.trySend(Uint8Array.of(42)));
    assert.deepEqual(Array.from(rx.tryRecv() ?? []), [42]);
    rx.close();
    sut.close();
    assert.deepEqual(leftovers(), []);
  });

  test('a zombie (dead, unreaped) owner counts as dead: its lock is gone', async () => {
    const n = name('zombie');
    const fixture = fileURLToPath(new URL('../fixtures/channel-producer.js', import.meta.url));
    // The shell starts the owner in the background, then becomes `sleep`, which never reaps
    // it: once killed, the owner stays a zombie with its pid.
    const shell = spawn(
      'sh',
      ['-c', `"${process.execPath}" "${fixture}" ${n} 0 1 8 park forever & echo "{\\"pid\\":$!}"; exec sleep 60`],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, WAIT_FOR_CONSUMER: '1' },
      },
    );
    try {
      const lines: string[] = [];
      shell.stdout.setEncoding('utf8');
      shell.stdout.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter(Boolean)));
      const deadline = Date.now() + 20_000;
      while (!lines.some((l) => l.includes('"ready"')) && Date.now() < deadline) await sleep(10);
      const pid = JSON.parse(lines.find((l) => l.includes('"pid"') && !l.includes('ready')) ?? '{}').pid as number;
      assert.ok(pid > 0, `no pid in ${JSON.stringify(lines)}`);
      assert.throws(
        () => Channel.create(n),
        (err: unknown) => (err as ShmSegmentError).code === ErrorCode.EXISTS,
      );
      process.kill(pid, 'SIGKILL');
      while (!readFileSync(`/proc/${pid}/stat`, 'latin1').includes(') Z ') && Date.now() < deadline) await sleep(5);
      assert.match(readFileSync(`/proc/${pid}/stat`, 'latin1'), /\) Z /, 'the owner is a zombie now');
      // The leader shows Z while its other threads may still be exiting (the files, and so
      // the lock, go with the last thread): retry briefly, then check it is still a zombie.
      let sut: ReturnType<typeof Channel.create> | undefined;
      while (sut === undefined) {
        try {
          sut = Channel.create(n);
        } catch (err) {
          if ((err as ShmSegmentError).code !== ErrorCode.EXISTS || Date.now() > deadline) throw err;
          await sleep(10);
        }
      }
      sut.close();
      assert.match(readFileSync(`/proc/${pid}/stat`, 'latin1'), /\) Z /, 'still an unreaped zombie');
    } finally {
      shell.kill('SIGKILL');
    }
  });
});

test('no test leaves a file in /dev/shm', () => {
  for (const n of names.splice(0)) Channel.remove(n);
  assert.deepEqual(leftovers(), []);
});
