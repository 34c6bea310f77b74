/**
 * The fan-out consumer: connects to a Sender's unix socket, receives its own ring and
 * wake-up eventfd (SCM_RIGHTS), says what it wants, and reads matching messages zero-copy.
 *
 * ```ts
 * import { Consumer } from 'shmbus';
 * const consumer = await Consumer.connect('/tmp/feed.sock', { subscribe: { keys: ['BTC-USD'] } });
 * for await (const m of consumer) console.log(m.kind, m.payload.length);  // payload: a view into the ring
 * consumer.poll();                       // non-blocking: a message or null
 * consumer.on('message', (m) => {});     // event style (starts a pump)
 * consumer.on('evicted', (err) => {});   // the sender dropped us (err.details.reason)
 * await consumer.close();
 * ```
 * The library keeps the connection alive (pings at a third of the sender's idle timeout),
 * notices a dead or restarted sender (socket EOF), and with `reconnect` reconnects with
 * backoff, restores the subscriptions and emits 'disconnected' then 'reconnected'. Frames
 * already in the old ring are delivered before those of the new one.
 *
 * Views: a message's payload, key and group are views into the ring, valid until the next
 * message is taken (next poll(), next iteration, or the end of the 'message' handler); use
 * `m.copy()` to keep one. Use one style at a time: the iterator, poll(), or 'message'.
 * One thread (the event loop that connected).
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { BlobHandle } from '../blob/handle.js';
import { BlobStore, type BlobView } from '../blob/store.js';
import { Channel, type ChannelReceiver, type WaitStrategy } from '../channel/channel.js';
import { nanosSince } from '../core/clock.js';
import { Histogram, type HistogramSnapshot } from '../core/histogram.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import {
  ErrorCode,
  ShmArgumentError,
  type ShmError,
  ShmFrameError,
  ShmStateError,
  ShmSystemError,
  ShmTimeoutError,
} from '../errors.js';
import { MAX_CONTROL_FRAME, MAX_KEY_LENGTH, READY_FD_COUNT, SENDER_NANOS_OFFSET, Tag } from '../layout/fanout.js';
import { native, type PollHandle } from '../native/binding.js';
import {
  ControlReader,
  ControlSplitter,
  ControlWriter,
  encodeFilterRequest,
  type FilterDelta,
  protocolError,
  tagName,
} from './control.js';
import { keyString } from './filter.js';
import { decodeMessage, type FanoutMessage } from './frame.js';

/** What to subscribe or unsubscribe: keys and groups (strings are UTF-8), opt-in kinds. */
export interface SubscribeSpec {
  keys?: Iterable<Uint8Array | string>;
  groups?: Iterable<Uint8Array | string>;
  kinds?: Iterable<number>;
}

export interface ReconnectOptions {
  /** First delay (default 50 ms), doubled per failed attempt up to maxDelayMs (default 2000). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
}

export interface ConsumerOptions<T> {
  /** Shown in the sender's consumer list. */
  name?: string;
  /** Subscribed right after connecting (and after every reconnection). */
  subscribe?: SubscribeSpec;
  /** Reconnect when the sender goes away (default false: the stream then ends with SHM_ERR_DISCONNECTED). */
  reconnect?: boolean | ReconnectOptions;
  /** Handshake deadline (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Deadline for the sender to acknowledge subscribe/unsubscribe (default 5000 ms). */
  requestTimeoutMs?: number;
  /** Ping period (default: a third of the sender's idle timeout; pings keep the consumer from being evicted as idle). */
  pingIntervalMs?: number;
  /**
   * How the consumer waits for data (default 'park': straight onto the eventfd, no spin). A
   * fan-out host runs many consumers on few cores, where spinning consumers take the CPU the
   * sender needs (measured: 'adaptive' cost 20-25 % of throughput at 8 consumers on 2 cores).
   */
  wait?: WaitStrategy;
  /** Decodes each frame (default: the generic message decoder). Throwing rejects that frame only. */
  decode?: (frame: Uint8Array) => T;
  /** Largest control frame accepted from the sender (default 16 MiB). */
  maxControlFrame?: number;
}

export interface ConsumerMetrics {
  consumerId: number;
  state: ConsumerState;
  received: number;
  bytes: number;
  /** Frames that failed to decode (skipped; see the 'rejected' event). */
  rejected: number;
  reconnects: number;
  /** Fill 0..1 of the current ring. */
  ringFill: number;
  /** End-to-end latency in ns, from the sender's stamp in each frame to its decoding here. */
  latency: HistogramSnapshot;
}

