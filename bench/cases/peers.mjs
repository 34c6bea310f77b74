/**
 * Node's IPC peers, each between two real processes (worker_threads, in-process by nature, is
 * the reference exception): round trips over a unix socket, child_process IPC, a worker
 * MessagePort and zeromq; one-way throughput over a unix socket (a write per frame, or corked
 * batches of 64) and zeromq Push/Pull. The child sides live in bench/peers/.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Pair, Pull } from 'zeromq';
import { latencyResult, SIZES } from '../lib/case.mjs';

const DEADLINE_MS = 60_000; // a case normally takes ~1 s; past this it is torn down and rejected
const RTT_ITERATIONS = 5000;
const TPUT_SECONDS = 0.75;
const CORK_BATCH = 64;

const peer = (file) => fileURLToPath(new URL(`../peers/${file}`, import.meta.url));
let socketCounter = 0;
const socketPath = (kind) => `/tmp/shmbus-bench-${process.pid}-${++socketCounter}-${kind}.sock`;

/**
 * Runs body(s) with a deadline and guaranteed cleanup. s.defer(fn) registers a cleanup (run in
 * reverse order, awaited, errors ignored); s.fail(err) rejects the run at once (a peer died, a
 * socket errored); s.fork/s.worker start a peer that is killed on the way out and whose early
 * exit fails the run instead of leaving it waiting for the deadline.
 */
