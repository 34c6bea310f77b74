/**
 * Daemon/client (src/rpc): request/response round trips under each wait strategy against the
 * same exchange over a unix socket, and lock-free reads of a 1 MiB shared state (idle daemon,
 * daemon republishing, four reader processes at once).
 *
 *   rpc.<wait>.64        p50/p99/p99.9 of every round trip, 64-byte command echoed back
 *   rpc.<wait>.64.rps    round trips per second, closed loop of back-to-back requests
 *   state.read.1m*       GB/s of snapshot bytes copied out by client.readData(buf)
 *
 * The daemons and readers are real processes (bench/rpc-child.mjs), the socket server too
 * (bench/peers/rpc-uds-child.mjs); this process is the client.
 */
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { Channel, Client } from '../../dist/src/index.js';
import { latencyResult, percentiles, SIZES } from '../lib/case.mjs';
import { startChild } from '../lib/child.mjs';

const child = fileURLToPath(new URL('../rpc-child.mjs', import.meta.url));
const udsChild = fileURLToPath(new URL('../peers/rpc-uds-child.mjs', import.meta.url));
const DEADLINE_MS = 60_000; // a case normally takes ~1 s; past this its children are killed
const REQUEST_SIZE = 64;
const STATE_SIZE = SIZES['1m'];
const SYNC_OPTIONS = { timeoutMs: 10_000 }; // requestSync blocks the loop: only its own deadline can end a hang
const LENGTH_PREFIX = 4;
let serial = 0;
const uniqueName = (what) => `bench-${what}-${process.pid}-${++serial}`;

/**
 * Runs body(s) with guaranteed cleanup: s.daemon(args) starts a bench/rpc-child.mjs daemon and
 * stops it on the way out (SIGTERM, so that it closes and unlinks its segment; the file is
 * removed anyway if it had to be killed); s.defer(fn) registers other cleanups (reverse order).
 * Past DEADLINE_MS every child is killed, which ends any wait on it (a requestSync() has its
 * own timeout).
 */
async function session(body) {
  const cleanups = [];
  const children = [];
  const timer = setTimeout(() => {
    for (const c of children) c.kill();
  }, DEADLINE_MS);
  const s = {
    defer: (fn) => cleanups.push(fn),
    start(script, args) {
      const c = startChild(script, args.map(String), { timeoutMs: DEADLINE_MS + 10_000 });
      children.push(c);
      s.defer(async () => {
        if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGTERM');
        await c.exit(5_000); // SIGKILL after 5 s
      });
      return c;
    },
    async daemon(name, args) {
      // After the child has exited (cleanups run in reverse); a daemon segment lives at the path
      // Channel.remove() computes for any segment name.
      s.defer(() => Channel.remove(name));
      const d = s.start(child, args);
      await d.waitFor((m) => m.ready);
      return d;
    },
  };
  try {
    return await body(s);
  } finally {
    clearTimeout(timer);
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch {}
    }
  }
}

/** A 64-byte command carrying its sequence number in its first 4 bytes (little-endian). */
function makeCommand() {
  const cmd = new Uint8Array(REQUEST_SIZE).fill(0xa5);
  const dv = new DataView(cmd.buffer);
  return { cmd, stamp: (i) => dv.setUint32(0, i, true) };
}

/** Throws unless `reply` is the echo of command #i. */
function checkReply(reply, i, offset = 0) {
  const length = reply.length - offset;
  const id = (reply[offset] | (reply[offset + 1] << 8) | (reply[offset + 2] << 16) | (reply[offset + 3] << 24)) >>> 0;
  if (length !== REQUEST_SIZE || id !== i >>> 0)
    throw new Error(`reply to request ${i} came back wrong: ${length} bytes, id ${id}`);
}

/**
 * Untimed requests before any measurement, in ms. Time, not a count: a fresh daemon/client pair
 * needs ~0.5-0.7 s on the 2-vCPU guest before both hot paths are optimised (closed-loop rate per
 * 100 ms from the start, adaptive: 14k, 48k, 73k, 132k, 164k, 329k, 390k... then ~450k/s); a
 * slow side makes the other park, and every wake-up costs tens of microseconds here.
 */
const warmupMs = (ctx) => (ctx.quick ? 250 : 750);
const rpsSeconds = (ctx) => (ctx.quick ? 0.2 : 1);
const latencyCount = (ctx, slow) => ctx.scale(slow ? 20_000 : 100_000);