export type ConsumerState = 'connected' | 'reconnecting' | 'evicted' | 'disconnected' | 'closed';

interface RingEntry {
  rx: ChannelReceiver;
  eventFd: number;
  dv: DataView | null;
  /** The control connection that came with this ring is gone: no more frames will come. */
  linkGone: boolean;
}

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface Link {
  socket: net.Socket;
  splitter: ControlSplitter;
  ring: RingEntry;
  pingTimer: NodeJS.Timeout | null;
  pending: Map<number, Pending>;
  verdict: { tag: number; reason: string; message: string } | null;
}

interface Ready {
  fd: number;
  consumerId: number;
  idleTimeoutMs: number;
  capacity: number;
  ringName: string;
  ringDir: string;
  blobStore: string;
  blobDir: string;
  ringFd: number;
  eventFd: number;
  splitter: ControlSplitter;
  rest: Uint8Array[];
}

const utf8 = new TextEncoder();

function toBytes(v: Uint8Array | string, what: string): Uint8Array {
  const b = typeof v === 'string' ? utf8.encode(v) : v;
  if (!(b instanceof Uint8Array) || b.length === 0 || b.length > MAX_KEY_LENGTH)
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `a ${what} must be a non-empty Uint8Array or string of at most ${MAX_KEY_LENGTH} bytes`,
    );
  return b;
}

function toDelta(spec: SubscribeSpec): FilterDelta {
  const kinds = [...(spec.kinds ?? [])];
  for (const k of kinds)
    if (!Number.isInteger(k) || k < 0 || k > 255)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `kinds must be integers in 0..255, got ${k}`);
  return {
    kinds,
    keys: [...(spec.keys ?? [])].map((k) => toBytes(k, 'key')),
    groups: [...(spec.groups ?? [])].map((g) => toBytes(g, 'group')),
  };
}