async function session(body) {
  const cleanups = [];
  let fail;
  const failed = new Promise((_, reject) => {
    fail = reject;
  });
  failed.catch(() => {}); // a failure after the run settled (a peer killed in cleanup) is expected
  const timer = setTimeout(() => fail(new Error(`no result within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  const s = {
    fail,
    defer: (fn) => cleanups.push(fn),
    fork(file, args, options = {}) {
      const child = fork(peer(file), args.map(String), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...options });
      child.on('error', fail);
      child.on('exit', (code, signal) => fail(new Error(`${file} exited early (code ${code}, signal ${signal})`)));
      s.defer(async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGKILL');
        await once(child, 'exit'); // gone before the next case starts competing for the cores
      });
      return child;
    },
    worker(file) {
      const worker = new Worker(peer(file));
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`${file} exited early (code ${code})`)));
      s.defer(() => worker.terminate());
      return worker;
    },
  };
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

/** The child's first IPC message, e.g. 'ready' once it listens. */
const firstMessage = (child) => once(child, 'message').then(([message]) => message);

/**
 * Ping-pong driver: connect(done) wires the transport so that done() is called when a whole
 * reply arrived, and returns send() which sends one frame. Every round trip after the warm-up
 * (10%) is a sample; the next ping leaves from inside the reply callback.
 */
function pingPong(iterations, connect) {
  return new Promise((resolve) => {
    const samples = new Float64Array(iterations);
    let i = -Math.ceil(iterations / 10);
    let t0 = 0n;
    const send = connect(() => {
      const t1 = process.hrtime.bigint();
      if (i >= 0) samples[i] = Number(t1 - t0);
      if (++i === iterations) return resolve(latencyResult(samples));
      t0 = process.hrtime.bigint();
      send();
    });
    t0 = process.hrtime.bigint();
    send();
  });
}

/** Fails the session if a reply is not exactly one frame. */
function checkLength(s, got, size) {
  if (got !== size) s.fail(new Error(`reply of ${got} bytes, expected ${size}`));
}

const rtt = {
  uds: async (s, size, iterations) => {
    const path = socketPath('uds');
    s.defer(() => rmSync(path, { force: true }));
    await firstMessage(s.fork('uds-child.mjs', ['echo', path, size])); // listening
    const sock = net.createConnection(path);
    s.defer(() => sock.destroy());
    sock.on('error', s.fail);
    await once(sock, 'connect');
    const frame = Buffer.alloc(size, 0xa5);
    return pingPong(iterations, (done) => {
      let got = 0; // a stream may deliver the reply in pieces: wait for all of it
      sock.on('data', (chunk) => {
        got += chunk.length;
        if (got < size) return;
        checkLength(s, got, size);
        got = 0;
        done();
      });
      return () => sock.write(frame);
    });
  },
  cpipc: (s, size, iterations) => {
    const child = s.fork('cpipc-child.mjs', [], { serialization: 'advanced' });
    const frame = Buffer.alloc(size, 0xa5);
    return pingPong(iterations, (done) => {
      child.on('message', (reply) => {
        checkLength(s, reply.byteLength, size);
        done();
      });
      return () => child.send(frame);
    });
  },
  worker: async (s, size, iterations) => {
    const worker = s.worker('worker-echo.mjs');
    const frame = new Uint8Array(size).fill(0xa5);
    await once(worker, 'online');
    return pingPong(iterations, (done) => {
      worker.on('message', (reply) => {
        checkLength(s, reply.byteLength, size);
        done();
      });
      return () => worker.postMessage(frame);
    });
  },
  zeromq: async (s, size, iterations) => {
    const path = socketPath('zmq');
    const sock = new Pair();
    s.defer(() => rmSync(path, { force: true }));
    s.defer(() => sock.close());
    await sock.bind(`ipc://${path}`);
    s.fork('zeromq-child.mjs', ['echo', `ipc://${path}`]);
    const frame = Buffer.alloc(size, 0xa5);
    return pingPong(iterations, (done) => () => {
      sock
        .send(frame)
        .then(() => sock.receive())
        .then(([reply]) => {
          checkLength(s, reply.length, size);
          done();
        }, s.fail);
    });
  },
};

/**
 * A throughput Result from the bytes that arrived after the clock started (the first chunk or
 * message starts it and is not counted): msg/s for small frames, GB/s for large ones, the
 * other figure in the note.
 */
function throughputResult(unit, size, bytes, ns, frames) {
  const gbps = bytes / ns;
  const msgPerSec = (bytes / size / ns) * 1e9;
  return unit === 'GB/s'
    ? { value: gbps, n: frames, note: `${(msgPerSec / 1e3).toFixed(1)} k msg/s` }
    : { value: msgPerSec, n: frames, note: `${gbps.toFixed(3)} GB/s` };
}

/**
 * The child connects and writes `count` frames, `batch` per corked write when batch > 1; the
 * parent copies every chunk it reads out into its own buffer and stops the clock when the
 * last byte arrived.
 */
const udsThroughput = (batch) => async (s, size, count, unit) => {
  const path = socketPath('uds');
  const server = net.createServer();
  s.defer(() => rmSync(path, { force: true }));
  s.defer(() => server.close());
  server.on('error', s.fail);
  server.listen(path);
  await once(server, 'listening');
  const received = new Promise((resolve) => {
    server.once('connection', (sock) => {
      s.defer(() => sock.destroy());
      sock.on('error', s.fail);
      const total = size * count;
      let copy = Buffer.allocUnsafe(64 * 1024); // reads are at most 64 KiB: no regrowth in practice
      let bytes = 0;
      let firstChunk = 0;
      let t0 = 0n;
      sock.on('data', (chunk) => {
        if (bytes === 0) {
          t0 = process.hrtime.bigint();
          firstChunk = chunk.length;
        }
        if (chunk.length > copy.length) copy = Buffer.allocUnsafe(chunk.length);
        copy.set(chunk); // the consumer's copy-out
        bytes += chunk.length;
        if (bytes < total) return;
        const ns = Number(process.hrtime.bigint() - t0);
        if (bytes !== total) s.fail(new Error(`received ${bytes} bytes, expected ${total}`));
        resolve({ bytes: bytes - firstChunk, ns });
      });
    });
  });
  s.fork('uds-child.mjs', ['produce', path, size, count, batch]);
  const { bytes, ns } = await received;
  return throughputResult(unit, size, bytes, ns, count);
};

/** The child Pushes `count` frames; the parent Pulls and copies each one out. */
async function zeromqThroughput(s, size, count, unit) {
  const path = socketPath('zmq');
  const sock = new Pull();
  s.defer(() => rmSync(path, { force: true }));
  s.defer(() => sock.close());
  await sock.bind(`ipc://${path}`);
  s.fork('zeromq-child.mjs', ['produce', `ipc://${path}`, size, count]);
  const copy = Buffer.allocUnsafe(size);
  let t0 = 0n;
  for (let i = 0; i < count; i++) {
    const [message] = await sock.receive();
    if (i === 0) t0 = process.hrtime.bigint(); // the first message starts the clock
    checkLength(s, message.length, size);
    copy.set(message); // the consumer's copy-out
  }
  const ns = Number(process.hrtime.bigint() - t0);
  return throughputResult(unit, size, (count - 1) * size, ns, count);
}

const tput = { uds: udsThroughput(1), udscork: udsThroughput(CORK_BATCH), zeromq: zeromqThroughput };

// Frames per second each peer sustained on the 2-vCPU KVM guest (Node 20, a slow phase of the
// host), used only to size a run of ~TPUT_SECONDS: shorter on a faster machine, longer on a slower one.
const RATE = {
  uds: { 16: 350e3, 64: 330e3, '1k': 290e3, '64k': 28e3, '1m': 1.6e3 },
  udscork: { 16: 3.5e6, 64: 3.3e6, '1k': 1.3e6, '64k': 20e3, '1m': 1.5e3 },
  zeromq: { 16: 160e3, 64: 150e3, '1k': 110e3, '64k': 14e3, '1m': 1.3e3 },
};

const rttCases = Object.entries({
  uds: ['unix socket (net) echo', [16, 64, '1k', '64k']],
  cpipc: ["child_process IPC echo, serialization 'advanced'", [16, 64, '1k']],
  worker: ['worker_threads parentPort echo (in-process)', [16, 64, '1k']],
  zeromq: ['zeromq Pair echo over ipc://', [16, 64, '1k', '64k']],
}).flatMap(([peerName, [title, labels]]) =>
  labels.map((label) => ({
    id: `rtt.${peerName}.${label}`,
    unit: 'ns',
    title: `${title}, ${label} B round trip`,
    run: (ctx) => session((s) => rtt[peerName](s, SIZES[label], ctx.scale(RTT_ITERATIONS))),
  })),
);

const tputTitles = {
  uds: 'unix socket, one write per frame',
  udscork: `unix socket, corked batches of ${CORK_BATCH} frames`,
  zeromq: 'zeromq Push/Pull over ipc://',
};
const tputCases = Object.keys(RATE).flatMap((peerName) =>
  Object.keys(SIZES).map((label) => {
    const unit = SIZES[label] >= 64 * 1024 ? 'GB/s' : 'msg/s';
    return {
      id: `tput.${peerName}.${label}`,
      unit,
      title: `${tputTitles[peerName]}, ${label} B frames, consumer copies out`,
      run: (ctx) => {
        const count = Math.max(CORK_BATCH, ctx.scale(Math.ceil(RATE[peerName][label] * TPUT_SECONDS)));
        return session((s) => tput[peerName](s, SIZES[label], count, unit));
      },
    };
  }),
);

export default [...rttCases, ...tputCases];
