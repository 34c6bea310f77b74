/**
 * Fan-out streaming: this process is the sender, 1, 4 or 8 consumer processes each take a
 * quarter of the stream (consumer i: quarter i % 4 of 4096 keys), over shmbus (Sender /
 * Consumer: a ring and an eventfd per consumer) and over unix sockets (one `net` socket per
 * consumer, sender-side filtering with a Set of keys per consumer, length-prefixed frames with
 * the same header, corked writes per batch). Workload and consumer-side counting:
 * bench/peers/fanout-workload.mjs; consumers: bench/fanout-child.mjs, bench/peers/fanout-uds-child.mjs.
 *
 * Both transports run the same updates through the same driver, pump():
 *   - batches of BATCH updates (throughput) or bursts of BURST (latency); the unix sockets are
 *     corked for each batch and uncorked after it;
 *   - flow control, the same on both sides: once some consumer's backlog exceeds HIGH_WATER
 *     (shmbus: its ring fill; unix socket: bytes Node holds for the socket, the kernel's
 *     socket buffer on top), the sender sleeps in 1 ms steps until every backlog is under
 *     LOW_WATER. shmbus never blocks and evicts a consumer whose ring is full: its ring
 *     (RING_CAPACITY) leaves room above HIGH_WATER, and any eviction fails the run.
 * Throughput: a warm-up (a tenth of the count, not counted), a pause until every consumer
 * drained, then `count` updates as fast as flow control lets them; delivered updates (summed
 * over the consumers, counted by the consumers) / (last consumer's last receipt - first publish).
 * Latency: bursts of BURST updates, one every ~1 ms (a 1 ms timer after each burst): ~4k
 * updates/s, about a tenth of the slower transport's maximum at 8 consumers (on the 2-vCPU
 * guest), so the figure is delivery (mostly the wake-up of a parked consumer), not queueing. One
 * sample per delivered update, from the sender's stamp in the frame to the consumer's receipt
 * of the decoded message; all consumers' samples are pooled.
 */
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { writeNanos } from '../../dist/src/core/clock.js';
import { Sender } from '../../dist/src/index.js';
import {
  FLAGS_OFFSET,
  FRAME_HEADER_LENGTH,
  FRAME_TAG_OFFSET,
  FRAME_VERSION,
  FRAME_VERSION_OFFSET,
  GROUP_LENGTH_OFFSET,
  KEY_LENGTH_OFFSET,
  KIND_OFFSET,
  RAW_LENGTH_OFFSET,
  SENDER_NANOS_OFFSET,
  TAG_MESSAGE,
  WIRE_LENGTH_OFFSET,
} from '../../dist/src/layout/fanout.js';
import { latencyResult } from '../lib/case.mjs';
import { startChild } from '../lib/child.mjs';
import {
  cpuMs,
  expectedFor,
  KEY_LENGTH,
  KIND_END,
  KIND_UPDATE,
  keyOfUpdate,
  keys,
  makePayload,
  nowMs,
  ownerOf,
  PAYLOAD_LENGTH,
  setSeq,
} from '../peers/fanout-workload.mjs';

const DEADLINE_MS = 90_000; // a case normally takes a few seconds; past this it is torn down and rejected
/** Updates of a throughput run (the same for both transports and every consumer count). */
const TPUT_UPDATES = 200_000;
/** Bursts of a latency run, after BURSTS / 10 warm-up bursts. */
const LATENCY_BURSTS = 3000;
const BATCH = 64;
const BURST = 5;
const RING_CAPACITY = 16 << 20;
const HIGH_WATER = 8 << 20;
const LOW_WATER = 4 << 20;
const WAIT = process.env.FANOUT_WAIT ?? 'park';

const shmbusChild = fileURLToPath(new URL('../fanout-child.mjs', import.meta.url));
const udsChild = fileURLToPath(new URL('../peers/fanout-uds-child.mjs', import.meta.url));
let serial = 0;
const socketPath = (kind) => `/tmp/shmbus-bench-fanout-${process.pid}-${++serial}-${kind}.sock`;

/**
 * Runs body(s) with a deadline and guaranteed cleanup (as in cases/peers.mjs): s.defer(fn)
 * registers a cleanup (reverse order, awaited, errors ignored), s.fail(err) rejects the run.
 */