/** Connects, says HELLO, and waits for READY (with its two fds) or REFUSED. */
async function handshake(path: string, name: string, timeoutMs: number, maxFrame: number): Promise<Ready> {
  const n = native();
  let fd: number;
  try {
    fd = n.unixConnect(path);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EACCES' || code === 'EPERM')
      throw new ShmSystemError(
        ErrorCode.PERMISSION,
        `permission denied connecting to the fan-out sender at ${path} (its socket is owner-only unless the sender sets socketMode): ${(err as Error).message}`,
        { cause: err, details: { path, code } },
      );
    throw new ShmStateError(
      ErrorCode.DISCONNECTED,
      `cannot connect to the fan-out sender at ${path}: ${(err as Error).message}`,
      { cause: err, details: { path, code } },
    );
  }
  const fds: number[] = [];
  try {
    const hello = new ControlWriter(Tag.HELLO).u32(0).string(name).finish();
    try {
      if (n.sendFds(fd, hello, []) !== hello.length) throw protocolError('HELLO was cut short');
    } catch (err) {
      // A sender that refuses at once may have closed already: its REFUSED is still readable.
      if ((err as { code?: string }).code !== 'EPIPE') throw err;
    }
    if (STOP_AT !== null) stopAt('fanout.consumer.after-hello');
    const splitter = new ControlSplitter(maxFrame);
    const bodies = await new Promise<Uint8Array[]>((resolve, reject) => {
      const buf = new Uint8Array(64 * 1024);
      let poll: PollHandle | null = null;
      const stop = () => {
        clearTimeout(timer);
        if (poll !== null) n.pollStop(poll);
        poll = null;
      };
      const timer = setTimeout(() => {
        stop();
        reject(
          new ShmTimeoutError(ErrorCode.TIMEOUT, `the fan-out sender at ${path} did not answer within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      const onReadable = () => {
        try {
          for (;;) {
            const [got, received] = n.recvFds(fd, buf, 8);
            fds.push(...received);
            if (got < 0) return;
            if (got === 0) {
              stop();
              reject(
                new ShmStateError(ErrorCode.DISCONNECTED, `the fan-out sender at ${path} closed during the handshake`),
              );
              return;
            }
            const frames = splitter.push(buf.slice(0, got));
            if (frames.length > 0) {
              stop();
              resolve(frames);
              return;
            }
          }
        } catch (err) {
          stop();
          reject(err);
        }
      };
      poll = n.pollStart(fd, onReadable);
    });
    const r = new ControlReader(bodies[0]);
    if (r.tag === Tag.REFUSED) {
      const reason = r.string('reason');
      const message = r.string('message');
      throw new ShmStateError(ErrorCode.REFUSED, `the fan-out sender at ${path} refused the connection: ${message}`, {
        details: { path, reason },
      });
    }
    if (r.tag !== Tag.READY) throw protocolError(`expected READY from the sender, got ${tagName(r.tag)}`);
    const consumerId = r.u32('consumerId');
    const idleTimeoutMs = r.u32('idleTimeoutMs');
    const capacity = r.u32('capacity');
    const ringName = r.string('ringName');
    const ringDir = r.string('ringDir');
    const blobStore = r.string('blobStore');
    const blobDir = r.string('blobDir');
    r.end();
    if (fds.length !== READY_FD_COUNT)
      throw protocolError(`READY came with ${fds.length} file descriptors, expected ${READY_FD_COUNT}`);
    const [ringFd, eventFd] = fds;
    return {
      fd,
      consumerId,
      idleTimeoutMs,
      capacity,
      ringName,
      ringDir,
      blobStore,
      blobDir,
      ringFd,
      eventFd,
      splitter,
      rest: bodies.slice(1),
    };
  } catch (err) {
    for (const f of fds) n.closeFd(f);
    n.closeFd(fd);
    throw err;
  }
}

/** How often a consumer publishes its latency percentiles into its ring's consumer block. */
const LATENCY_PUBLISH_MS = 100;
/** next() lets the event loop turn once per this many messages it resolves without waiting. */
const YIELD_EVERY = 1024;

/** p50, p99, max (a quantile of 1 is the window's largest bucket). */
const LATENCY_QUANTILES = [0.5, 0.99, 1] as const;

export class Consumer<T = FanoutMessage> extends EventEmitter implements AsyncIterable<T> {
  /** Messages next() resolved since the event loop last turned (see YIELD_EVERY). */
  private sinceTurn = 0;
  private readonly rings: RingEntry[] = [];
  private link: Link | null = null;
  /** Why the stream is over: an error to throw, 'closed' (by us) or 'ended' (the sender shut down; no reconnect). */
  private terminal: ShmError | 'closed' | 'ended' | null = null;
  private stateName: ConsumerState = 'connected';
  private readonly changeWaiters: (() => void)[] = [];
  private readonly keys = new Map<string, Uint8Array>();
  private readonly groups = new Map<string, Uint8Array>();
  private readonly kinds = new Set<number>();
  private requestId = 0;
  private consumerIdValue = 0;
  private pumping = false;
  private readonly histogram = new Histogram();
  /** The histogram's counts at the last latency publication (the window's start). */
  private readonly latencyBaseline = new Float64Array(Histogram.bucketCount);
  private readonly latencyOut = new Float64Array(3);
  private latencyTimer: NodeJS.Timeout | null = null;
  private readonly counts = { received: 0, bytes: 0, rejected: 0, reconnects: 0 };
  private readonly decode: (frame: Uint8Array) => T;
  /** The sender's blob store as READY named it, attached on the first blob frame. */
  private blobSource: { name: string; dir: string } | null = null;
  private blobs: BlobStore | null = null;
  /** The blob behind the last message handed out: released and acknowledged at the next one. */
  private held: { view: BlobView; handle: BlobHandle; recipient: number } | null = null;

  private constructor(
    readonly path: string,
    private readonly options: ConsumerOptions<T>,
  ) {
    super();
    // One resolver for the consumer's life: no closure allocated per message.
    const blobs = (ref: Uint8Array, rawLength: number) => this.viewBlob(ref, rawLength);
    this.decode = options.decode ?? ((frame: Uint8Array) => decodeMessage(frame, undefined, blobs) as unknown as T);
    this.on('newListener', (event) => {
      if (event === 'message' && !this.pumping) queueMicrotask(() => this.pump());
    });
  }

  /** Connects to the sender at `path` (its unix socket) and applies `options.subscribe`. */
  static async connect<T = FanoutMessage>(path: string, options: ConsumerOptions<T> = {}): Promise<Consumer<T>> {
    if (typeof path !== 'string' || path.length === 0)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'path (the sender socket) is required');
    const sut = new Consumer<T>(path, options);
    if (options.subscribe) sut.mirror(toDelta(options.subscribe), true);
    try {
      await sut.open();
    } catch (err) {
      // Turned down after the handshake (e.g. too many keys): release the ring, eventfd and socket.
      await sut.close();
      throw err;
    }
    return sut;
  }

  get consumerId(): number {
    return this.consumerIdValue;
  }

  get state(): ConsumerState {
    return this.stateName;
  }

  /** One connection: handshake, ring, control socket, pings, subscriptions restored. */
  private async open(): Promise<void> {
    const o = this.options;
    const ready = await handshake(
      this.path,
      o.name ?? `pid ${process.pid}`,
      o.connectTimeoutMs ?? 5000,
      o.maxControlFrame ?? MAX_CONTROL_FRAME,
    );
    if (STOP_AT !== null) stopAt('fanout.consumer.after-ready');
    const n = native();
    if (this.terminal !== null) {
      // close() was called while the handshake was in flight: do not come back to life.
      n.closeFd(ready.ringFd);
      n.closeFd(ready.eventFd);
      n.closeFd(ready.fd);
      throw new ShmStateError(ErrorCode.CLOSED, 'the consumer was closed while connecting');
    }
    let rx: ChannelReceiver;
    try {
      rx = Channel.openVia(ready.ringName, `/proc/self/fd/${ready.ringFd}`, {
        dir: ready.ringDir,
        wait: o.wait ?? 'park',
        livenessCheckMs: 50,
      });
    } catch (err) {
      n.closeFd(ready.eventFd);
      n.closeFd(ready.fd);
      throw err;
    } finally {
      n.closeFd(ready.ringFd);
    }
    rx.useEventFd(ready.eventFd);
    const ring: RingEntry = { rx, eventFd: ready.eventFd, dv: null, linkGone: false };
    this.rings.push(ring);
    this.consumerIdValue = ready.consumerId;
    this.blobSource = ready.blobStore === '' ? null : { name: ready.blobStore, dir: ready.blobDir };
    const socket = new net.Socket({ fd: ready.fd, readable: true, writable: true });
    const link: Link = { socket, splitter: ready.splitter, ring, pingTimer: null, pending: new Map(), verdict: null };
    this.link = link;
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => this.onData(link, chunk));
    socket.on('close', () => this.onLinkClosed(link));
    for (const body of ready.rest) this.onFrame(link, body);
    const pingMs = o.pingIntervalMs ?? (ready.idleTimeoutMs > 0 ? Math.max(50, ready.idleTimeoutMs / 3) : 0);
    if (pingMs > 0) {
      const ping = new ControlWriter(Tag.PING).finish();
      link.pingTimer = setInterval(() => {
        if (!socket.destroyed) socket.write(ping);
      }, pingMs);
      link.pingTimer.unref();
    }
    this.stateName = 'connected';
    this.notify();
    if (this.latencyTimer === null) {
      this.latencyTimer = setInterval(() => this.publishLatency(), LATENCY_PUBLISH_MS);
      this.latencyTimer.unref();
    }
    if (this.keys.size + this.groups.size + this.kinds.size > 0)
      await this.request(Tag.SUBSCRIBE, {
        kinds: [...this.kinds],
        keys: [...this.keys.values()],
        groups: [...this.groups.values()],
      });
  }

  private onData(link: Link, chunk: Buffer): void {
    let bodies: Uint8Array[];
    try {
      bodies = link.splitter.push(chunk);
    } catch {
      link.socket.destroy();
      return;
    }
    for (const body of bodies) this.onFrame(link, body);
  }

  private onFrame(link: Link, body: Uint8Array): void {
    try {
      const r = new ControlReader(body);
      switch (r.tag) {
        case Tag.ACK: {
          const id = r.u32('requestId');
          r.end();
          const p = link.pending.get(id);
          if (p) {
            link.pending.delete(id);
            clearTimeout(p.timer);
            p.resolve();
          }
          return;
        }
        case Tag.EVICTED:
        case Tag.REFUSED: {
          const reason = r.string('reason');
          const message = r.string('message');
          link.verdict = { tag: r.tag, reason, message };
          return;
        }
        case Tag.CLOSING:
          r.end();
          link.verdict = { tag: Tag.CLOSING, reason: 'closing', message: 'the sender is shutting down' };
          return;
        default:
          throw protocolError(`unexpected ${tagName(r.tag)} frame from the sender`);
      }
    } catch {
      // A sender that breaks the protocol is treated as gone.
      link.socket.destroy();
    }
  }

  private onLinkClosed(link: Link): void {
    if (link.pingTimer !== null) clearInterval(link.pingTimer);
    link.ring.linkGone = true;
    if (this.link === link) this.link = null;
    const verdict = link.verdict;
    const lost = new ShmStateError(
      ErrorCode.DISCONNECTED,
      `lost the connection to the fan-out sender at ${this.path}`,
      {
        details: { path: this.path },
      },
    );
    const evicted =
      verdict !== null && verdict.tag !== Tag.CLOSING
        ? new ShmStateError(ErrorCode.EVICTED, `evicted by the fan-out sender: ${verdict.message}`, {
            details: { path: this.path, reason: verdict.reason },
          })
        : null;
    // Pending subscribe/unsubscribe calls learn why (e.g. too-many-keys), not just that the link went.
    for (const p of link.pending.values()) {
      clearTimeout(p.timer);
      p.reject(evicted ?? lost);
    }
    link.pending.clear();
    if (this.terminal !== null) {
      this.notify();
      return;
    }
    if (evicted !== null) {
      const err = evicted;
      this.terminal = err;
      this.stateName = 'evicted';
      this.notify();
      this.emit('evicted', err);
      return;
    }
    this.emit('disconnected', verdict === null ? lost : new ShmStateError(ErrorCode.DISCONNECTED, verdict.message));
    if (this.options.reconnect) {
      this.stateName = 'reconnecting';
      this.notify();
      void this.reconnect();
    } else {
      // A sender that said CLOSING ends the stream; one that vanished is an error.
      this.terminal = verdict === null ? lost : 'ended';
      this.stateName = 'disconnected';
      this.notify();
    }
  }

  private async reconnect(): Promise<void> {
    const r = typeof this.options.reconnect === 'object' ? this.options.reconnect : {};
    let delay = r.initialDelayMs ?? 50;
    const maxDelay = r.maxDelayMs ?? 2000;
    for (let attempt = 1; ; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (this.terminal !== null) return;
      try {
        await this.open();
        if (this.terminal !== null) return;
        this.counts.reconnects++;
        this.emit('reconnected', { consumerId: this.consumerIdValue, attempts: attempt });
        return;
      } catch (err) {
        if (this.terminal !== null) return;
        if (r.maxAttempts !== undefined && attempt >= r.maxAttempts) {
          this.terminal = new ShmStateError(
            ErrorCode.DISCONNECTED,
            `gave up reconnecting to ${this.path} after ${attempt} attempts: ${(err as Error).message}`,
            { cause: err, details: { path: this.path } },
          );
          this.stateName = 'disconnected';
          this.notify();
          return;
        }
        delay = Math.min(maxDelay, delay * 2);
      }
    }
  }

  private notify(): void {
    const waiters = this.changeWaiters.splice(0);
    for (const w of waiters) w();
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.changeWaiters.push(resolve));
  }

  // ---------------------------------------------------------------- subscriptions

  private mirror(delta: FilterDelta, add: boolean): void {
    for (const k of delta.kinds) add ? this.kinds.add(k) : this.kinds.delete(k);
    for (const k of delta.keys) add ? this.keys.set(keyString(k), k) : this.keys.delete(keyString(k));
    for (const g of delta.groups) add ? this.groups.set(keyString(g), g) : this.groups.delete(keyString(g));
  }

  private request(tag: number, delta: FilterDelta): Promise<void> {
    const link = this.link;
    if (link === null || link.socket.destroyed) return Promise.resolve();
    const id = ++this.requestId >>> 0;
    const frame = encodeFilterRequest(tag, id, delta);
    const timeoutMs = this.options.requestTimeoutMs ?? 5000;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        link.pending.delete(id);
        reject(
          new ShmTimeoutError(ErrorCode.TIMEOUT, `the sender did not acknowledge ${tagName(tag)} in ${timeoutMs} ms`),
        );
      }, timeoutMs);
      link.pending.set(id, { resolve, reject, timer });
      link.socket.write(frame);
    });
  }

  /**
   * Adds keys, groups and opt-in kinds (additive, duplicates ignored). Resolves once the
   * sender applied it; while reconnecting it resolves at once and is applied on reconnection.
   */
  async subscribe(spec: SubscribeSpec): Promise<void> {
    this.assertUsable();
    const delta = toDelta(spec);
    this.mirror(delta, true);
    await this.request(Tag.SUBSCRIBE, delta);
  }

  /** Removes keys, groups and opt-in kinds. */
  async unsubscribe(spec: SubscribeSpec): Promise<void> {
    this.assertUsable();
    const delta = toDelta(spec);
    this.mirror(delta, false);
    await this.request(Tag.UNSUBSCRIBE, delta);
  }

  /** The subscriptions as this consumer holds them (restored on reconnection). */
  subscriptions(): { keys: Uint8Array[]; groups: Uint8Array[]; kinds: number[] } {
    return { keys: [...this.keys.values()], groups: [...this.groups.values()], kinds: [...this.kinds] };
  }

  private assertUsable(): void {
    if (this.terminal === 'closed') throw new ShmStateError(ErrorCode.CLOSED, 'the consumer is closed');
    if (this.terminal === 'ended')
      throw new ShmStateError(ErrorCode.DISCONNECTED, `the fan-out sender at ${this.path} shut down`);
    if (this.terminal !== null) throw this.terminal;
  }

  // ---------------------------------------------------------------- receiving

  private retire(entry: RingEntry): void {
    const i = this.rings.indexOf(entry);
    if (i >= 0) this.rings.splice(i, 1);
    entry.rx.close();
    if (entry.eventFd >= 0) native().closeFd(entry.eventFd);
    entry.eventFd = -1;
  }

  /** A blob frame's payload: the blob in place, held until the next message (then acknowledged). */
  private viewBlob(ref: Uint8Array, rawLength: number): Uint8Array {
    const source = this.blobSource;
    if (source === null)
      throw new ShmFrameError(ErrorCode.CORRUPT, 'a blob frame from a sender that named no blob store');
    this.blobs ??= BlobStore.attach(source.name, { dir: source.dir, readOnly: true });
    const handle = BlobHandle.readFrom(ref, 0);
    const recipient = new DataView(ref.buffer, ref.byteOffset).getUint32(24, true);
    if (handle.size !== rawLength)
      throw new ShmFrameError(ErrorCode.CORRUPT, `blob frame: handle of ${handle.size} bytes, frame says ${rawLength}`);
    const view = this.blobs.view(handle);
    if (view === null)
      throw new ShmFrameError(
        ErrorCode.NOT_FOUND,
        `blob frame: the blob is gone from store ${JSON.stringify(source.name)} (expired or freed before it was read)`,
        { details: { store: source.name, chunk: handle.chunk, generation: handle.generation } },
      );
    this.held = { view, handle, recipient };
    return view.data;
  }

  /** Releases and acknowledges the blob behind the previous message, if any. */
  private releaseHeld(): void {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    held.view.release();
    try {
      this.blobs?.ack(held.handle, held.recipient);
    } catch {
      // A hostile recipient index: nothing to acknowledge.
    }
  }

  /** Decodes one frame; undefined if the decoder rejected it (counted, 'rejected' emitted). */
  private deliver(entry: RingEntry, frame: Uint8Array): T | undefined {
    this.releaseHeld();
    let m: T;
    try {
      m = this.decode(frame);
    } catch (err) {
      this.counts.rejected++;
      this.emit('rejected', err);
      return undefined;
    }
    this.counts.received++;
    this.counts.bytes += frame.length;
    if (frame.length >= SENDER_NANOS_OFFSET + 8) {
      entry.dv ??= new DataView(frame.buffer);
      this.histogram.record(nanosSince(entry.dv, frame.byteOffset + SENDER_NANOS_OFFSET));
    }
    return m;
  }

  /** Writes the last window's latency percentiles into the current ring's consumer block (for tools). */
  private publishLatency(): void {
    const ring = this.link?.ring ?? this.rings[this.rings.length - 1];
    if (ring === undefined) {
      // Over for good (evicted, ended, lost without reconnect) and drained: stop the timer, so
      // an evicted consumer nobody closes is not kept alive by it.
      if (this.terminal !== null && this.latencyTimer !== null) {
        clearInterval(this.latencyTimer);
        this.latencyTimer = null;
      }
      return;
    }
    const out = this.latencyOut;
    const samples = this.histogram.windowPercentiles(this.latencyBaseline, LATENCY_QUANTILES, out);
    if (samples === 0) return;
    try {
      ring.rx.publishLatency(out[0], out[1], out[2], samples);
    } catch {
      // The ring was just closed: nothing to publish into.
    }
  }

  private static ended(err: unknown): boolean {
    const code = (err as { code?: string }).code;
    return code === ErrorCode.PEER_DEAD || code === ErrorCode.CLOSED;
  }

  /** The next message if one is in the ring now, else null. Never blocks. */
  poll(): T | null {
    for (;;) {
      const entry = this.rings[0];
      if (entry === undefined) return null;
      let frame: Uint8Array | null;
      let over = false;
      try {
        frame = entry.rx.tryRecv();
        over = frame === null && (entry.rx.isEnded || entry.linkGone);
      } catch (err) {
        if (!Consumer.ended(err)) throw err;
        frame = null;
        over = true;
      }
      if (frame === null) {
        if (!over) return null;
        this.retire(entry);
        continue;
      }
      const m = this.deliver(entry, frame);
      if (m !== undefined) return m;
    }
  }

  /**
   * Resolves with the next message, waiting on the event loop; null once the consumer was
   * closed, or the sender shut down (CLOSING) and `reconnect` is off. Rejects with SHM_ERR_EVICTED or SHM_ERR_DISCONNECTED (after every frame already
   * in the ring was delivered).
   */
  async next(): Promise<T | null> {
    // Frames already in the ring resolve next() at once, so a reader that keeps up with a fast
    // sender would run on microtasks alone and starve timers, I/O and this consumer's own pings
    // until the ring is empty: every YIELD_EVERY messages, let the event loop turn once.
    if (++this.sinceTurn > YIELD_EVERY) {
      this.sinceTurn = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    for (;;) {
      const entry = this.rings[0];
      if (entry === undefined) {
        if (this.terminal === 'closed' || this.terminal === 'ended') return null;
        if (this.terminal !== null) throw this.terminal;
        await this.changed();
        continue;
      }
      let frame: Uint8Array | null;
      try {
        frame = entry.rx.tryRecv();
        if (frame === null && !entry.rx.isEnded && !(entry.linkGone && this.rings.length > 1)) {
          frame = await entry.rx.recv();
          this.sinceTurn = 0; // it waited: the event loop turned
        }
      } catch (err) {
        if (!Consumer.ended(err)) throw err;
        frame = null;
      }
      if (frame === null) {
        // Ended (the sender closed it or died) or the consumer was closed.
        if (this.rings[0] === entry) this.retire(entry);
        continue;
      }
      const m = this.deliver(entry, frame);
      if (m !== undefined) return m;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const m = await this.next();
      if (m === null) return;
      yield m;
    }
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        const m = await this.next();
        if (m === null) return;
        this.emit('message', m);
      }
    } catch {
      // Evicted / disconnected: already emitted as events.
    } finally {
      this.pumping = false;
    }
  }

  metrics(): ConsumerMetrics {
    let ringFill = 0;
    try {
      ringFill = this.rings[0]?.rx.backpressure() ?? 0;
    } catch {}
    return {
      consumerId: this.consumerIdValue,
      state: this.stateName,
      ...this.counts,
      ringFill,
      latency: this.histogram.snapshot(),
    };
  }

  /** Says BYE, leaves the ring(s) and stops. A pending next()/iteration ends (null / done). Idempotent. */
  async close(): Promise<void> {
    if (this.terminal === 'closed') return;
    this.terminal = 'closed';
    this.stateName = 'closed';
    if (this.latencyTimer !== null) clearInterval(this.latencyTimer);
    this.latencyTimer = null;
    const link = this.link;
    this.link = null;
    if (link !== null) {
      if (link.pingTimer !== null) clearInterval(link.pingTimer);
      if (!link.socket.destroyed) {
        await new Promise<void>((resolve) => {
          link.socket.end(new ControlWriter(Tag.BYE).finish(), () => resolve());
          setTimeout(resolve, 200).unref();
        });
        link.socket.destroy();
      }
    }
    for (const entry of [...this.rings]) this.retire(entry);
    this.releaseHeld();
    this.blobs?.close();
    this.blobs = null;
    this.notify();
  }
}
