/**
 * Fuzz target `control-socket`: a live fan-out Sender (src/fanout/sender.ts) in its own
 * process (sender-host.ts) and raw unix-socket clients that speak broken control protocol to
 * it, then disconnect.
 *
 * Each case is one client connection, run 48 at a time (a batch):
 * - garbage (20 %): random or mutated control frames (control-codec.ts streamFor) before any HELLO;
 * - hello-then (35 %): a valid HELLO (10 %: mutated), then one to four frames of any tag, mutated
 *   60 % of the time (SUBSCRIBE / UNSUBSCRIBE / PING / BYE / others), in random chunks;
 * - huge-claim (10 %): a length prefix of maxFrame + 1, 0x7fffffff, 0xffffffff, 1 MiB or exactly
 *   maxFrame (16 MiB, legal), followed by up to 64 KiB (5 %: up to 2 MiB; 1 in 10,000: all
 *   16 MiB) of the body, with or without a HELLO first;
 * - fds (20 %): through the addon (unixConnect + sendFds), HELLO or garbage frames carrying 0, 1
 *   or 3 descriptors (/dev/null, an eventfd, a regular file), sometimes a second message with
 *   more, sometimes reading the answer (recvFds, closing what arrives);
 * - slowloris (7 %): a few bytes of a HELLO, or nothing, then gone;
 * - heavy (8 %): HELLO and a valid SUBSCRIBE of 1,000..12,000 keys (the host allows 10,000:
 *   over it the sender evicts), UNSUBSCRIBE, BYE.
 * Half of the clients wait up to 30 ms for the sender's answer before closing.
 *
 * After every batch: the sender process must be alive (else a `crash` finding with the
 * batch's inputs), the protocol errors it emitted must all be ShmErrors (else a `throw`
 * finding), every ring and connection of the gone clients must be released within 3 s (live
 * consumers 0, no ring files left, open fds back within 32 of the sender's before any client:
 * else `leak`), its memory after a full GC must stay within 64 MiB (arrayBuffers) / 256 MiB
 * (rss) of that (else `memory`), and its event loop must never have been blocked for 2 s (else
 * `hang`: every consumer stalls meanwhile). After every batch a well-behaved Consumer.connect()
 * must get a ring and receive a message the sender publishes (else `unavailable`). Memory is
 * measured every 4th batch and after the last.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { openSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Consumer } from '../../src/fanout/consumer.js';
import { ControlWriter, encodeFilterRequest } from '../../src/fanout/control.js';
import { CONTROL_VERSION, MAX_CONTROL_FRAME, Tag } from '../../src/layout/fanout.js';
import { native } from '../../src/native/binding.js';
import { streamFor, validFrame } from './control-codec.js';
import { CaseContext, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import { caseRng, concat, mutate, type Rng } from './mutate.js';
import { fuzzDir } from './segment-common.js';

export const NAME = 'control-socket';
export const DEFAULT_CASES = 200;

const BATCH = 48;
/** Memory (after a full GC in the sender) is measured every this many batches; the health check runs after every batch. */
const MEMORY_EVERY = 4;
const ARRAY_BUFFERS_SLACK = 64 << 20;
const RSS_SLACK = 256 << 20;
const FD_SLACK = 32;
/** The sender's event loop blocked longer than this (every consumer stalls meanwhile) is a hang finding. */
const LOOP_STALL_MS = 2000;

interface HostStats {
  rss: number;
  arrayBuffers: number;
  heapUsed: number;
  external: number;
  fds: number;
  consumers: number;
  ringFiles: number;
  handshakes: number;
  refused: number;
  protocolErrors: number;
  untyped: string[];
}

interface Count {
  maxDelayMs: number;
  fds: number;
  consumers: number;
  ringFiles: number;
  untyped: number;
}

/** The sender process and a request/response channel to it. */
class Host {
  private nextId = 1;
  private readonly pending = new Map<number, (m: Record<string, unknown>) => void>();
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  crash: string | null = null;
  closing = false;

