/**
 * shmbus itself: round trips under each wait strategy, one-way throughput (copy-out and
 * in-place), the CPU of a parked consumer, and the cost of one call into the addon.
 * Every comparison runs two real processes: this one and bench/shmbus-child.mjs.
 */
import { fileURLToPath } from 'node:url';
import { Channel } from '../../dist/src/index.js';
import { native } from '../../dist/src/native/binding.js';
import { latencyResult, SIZES } from '../lib/case.mjs';
import { startChild } from '../lib/child.mjs';

const child = fileURLToPath(new URL('../shmbus-child.mjs', import.meta.url));
let serial = 0;
const uniqueName = (what) => `bench-${what}-${process.pid}-${++serial}`;

/** Ring big enough for two frames of `size` (and at least 1 MiB). */
function capacityFor(size) {
  let capacity = 1 << 20;
  while (capacity / 2 - 16 < size * 2) capacity *= 2;
  return capacity;
}

/**
 * Ping-pong: this process sends `size` bytes on one channel, the child echoes them on
 * another; each sample is one full round trip, payload written and read on both sides.
 */
async function roundTrip(ctx, wait, mode, size) {
  const ping = uniqueName('ping');
  const pong = uniqueName('pong');
  const big = size >= 64 * 1024;
  const count = ctx.scale(size >= 1 << 20 ? 2_000 : wait === 'park' || mode === 'async' || big ? 20_000 : 200_000);
  const warmup = Math.ceil(count / 10);
  const tx = Channel.create(ping, { capacity: capacityFor(size), wait });
  const echo = startChild(child, ['echo', ping, pong, wait, mode, String(count + warmup), String(size)]);
  let rx;
  try {
    await echo.waitFor((m) => m.ready);
    rx = Channel.open(pong, { wait, waitMs: 10_000 });
    const payload = new Uint8Array(size).fill(1);
    const back = new Uint8Array(size);
    const samples = new Float64Array(count);
    for (let i = 0; i < count + warmup; i++) {
      payload[0] = i & 0xff;
      // process.hrtime.bigint(): ~55 ns; performance.now() perturbs a sub-microsecond loop far more.
      const t0 = process.hrtime.bigint();
      if (!tx.trySend(payload)) tx.sendSync(payload);
      const n = mode === 'async' ? await rx.recvInto(back) : rx.recvSyncInto(back);
      const t1 = process.hrtime.bigint();
      if (n !== size || back[0] !== (i & 0xff)) throw new Error(`echo ${i} came back wrong`);
      if (i >= warmup) samples[i - warmup] = Number(t1 - t0);
    }
    return latencyResult(samples);
  } finally {
    echo.kill();
    rx?.close();
    tx.close();
    Channel.remove(ping);
    Channel.remove(pong);
  }
}

/**
 * One-way: the child produces `count` frames as fast as the ring takes them; this process
 * copies each one out into its own buffer (copy) or reads it in place (touching the first
 * and last byte of every frame). Timed from the first frame received to the last.
 */
async function throughput(ctx, size, inplace) {
  const name = uniqueName('tput');
  const count = ctx.scale(size <= 64 ? 5_000_000 : size <= 1024 ? 2_000_000 : size <= 65536 ? 60_000 : 4_000);
  const capacity = size >= 1 << 20 ? 8 << 20 : 1 << 20;
  const producer = startChild(child, ['produce', name, String(size), String(count), String(capacity)]);
  let rx;
  try {
    await producer.waitFor((m) => m.ready);
    rx = Channel.open(name, { waitMs: 10_000 });
    const dst = new Uint8Array(size);
    let received = 0;
    let touched = 0;
    let started = 0;
    const touch = (ring, offset, length) => {
      touched += ring[offset] + ring[offset + length - 1];
      received++;
    };
    while (received === 0) {
      if (inplace) rx.drainRaw(touch, 1);
      else if (rx.tryRecvInto(dst) >= 0) received++;
    }
    started = performance.now();
    if (inplace) {
      while (received < count) if (rx.drainRaw(touch, 256) === 0 && rx.isEnded) break;
    } else {
      while (received < count) {
        if (rx.tryRecvInto(dst) >= 0) received++;
        else if (rx.isEnded) break;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    if (received !== count) throw new Error(`received ${received} of ${count} frames`);
    if (inplace && touched !== 14 * count) throw new Error('in-place reads saw wrong bytes');
    if (!inplace && dst[size - 1] !== 7) throw new Error('copied bytes are wrong');
    const frames = count - 1; // timed from the end of the first frame
    return size >= 65536 ? { value: (frames * size) / seconds / 1e9 } : { value: frames / seconds };
  } finally {
    producer.kill();
    rx?.close();
    Channel.remove(name);
  }
}

/** CPU used by a consumer parked in `await recv()` while nothing is sent. */
async function idleCpu(ctx) {
  const name = uniqueName('idle');
  const ms = ctx.quick ? 1000 : 5000;
  const tx = Channel.create(name);
  const consumer = startChild(child, ['idle', name, String(ms)]);
  try {
    await consumer.waitFor((m) => m.ready);
    await new Promise((r) => setTimeout(r, ms));
    tx.trySend(Uint8Array.of(1));
    const report = await consumer.waitFor((m) => m.cpuPercent !== undefined);
    if (report.got !== 1) throw new Error('the parked consumer did not receive the wake-up frame');
    return { value: report.cpuPercent, note: `${ms / 1000} s parked` };
  } finally {
    consumer.kill();
    tx.close();
    Channel.remove(name);
  }
}

const cases = [];
const sizeKeys = Object.keys(SIZES);
for (const [wait, mode, label] of [
  ['spin', 'sync', 'spin'],
  ['adaptive', 'sync', 'adaptive'],
  ['park', 'sync', 'park'],
  ['park', 'async', 'async'],
]) {
  for (const key of sizeKeys) {
    cases.push({
      id: `rtt.${label}.${key}`,
      unit: 'ns',
      title: `shmbus round trip, ${label === 'async' ? 'await recv() (event loop)' : `recvSync, wait=${wait}`}, ${key} B`,
      run: (ctx) => roundTrip(ctx, wait, mode, SIZES[key]),
    });
  }
}
for (const key of sizeKeys) {
  const size = SIZES[key];
  const unit = size >= 65536 ? 'GB/s' : 'msg/s';
  cases.push({
    id: `tput.copy.${key}`,
    unit,
    title: `shmbus one-way, consumer copies out, ${key} B`,
    run: (ctx) => throughput(ctx, size, false),
  });
  cases.push({
    id: `tput.inplace.${key}`,
    unit,
    title: `shmbus one-way, consumer reads in place, ${key} B`,
    run: (ctx) => throughput(ctx, size, true),
  });
}
cases.push({
  id: 'idle.cpu.parked',
  unit: '%',
  title: 'CPU of a consumer parked in await recv(), % of one core',
  run: idleCpu,
});
cases.push({
  id: 'native.noop',
  unit: 'ns',
  title: 'one call into the addon (no-op): the cost of crossing into C',
  run: async (ctx) => {
    const n = native();
    const calls = ctx.scale(5_000_000);
    for (let i = 0; i < 100_000; i++) n.noop();
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) n.noop();
    return { value: ((performance.now() - t0) * 1e6) / calls };
  },
});

export default cases;
