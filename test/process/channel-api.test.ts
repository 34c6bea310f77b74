/**
 * The Channel API contract, both ends in this process (over a real /dev/shm mapping).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { afterEach, describe, test } from 'node:test';
import {
  Channel,
  type ChannelReceiver,
  type ChannelSender,
  ErrorCode,
  ShmFrameError,
  ShmSegmentError,
  ShmStateError,
  ShmTimeoutError,
} from '../../src/index.js';
import { leftovers, uniqueName } from '../helpers/children.js';

const names: string[] = [];
const ends: { close(): void }[] = [];
function pair(options: Parameters<typeof Channel.create>[1] = {}): {
  tx: ChannelSender;
  rx: ChannelReceiver;
  n: string;
} {
  const n = uniqueName('api');
  names.push(n);
  const tx = Channel.create(n, options);
  const rx = Channel.open(n);
  ends.push(tx, rx);
  return { tx, rx, n };
}

afterEach(() => {
  for (const end of ends.splice(0)) end.close();
  for (const n of names.splice(0)) Channel.remove(n);
});

const bytes = (...values: number[]) => Uint8Array.from(values);
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));

describe('Channel basics', () => {
  test('tryRecv returns a view into the ring, valid until the next receive', () => {
    const { tx, rx } = pair();
    assert.equal(rx.tryRecv(), null);
    assert.ok(tx.trySend(text('hello')));
    assert.ok(tx.trySend(text('world')));
    const first = rx.tryRecv();
    assert.equal(str(first), 'hello');
    assert.ok(first instanceof Uint8Array);
    assert.equal(str(rx.tryRecv()), 'world');
    assert.equal(rx.tryRecv(), null);
  });

  test('close ends the stream after every frame was received', async () => {
    const { tx, rx } = pair();
    for (const word of ['a', 'b', 'c']) tx.trySend(text(word));
    tx.close();
    const got: string[] = [];
    for await (const frame of rx) got.push(str(frame) ?? '');
    assert.deepEqual(got, ['a', 'b', 'c']);
    assert.equal(rx.isEnded, true);
    assert.equal(await rx.recv(), null);
    assert.equal(rx.recvSync(), null);
  });

  test('claim and commit write in place; commit may shrink; abort discards', () => {
    const { tx, rx } = pair();
    const view = tx.claim(16);
    assert.ok(view);
    view.set(text('zero-copy!'));
    assert.equal(rx.tryRecv(), null, 'nothing visible before commit');
    tx.commit(10);
    assert.equal(str(rx.tryRecv()), 'zero-copy!');
    const dropped = tx.claim(8);
    assert.ok(dropped);
    tx.abort();
    assert.equal(rx.tryRecv(), null);
    assert.throws(
      () => tx.commit(),
      (e: unknown) => e instanceof ShmFrameError && e.code === ErrorCode.CLAIM_STATE,
    );
    tx.claim(4);
    assert.throws(
      () => tx.trySend(bytes(1)),
      (e: unknown) => (e as ShmFrameError).code === ErrorCode.CLAIM_STATE,
    );
    assert.throws(
      () => tx.commit(5),
      (e: unknown) => (e as { code: string }).code === ErrorCode.INVALID_ARGUMENT,
    );
    tx.commit();
    assert.equal(rx.tryRecv()?.length, 4);
  });

  test('a full ring returns false and counts it; too large is a distinct error', () => {
    const { tx } = pair({ capacity: 1024 });
    let accepted = 0;
    while (tx.trySend(new Uint8Array(100))) accepted++;
    assert.ok(accepted > 0);
    assert.equal(tx.trySend(new Uint8Array(100)), false);
    assert.equal(tx.stats().fullCount, 2);
    assert.throws(
      () => tx.trySend(new Uint8Array(5000)),
      (e: unknown) => e instanceof ShmFrameError && e.code === ErrorCode.TOO_LARGE && /maxFrame=/.test(e.message),
    );
  });

  test('drain delivers a batch and publishes the head once', () => {
    const { tx, rx } = pair();
    for (let i = 0; i < 100; i++) tx.trySend(bytes(i));
    const seen: number[] = [];
    assert.equal(
      rx.drain((f) => seen.push(f[0]), 60),
      60,
    );
    assert.equal(
      rx.drainRaw((ring, offset) => seen.push(ring[offset])),
      40,
    );
    assert.deepEqual(
      seen,
      Array.from({ length: 100 }, (_, i) => i),
    );
    assert.equal(rx.stats().receivedFrames, 100);
  });

  test('backpressure reports the fill level on both ends', () => {
    const { tx, rx } = pair({ capacity: 4096 });
    assert.equal(tx.backpressure(), 0);
    for (let i = 0; i < 16; i++) tx.trySend(new Uint8Array(120)); // 16 x 128 B = half the ring
    tx.flush();
    assert.equal(tx.backpressure(), 0.5);
    assert.equal(rx.backpressure(), 0.5);
    while (rx.tryRecv() !== null) {}
    assert.equal(tx.backpressure(), 0);
  });

  test('counts frames and bytes on both ends', () => {
    const { tx, rx } = pair();
    tx.trySend(new Uint8Array(10));
    tx.trySend(new Uint8Array(20));
    rx.tryRecv();
    rx.tryRecv();
    assert.deepEqual(tx.stats(), { sentFrames: 2, sentBytes: 30, fullCount: 0 });
    assert.deepEqual(rx.stats(), { receivedFrames: 2, receivedBytes: 30 });
  });
});

describe('priorities', () => {
  test('delivers critical before high before low, FIFO within a class', () => {
    const { tx, rx } = pair({ priorities: true });
    tx.trySend(text('low-1'), { priority: 'low' });
    tx.trySend(text('high-1'), { priority: 'high' });
    tx.trySend(text('low-2'), { priority: 'low' });
    tx.trySend(text('critical-1'), { priority: 'critical' });
    tx.trySend(text('high-2'));
    tx.trySend(text('critical-2'), { priority: 'critical' });
    const order: string[] = [];
    for (let f = rx.tryRecv(); f !== null; f = rx.tryRecv()) order.push(str(f) ?? '');
    assert.deepEqual(order, ['critical-1', 'critical-2', 'high-1', 'high-2', 'low-1', 'low-2']);
  });

  test('a critical frame sent while lower ones wait is received next', () => {
    const { tx, rx } = pair({ priorities: true });
    tx.trySend(text('low'), { priority: 'low' });
    tx.trySend(text('high'), { priority: 'high' });
    assert.equal(str(rx.tryRecv()), 'high');
    tx.trySend(text('critical'), { priority: 'critical' });
    assert.equal(str(rx.tryRecv()), 'critical');
    assert.equal(str(rx.tryRecv()), 'low');
  });

  test('each class has its own budget: a flood of low frames cannot take critical space', () => {
    const { tx, rx } = pair({ capacity: 1 << 16, priorities: true });
    const frame = new Uint8Array(248); // 256-byte records
    let low = 0;
    while (tx.trySend(frame, { priority: 'low' })) low++;
    let critical = 0;
    while (tx.trySend(frame, { priority: 'critical' })) critical++;
    let high = 0;
    while (tx.trySend(frame, { priority: 'high' })) high++;
    // 20 % / 50 % / 30 % of 64 KiB in 256-byte records.
    assert.deepEqual({ critical, high, low }, { critical: 51, high: 128, low: 76 });
    assert.equal(rx.geometry.classCount, 3);
  });

  test('custom shares split the capacity', () => {
    const { rx } = pair({ capacity: 1 << 16, priorities: { critical: 1, high: 1, low: 2 } });
    assert.deepEqual(rx.geometry.ringLengths, [16384, 16384, 32768]);
  });

  test('a priority on a channel without priorities is refused', () => {
    const { tx } = pair();
    assert.throws(
      () => tx.trySend(bytes(1), { priority: 'critical' }),
      (e: unknown) => (e as { code: string }).code === ErrorCode.INVALID_ARGUMENT,
    );
  });
});

describe('waiting', () => {
  test('recvSync and recv time out with SHM_ERR_TIMEOUT', async () => {
    const { rx } = pair();
    assert.throws(
      () => rx.recvSync({ timeoutMs: 30 }),
      (e: unknown) => e instanceof ShmTimeoutError && e.code === ErrorCode.TIMEOUT,
    );
    await assert.rejects(rx.recv({ timeoutMs: 30 }), (e: unknown) => e instanceof ShmTimeoutError);
  });

  test('send times out when the live consumer does not make room', async () => {
    const { tx } = pair({ capacity: 1024 });
    while (tx.trySend(new Uint8Array(100))) {}
    await assert.rejects(tx.send(new Uint8Array(100), { timeoutMs: 30 }), (e: unknown) => e instanceof ShmTimeoutError);
    assert.throws(
      () => tx.sendSync(new Uint8Array(100), { timeoutMs: 30 }),
      (e: unknown) => e instanceof ShmTimeoutError,
    );
  });

  test('one recv() at a time per end', async () => {
    const { tx, rx } = pair();
    const first = rx.recv({ timeoutMs: 5000 });
    await assert.rejects(rx.recv(), (e: unknown) => (e as { code: string }).code === ErrorCode.PENDING);
    tx.trySend(bytes(7));
    assert.deepEqual(Array.from((await first) ?? []), [7]);
  });

  test('closing the receiver rejects its pending recv() with SHM_ERR_CLOSED', async () => {
    const { rx } = pair();
    const pending = rx.recv();
    setTimeout(() => rx.close(), 20);
    await assert.rejects(pending, (e: unknown) => e instanceof ShmStateError && e.code === ErrorCode.CLOSED);
  });

  test('the producer closing wakes a parked recv() with end-of-stream', async () => {
    const { tx, rx } = pair({ wait: 'park' });
    const pending = rx.recv({ timeoutMs: 5000 });
    setTimeout(() => tx.close(), 20);
    assert.equal(await pending, null);
  });
});

describe('ends and files', () => {
  test('a second live consumer is refused with SHM_ERR_BUSY; a new one may attach after close', () => {
    const { tx, rx, n } = pair();
    assert.throws(
      () => Channel.open(n),
      (e: unknown) => e instanceof ShmSegmentError && e.code === ErrorCode.BUSY,
    );
    tx.trySend(bytes(1));
    tx.trySend(bytes(2));
    assert.deepEqual(Array.from(rx.tryRecv() ?? []), [1]);
    rx.close();
    const again = Channel.open(n);
    ends.push(again);
    assert.deepEqual(Array.from(again.tryRecv() ?? []), [2], 'resumes after the published head');
  });

  test('use after close throws SHM_ERR_CLOSED and views read as detached', () => {
    const { tx, rx } = pair();
    tx.trySend(bytes(1, 2, 3));
    const view = rx.tryRecv();
    assert.equal(view?.length, 3);
    rx.close();
    assert.equal(view?.length, 0, 'the view is detached, not dangling');
    assert.throws(
      () => rx.tryRecv(),
      (e: unknown) => e instanceof ShmStateError && e.code === ErrorCode.CLOSED,
    );
    tx.close();
    assert.throws(
      () => tx.trySend(bytes(1)),
      (e: unknown) => (e as ShmStateError).code === ErrorCode.CLOSED,
    );
    assert.throws(
      () => tx.claim(1),
      (e: unknown) => (e as ShmStateError).code === ErrorCode.CLOSED,
    );
  });

  test('a producer whose consumer closed gets SHM_ERR_PEER_CLOSED once the ring fills', () => {
    const { tx, rx } = pair({ capacity: 1024 });
    rx.close();
    assert.throws(
      () => {
        for (let i = 0; i < 100; i++) tx.trySend(new Uint8Array(100));
      },
      (e: unknown) => e instanceof ShmStateError && e.code === ErrorCode.PEER_CLOSED,
    );
  });

  test('the last end to close removes the file; a producer alone keeps it for a late consumer', () => {
    const n = uniqueName('files');
    names.push(n);
    const path = Channel.pathOf(n);
    const tx = Channel.create(n);
    tx.trySend(text('kept'));
    tx.close();
    assert.ok(existsSync(path), 'no consumer yet: the frames wait in the file');
    const rx = Channel.open(n);
    assert.equal(str(rx.tryRecv()), 'kept');
    rx.close();
    assert.equal(existsSync(path), false, 'the consumer closed last and removed it');

    const tx2 = Channel.create(n);
    const rx2 = Channel.open(n);
    rx2.close();
    assert.ok(existsSync(path));
    tx2.close();
    assert.equal(existsSync(path), false, 'the producer closed last and removed it');
  });

  test('files are created owner-only (0600) by default, and with the given mode', async () => {
    const { statSync } = await import('node:fs');
    const { n } = pair();
    assert.equal(statSync(Channel.pathOf(n)).mode & 0o777, 0o600);
    const other = uniqueName('mode');
    names.push(other);
    const tx = Channel.create(other, { mode: 0o640 });
    ends.push(tx);
    assert.equal(statSync(Channel.pathOf(other)).mode & 0o777, 0o640);
  });

  test('create refuses a name held by a live producer', () => {
    const { n } = pair();
    assert.throws(
      () => Channel.create(n),
      (e: unknown) => e instanceof ShmSegmentError && e.code === ErrorCode.EXISTS,
    );
  });
});

test('no test leaves a file in /dev/shm', () => {
  assert.deepEqual(leftovers(), []);
});

describe('copying out', () => {
  test('tryRecvInto copies small and large frames and returns their lengths', () => {
    const { tx, rx } = pair({ capacity: 1 << 16 });
    const small = Uint8Array.from({ length: 61 }, (_, i) => i + 1);
    const large = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff);
    tx.trySend(small);
    tx.trySend(large);
    const dst = new Uint8Array(8192);
    assert.equal(rx.tryRecvInto(dst, 4), 61);
    assert.deepEqual(dst.subarray(4, 65), small);
    assert.equal(rx.tryRecvInto(dst, 3), 5000);
    assert.deepEqual(dst.subarray(3, 5003), large);
    assert.equal(rx.tryRecvInto(dst), -1);
  });

  test('tryRecvInto refuses a destination without room and leaves the frame unread', () => {
    const { tx, rx } = pair();
    tx.trySend(new Uint8Array(100));
    assert.throws(
      () => rx.tryRecvInto(new Uint8Array(50)),
      (e: unknown) => (e as { code: string }).code === ErrorCode.INVALID_ARGUMENT,
    );
    assert.equal(rx.stats().receivedFrames, 0);
    assert.equal(rx.tryRecvInto(new Uint8Array(100)), 100);
    assert.equal(rx.stats().receivedFrames, 1);
  });
});