  private constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: Record<string, unknown>) => {
      if (m.type === 'crash') this.crash = String(m.error);
      const resolve = this.pending.get(m.id as number);
      if (resolve !== undefined) {
        this.pending.delete(m.id as number);
        resolve(m);
      }
    });
    proc.on('exit', (code, signal) => {
      this.exit = { code, signal };
      for (const resolve of this.pending.values()) resolve({ error: 'exited' });
      this.pending.clear();
    });
  }

  static async start(path: string, dir: string): Promise<Host> {
    const proc = fork(new URL('./sender-host.js', import.meta.url), [path, dir], {
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const host = new Host(proc);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the sender host did not start within 10 s')), 10_000);
      proc.on('message', (m: { type?: string }) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.on('exit', (code, signal) => reject(new Error(`the sender host exited (${code ?? signal}) while starting`)));
    });
    return host;
  }

  get alive(): boolean {
    return this.exit === null;
  }

  request(op: string, extra: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    if (!this.alive) return Promise.resolve({ error: 'exited' });
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ error: `no answer to ${op} within ${timeoutMs} ms` });
      }, timeoutMs);
      this.pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.proc.send({ id, op, ...extra });
    });
  }

  async count(): Promise<Count | null> {
    const m = await this.request('count');
    return m.error === undefined ? (m as unknown as Count) : null;
  }

  async stats(): Promise<HostStats | null> {
    const m = await this.request('stats');
    return m.error === undefined ? (m as unknown as HostStats) : null;
  }

  async close(): Promise<void> {
    this.closing = true;
    if (!this.alive) return;
    await this.request('close', {}, 5000);
    if (this.alive) this.proc.kill('SIGKILL');
  }
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Cuts `bytes` into 1..4 writes. */
function chunked(rng: Rng, bytes: Uint8Array): Uint8Array[] {
  const cuts = [0, bytes.length];
  for (let n = rng.int(4); n > 0; n--) cuts.push(rng.int(bytes.length + 1));
  cuts.sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) if (cuts[i + 1] > cuts[i]) out.push(bytes.subarray(cuts[i], cuts[i + 1]));
  return out;
}

function hello(rng: Rng): Uint8Array {
  const h = validFrame(rng, Tag.HELLO);
  return rng.chance(0.1)
    ? mutate(rng, h, {
        fields: [
          { at: 0, width: 4 },
          { at: 4, width: 1 },
          { at: 5, width: 1 },
        ],
      })
    : h;
}

function laterFrame(rng: Rng): Uint8Array {
  const tag = rng.pick([
    Tag.SUBSCRIBE,
    Tag.SUBSCRIBE,
    Tag.UNSUBSCRIBE,
    Tag.PING,
    Tag.BYE,
    Tag.HELLO,
    Tag.READY,
    Tag.ACK,
    0,
    99,
  ]);
  const frame = validFrame(rng, tag);
  if (!rng.chance(0.6)) return frame;
  return mutate(rng, frame, {
    fields: [
      { at: 0, width: 4 },
      { at: 4, width: 1 },
      { at: 5, width: 1 },
      { at: 10, width: 2 },
      { at: 12, width: 4 },
    ],
    limits: [MAX_CONTROL_FRAME, 1024, 0xffff],
  });
}

/** A prefix claiming `declared` bytes, the version and tag, and `body` bytes of it. */
function claim(rng: Rng, declared: number, body: number): Uint8Array {
  const out = new Uint8Array(4 + Math.max(2, body));
  new DataView(out.buffer).setUint32(0, declared >>> 0, true);
  out[4] = CONTROL_VERSION;
  out[5] = rng.pick([Tag.HELLO, Tag.SUBSCRIBE, Tag.PING, 77]);
  if (body > 2) out.set(rng.bytes(Math.min(body - 2, 4096)), 6);
  return out;
}

interface Plan {
  mode: string;
  writes: Uint8Array[];
  /** For the fds mode: descriptors sent with each write. */
  fds?: number[][];
  waitMs: number;
  readReply: boolean;
}

