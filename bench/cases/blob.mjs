/**
 * Blob store: append and resolve bandwidth (vs the C memcpy floor of the same size, measured
 * in the same run), and fan-out of 1 MiB payloads to 8 consumer processes through their rings
 * (the sender copies each payload into every matching ring) vs through a blob store (the
 * sender appends it once; only a 28-byte reference goes into each ring).
 *
 * blob.append.<size>: appends of one payload into a store with 4 MiB chunks, each one
 *   acknowledged right away, cleanup() after every chunk: the steady state of a producer
 *   whose consumers keep up (chunk files are created ahead by the prefetch and freed behind).
 * blob.resolve.<size>: resolve() (a copy out) of handles spread over a chunk, in one process.
 * blob.fanout.<ring|blob>.8: delivered GB/s (payload bytes x consumers / time) and, as
 *   blob.fanout.<ring|blob>.8.cpu, the sender's CPU time (user + system) per message. Both
 *   paths run the same driver: rounds of ROUND messages, then a wait until every consumer
 *   has read the round (no ring or store ever overflows; nothing is evicted or falls back).
 */
import { fileURLToPath } from 'node:url';
import { BlobStore, Sender } from '../../dist/src/index.js';
import { startChild } from '../lib/child.mjs';
import { memcpyCase } from './floor.mjs';

const SIZES = { '4k': 4096, '64k': 64 * 1024, '1m': 1 << 20 };
/** Chunks of the append/resolve cases: 4 MiB, so the few chunks in use stay in cache (see BENCHMARKS.md for 32 MiB). */
const CHUNK = Number(process.env.BLOB_CHUNK ?? 4 << 20);
/** Chunks of the fan-out cases: the default 32 MiB. */
const FANOUT_CHUNK = Number(process.env.BLOB_FANOUT_CHUNK ?? 32 << 20);
const FANOUT_CONSUMERS = 8;
const FANOUT_SIZE = 1 << 20;
const ROUND = 16;
const child = fileURLToPath(new URL('../blob-child.mjs', import.meta.url));
let serial = 0;

function payloadOf(size) {
  const p = new Uint8Array(size);
  for (let i = 0; i < size; i++) p[i] = (i * 31 + 7) & 0xff;
  return p;
}

async function append(ctx, size) {
  const store = BlobStore.create(`bench-blob-${process.pid}-${++serial}`, {
    chunkSize: CHUNK,
    maxChunks: 4,
    decayMs: 0,
  });
  try {
    const payload = payloadOf(size);
    const perChunk = Math.floor(CHUNK / BlobStore.entrySize(size));
    const run = (n) => {
      for (let i = 0; i < n; i++) {
        store.ack(store.append(payload));
        if (i % perChunk === perChunk - 1) store.cleanup();
      }
    };
    run(perChunk * 3); // warm-up: every chunk slot created and freed once
    const n = ctx.scale(Math.min(200_000, Math.ceil(2 ** 31 / size)));
    const t0 = performance.now();
    run(n);
    const seconds = (performance.now() - t0) / 1000;
    return { value: (n * size) / seconds / 1e9, n, note: `${store.stats().freed} chunks freed` };
  } finally {
    store.close();
  }
}

async function resolve(ctx, size) {
  const store = BlobStore.create(`bench-blob-${process.pid}-${++serial}`, { chunkSize: CHUNK, maxChunks: 2 });
  try {
    const payload = payloadOf(size);
    const handles = [];
    for (let bytes = 0; bytes + BlobStore.entrySize(size) <= CHUNK; bytes += BlobStore.entrySize(size))
      handles.push(store.append(payload));
    const run = (n) => {
      let touched = 0;
      for (let i = 0; i < n; i++) {
        const copy = store.resolve(handles[i % handles.length]);
        touched += copy[size - 1];
      }
      return touched;
    };
    run(handles.length);
    const n = ctx.scale(Math.min(200_000, Math.ceil(2 ** 31 / size)));
    const t0 = performance.now();
    const touched = run(n);
    const seconds = (performance.now() - t0) / 1000;
    if (touched !== n * payload[size - 1]) throw new Error('resolve returned wrong bytes');
    return { value: (n * size) / seconds / 1e9, n };
  } finally {
    store.close();
  }
}

