/**
 * `shmbus demo`: a fan-out sender (shmbus/solana) streams synthetic Solana account updates to
 * K consumer processes with different filters, with a live view of what each receives, then a
 * short side-by-side of the same updates over unix sockets.
 *
 * ```
 * npx shmbus demo [--seconds N] [--consumers K] [--rate R|max] [--json] [--no-live] [--no-compare]
 * ```
 *
 *    this process                                     forked consumer processes (demo-consumer.ts)
 *   +-----------------------------+   ring + eventfd  +----------------------------------------+
 *   | Workload -> setupSender()   | ----------------> | setupShmConsumer(), subscribe(filter)  |
 *   |  (publishAccount/Tx/Slot)   |   (per consumer)  | checks each update against its filter, |
 *   | view <- reports (fork IPC)  | <---------------- | counts it, times it (stamp -> handler) |
 *   +-----------------------------+   every 250 ms    +----------------------------------------+
 *
 * Phases: a 0.5 s warm-up (not counted); live (N s at R updates/s, or as fast as flow control
 * allows with `max`); then shmbus against unix sockets (demo-uds.ts): throughput runs (as fast
 * as flow control allows) and latency runs (bursts of 5 updates every ~1 ms), two of each per
 * transport in the order A B B A, over the same consumer processes and the same update
 * sequence. Flow control is the same everywhere (the sender pauses while some consumer's
 * backlog is above 2 MiB, until all are below 1 MiB). After each phase the demo waits until
 * every consumer has taken what its sender says it sent it, and counts what is missing (must
 * be 0) and what the consumer's queue dropped.
 *
 * Cleanup: the consumer rings and the sender's registration (shmbus's own close), the socket
 * directory under os.tmpdir(), and the consumer processes (stopped, SIGKILLed after 2 s) go
 * on every exit path: the end, an error, SIGINT / SIGTERM. A consumer exits by itself when
 * this process dies (its IPC channel closes). Runs on the CLI's one thread.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type SolanaSender, setupSender } from '../solana/index.js';
import type { Report, StartMessage, Transport } from './demo-consumer.js';
import { UdsSender } from './demo-uds.js';
import {
  accountPool,
  type DemoFilter,
  type DemoUpdate,
  demoFilters,
  filterSets,
  PROGRAM_NAMES,
  SLOT_EVERY,
  TRANSACTION_EVERY,
  Workload,
} from './demo-workload.js';

export const DEMO_USAGE = `  demo [--seconds N] [--consumers K] [--rate R|max] [--json] [--no-live] [--no-compare]
        a fan-out sender streams synthetic Solana account updates (shmbus/solana) to K
        consumer processes (default 3) with different filters, for N seconds (default 6)
        at R updates/s (default 20000; max: as fast as they keep up), with a live view
        (--no-live: a line per second); then the same updates over unix sockets, side by
        side (--no-compare skips it). --json: only a summary, as data`;

interface DemoOptions {
  seconds: number;
  consumers: number;
  rate: number | 'max';
  json: boolean;
  live: boolean;
  compare: boolean;
}

/** Ring bytes per consumer (setupSender's default, 64 MiB, is sized for 10 MiB accounts). */
const RING_CAPACITY = 8 << 20;
const HIGH_WATER = 2 << 20;
const LOW_WATER = 1 << 20;
const BATCH = 64;
const BURST = 5;
const REFRESH_MS = 250;
const WARMUP_MS = 500;
const DEFAULT_RATE = 20_000;
const MAX_CONSUMERS = 10;
/** Per transport in the comparison: the throughput runs and the latency runs (two each). */
const COMPARE_THROUGHPUT_MS = 800;
const COMPARE_LATENCY_MS = 500;
const COMPARE_ORDER = ['shmbus', 'uds', 'uds', 'shmbus'] as const;
const START_TIMEOUT_MS = 15_000;
const DRAIN_TIMEOUT_MS = 10_000;

const consumerScript = fileURLToPath(new URL('./demo-consumer.js', import.meta.url));

class DemoAborted extends Error {}