let fdPool: number[] | null = null;
/** Descriptors to pass: /dev/null, an eventfd, a regular file (opened once; the sender must not keep them). */
function pool(): number[] {
  if (fdPool === null) {
    const n = native();
    fdPool = [openSync('/dev/null', 'r'), n.eventfdCreate(0, false), openSync(join(fuzzDir(), 'passed-file'), 'w+')];
  }
  return fdPool;
}

function planOf(rng: Rng): Plan {
  const waitMs = rng.chance(0.5) ? 0 : rng.range(1, 30);
  const r = rng.float();
  if (r < 0.2) {
    return { mode: 'garbage', writes: chunked(rng, streamFor(rng, MAX_CONTROL_FRAME)), waitMs, readReply: false };
  }
  if (r < 0.55) {
    const frames = [hello(rng)];
    for (let n = rng.range(1, 4); n > 0; n--) frames.push(laterFrame(rng));
    return { mode: 'hello-then', writes: chunked(rng, concat(...frames)), waitMs, readReply: false };
  }
  if (r < 0.65) {
    const declared = rng.pick([MAX_CONTROL_FRAME + 1, 0x7fffffff, 0xffffffff, 1 << 20, MAX_CONTROL_FRAME]);
    // Rarely (1 in 2,000 of these) the whole legal 16 MiB frame: the splitter must not take seconds over it.
    const full = declared === MAX_CONTROL_FRAME && rng.chance(0.0005);
    const body = full
      ? MAX_CONTROL_FRAME
      : rng.chance(0.05) && declared <= MAX_CONTROL_FRAME
        ? rng.range(256 << 10, 2 << 20)
        : rng.int(64 << 10);
    const big = claim(rng, declared, body);
    const writes = rng.chance(0.5) ? [hello(rng), ...chunked(rng, big)] : chunked(rng, big);
    return { mode: `huge-claim(${declared})`, writes, waitMs, readReply: false };
  }
  if (r < 0.85) {
    const fds = pool();
    const pickFds = () => {
      const count = rng.pick([0, 1, 3]);
      const out: number[] = [];
      for (let k = 0; k < count; k++) out.push(rng.pick(fds));
      return out;
    };
    const first = rng.chance(0.6) ? hello(rng) : streamFor(rng, MAX_CONTROL_FRAME);
    const writes = [first.length > 0 ? first : Uint8Array.of(0)];
    const sent = [pickFds()];
    if (rng.chance(0.4)) {
      writes.push(rng.chance(0.5) ? laterFrame(rng) : rng.bytes(rng.range(1, 64)));
      sent.push(pickFds());
    }
    return { mode: 'fds', writes, fds: sent, waitMs, readReply: rng.chance(0.5) };
  }
  if (r < 0.92) {
    const h = hello(rng);
    return { mode: 'slowloris', writes: [h.subarray(0, rng.int(6))], waitMs, readReply: false };
  }
  const keys: Uint8Array[] = [];
  for (let n = rng.range(1000, 12_000); n > 0; n--) keys.push(rng.bytes(rng.range(4, 32)));
  const frames = [
    hello(rng),
    encodeFilterRequest(Tag.SUBSCRIBE, 1, { kinds: [9], keys, groups: [] }),
    encodeFilterRequest(Tag.UNSUBSCRIBE, 2, { kinds: [], keys: keys.slice(0, 100), groups: [] }),
    new ControlWriter(Tag.BYE).finish(),
  ];
  return { mode: 'heavy', writes: chunked(rng, concat(...frames)), waitMs: rng.range(5, 30), readReply: false };
}

/** A client through node:net. Its own errors (EPIPE, ECONNRESET) are not findings: the sender may close first. */
async function netClient(path: string, plan: Plan, rng: Rng): Promise<void> {
  const socket = net.createConnection(path);
  socket.on('error', () => {});
  socket.on('data', () => {});
  const connected = await new Promise<boolean>((resolve) => {
    socket.once('connect', () => resolve(true));
    socket.once('error', () => resolve(false));
  });
  if (connected) {
    for (const w of plan.writes) {
      if (socket.destroyed) break;
      socket.write(w);
      if (rng.chance(0.3)) await new Promise(setImmediate);
    }
    if (plan.waitMs > 0)
      await Promise.race([new Promise((resolve) => socket.once('close', resolve)), delay(plan.waitMs)]);
  }
  socket.destroy();
}