/** One fan-out run; returns { gbps, cpuUs } (sender CPU per message, microseconds). */
async function fanout(ctx, viaBlob) {
  const path = `/tmp/shmbus-bench-blob-${process.pid}-${++serial}.sock`;
  const store = viaBlob
    ? BlobStore.create(`bench-blob-fo-${process.pid}-${serial}`, { chunkSize: FANOUT_CHUNK, maxChunks: 8, decayMs: 0 })
    : null;
  const sender = await Sender.listen({
    path,
    capacity: 64 << 20,
    maxConsumers: FANOUT_CONSUMERS,
    kinds: { 2: 'always' },
    compress: false,
    ...(store ? { blobs: store, blobThreshold: 64 * 1024 } : {}),
  });
  const children = [];
  let evicted = null;
  sender.on('evicted', (e) => {
    evicted ??= e.reason;
  });
  try {
    for (let i = 0; i < FANOUT_CONSUMERS; i++) children.push(startChild(child, [path, String(ROUND)]));
    await Promise.all(children.map((c) => c.waitFor((m) => m.ready)));
    const payload = payloadOf(FANOUT_SIZE);
    const message = { kind: 1, key: 'k', payload };
    const rounds = Math.max(2, ctx.scale(40));
    const runRound = async (r) => {
      for (let i = 0; i < ROUND; i++)
        if (sender.publish(message) !== FANOUT_CONSUMERS) throw new Error('a consumer was not reached');
      const want = (r + 1) * ROUND;
      await Promise.all(children.map((c) => c.waitFor((m) => m.got >= want, 60_000)));
      store?.cleanup();
    };
    // Warm-up to the steady state, the same for both paths: every ring page touched once; the
    // store's first chunk files created and its freed chunks recycled.
    const warm = 6;
    for (let r = 0; r < warm; r++) await runRound(r);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let r = warm; r < warm + rounds; r++) await runRound(r);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const messages = rounds * ROUND;
    sender.publish({ kind: 2, payload: new Uint8Array(0) });
    if (evicted !== null) throw new Error(`a consumer was evicted (${evicted})`);
    const m = sender.metrics();
    if (viaBlob && (m.blobFallbacks !== 0 || m.blobMessages !== messages + warm * ROUND))
      throw new Error(`blob path not taken for every message: ${JSON.stringify(m)}`);
    return {
      gbps: (messages * FANOUT_SIZE * FANOUT_CONSUMERS) / seconds / 1e9,
      cpuUs: (cpu.user + cpu.system) / messages,
    };
  } finally {
    for (const c of children) c.kill();
    await sender.close();
    store?.close();
  }
}

/** The fan-out cases share one run per path: the .cpu case reports the figure the GB/s run measured. */
const fanoutRuns = new Map();
function fanoutCase(viaBlob, cpu) {
  const path = viaBlob ? 'blob' : 'ring';
  return {
    id: `blob.fanout.${path}.${FANOUT_CONSUMERS}${cpu ? '.cpu' : ''}`,
    unit: cpu ? 'us' : 'GB/s',
    title: cpu
      ? `sender CPU per 1 MiB message to ${FANOUT_CONSUMERS} consumers (${path === 'blob' ? 'appended once to a blob store' : 'copied into every ring'})`
      : `fan-out of 1 MiB messages to ${FANOUT_CONSUMERS} consumer processes, delivered GB/s (${path})`,
    run: async (ctx) => {
      if (!cpu) {
        const r = await fanout(ctx, viaBlob);
        fanoutRuns.set(path, r);
        return { value: r.gbps };
      }
      const r = fanoutRuns.get(path) ?? (await fanout(ctx, viaBlob));
      fanoutRuns.delete(path);
      return { value: r.cpuUs };
    },
  };
}

export default [
  memcpyCase('4k', 4096),
  ...Object.entries(SIZES).map(([label, size]) => ({
    id: `blob.append.${label}`,
    unit: 'GB/s',
    title: `blob store append, ${label} B payloads (acknowledged, chunks freed behind and prefetched ahead)`,
    run: (ctx) => append(ctx, size),
  })),
  ...Object.entries(SIZES).map(([label, size]) => ({
    id: `blob.resolve.${label}`,
    unit: 'GB/s',
    title: `blob store resolve (a copy out), ${label} B payloads`,
    run: (ctx) => resolve(ctx, size),
  })),
  fanoutCase(false, false),
  fanoutCase(false, true),
  fanoutCase(true, false),
  fanoutCase(true, true),
];
