/**
 * One consumer process of `shmbus demo` (src/cli/demo.ts forks it; not for direct use).
 *
 * The parent talks to it over the fork IPC channel (off the data path):
 *
 * ```
 * parent -> child  { type: 'start', index, socketPath, filter }  connect with setupShmConsumer, subscribe
 *                  { type: 'phase', name, samples }              zero the phase counters (samples: keep raw latencies)
 *                  { type: 'uds', path }                         also connect to the unix-socket sender
 *                  { type: 'report' }                            send a report now
 *                  { type: 'stop' }                              close everything, exit 0
 * child -> parent  { type: 'ready' } | { type: 'phase' } | { type: 'uds-ready' } | Report
 * ```
 * It sends a Report every 250 ms on its own. Both transports feed the same pipeline, the one
 * setupShmConsumer() runs: decode the v9 frame, copy it out, push it into a bounded queue per
 * stream (2048, the oldest dropped when full), and take it from there in an async iteration.
 * For shmbus that is SolanaConsumer itself; for the unix socket this file does the same with
 * shmbus/solana's UpdateQueue. Every update taken is checked against the consumer's own filter
 * (an account outside its pubkeys and owners, or a transaction it did not opt in to, is a
 * violation), counted, and its latency recorded: sender stamp (in the frame) to the moment the
 * handler here takes it. The child exits when the parent goes away (IPC disconnect), and ignores
 * SIGINT: on Ctrl-C in a terminal the parent cleans up and stops it.
 */
import net from 'node:net';
import { Histogram } from '../core/histogram.js';
import {
  type DecodedFrame,
  decodeSolanaFrame,
  type SolanaConsumer,
  setupShmConsumer,
  TAG_ACCOUNT_UPDATE,
  TAG_TRANSACTION_UPDATE,
  UpdateQueue,
} from '../solana/index.js';
import { type DemoFilter, type FilterSets, filterSets, keyOf } from './demo-workload.js';

export type Transport = 'shmbus' | 'uds';

export interface StartMessage {
  type: 'start';
  index: number;
  socketPath: string;
  filter: DemoFilter;
}

/** Counters of one transport since the last 'phase' message. */
export interface PhaseCounts {
  received: number;
  accounts: number;
  transactions: number;
  slots: number;
  violations: number;
  /** Wall clock (ms since the epoch) of the last update taken, 0 if none. */
  lastAtMs: number;
  p50: number;
  p99: number;
  /** Raw latencies (ns) when the phase asked for them. */
  samples?: number[];
}

export interface Report {
  type: 'report';
  index: number;
  pid: number;
  /** The report window (since the previous report). */
  window: { ms: number; received: number; p50: number; p99: number };
  phase: string;
  shmbus: PhaseCounts;
  uds: PhaseCounts;
  /** Since start, both transports. */
  totalReceived: number;
  totalViolations: number;
  /** SolanaConsumer: updates it queued, dropped (queue full, oldest first), still queued; its latency (stamp -> decode). */
  library: { queued: number; dropped: number; pending: number; latencyP50: number; latencyP99: number; state: string };
  /** The unix-socket pipeline's queues: updates dropped (oldest first), still queued. */
  udsQueues: { dropped: number; pending: number };
  evicted: string | null;
}

const REPORT_MS = 250;
/** As setupShmConsumer's default. */
const QUEUE_CAPACITY = 2048;
const MAX_SAMPLES = 500_000;
const nowMs = () => performance.timeOrigin + performance.now();

class Tally {
  counts = { received: 0, accounts: 0, transactions: 0, slots: 0, violations: 0, lastAtMs: 0 };
  histogram = new Histogram();
  samples: number[] | null = null;

  reset(keepSamples: boolean): void {
    this.counts = { received: 0, accounts: 0, transactions: 0, slots: 0, violations: 0, lastAtMs: 0 };
    this.histogram.reset();
    this.samples = keepSamples ? [] : null;
  }

  snapshot(): PhaseCounts {
    return {
      ...this.counts,
      p50: this.histogram.percentile(0.5),
      p99: this.histogram.percentile(0.99),
      ...(this.samples !== null ? { samples: this.samples } : {}),
    };
  }
}