/**
 * Closed loop: back-to-back `request()`s for `ms`, the clock read every 64 of them.
 * Completed requests / elapsed seconds.
 */
function closedLoopSync(ms, request) {
  const t0 = performance.now();
  let now = t0;
  let done = 0;
  while (now - t0 < ms) {
    for (let k = 0; k < 64; k++, done++) request();
    now = performance.now();
  }
  return (done / (now - t0)) * 1000;
}

async function closedLoopAsync(ms, request) {
  const t0 = performance.now();
  let now = t0;
  let done = 0;
  while (now - t0 < ms) {
    for (let k = 0; k < 64; k++, done++) await request();
    now = performance.now();
  }
  return (done / (now - t0)) * 1000;
}

/** Round-trip samples (ns) of `count` back-to-back `request()`s. */
function latencySync(count, request) {
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    // process.hrtime.bigint(): ~55 ns; performance.now() perturbs a sub-microsecond loop far more.
    const t0 = process.hrtime.bigint();
    request();
    samples[i] = Number(process.hrtime.bigint() - t0);
  }
  return samples;
}

async function latencyAsync(count, request) {
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    await request();
    samples[i] = Number(process.hrtime.bigint() - t0);
  }
  return samples;
}

/** One case's measurement over `request()` (sync or async): warm-up, then latency samples or a closed loop. */
async function measureRequests(ctx, measure, sync, request, slow) {
  if (sync) closedLoopSync(warmupMs(ctx), request);
  else await closedLoopAsync(warmupMs(ctx), request);
  if (measure === 'rps') {
    const seconds = rpsSeconds(ctx);
    const value = sync ? closedLoopSync(seconds * 1000, request) : await closedLoopAsync(seconds * 1000, request);
    return { value, note: `closed loop, ${seconds} s after ${warmupMs(ctx)} ms of warm-up` };
  }
  const count = latencyCount(ctx, slow);
  return latencyResult(sync ? latencySync(count, request) : await latencyAsync(count, request));
}

/**
 * shmbus: a daemon child whose handler echoes the command; this process is the client.
 * mode 'sync' uses requestSync(), 'async' awaits request(). `measure` is 'latency' or 'rps'.
 */
function shmbusRpc(wait, mode, measure) {
  return (ctx) =>
    session(async (s) => {
      const name = uniqueName('rpc');
      await s.daemon(name, ['echo', name, wait]);
      const client = Client.connect(name, { wait });
      s.defer(() => client.close());
      const { cmd, stamp } = makeCommand();
      let seq = 0;
      const requestSync = () => {
        const i = seq++;
        stamp(i);
        checkReply(client.requestSync(cmd, SYNC_OPTIONS), i);
      };
      const requestAsync = async () => {
        const i = seq++;
        stamp(i);
        checkReply(await client.request(cmd), i);
      };
      const sync = mode === 'sync';
      return measureRequests(ctx, measure, sync, sync ? requestSync : requestAsync, wait === 'park' || !sync);
    });
}

/**
 * A unix-socket client that does one request at a time: writes a length-prefixed frame and
 * resolves with the reply frame (prefix included) once all of it arrived.
 */
async function udsClient(s, path) {
  const sock = net.createConnection(path);
  s.defer(() => sock.destroy());
  let pending = null;
  const fail = (err) => {
    const p = pending;
    pending = null;
    p?.reject(err);
  };
  sock.on('error', fail);
  sock.on('close', () => fail(new Error('the unix-socket server closed the connection')));
  await once(sock, 'connect');
  const frame = Buffer.alloc(LENGTH_PREFIX + REQUEST_SIZE, 0xa5);
  frame.writeUInt32LE(REQUEST_SIZE, 0);
  const reply = Buffer.alloc(LENGTH_PREFIX + REQUEST_SIZE);
  let got = 0;
  sock.on('data', (chunk) => {
    if (pending === null) return fail(new Error(`${chunk.length} bytes arrived with no request pending`));
    if (got + chunk.length > reply.length) return fail(new Error('the reply is longer than the request'));
    chunk.copy(reply, got);
    got += chunk.length;
    if (got < LENGTH_PREFIX || got < LENGTH_PREFIX + reply.readUInt32LE(0)) return;
    const p = pending;
    pending = null;
    got = 0;
    p.resolve(reply);
  });
  let seq = 0;
  return () => {
    const i = seq++;
    frame.writeUInt32LE(i >>> 0, LENGTH_PREFIX);
    return new Promise((resolve, reject) => {
      pending = { resolve, reject };
      sock.write(frame);
    }).then((r) => checkReply(r, i, LENGTH_PREFIX));
  };
}