function parse(args: string[]): DemoOptions | string {
  const o: DemoOptions = { seconds: 6, consumers: 3, rate: DEFAULT_RATE, json: false, live: true, compare: true };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => (i + 1 < args.length ? args[++i] : '');
    if (a === '--seconds') {
      const v = value();
      o.seconds = v === '' ? Number.NaN : Number(v);
      if (!(o.seconds > 0 && o.seconds <= 3600))
        return `--seconds takes a number in (0, 3600], got ${JSON.stringify(v)}`;
    } else if (a === '--consumers') {
      const v = value();
      o.consumers = v === '' ? Number.NaN : Number(v);
      if (!Number.isInteger(o.consumers) || o.consumers < 1 || o.consumers > MAX_CONSUMERS)
        return `--consumers takes an integer in 1..${MAX_CONSUMERS}, got ${JSON.stringify(v)}`;
    } else if (a === '--rate') {
      const v = value();
      o.rate = v === 'max' ? 'max' : Number(v);
      if (o.rate !== 'max' && !(Number.isInteger(o.rate) && o.rate > 0 && o.rate <= 10_000_000))
        return `--rate takes updates per second (an integer in 1..10000000) or max, got ${JSON.stringify(v)}`;
    } else if (a === '--json') o.json = true;
    else if (a === '--no-live') o.live = false;
    else if (a === '--no-compare') o.compare = false;
    else return `unknown option ${JSON.stringify(a)}`;
  }
  return o;
}

// ------------------------------------------------------------------------------- formatting

const int = (n: number) => Math.round(n).toLocaleString('en-US');

function ns(v: number): string {
  if (v <= 0) return '-';
  if (v < 1e3) return `${v.toFixed(0)} ns`;
  if (v < 1e6) return `${(v / 1e3).toFixed(v < 1e4 ? 1 : 0)} µs`;
  if (v < 1e9) return `${(v / 1e6).toFixed(v < 1e7 ? 2 : 1)} ms`;
  return `${(v / 1e9).toFixed(2)} s`;
}

function table(rows: string[][], rightAligned: Set<number>): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (rightAligned.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd(),
  );
}

/** The machine the figures came from (they mean nothing without it). */
function machine(): { cpu: string; cpus: number; load: number[]; node: string; date: string } {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    cpus: c.length,
    load: loadavg().map((l) => Math.round(l * 100) / 100),
    node: process.version,
    date: new Date().toISOString(),
  };
}

// ------------------------------------------------------------------------------- consumers

type ChildMessage = { type: string } & Record<string, unknown>;

/** One forked consumer process and its latest report. */
class Peer {
  readonly proc: ChildProcess;
  last: Report | null = null;
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  errors: string[] = [];
  private waiters = new Set<{ match: (m: ChildMessage) => boolean; resolve: (m: ChildMessage) => void }>();
  private readonly exited: Promise<void>;