let index = -1;
let sets: FilterSets | null = null;
let consumer: SolanaConsumer | null = null;
let uds: net.Socket | null = null;
let udsClosed = false;
const udsQueues = [
  new UpdateQueue<DecodedFrame>(QUEUE_CAPACITY),
  new UpdateQueue<DecodedFrame>(QUEUE_CAPACITY),
  new UpdateQueue<DecodedFrame>(QUEUE_CAPACITY),
];
let evicted: string | null = null;
let phaseName = 'live';
const tallies: Record<Transport, Tally> = { shmbus: new Tally(), uds: new Tally() };
const windowHistogram = new Histogram();
let windowReceived = 0;
let windowStart = nowMs();
let totalReceived = 0;
let totalViolations = 0;
let reportTimer: NodeJS.Timeout | null = null;

function send(m: object): void {
  if (process.connected) process.send?.(m);
}

/** Counts, checks and times one update. */
function take(d: DecodedFrame, transport: Transport): void {
  const at = nowMs();
  const latencyNs = at * 1e6 - Number(d.senderNanos);
  const t = tallies[transport];
  const c = t.counts;
  const f = sets as FilterSets;
  let allowed = true;
  if (d.tag === TAG_ACCOUNT_UPDATE) {
    c.accounts++;
    allowed = f.pubkeys.has(keyOf(d.update.pubkey)) || f.owners.has(keyOf(d.update.owner));
  } else if (d.tag === TAG_TRANSACTION_UPDATE) {
    c.transactions++;
    allowed = f.transactions;
  } else c.slots++;
  if (!allowed) {
    c.violations++;
    totalViolations++;
  }
  c.received++;
  c.lastAtMs = at;
  t.histogram.record(latencyNs);
  if (t.samples !== null && t.samples.length < MAX_SAMPLES) t.samples.push(latencyNs);
  windowHistogram.record(latencyNs);
  windowReceived++;
  totalReceived++;
}

function report(): Report {
  const now = nowMs();
  const m = consumer?.metrics();
  const dropped = m ? m.dropped.accounts + m.dropped.transactions + m.dropped.slots : 0;
  const pending = consumer ? consumer.accounts.size + consumer.transactions.size + consumer.slots.size : 0;
  const r: Report = {
    type: 'report',
    index,
    pid: process.pid,
    window: {
      ms: now - windowStart,
      received: windowReceived,
      p50: windowHistogram.percentile(0.5),
      p99: windowHistogram.percentile(0.99),
    },
    phase: phaseName,
    shmbus: tallies.shmbus.snapshot(),
    uds: tallies.uds.snapshot(),
    totalReceived,
    totalViolations,
    library: {
      queued: m ? m.accounts + m.transactions + m.slots : 0,
      dropped,
      pending,
      latencyP50: m?.latency.p50 ?? 0,
      latencyP99: m?.latency.p99 ?? 0,
      state: m?.state ?? 'none',
    },
    udsQueues: {
      dropped: udsQueues.reduce((a, q) => a + q.dropped, 0),
      pending: udsQueues.reduce((a, q) => a + q.size, 0),
    },
    evicted,
  };
  windowHistogram.reset();
  windowReceived = 0;
  windowStart = now;
  return r;
}

/** Drains one of the SolanaConsumer's typed queues for as long as the consumer lives. */
async function drain(stream: AsyncGenerator<DecodedFrame>): Promise<void> {
  try {
    for await (const d of stream) take(d, 'shmbus');
  } catch (err) {
    const e = err as { code?: string; details?: { reason?: string }; message?: string };
    evicted ??= e.details?.reason ?? e.code ?? String(e.message);
  }
}

async function start(m: StartMessage): Promise<void> {
  index = m.index;
  // A test hook (test/process/cli-demo.test.ts): this consumer checks against an empty filter,
  // so every account it receives counts as a violation and the demo must say so.
  const mischeck = process.env.SHMBUS_TEST_DEMO_MISCHECK === String(m.index);
  sets = filterSets(mischeck ? { ...m.filter, pubkeys: [], owners: [] } : m.filter);
  const c = await setupShmConsumer(m.socketPath, { name: `demo consumer #${m.index}: ${m.filter.label}` });
  consumer = c;
  c.on('evicted', (e: { reason?: string }) => {
    evicted = e?.reason ?? 'evicted';
  });
  if (m.filter.pubkeys.length > 0 || m.filter.owners.length > 0) await c.subscribe(m.filter.pubkeys, m.filter.owners);
  if (m.filter.transactions) await c.subscribeTransactions();
  void drain(c.accountUpdates());
  void drain(c.transactionUpdates());
  void drain(c.slotUpdates());
  reportTimer = setInterval(() => send(report()), REPORT_MS);
  send({ type: 'ready' });
}