/** A client through the addon: data with SCM_RIGHTS descriptors. */
async function fdClient(path: string, plan: Plan): Promise<void> {
  const n = native();
  let fd: number;
  try {
    fd = n.unixConnect(path);
  } catch {
    return;
  }
  try {
    for (let i = 0; i < plan.writes.length; i++) {
      try {
        n.sendFds(fd, plan.writes[i], plan.fds?.[i] ?? []);
      } catch {
        // EAGAIN / EPIPE: the sender is busy or already gone.
      }
    }
    if (plan.readReply) {
      const buf = new Uint8Array(4096);
      const until = Date.now() + Math.max(plan.waitMs, 5);
      while (Date.now() < until) {
        let got: number;
        let fds: number[];
        try {
          [got, fds] = n.recvFds(fd, buf, 8);
        } catch {
          break;
        }
        for (const f of fds) n.closeFd(f);
        if (got === 0) break;
        if (got < 0) await delay(1);
      }
    } else if (plan.waitMs > 0) await delay(plan.waitMs);
  } finally {
    n.closeFd(fd);
  }
}

async function runClient(ctx: CaseContext, rng: Rng, path: string): Promise<void> {
  const plan = planOf(rng);
  const all = concat(...plan.writes);
  ctx.input = all;
  ctx.detail = `${plan.mode}, ${plan.writes.length} writes of ${plan.writes.map((w) => w.length).join('+')} bytes${
    plan.fds ? `, fds ${plan.fds.map((f) => f.length).join('+')}` : ''
  }, wait ${plan.waitMs} ms`;
  ctx.tally(plan.mode.startsWith('huge') ? 'huge-claim' : plan.mode);
  if (plan.mode === 'fds') await fdClient(path, plan);
  else await netClient(path, plan, rng);
}

/** A well-behaved consumer must still get a ring and a message. */
async function healthCheck(sut: Run, host: Host, path: string, round: number): Promise<void> {
  const ctx = new CaseContext(sut, round);
  const consumer = await ctx.attemptAsync('Consumer.connect', () =>
    Consumer.connect(path, { name: 'fuzz-health', connectTimeoutMs: 3000 }),
  );
  if (consumer === undefined) {
    sut.absorb(ctx);
    sut.finding('unavailable', 'Consumer.connect', `a well-behaved consumer could not connect after batch ${round}`);
    return;
  }
  try {
    const payload = Buffer.from(`health-${round}`);
    const next = consumer.next();
    const published = await host.request('publish', { kind: 9, payload: payload.toString('base64') });
    const m = await Promise.race([next, delay(3000).then(() => null)]);
    if ((published.delivered as number) < 1 || m === null || Buffer.compare(Buffer.from(m.payload), payload) !== 0)
      sut.finding(
        'unavailable',
        'health publish',
        `after batch ${round}: publish reached ${published.delivered} consumers (${published.error ?? 'no error'}), the consumer got ${m === null ? 'nothing in 3 s' : `${m.payload.length} other bytes`}`,
      );
    else ctx.tally('health-ok');
  } finally {
    await ctx.attemptAsync('Consumer.close', () => consumer.close());
    sut.absorb(ctx);
  }
}

/** Waits (up to 3 s) until the sender released every gone client's ring; null if the host died. */
async function settled(host: Host, baselineFds: number): Promise<Count | null> {
  let count: Count | null = null;
  let maxDelayMs = 0;
  for (const until = Date.now() + 3000; ; ) {
    count = await host.count();
    if (count === null) return null;
    maxDelayMs = Math.max(maxDelayMs, count.maxDelayMs);
    count.maxDelayMs = maxDelayMs;
    if ((count.consumers === 0 && count.ringFiles === 0 && count.fds <= baselineFds + FD_SLACK) || Date.now() > until)
      return count;
    await delay(5);
  }
}