  constructor(
    readonly index: number,
    readonly filter: DemoFilter,
  ) {
    this.proc = fork(consumerScript, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'json' });
    this.proc.stderr?.setEncoding('utf8');
    this.proc.stderr?.on('data', (d: string) => {
      if (this.stderr.length < 8192) this.stderr += d;
    });
    this.proc.on('message', (m: ChildMessage) => {
      if (m.type === 'report') this.last = m as unknown as Report;
      if (m.type === 'error') this.errors.push(String(m.message));
      for (const w of this.waiters)
        if (w.match(m)) {
          this.waiters.delete(w);
          w.resolve(m);
        }
    });
    this.exited = new Promise((resolve) =>
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      }),
    );
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  send(m: object): void {
    if (this.proc.connected) this.proc.send(m);
  }

  /** The next message `match` accepts; rejects after `timeoutMs` or when the process exits. */
  next(match: (m: ChildMessage) => boolean, timeoutMs: number, what: string): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      const fail = (why: string) => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        const detail = [...this.errors, this.stderr.trim()].filter((s) => s !== '').join('; ');
        reject(new Error(`consumer #${this.index} (pid ${this.pid}): ${why} ${what}${detail ? `: ${detail}` : ''}`));
      };
      const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms to`), timeoutMs);
      const waiter = {
        match,
        resolve: (m: ChildMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.add(waiter);
      void this.exited.then(() => {
        if (this.waiters.has(waiter)) fail(`exited (code ${this.exit?.code}, signal ${this.exit?.signal}) before`);
      });
    });
  }

  async report(): Promise<Report> {
    const r = this.next((m) => m.type === 'report', DRAIN_TIMEOUT_MS, 'a report request');
    this.send({ type: 'report' });
    return (await r) as unknown as Report;
  }

  /** Asks it to stop; SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    if (this.exit !== null) return;
    this.send({ type: 'stop' });
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  killNow(): void {
    if (this.exit === null) this.proc.kill('SIGKILL');
  }
}

// ------------------------------------------------------------------------------- publishing

/** Where a pump publishes: the shmbus sender or the unix sockets. */
interface Target {
  begin(): void;
  publish(u: DemoUpdate): number;
  commit(): void;
  /** Bytes waiting for the slowest consumer. */
  backlog(): number;
}

function shmbusTarget(sender: SolanaSender): Target {
  return {
    begin() {},
    publish(u) {
      if (u.type === 'account') return sender.publishAccount(u.input);
      if (u.type === 'transaction') return sender.publishTransaction(u.input);
      return sender.publishSlot(u.input);
    },
    commit() {},
    backlog() {
      let fill = 0;
      for (const c of sender.sender.consumers()) if (c.ringFill > fill) fill = c.ringFill;
      return fill * RING_CAPACITY;
    },
  };
}

function udsTarget(s: UdsSender): Target {
  return {
    begin: () => s.begin(),
    publish: (u) => s.publish(u),
    commit: () => s.commit(),
    backlog: () => s.backlog(),
  };
}

type Pace = number | 'max' | 'bursts';

interface PumpResult {
  published: number;
  reached: number;
  ms: number;
  /** Updates a fixed rate owed but skipped because the sender fell behind by more than a tick's cap. */
  skipped: number;
}

/**
 * Publishes from `workload` for `ms`: at `pace` updates/s (in ~1 ms ticks), as fast as flow
 * control allows ('max', batches of BATCH), or in bursts of BURST every ~1 ms ('bursts').
 * Flow control, in every pace: while some consumer is more than HIGH_WATER behind, it waits
 * until all are under LOW_WATER (a fixed rate skips what it owed meanwhile: the live view shows
 * the rate actually published). shmbus itself never waits: it evicts a consumer whose ring is
 * full, which a demo on a busy machine would otherwise show instead of the stream.
 */
async function pump(target: Target, workload: Workload, ms: number, pace: Pace, aborted: () => boolean) {
  const r: PumpResult = { published: 0, reached: 0, ms: 0, skipped: 0 };
  const t0 = performance.now();
  const cap = typeof pace === 'number' ? Math.max(BATCH, Math.ceil(pace / 50)) : 0;
  for (;;) {
    const elapsed = performance.now() - t0;
    if (elapsed >= ms || aborted()) break;
    if (target.backlog() > HIGH_WATER) {
      while (target.backlog() > LOW_WATER && performance.now() - t0 < ms && !aborted()) await sleep(1);
      continue;
    }
    let n: number;
    if (pace === 'max') n = BATCH;
    else if (pace === 'bursts') n = BURST;
    else {
      n = Math.floor((elapsed * pace) / 1000) - r.published - r.skipped;
      if (n > cap) {
        r.skipped += n - cap;
        n = cap;
      }
    }
    if (n > 0) {
      target.begin();
      for (let i = 0; i < n; i++) r.reached += target.publish(workload.next());
      target.commit();
      r.published += n;
    }
    if (pace === 'max') await new Promise(setImmediate);
    else await sleep(1);
  }
  r.ms = performance.now() - t0;
  return r;
}

// ------------------------------------------------------------------------------- the demo

/** One consumer's figures in the demo's --json summary. */
export interface ConsumerSummary {
  index: number;
  pid: number;
  filter: { label: string; pubkeys: number; owners: string[]; transactions: boolean };
  received: number;
  accounts: number;
  transactions: number;
  slots: number;
  perSecond: number;
  p50Ns: number;
  p99Ns: number;
  /** What the sender sent this consumer (its own count: copies into the ring / socket writes). */
  sent: number;
  /** Dropped from the consumer's full queue (oldest first): taken off the transport, never handled. */
  dropped: number;
  /** sent - received - dropped: must be 0. */
  missing: number;
  violations: number;
  evicted: string | null;
  /** Wall clock (ms since the epoch) of the last update taken. */
  lastAtMs: number;
  /** Raw latencies (ns), in the latency runs of the comparison. */
  samples?: number[];
}

interface Baseline {
  sent: number[];
  dropped: number[];
}

function droppedOf(r: Report, transport: Transport): number {
  return transport === 'shmbus' ? r.library.dropped : r.udsQueues.dropped;
}

interface TransportFigures {
  delivered: number;
  deliveredPerSecond: number;
  throughputSeconds: number;
  latencyDeliveries: number;
  p50Ns: number;
  p99Ns: number;
  /** Dropped by the consumers' full queues (oldest first), both runs. */
  dropped: number;
  missing: number;
  violations: number;
}

interface Summary {
  ok: boolean;
  machine: ReturnType<typeof machine>;
  seconds: number;
  rate: number | 'max';
  workload: { accounts: number; transactionEvery: number; slotEvery: number };
  sender: {
    published: number;
    dispatched: number;
    publishedPerSecond: number;
    dispatchedPerSecond: number;
    evictions: number;
    skipped: number;
  };
  consumers: ConsumerSummary[];
  sideBySide: {
    consumers: number;
    filtering: string;
    throughput: string;
    latency: string;
    shmbus: TransportFigures;
    unixSockets: TransportFigures;
    ratio: { throughput: number; p50: number; p99: number };
  } | null;
  problems: string[];
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

class Demo {
  private readonly peers: Peer[] = [];
  private sender: SolanaSender | null = null;
  private uds: UdsSender | null = null;
  private readonly dir: string;
  private abortedBy: NodeJS.Signals | null = null;
  private readonly problems: string[] = [];
  private readonly out = process.stdout;
  private readonly filters: DemoFilter[];
  private readonly pool = accountPool();
  private cleaned = false;

  constructor(private readonly o: DemoOptions) {
    this.dir = mkdtempSync(join(tmpdir(), 'shmbus-demo-'));
    this.filters = demoFilters(o.consumers, new Workload(this.pool));
  }

  private aborted = () => this.abortedBy !== null;

  private check(): void {
    if (this.abortedBy !== null) throw new DemoAborted(this.abortedBy);
  }

  abort(signal: NodeJS.Signals): void {
    this.abortedBy = signal;
  }

  private say(text = ''): void {
    if (!this.o.json) this.out.write(`${text}\n`);
  }

  async run(): Promise<Summary> {
    const o = this.o;
    const m = machine();
    this.say(
      `shmbus demo: synthetic Solana updates -> ${o.consumers} consumer processes, ${o.seconds} s at ` +
        `${o.rate === 'max' ? 'max rate (flow-controlled)' : `${int(o.rate)} updates/s`}`,
    );
    this.say(
      `(${m.cpus} x ${m.cpu}, load ${m.load.join(' ')}, node ${m.node}, ${m.date}; ${WARMUP_MS / 1000} s warm-up first)`,
    );
    this.say();
    const socketPath = join(this.dir, 'solana.sock');
    this.sender = await setupSender({ path: socketPath, capacity: RING_CAPACITY, maxConsumers: o.consumers });
    for (const [i, f] of this.filters.entries()) this.peers.push(new Peer(i, f));
    await Promise.all(
      this.peers.map((p) => {
        const ready = p.next((x) => x.type === 'ready', START_TIMEOUT_MS, 'start (connect and subscribe)');
        p.send({ type: 'start', index: p.index, socketPath, filter: p.filter } satisfies StartMessage);
        return ready;
      }),
    );
    this.check();
    const sender = this.sender;
    if (sender.sender.consumerCount !== o.consumers)
      throw new Error(`${sender.sender.consumerCount} of ${o.consumers} consumers are connected`);

    // Warm-up (JIT, page faults in fresh rings): not counted.
    const warm = await pump(shmbusTarget(sender), new Workload(this.pool), WARMUP_MS, o.rate, this.aborted);
    this.check();
    await this.settle('shmbus', 'warm-up', warm.ms, {
      sent: this.peers.map(() => 0),
      dropped: this.peers.map(() => 0),
    });
    this.check();

    // Live phase.
    await this.phase('live', false);
    const start = await this.baseline('shmbus');
    const before = sender.senderMetrics();
    const live = await this.live(sender);
    this.check();
    const consumers = await this.settle('shmbus', 'live', live.ms, start);
    const after = sender.senderMetrics();
    const evictions = Object.values(after.evictions).reduce((a, b) => a + b, 0);
    const senderSummary = {
      published: after.published - before.published,
      dispatched: after.dispatched - before.dispatched,
      publishedPerSecond: ((after.published - before.published) * 1000) / live.ms,
      dispatchedPerSecond: ((after.dispatched - before.dispatched) * 1000) / live.ms,
      evictions,
      skipped: live.skipped,
    };
    this.printLiveSummary(senderSummary, consumers, live.ms);

    // Side by side.
    this.check();
    const sideBySide = o.compare ? await this.compare(sender) : null;

    const ok = this.problems.length === 0;
    return {
      ok,
      machine: m,
      seconds: o.seconds,
      rate: o.rate,
      workload: { accounts: this.pool.length, transactionEvery: TRANSACTION_EVERY, slotEvery: SLOT_EVERY },
      sender: senderSummary,
      consumers,
      sideBySide,
      problems: this.problems,
    };
  }

  // ----------------------------------------------------------------------------- live view

  private async live(sender: SolanaSender): Promise<PumpResult> {
    const o = this.o;
    const redraw = o.live && !o.json && process.stdout.isTTY === true;
    const first = sender.senderMetrics();
    let lastMetrics = first;
    let lastAt = performance.now();
    let senderRates = { published: 0, dispatched: 0 };
    let drawn = 0;
    let printedSecond = 0;
    const t0 = performance.now();
    const tick = (final = false) => {
      const now = performance.now();
      const m = sender.senderMetrics();
      const dt = (now - lastAt) / 1000;
      if (dt > 0)
        senderRates = {
          published: (m.published - lastMetrics.published) / dt,
          dispatched: (m.dispatched - lastMetrics.dispatched) / dt,
        };
      lastMetrics = m;
      lastAt = now;
      const elapsed = (now - t0) / 1000;
      const evictions = Object.values(m.evictions).reduce((a, b) => a + b, 0);
      if (o.json) return;
      if (redraw) {
        const lines = this.liveLines(elapsed, senderRates, m.published - first.published, evictions);
        this.out.write(`${drawn > 0 ? `\x1b[${drawn}A` : ''}${lines.map((l) => `\x1b[2K${l}\n`).join('')}`);
        drawn = lines.length;
      } else if (final || Math.floor(elapsed) > printedSecond) {
        printedSecond = Math.floor(elapsed);
        this.out.write(`${this.liveLine(elapsed, senderRates, evictions)}\n`);
      }
    };
    const timer = setInterval(() => tick(), REFRESH_MS);
    try {
      return await pump(shmbusTarget(sender), new Workload(this.pool), o.seconds * 1000, o.rate, this.aborted);
    } finally {
      clearInterval(timer);
      // The last view: what the final reports say.
      tick(true);
    }
  }

  private liveLines(
    elapsed: number,
    rates: { published: number; dispatched: number },
    published: number,
    evictions: number,
  ): string[] {
    const rows = [['#', 'FILTER', 'MSG/S', 'TOTAL', 'P50', 'P99', 'DROPS', 'VIOLATIONS', 'STATE']];
    for (const p of this.peers) {
      const r = p.last;
      rows.push([
        String(p.index),
        p.filter.label,
        r ? int((r.window.received * 1000) / Math.max(1, r.window.ms)) : '-',
        r ? int(r.shmbus.received) : '-',
        r ? ns(r.window.p50) : '-',
        r ? ns(r.window.p99) : '-',
        r ? int(r.library.dropped) : '-',
        r ? int(r.totalViolations) : '-',
        r ? (r.evicted !== null ? `evicted (${r.evicted})` : r.library.state) : 'starting',
      ]);
    }
    return [
      `t = ${elapsed.toFixed(1)} s of ${this.o.seconds} s   sender pid ${process.pid}: ${int(rates.published)} updates/s published, ` +
        `${int(rates.dispatched)} deliveries/s, ${int(published)} published, ${evictions} evictions`,
      '',
      ...table(rows, new Set([2, 3, 4, 5, 6, 7])).map((l) => `  ${l}`),
      '  (MSG/S, P50, P99: the last 250 ms; latency: sender stamp -> the consumer handler)',
    ];
  }

  private liveLine(elapsed: number, rates: { published: number; dispatched: number }, evictions: number): string {
    const parts = this.peers.map((p) => {
      const r = p.last;
      if (r === null) return `#${p.index} starting`;
      const rate = (r.window.received * 1000) / Math.max(1, r.window.ms);
      return `#${p.index} ${int(rate)}/s p50 ${ns(r.window.p50)} p99 ${ns(r.window.p99)}${r.evicted !== null ? ' EVICTED' : ''}`;
    });
    return (
      `${elapsed.toFixed(1).padStart(5)} s  sender ${int(rates.published)} upd/s -> ${int(rates.dispatched)} deliveries/s` +
      `${evictions > 0 ? ` (${evictions} evictions)` : ''} | ${parts.join(' | ')}`
    );
  }

  private printLiveSummary(sender: Summary['sender'], consumers: ConsumerSummary[], ms: number): void {
    if (this.o.json) return;
    this.say();
    this.say(
      `live: ${(ms / 1000).toFixed(1)} s, ${int(sender.published)} updates published (${int(sender.publishedPerSecond)}/s), ` +
        `${int(sender.dispatched)} deliveries (${int(sender.dispatchedPerSecond)}/s), ${sender.evictions} evictions`,
    );
    const rows = [['#', 'FILTER', 'RECEIVED', 'MSG/S', 'P50', 'P99', 'DROPS', 'MISSING', 'VIOLATIONS']];
    for (const c of consumers)
      rows.push([
        String(c.index),
        c.filter.label,
        int(c.received),
        int(c.perSecond),
        ns(c.p50Ns),
        ns(c.p99Ns),
        int(c.dropped),
        int(c.missing),
        int(c.violations),
      ]);
    for (const l of table(rows, new Set([2, 3, 4, 5, 6, 7, 8]))) this.say(`  ${l}`);
    this.say(
      '  (each consumer checks every update against its own filter; MISSING: delivered by the sender, never seen)',
    );
  }

  // ----------------------------------------------------------------------------- settling

  /**
   * What each consumer has been sent over `transport`, by its sender's own count: shmbus,
   * copies into its ring; unix sockets, records written to its socket.
   */
  private sent(transport: Transport): number[] {
    if (transport === 'uds') return [...(this.uds as UdsSender).written];
    const byPid = new Map((this.sender as SolanaSender).sender.consumers().map((c) => [c.pid, c.delivered]));
    return this.peers.map((p) => byPid.get(p.pid) ?? 0);
  }

  /** Where a phase starts: per consumer, sent so far and dropped so far. */
  private async baseline(transport: Transport): Promise<Baseline> {
    const reports = await Promise.all(this.peers.map((p) => p.report()));
    return { sent: this.sent(transport), dropped: reports.map((r) => droppedOf(r, transport)) };
  }

  /**
   * Waits (up to DRAIN_TIMEOUT_MS) until every consumer has taken or dropped what it was sent
   * since `start` and its queues are empty, then returns its figures for the phase; records a
   * problem for anything missing and for every filter violation.
   */
  private async settle(transport: Transport, phase: string, ms: number, start: Baseline): Promise<ConsumerSummary[]> {
    const deadline = performance.now() + DRAIN_TIMEOUT_MS;
    let reports: Report[];
    let sent: number[];
    const outstanding = (r: Report, i: number) =>
      sent[i] - start.sent[i] - r[transport].received - (droppedOf(r, transport) - start.dropped[i]);
    for (;;) {
      reports = await Promise.all(this.peers.map((p) => p.report()));
      sent = this.sent(transport);
      const done = reports.every(
        (r, i) =>
          (transport === 'shmbus' && r.evicted !== null) ||
          (outstanding(r, i) === 0 && (transport === 'shmbus' ? r.library.pending : r.udsQueues.pending) === 0),
      );
      if (done || performance.now() > deadline || this.aborted()) break;
      await sleep(20);
    }
    const what = transport === 'shmbus' ? '' : 'unix-socket ';
    return reports.map((r, i) => {
      const p = this.peers[i];
      const c = r[transport];
      const missing = transport === 'shmbus' && r.evicted !== null ? 0 : outstanding(r, i);
      if (missing !== 0)
        this.problems.push(
          `${phase}: ${what}consumer #${i} is missing ${missing} of the ${sent[i] - start.sent[i]} updates it was sent`,
        );
      if (c.violations !== 0)
        this.problems.push(
          `${phase}: ${what}consumer #${i} received ${c.violations} updates its filter does not allow`,
        );
      return {
        index: p.index,
        pid: p.pid,
        filter: {
          label: p.filter.label,
          pubkeys: p.filter.pubkeys.length,
          owners: p.filter.owners.map((k) => PROGRAM_NAMES[k] ?? k),
          transactions: p.filter.transactions,
        },
        received: c.received,
        accounts: c.accounts,
        transactions: c.transactions,
        slots: c.slots,
        perSecond: (c.received * 1000) / ms,
        p50Ns: c.p50,
        p99Ns: c.p99,
        ...(c.samples !== undefined ? { samples: c.samples } : {}),
        lastAtMs: c.lastAtMs,
        sent: sent[i] - start.sent[i],
        dropped: droppedOf(r, transport) - start.dropped[i],
        missing,
        violations: c.violations,
        evicted: transport === 'shmbus' ? r.evicted : null,
      };
    });
  }

  private async phase(name: string, samples: boolean): Promise<void> {
    await Promise.all(
      this.peers.map((p) => {
        const ack = p.next((m) => m.type === 'phase' && m.name === name, DRAIN_TIMEOUT_MS, `phase ${name}`);
        p.send({ type: 'phase', name, samples });
        return ack;
      }),
    );
  }

  // ----------------------------------------------------------------------------- comparison

  private async compare(sender: SolanaSender): Promise<Summary['sideBySide']> {
    const o = this.o;
    const udsPath = join(this.dir, 'uds.sock');
    this.uds = await UdsSender.listen(udsPath, this.filters.map(filterSets));
    const uds = this.uds;
    await Promise.all(
      this.peers.map((p) => {
        const ready = p.next((m) => m.type === 'uds-ready', START_TIMEOUT_MS, 'connecting to the unix socket');
        p.send({ type: 'uds', path: udsPath });
        return ready;
      }),
    );
    await uds.connected(START_TIMEOUT_MS);
    this.check();
    if (!o.json) {
      this.say();
      this.say(
        `side by side: the same update sequence to the same ${o.consumers} consumer processes, ` +
          'shmbus vs one unix socket per consumer',
      );
      this.say(
        '  (both filter at the sender and stop publishing while a consumer is > 2 MiB behind; unix sockets: ' +
          'length-prefixed frames, corked per batch of 64)',
      );
    }
    // Each transport runs twice per measure, in the order A B B A, so that a machine getting
    // busier or quieter during the comparison does not favour the one that ran first.
    const runs = { shmbus: [] as ConsumerSummary[][], uds: [] as ConsumerSummary[][] };
    const seconds = { shmbus: 0, uds: 0 };
    const latency = { shmbus: [] as ConsumerSummary[][], uds: [] as ConsumerSummary[][] };
    const run = async (transport: Transport, phase: string, ms: number, pace: Pace, samples: boolean) => {
      const target = transport === 'shmbus' ? shmbusTarget(sender) : udsTarget(uds);
      await this.phase(phase, samples);
      const start = await this.baseline(transport);
      const t0 = performance.timeOrigin + performance.now();
      const pumped = await pump(target, new Workload(this.pool), ms, pace, this.aborted);
      this.check();
      const consumers = await this.settle(transport, phase, pumped.ms, start);
      return { consumers, seconds: (Math.max(t0, ...consumers.map((c) => c.lastAtMs)) - t0) / 1000 };
    };
    for (const transport of COMPARE_ORDER) {
      const r = await run(transport, `${transport}-throughput`, COMPARE_THROUGHPUT_MS / 2, 'max', false);
      runs[transport].push(r.consumers);
      seconds[transport] += r.seconds;
    }
    for (const transport of COMPARE_ORDER) {
      const r = await run(transport, `${transport}-latency`, COMPARE_LATENCY_MS / 2, 'bursts', true);
      latency[transport].push(r.consumers);
    }
    const figures = {} as Record<Transport, TransportFigures>;
    for (const transport of ['shmbus', 'uds'] as const) {
      const tput = runs[transport].flat();
      const lat = latency[transport].flat();
      const both = [...tput, ...lat];
      const received = tput.reduce((a, c) => a + c.received, 0);
      const samples = lat.flatMap((c) => c.samples ?? []).sort((a, b) => a - b);
      figures[transport] = {
        delivered: received,
        deliveredPerSecond: seconds[transport] > 0 ? received / seconds[transport] : 0,
        throughputSeconds: seconds[transport],
        latencyDeliveries: samples.length,
        p50Ns: percentile(samples, 0.5),
        p99Ns: percentile(samples, 0.99),
        dropped: both.reduce((a, c) => a + c.dropped, 0),
        missing: both.reduce((a, c) => a + c.missing, 0),
        violations: both.reduce((a, c) => a + c.violations, 0),
      };
    }
    const s = figures.shmbus;
    const u = figures.uds;
    const ratio = {
      throughput: u.deliveredPerSecond > 0 ? s.deliveredPerSecond / u.deliveredPerSecond : 0,
      p50: u.p50Ns > 0 ? s.p50Ns / u.p50Ns : 0,
      p99: u.p99Ns > 0 ? s.p99Ns / u.p99Ns : 0,
    };
    if (!o.json) {
      const rows = [
        ['', 'shmbus', 'unix sockets', 'shmbus / unix'],
        [
          'delivered, max rate',
          `${int(s.deliveredPerSecond)} msg/s`,
          `${int(u.deliveredPerSecond)} msg/s`,
          `${ratio.throughput.toFixed(2)}x`,
        ],
        ['latency p50, paced', ns(s.p50Ns), ns(u.p50Ns), `${ratio.p50.toFixed(2)}x`],
        ['latency p99, paced', ns(s.p99Ns), ns(u.p99Ns), `${ratio.p99.toFixed(2)}x`],
        ['dropped by the consumer queues', int(s.dropped), int(u.dropped), ''],
      ];
      for (const l of table(rows, new Set([1, 2, 3]))) this.say(`  ${l}`);
      this.say(
        `  max rate: deliveries summed over the consumers, ${COMPARE_THROUGHPUT_MS / 1000} s per transport in two runs ` +
          `(order: ${COMPARE_ORDER.map((t) => (t === 'uds' ? 'unix' : t)).join(', ')})`,
      );
      this.say(
        `  paced: bursts of ${BURST} updates every ~1 ms, ${COMPARE_LATENCY_MS / 1000} s per transport ` +
          `(${int(s.latencyDeliveries)} and ${int(u.latencyDeliveries)} deliveries timed)`,
      );
      this.say('  above 1x favours shmbus for throughput, below 1x for latency');
      this.say(
        '  dropped: taken off the transport but pushed out of a full consumer queue (2048, oldest first) before ' +
          'the handler got to it; not counted as delivered',
      );
      this.say(
        '  A few seconds on whatever else this machine is doing: expect noise. With parked consumers both sides are ' +
          'bound by waking them;',
      );
      this.say('  `npx shmbus bench` measures it with warm-up and repeats (BENCHMARKS.md).');
    }
    return {
      consumers: o.consumers,
      filtering: 'sender-side on both (shmbus: its subscription filters; unix sockets: the same rule over Sets)',
      throughput:
        `as fast as flow control allows (pause above ${HIGH_WATER} B backlog), ${COMPARE_THROUGHPUT_MS} ms per ` +
        `transport in two runs, order ${COMPARE_ORDER.join(', ')}`,
      latency:
        `bursts of ${BURST} updates every ~1 ms, ${COMPARE_LATENCY_MS} ms per transport in two runs; ` +
        'sender stamp -> consumer handler',
      shmbus: s,
      unixSockets: u,
      ratio,
    };
  }

  // ----------------------------------------------------------------------------- cleanup

  /** Stops the consumers, closes both senders, removes the socket directory. Idempotent. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    await Promise.all(this.peers.map((p) => p.stop(2000)));
    try {
      await this.uds?.close();
    } catch {}
    try {
      await this.sender?.close();
    } catch {}
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The last resort on process exit: synchronous, kills what is left. */
  cleanupSync(): void {
    for (const p of this.peers) p.killNow();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function whatNext(): string {
  const rows = [
    ['README "Fan-out streaming"', 'the Sender / Consumer API under this demo: filters, eviction, reconnection'],
    ['README "Solana stream (shmbus/solana)"', 'setupSender / setupShmConsumer as used here; examples/solana-*.mjs'],
    ['README "Benchmarks"', 'npx shmbus bench: every comparison, measured with warm-up and repeats (BENCHMARKS.md)'],
    ['README "Seeing what is in shared memory"', 'npx shmbus top (or ls, inspect) in another terminal while this runs'],
  ];
  return ['what next:', ...table(rows, new Set()).map((l) => `  ${l}`)].join('\n');
}

/** Runs `shmbus demo`; resolves with the exit code. */
export async function demo(args: string[]): Promise<number> {
  const o = parse(args);
  if (typeof o === 'string') {
    process.stderr.write(`shmbus demo: ${o}\n\nusage: shmbus ${DEMO_USAGE.trim()}\n`);
    return 2;
  }
  const d = new Demo(o);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    // The first signal ends the demo cleanly; a second one leaves at once.
    if (++signals > 1) {
      d.cleanupSync();
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    d.abort(signal);
  };
  const onExit = () => d.cleanupSync();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  try {
    const summary = await d.run();
    await d.cleanup();
    if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else {
      process.stdout.write('\n');
      if (!summary.ok) for (const p of summary.problems) process.stdout.write(`PROBLEM: ${p}\n`);
      process.stdout.write(`${whatNext()}\n`);
    }
    return summary.ok ? 0 : 1;
  } catch (err) {
    await d.cleanup();
    if (err instanceof DemoAborted) {
      process.stderr.write(`\nshmbus demo: stopped by ${err.message}; consumers stopped, shared memory removed\n`);
      return err.message === 'SIGINT' ? 130 : 143;
    }
    process.stderr.write(`shmbus demo: ${(err as Error).stack ?? err}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
  }
}