const LENGTH_PREFIX = 4;

/** A copy that outlives the socket buffer (what SolanaConsumer does with a ring slot). */
function copyOut(d: DecodedFrame): DecodedFrame {
  if (d.tag === TAG_ACCOUNT_UPDATE) {
    const u = d.update;
    return { ...d, update: { ...u, pubkey: u.pubkey.slice(), owner: u.owner.slice(), data: u.data.slice() } };
  }
  if (d.tag === TAG_TRANSACTION_UPDATE) {
    const t = d.update;
    return { ...d, update: { ...t, signature: t.signature.slice(), payload: t.payload.slice() } };
  }
  return d;
}

/** The queue of a frame's stream: accounts, transactions, slots (SolanaConsumer's three). */
function queueOf(d: DecodedFrame): UpdateQueue<DecodedFrame> {
  return udsQueues[d.tag === TAG_ACCOUNT_UPDATE ? 0 : d.tag === TAG_TRANSACTION_UPDATE ? 1 : 2];
}

/** As SolanaConsumer's stream(): the queued updates, waiting when the queue is empty. */
async function* udsStream(queue: UpdateQueue<DecodedFrame>): AsyncGenerator<DecodedFrame> {
  for (;;) {
    const item = queue.shift();
    if (item !== undefined) {
      yield item;
      continue;
    }
    if (udsClosed) return;
    await queue.wait();
  }
}

/** Connects to the unix-socket sender: says its index (u32), then reads length-prefixed v9 frames. */
function connectUds(path: string): void {
  const socket = net.createConnection(path);
  uds = socket;
  let pending: Buffer | null = null;
  socket.on('connect', () => {
    const hello = Buffer.alloc(LENGTH_PREFIX);
    hello.writeUInt32LE(index, 0);
    socket.write(hello);
    send({ type: 'uds-ready' });
  });
  socket.on('data', (chunk: Buffer) => {
    let buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
    let at = 0;
    while (buf.length - at >= LENGTH_PREFIX) {
      const length = buf.readUInt32LE(at);
      if (buf.length - at - LENGTH_PREFIX < length) break;
      const d = copyOut(decodeSolanaFrame(buf.subarray(at + LENGTH_PREFIX, at + LENGTH_PREFIX + length)));
      queueOf(d).push(d);
      at += LENGTH_PREFIX + length;
    }
    buf = buf.subarray(at);
    pending = buf.length === 0 ? null : buf;
  });
  socket.on('error', (err) => send({ type: 'error', message: `unix socket: ${err.message}` }));
  socket.on('close', () => {
    udsClosed = true;
    for (const q of udsQueues) q.wake();
  });
  for (const q of udsQueues)
    void (async () => {
      for await (const d of udsStream(q)) take(d, 'uds');
    })();
}

async function stop(code: number): Promise<never> {
  if (reportTimer !== null) clearInterval(reportTimer);
  uds?.destroy();
  try {
    await consumer?.close();
  } catch {}
  process.exit(code);
}

process.on('SIGINT', () => {});
// The parent (and with it the sender) is gone: nothing to say goodbye to.
process.on('disconnect', () => process.exit(0));
process.on('message', (m: { type: string } & Record<string, unknown>) => {
  switch (m.type) {
    case 'start':
      start(m as unknown as StartMessage).catch((err: Error) => {
        send({ type: 'error', message: `connect: ${err.message}` });
        void stop(1);
      });
      break;
    case 'phase':
      phaseName = String(m.name);
      tallies.shmbus.reset(m.samples === true);
      tallies.uds.reset(m.samples === true);
      send({ type: 'phase', name: phaseName });
      break;
    case 'uds':
      connectUds(String(m.path));
      break;
    case 'report':
      send(report());
      break;
    case 'stop':
      void stop(0);
      break;
  }
});