async function session(body) {
  const cleanups = [];
  let fail;
  const failed = new Promise((_, reject) => {
    fail = reject;
  });
  failed.catch(() => {});
  const timer = setTimeout(() => fail(new Error(`no result within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  const s = { fail, defer: (fn) => cleanups.push(fn) };
  try {
    return await Promise.race([body(s), failed]);
  } finally {
    clearTimeout(timer);
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch {}
    }
  }
}

/** Starts n consumer processes; each is killed (and waited for) on the way out. */
function startConsumers(s, script, n, argsOf) {
  return Array.from({ length: n }, (_, i) => {
    const child = startChild(script, argsOf(i).map(String), { timeoutMs: DEADLINE_MS + 10_000 });
    s.defer(async () => {
      child.kill();
      await child.exit(5000); // gone before the next case starts competing for the cores
    });
    return child;
  });
}

/**
 * The shmbus side: a Sender with one ring of RING_CAPACITY per consumer; 'end-of-stream' is a
 * kind every consumer gets ('always').
 */
async function openShmbus(s, n, warm, latency) {
  const path = socketPath('shmbus');
  const sender = await Sender.listen({
    path,
    capacity: RING_CAPACITY,
    maxConsumers: n,
    kinds: { [KIND_END]: 'always' },
  });
  s.defer(() => sender.close());
  sender.on('evicted', (e) =>
    s.fail(new Error(`shmbus evicted consumer ${e.id} (${e.reason}, ring fill ${e.ringFill}): ${e.message}`)),
  );
  const children = startConsumers(s, shmbusChild, n, (i) => [path, i, warm, latency ? 1 : 0, WAIT]);
  await Promise.all(children.map((c) => c.waitFor((m) => m.ready)));
  if (sender.consumerCount !== n) throw new Error(`${sender.consumerCount} of ${n} consumers are connected`);
  const payload = makePayload();
  const message = { kind: KIND_UPDATE, key: null, group: null, payload };
  return {
    children,
    begin() {},
    publish(seq) {
      setSeq(payload, seq);
      const k = keyOfUpdate(seq);
      message.key = keys[k];
      message.group = ownerOf(k);
      return sender.publish(message);
    },
    commit() {},
    backlog() {
      let fill = 0;
      for (const c of sender.consumers()) if (c.ringFill > fill) fill = c.ringFill;
      return fill * RING_CAPACITY;
    },
    end() {
      sender.publish({ kind: KIND_END, payload: new Uint8Array(0) });
    },
    check() {
      const { evictions } = sender.metrics();
      const total = Object.values(evictions).reduce((a, b) => a + b, 0);
      if (total !== 0) throw new Error(`shmbus evicted ${total} consumer(s): ${JSON.stringify(evictions)}`);
    },
  };
}

const LENGTH_PREFIX = 4;
const FRAME_LENGTH = FRAME_HEADER_LENGTH + 2 * KEY_LENGTH + PAYLOAD_LENGTH;
const RECORD_LENGTH = LENGTH_PREFIX + FRAME_LENGTH;

/** Writes the generic fan-out frame header (src/layout/fanout.ts), stamped now, at `at`. */
function writeHeader(dv, at, kind, keyLength, groupLength, payloadLength) {
  dv.setUint8(at + FRAME_VERSION_OFFSET, FRAME_VERSION);
  dv.setUint8(at + FRAME_TAG_OFFSET, TAG_MESSAGE);
  writeNanos(dv, at + SENDER_NANOS_OFFSET);
  dv.setUint8(at + KIND_OFFSET, kind);
  dv.setUint8(at + FLAGS_OFFSET, 0);
  dv.setUint16(at + KEY_LENGTH_OFFSET, keyLength, true);
  dv.setUint16(at + GROUP_LENGTH_OFFSET, groupLength, true);
  dv.setUint32(at + RAW_LENGTH_OFFSET, payloadLength, true);
  dv.setUint32(at + WIRE_LENGTH_OFFSET, payloadLength, true);
}

/** Reads a consumer's subscription frame (fanout-uds-child.mjs) into a Set of keys (latin1 strings). */
function readSubscription(sock) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let bytes = 0;
    const onData = (chunk) => {
      chunks.push(chunk);
      bytes += chunk.length;
      if (bytes < LENGTH_PREFIX) return;
      const all = Buffer.concat(chunks);
      const total = LENGTH_PREFIX + all.readUInt32LE(0);
      if (bytes < total) return;
      sock.off('data', onData);
      if (bytes > total) return reject(new Error('a unix-socket consumer sent data after its subscription'));
      const set = new Set();
      const count = all.readUInt32LE(4);
      for (let i = 0, at = 8; i < count; i++) {
        const length = all.readUInt16LE(at);
        set.add(all.toString('latin1', at + 2, at + 2 + length));
        at += 2 + length;
      }
      resolve(set);
    };
    sock.on('data', onData);
  });
}

/**
 * The unix-socket side: a `net` server; each consumer connects and subscribes; publish()
 * encodes the update once into the batch buffer and writes that record to every consumer
 * whose Set has the key (the sockets are corked for the batch).
 */
async function openUds(s, n, warm, latency) {
  const path = socketPath('uds');
  const server = net.createServer();
  s.defer(() => rmSync(path, { force: true }));
  s.defer(() => server.close());
  server.on('error', s.fail);
  const subscribers = [];
  const subscribed = new Promise((resolve) => {
    server.on('connection', async (sock) => {
      s.defer(() => sock.destroy());
      sock.on('error', s.fail);
      try {
        subscribers.push({ sock, keys: await readSubscription(sock) });
      } catch (err) {
        s.fail(err);
      }
      if (subscribers.length === n) resolve();
    });
  });
  server.listen(path);
  await once(server, 'listening');
  const children = startConsumers(s, udsChild, n, (i) => [path, i, warm, latency ? 1 : 0]);
  await Promise.all(children.map((c) => c.waitFor((m) => m.ready)));
  await subscribed;
  const payload = makePayload();
  // Views of the same key bytes, for Buffer's latin1 decoding (the filter's Set key).
  const keyBuffers = keys.map((k) => Buffer.from(k.buffer, k.byteOffset, k.length));
  const batchLength = Math.max(BATCH, BURST) * RECORD_LENGTH;
  let batch = null;
  let dv = null;
  let at = 0;
  return {
    children,
    begin() {
      for (const c of subscribers) c.sock.cork();
      // A new buffer per batch: the sockets keep references to what they have not written yet.
      batch = Buffer.allocUnsafe(batchLength);
      dv = new DataView(batch.buffer, batch.byteOffset, batch.length);
      at = 0;
    },
    publish(seq) {
      setSeq(payload, seq);
      const k = keyOfUpdate(seq);
      const frameAt = at + LENGTH_PREFIX;
      dv.setUint32(at, FRAME_LENGTH, true);
      writeHeader(dv, frameAt, KIND_UPDATE, KEY_LENGTH, KEY_LENGTH, PAYLOAD_LENGTH);
      batch.set(keys[k], frameAt + FRAME_HEADER_LENGTH);
      batch.set(ownerOf(k), frameAt + FRAME_HEADER_LENGTH + KEY_LENGTH);
      batch.set(payload, frameAt + FRAME_HEADER_LENGTH + 2 * KEY_LENGTH);
      const record = batch.subarray(at, at + RECORD_LENGTH);
      at += RECORD_LENGTH;
      const key = keyBuffers[k].latin1Slice(0, KEY_LENGTH);
      let reached = 0;
      for (const c of subscribers)
        if (c.keys.has(key)) {
          c.sock.write(record);
          reached++;
        }
      return reached;
    },
    commit() {
      for (const c of subscribers) c.sock.uncork();
    },
    backlog() {
      let bytes = 0;
      for (const c of subscribers) if (c.sock.writableLength > bytes) bytes = c.sock.writableLength;
      return bytes;
    },
    end() {
      const frame = Buffer.alloc(LENGTH_PREFIX + FRAME_HEADER_LENGTH);
      const view = new DataView(frame.buffer, frame.byteOffset, frame.length);
      view.setUint32(0, FRAME_HEADER_LENGTH, true);
      writeHeader(view, LENGTH_PREFIX, KIND_END, 0, 0, 0);
      for (const c of subscribers) c.sock.write(frame);
    },
    check() {},
  };
}

const open = { shmbus: openShmbus, uds: openUds };

/**
 * Publishes updates [from, to) in batches of `perBatch`, under the flow control of the module
 * doc, calling `pace()` after each batch. Returns the deliveries (update x consumer reached).
 */
async function pump(t, from, to, perBatch, pace) {
  let reached = 0;
  for (let seq = from; seq < to; ) {
    if (t.backlog() > HIGH_WATER) while (t.backlog() > LOW_WATER) await sleep(1);
    t.begin();
    const end = Math.min(to, seq + perBatch);
    for (; seq < end; seq++) reached += t.publish(seq);
    t.commit();
    await pace();
  }
  return reached;
}

const nextTurn = () => new Promise(setImmediate);
const tick = () => sleep(1);

/** Collects every consumer's end-of-stream report and checks it against what was sent. */
async function reports(t, warm, to, reached) {
  const done = await Promise.all(t.children.map((c) => c.waitFor((m) => m.done, DEADLINE_MS)));
  t.check();
  let received = 0;
  for (const r of done) {
    const expected = expectedFor(r.index, warm, to);
    const expectedWarm = expectedFor(r.index, 0, warm);
    if (r.received !== expected || r.warmReceived !== expectedWarm)
      throw new Error(
        `consumer ${r.index} received ${r.received} + ${r.warmReceived} warm-up updates, expected ${expected} + ${expectedWarm}`,
      );
    if (r.outOfOrder !== 0 || r.malformed !== 0)
      throw new Error(`consumer ${r.index}: ${r.outOfOrder} updates out of order, ${r.malformed} malformed`);
    received += r.received;
  }
  if (received !== reached) throw new Error(`consumers received ${received} updates, the sender delivered ${reached}`);
  return done;
}

async function throughput(ctx, transport, n) {
  const count = ctx.scale(TPUT_UPDATES);
  const warm = Math.ceil(count / 10);
  return session(async (s) => {
    const t = await open[transport](s, n, warm, false);
    await pump(t, 0, warm, BATCH, nextTurn);
    while (t.backlog() > 0) await sleep(1);
    await sleep(50); // the consumers finish the warm-up before the clock starts
    const t0 = nowMs();
    const cpu0 = process.cpuUsage();
    const reached = await pump(t, warm, warm + count, BATCH, nextTurn);
    const senderCpu = cpuMs(process.cpuUsage(cpu0));
    t.end();
    const done = await reports(t, warm, warm + count, reached);
    const seconds = (Math.max(...done.map((r) => r.lastMs)) - t0) / 1000;
    const consumersCpu = done.reduce((sum, r) => sum + r.cpuMs, 0);
    return {
      value: reached / seconds,
      n: reached,
      note:
        `${count} updates, ${reached} deliveries in ${seconds.toFixed(2)} s; CPU: sender ${senderCpu.toFixed(0)} ms, ` +
        `consumers ${consumersCpu.toFixed(0)} ms`,
    };
  });
}

async function latency(ctx, transport, n) {
  const bursts = ctx.scale(LATENCY_BURSTS);
  const warm = Math.ceil(bursts / 10) * BURST;
  const to = warm + bursts * BURST;
  return session(async (s) => {
    const t = await open[transport](s, n, warm, true);
    await pump(t, 0, warm, BURST, tick);
    const started = nowMs();
    const reached = await pump(t, warm, to, BURST, tick);
    const seconds = (nowMs() - started) / 1000;
    t.end();
    const done = await reports(t, warm, to, reached);
    const samples = done.flatMap((r) => r.samples);
    const library = done.map((r) => r.library?.p99).filter((v) => v !== undefined);
    return {
      ...latencyResult(samples),
      note:
        `${Math.round((bursts * BURST) / seconds)} updates/s, ${Math.round(reached / seconds)} deliveries/s` +
        (library.length > 0 ? `; Consumer.metrics() p99, worst consumer: ${Math.max(...library)} ns` : ''),
    };
  });
}

const TITLE = {
  shmbus: `shmbus Sender -> consumer processes (Consumer, wait '${WAIT}', ${RING_CAPACITY >> 20} MiB rings)`,
  uds: 'unix sockets, one per consumer, sender-side key Sets, corked batches',
};
const cases = [];
for (const n of [1, 4, 8]) {
  for (const transport of ['shmbus', 'uds']) {
    cases.push({
      id: `fanout.${transport}.${n}`,
      unit: 'msg/s',
      title:
        `${TITLE[transport]}: ${n} consumer(s), 1 KiB updates over 4096 keys, each consumer a quarter; ` +
        `delivered updates/s summed over consumers, batches of ${BATCH}, sender pauses above ${HIGH_WATER >> 20} MiB backlog`,
      run: (ctx) => throughput(ctx, transport, n),
      skipQuick: n !== 8, // --quick keeps the 8-consumer cases (the targets), scaled down
    });
  }
}
for (const n of [1, 4, 8]) {
  for (const transport of ['shmbus', 'uds']) {
    cases.push({
      id: `fanout.${transport}.${n}.latency`,
      unit: 'ns',
      title:
        `${TITLE[transport]}: ${n} consumer(s), end-to-end latency (sender stamp to consumer receipt), ` +
        `paced: bursts of ${BURST} updates every ~1 ms`,
      run: (ctx) => latency(ctx, transport, n),
      skipQuick: n !== 8,
    });
  }
}

export default cases;