function udsRpc(measure) {
  return (ctx) =>
    session(async (s) => {
      const path = `/tmp/shmbus-bench-${process.pid}-${++serial}-rpc.sock`;
      s.defer(() => rmSync(path, { force: true }));
      const server = s.start(udsChild, [path]);
      await server.waitFor((m) => m.ready);
      return measureRequests(ctx, measure, false, await udsClient(s, path), true);
    });
}

/** Resolves once the publisher's version moves past `initial` (its loop started). */
async function loopStarted(client, initial) {
  const deadline = Date.now() + 10_000;
  for (let spins = 0; client.latestVersion() === initial; spins++) {
    if ((spins & 1023) !== 0) continue;
    if (Date.now() > deadline) throw new Error('the publisher did not start republishing within 10 s');
    await new Promise(setImmediate);
  }
}

/**
 * This process reads 1 MiB snapshots with client.readData(buf) from a daemon child that
 * published once (idle) or republishes as fast as it can (busy), checking each snapshot
 * (every u32 word equals the version readData() reported; a mismatch fails the case). Value:
 * snapshot bytes / time inside readData() (the check is not timed), comparable with memcpy.1m.
 */
function stateRead(busy) {
  return (ctx) =>
    session(async (s) => {
      const name = uniqueName('state');
      const daemon = await s.daemon(name, ['publish', name, STATE_SIZE, 1, busy ? 1 : 0]);
      const { version: initial } = await daemon.waitFor((m) => m.ready);
      const client = Client.connect(name, { wait: 'park' });
      s.defer(() => client.close());
      const buf = Buffer.alloc(STATE_SIZE);
      const head = buf.subarray(0, STATE_SIZE - 4);
      const tail = buf.subarray(4, STATE_SIZE);
      const words = new Uint32Array(buf.buffer, buf.byteOffset, STATE_SIZE >> 2);
      if (busy) await loopStarted(client, initial);
      /** Throws unless the snapshot just read (true length n) is whole and carries its version. */
      const check = (n) => {
        const version = client.dataVersion;
        if (n !== STATE_SIZE || words[0] !== version || Buffer.compare(head, tail) !== 0)
          throw new Error(`torn snapshot: length ${n}, version ${version}, first word ${words[0]}`);
      };
      for (let i = 0; i < 50; i++) check(client.readData(buf)); // warm-up
      const seconds = ctx.quick ? 0.25 : 1;
      const retries0 = client.state?.retries; // StateReader's counter: not public API
      const v0 = client.latestVersion();
      const samples = [];
      let inRead = 0;
      const t0 = performance.now();
      let now = t0;
      while (now - t0 < seconds * 1000) {
        const r0 = process.hrtime.bigint();
        const n = client.readData(buf);
        const r1 = process.hrtime.bigint();
        check(n);
        const ns = Number(r1 - r0);
        inRead += ns;
        samples.push(ns);
        now = performance.now();
      }
      if (!client.daemonAlive()) throw new Error('the daemon died during the run');
      const wallMs = now - t0;
      const snapshots = samples.length;
      const { p50, p99 } = percentiles(samples);
      const publishes = client.latestVersion() - v0;
      const retries = retries0 === undefined ? 'n/a' : client.state.retries - retries0;
      return {
        value: (snapshots * STATE_SIZE) / inRead,
        n: snapshots,
        note:
          `${snapshots} snapshots, readData p50 ${(p50 / 1e3).toFixed(1)} us / p99 ${(p99 / 1e3).toFixed(1)} us, ` +
          `${((snapshots * STATE_SIZE) / wallMs / 1e6).toFixed(2)} GB/s with the check, retries ${retries}` +
          (busy ? `, daemon ${((publishes / wallMs) * 1000).toFixed(0)} publishes/s` : ''),
      };
    });
}