export async function run(options: RunOptions): Promise<TargetResult> {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  const dir = fuzzDir();
  const path = join(dir, `sender-${process.pid}.sock`);
  options.watchdog?.idle();
  const host = await Host.start(path, dir);
  // Before any client: the sender's own fds and memory.
  const baseline = await host.stats();
  const peak = { rss: 0, arrayBuffers: 0, fds: 0, loopDelayMs: 0 };
  let round = 0;
  const indices = sut.indices();
  let done = false;
  while (!done && host.alive) {
    const contexts: CaseContext[] = [];
    for (let k = 0; k < BATCH; k++) {
      const next = indices.next();
      if (next.done) {
        done = true;
        break;
      }
      contexts.push(sut.begin(next.value));
    }
    if (contexts.length === 0) break;
    round++;
    const batch = contexts.map((ctx) => ctx.index);
    options.watchdog?.beat(batch[0], 'clients');
    await Promise.all(contexts.map((ctx) => runClient(ctx, caseRng(options.seed, ctx.index), path)));
    options.watchdog?.beat(batch[0], 'settle');
    const count = baseline === null ? null : await settled(host, baseline.fds);
    const inputs = () => contexts.map((c) => `case ${c.index}: ${c.detail}`).join('; ');
    // Memory after a full GC (and the untyped errors in full) every few batches, and whenever something looks wrong.
    const stats =
      count !== null && (round % MEMORY_EVERY === 0 || count.untyped > 0 || done) ? await host.stats() : null;
    if (!host.alive || count === null || baseline === null) {
      await delay(100);
      const why = host.crash ?? `exit ${JSON.stringify(host.exit)}`;
      contexts[0].fail('crash', 'sender process', `the sender process died in batch ${round}: ${why}`, 'crash');
      contexts[0].detail = inputs();
      for (const ctx of contexts) sut.end(ctx);
      break;
    }
    for (const text of stats?.untyped ?? [])
      contexts[0].fail(
        'throw',
        'sender protocolError',
        `the sender reported a non-ShmError: ${text}`,
        text.split('\n')[0],
      );
    if ((stats?.untyped.length ?? 0) > 0) contexts[0].detail = inputs();
    for (const ctx of contexts) sut.end(ctx);
    peak.fds = Math.max(peak.fds, count.fds);
    peak.loopDelayMs = Math.max(peak.loopDelayMs, count.maxDelayMs);
    if (count.maxDelayMs > LOOP_STALL_MS)
      sut.finding(
        'hang',
        'sender event loop',
        `the sender's event loop was blocked for ${count.maxDelayMs} ms during batch ${round}`,
        inputs(),
      );
    if (count.consumers !== 0 || count.ringFiles !== 0 || count.fds > baseline.fds + FD_SLACK)
      sut.finding(
        'leak',
        'sender cleanup',
        `3 s after batch ${round}'s clients left: ${count.consumers} consumers, ${count.ringFiles} ring files, ${count.fds} fds (baseline ${baseline.fds})`,
        inputs(),
      );
    if (stats !== null) {
      peak.rss = Math.max(peak.rss, stats.rss);
      peak.arrayBuffers = Math.max(peak.arrayBuffers, stats.arrayBuffers);
      if (stats.arrayBuffers > baseline.arrayBuffers + ARRAY_BUFFERS_SLACK || stats.rss > baseline.rss + RSS_SLACK)
        sut.finding(
          'memory',
          'sender memory',
          `after batch ${round}: arrayBuffers ${stats.arrayBuffers} (at start ${baseline.arrayBuffers}), rss ${stats.rss} (at start ${baseline.rss})`,
          inputs(),
        );
    }
    options.watchdog?.beat(batch[0], 'health check');
    await healthCheck(sut, host, path, round);
  }
  const final = await host.stats();
  await host.close();
  sut.notes.sender = {
    baseline: baseline && { rss: baseline.rss, arrayBuffers: baseline.arrayBuffers, fds: baseline.fds },
    peak,
    final: final && {
      rss: final.rss,
      arrayBuffers: final.arrayBuffers,
      fds: final.fds,
      protocolErrors: final.protocolErrors,
      refused: final.refused,
      consumersServed: final.handshakes,
    },
  };
  options.watchdog?.idle();
  return resultOf(sut);
}