/**
 * Four reader processes read (and check) 1 MiB snapshots for ~2 s while the daemon
 * republishes as fast as it can. Value: snapshot bytes all readers copied out and checked
 * / the wall-clock span of their windows.
 */
function stateReaders(readerCount) {
  return (ctx) =>
    session(async (s) => {
      const name = uniqueName('state4');
      const seconds = ctx.quick ? 0.5 : 2;
      const daemon = await s.daemon(name, ['publish', name, STATE_SIZE, readerCount, 1]);
      const readers = Array.from({ length: readerCount }, () => s.start(child, ['read', name, STATE_SIZE, seconds]));
      const reports = await Promise.all(readers.map((r) => r.waitFor((m) => m.done, seconds * 1000 + 30_000)));
      if (daemon.proc.exitCode !== null || daemon.proc.signalCode !== null)
        throw new Error('the daemon died during the run');
      const torn = reports.reduce((n, r) => n + r.torn, 0);
      if (torn > 0)
        throw new Error(`${torn} torn snapshots, first: ${JSON.stringify(reports.find((r) => r.firstTorn).firstTorn)}`);
      const backwards = reports.reduce((n, r) => n + r.backwards, 0);
      if (backwards > 0) throw new Error(`${backwards} snapshots older than the one read before them`);
      const start = Math.min(...reports.map((r) => r.startMs));
      const end = Math.max(...reports.map((r) => r.endMs));
      const bytes = reports.reduce((n, r) => n + r.bytes, 0);
      const snapshots = reports.reduce((n, r) => n + r.snapshots, 0);
      const publishes = Math.max(...reports.map((r) => r.v1)) - Math.min(...reports.map((r) => r.v0));
      const retries = reports.every((r) => r.retries !== null) ? reports.reduce((n, r) => n + r.retries, 0) : 'n/a';
      return {
        value: bytes / (end - start) / 1e6,
        n: snapshots,
        note:
          `${snapshots} snapshots checked, none torn; per reader ${reports.map((r) => r.snapshots).join('/')}; ` +
          `daemon ${((publishes / (end - start)) * 1000).toFixed(0)} publishes/s; retries ${retries}`,
      };
    });
}

const WAITS = [
  ['spin', 'spin', 'sync', 'requestSync(), wait=spin both sides'],
  ['adaptive', 'adaptive', 'sync', 'requestSync(), default wait (adaptive)'],
  ['async', 'adaptive', 'async', 'await request(), default wait (adaptive)'],
  ['park', 'park', 'sync', 'requestSync(), wait=park both sides'],
];

export default [
  ...WAITS.flatMap(([label, wait, mode, how]) => [
    {
      id: `rpc.${label}.64`,
      unit: 'ns',
      skipQuick: label === 'park', // ~100 us a round trip on this guest: the slowest, and no target
      title: `shmbus daemon/client round trip, ${how}, 64 B echoed`,
      run: shmbusRpc(wait, mode, 'latency'),
    },
    {
      id: `rpc.${label}.64.rps`,
      unit: 'msg/s',
      title: `shmbus daemon/client round trips/s, closed loop, ${how}, 64 B echoed`,
      skipQuick: label !== 'adaptive', // --quick keeps the one the target needs
      run: shmbusRpc(wait, mode, 'rps'),
    },
  ]),
  {
    id: 'rpc.uds.64',
    unit: 'ns',
    title: 'unix socket (net) request/response, length-prefixed 64 B echoed, one at a time',
    run: udsRpc('latency'),
  },
  {
    id: 'rpc.uds.64.rps',
    unit: 'msg/s',
    title: 'unix socket (net) request/response round trips/s, closed loop, 64 B echoed',
    run: udsRpc('rps'),
  },
  {
    id: 'state.read.1m',
    unit: 'GB/s',
    title: 'shmbus client.readData() of a 1 MiB state, idle daemon (time inside readData)',
    run: stateRead(false),
  },
  {
    id: 'state.read.1m.busy',
    unit: 'GB/s',
    title: 'shmbus client.readData() of a 1 MiB state while the daemon republishes in a loop',
    run: stateRead(true),
  },
  {
    id: 'state.read.1m.4readers',
    unit: 'GB/s',
    title: '4 reader processes, 1 MiB snapshots for ~2 s while the daemon republishes, aggregate',
    skipQuick: true,
    run: stateReaders(4),
  },
];
