/**
 * The fan-out sender: one process publishes a stream; each local consumer gets its own SPSC
 * ring (a Channel segment) and wake-up eventfd, handed over a unix socket with SCM_RIGHTS,
 * and only the messages its subscriptions match.
 *
 * ```ts
 * import { Sender } from 'shmbus';
 * const sender = await Sender.listen({ path: '/tmp/feed.sock', kinds: { 9: 'always' } });
 * sender.publish({ kind: 1, key: 'BTC-USD', payload: bytes });   // returns consumers reached
 * sender.attach(someAsyncIterable);                              // or an EventEmitter
 * await sender.close();
 * ```
 * Dispatch encodes a message once and copies it into each matching ring; it never blocks
 * and never waits for a consumer. A consumer whose ring is full is evicted (told why, its
 * ring closed and unlinked); the others are unaffected. Consumers that vanish (socket EOF)
 * or go silent past `idleTimeoutMs` are removed the same way. A parked consumer is woken
 * through its eventfd; a consumer that is not parked costs no system call.
 *
 * Events: 'consumer' (a consumer got its ring), 'subscribe' / 'unsubscribe' (a filter change
 * was applied), 'evicted', 'disconnect' (each with a ConsumerInfo), 'protocolError',
 * 'sourceError' (an attached source threw).
 *
 * Observability: the counters, the kind modes and a table of the consumers (identity, filter
 * summary, deliveries, eviction reason) live in the registration segment `sender.<hash>`
 * (layout/sender.ts, fanout/consumer-table.ts), so `shmbus inspect` / `shmbus top` read them
 * without asking the sender; each consumer publishes its latency into its ring.
 *
 * Control protocol and frame layouts: src/layout/fanout.ts, docs/LAYOUT.md.
 * One thread: publish() and the control plane run on the sender's event loop.
 */
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import type { BlobHandle } from '../blob/handle.js';
import { BlobStore } from '../blob/store.js';
import { Channel, type ChannelSender } from '../channel/channel.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import { diagnostics } from '../diagnostics.js';
import {
  ErrorCode,
  ShmArgumentError,
  ShmError,
  ShmFrameError,
  ShmSegmentError,
  ShmStateError,
  ShmSystemError,
} from '../errors.js';
import { MAX_CAPACITY, MIN_CAPACITY } from '../layout/channel.js';
import { BLOB_REF_LENGTH, MAX_CONTROL_FRAME, MAX_KEY_LENGTH, Tag } from '../layout/fanout.js';
import { Kind } from '../layout/segment.js';
import {
  CONSUMER_TABLE_OFFSET,
  COUNTER_COUNT,
  COUNTERS_OFFSET,
  Counter,
  KIND_MODE_CODES,
  KIND_MODES_OFFSET,
  MAX_CONSUMERS_OFFSET,
  RING_CAPACITY_OFFSET,
  SENDER_PARAMS_LENGTH,
  SENDER_PROTOCOL_OFFSET,
  SENDER_PROTOCOL_VERSION,
  SOCKET_MODE_OFFSET,
  SOCKET_PATH_LENGTH_OFFSET,
  SOCKET_PATH_OFFSET,
  SOCKET_PATH_ROOM,
  senderCounters,
  senderSegmentLength,
  senderSegmentName,
  TABLE_OFFSET_OFFSET,
  TABLE_SLOTS_OFFSET,
  tableSlotsFor,
} from '../layout/sender.js';
import { native } from '../native/binding.js';
import { cleanStale } from '../segment/clean.js';
import { segmentDir } from '../segment/names.js';
import { Segment } from '../segment/segment.js';
import { ConsumerTable } from './consumer-table.js';
import {
  ControlReader,
  ControlSplitter,
  ControlWriter,
  decodeFilterRequest,
  protocolError,
  tagName,
} from './control.js';
import { type KindMode, MessageKey, SubscriptionFilter } from './filter.js';
import { FrameEncoder } from './frame.js';

export interface SenderOptions {
  /** Path of the unix control socket (at most 107 bytes). A stale socket file is replaced; a live one is refused. */
  path: string;
  /** File mode of the socket (default 0o600: the owner's processes only). */
  socketMode?: number;
  /** If set, only peers whose uid (SO_PEERCRED) is listed may connect. */
  allowUids?: readonly number[];
  /** Consumers served at once (default 16); the next one is refused with SHM_ERR_REFUSED. */
  maxConsumers?: number;
  /** Ring bytes per consumer, a power of two (default 32 MiB; a frame may use half). */
  capacity?: number;
  /** A consumer that sends nothing (its library pings at a third of this) for this long is evicted (default 30000; 0 = never). */
  idleTimeoutMs?: number;
  /** Delivery mode per kind (0..255): 'filtered' (default: key or group subscribed), 'opt-in', 'always'. */
  kinds?: Readonly<Record<number, KindMode>>;
  /** Directory of the ring segments (default $SHMBUS_DIR, else /dev/shm). */
  dir?: string;
  /** Keys + groups one consumer may subscribe (default 1,000,000). */
  maxKeysPerConsumer?: number;
  /** Largest control frame accepted (default 16 MiB). */
  maxControlFrame?: number;
  /** LZ4 for payloads >= 500 KiB that compress (default true). */
  compress?: boolean;
  /** How long a new connection has to say HELLO (default 5000 ms). */
  handshakeTimeoutMs?: number;
  /**
   * A blob store (BlobStore.create) for large payloads: a payload of at least blobThreshold
   * bytes is appended to it once and only its 24-byte handle goes into each matching
   * consumer's ring (the consumers read it in place and acknowledge it). The store stays the
   * caller's (the sender does not close it).
   */
  blobs?: BlobStore;
  /** Smallest payload sent through `blobs` (default 65536). */
  blobThreshold?: number;
}

/** What publish() takes. Strings are UTF-8 encoded. */
export interface PublishInput {
  kind: number;
  key?: Uint8Array | string | null;
  group?: Uint8Array | string | null;
  payload: Uint8Array;
}

export type EvictReason = 'ring-full' | 'idle' | 'protocol' | 'too-many-keys';

export interface ConsumerInfo {
  id: number;
  pid: number;
  uid: number;
  name: string;
  ring: string;
  delivered: number;
  bytes: number;
  /** Ring fill 0..1 as last published by the consumer. */
  ringFill: number;
  keys: number;
  groups: number;
  kinds: number[];
  bloomBits: number;
  bloomRejects: number;
}

export interface SenderMetrics {
  consumers: number;
  published: number;
  /** Copies into rings (one message to three consumers counts three). */
  dispatched: number;
  dispatchedBytes: number;
  /** Messages that matched no consumer. */
  unmatched: number;
  evictions: Record<EvictReason, number>;
  refused: number;
  disconnects: number;
  compressedFrames: number;
  /** Raw bytes / wire bytes over the compressed frames (1 when none). */
  compressionRatio: number;
  /** Messages written once into the blob store (their handles dispatched). */
  blobMessages: number;
  /** Messages at or over blobThreshold copied into the rings because the store could not take them (full, no space). */
  blobFallbacks: number;
  perConsumer: ConsumerInfo[];
}

const utf8 = new TextEncoder();
const SOCKET_PATH_MAX = 107;

function toBytes(v: Uint8Array | string | null | undefined, what: string): Uint8Array | null {
  if (v === null || v === undefined) return null;
  const b = typeof v === 'string' ? utf8.encode(v) : v;
  if (!(b instanceof Uint8Array))
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${what} must be a Uint8Array or a string`);
  if (b.length > MAX_KEY_LENGTH)
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${what} of ${b.length} bytes (at most ${MAX_KEY_LENGTH})`);
  return b;
}

type ConnState = 'handshake' | 'ready' | 'gone';

class Connection {
  state: ConnState = 'handshake';
  readonly filter = new SubscriptionFilter();
  ring: ChannelSender | null = null;
  eventFd = -1;
  name = '';
  lastSeen = Date.now();
  /** Its consumer table entry in the registration segment (-1: none, more consumers than entries). */
  slot = -1;
  /** [delivered, bytes]: its table entry's counters in the mapping, or a private pair without an entry. */
  stats: Float64Array<ArrayBufferLike> = new Float64Array(2);
  constructor(
    readonly id: number,
    readonly socket: net.Socket,
    readonly fd: number,
    readonly pid: number,
    readonly uid: number,
    readonly splitter: ControlSplitter,
  ) {}
}

export class Sender extends EventEmitter {
  private readonly server: net.Server;
  private readonly options: Required<Omit<SenderOptions, 'allowUids' | 'kinds' | 'dir' | 'blobs'>> & {
    allowUids: readonly number[] | null;
    dir: string | undefined;
    blobs: BlobStore | null;
  };
  /** Consumers matched by the message being published through the blob store. */
  private readonly matched: Connection[] = [];
  private readonly blobRef = new Uint8Array(BLOB_REF_LENGTH);
  private readonly modes: KindMode[] = new Array(256).fill('filtered');
  private readonly connections = new Set<Connection>();
  /** Connections in the ready state, in connection order (the dispatch list). */
  private live: Connection[] = [];
  private nextId = 1;
  private closed = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly encoder: FrameEncoder;
  private readonly key = new MessageKey();
  private readonly maxFrame: number;
  /** The registration segment (layout/sender.ts): the socket path and the counters, for tools. */
  private readonly registration: Segment;
  /** The counters (Counter indexes), in the registration segment: plain stores, read by tools. */
  private c: Float64Array;
  /** Who is connected, their filters and what they got, in the registration segment. */
  private readonly table: ConsumerTable;

  private constructor(server: net.Server, options: SenderOptions, registration: Segment) {
    super();
    this.server = server;
    this.registration = registration;
    this.c = new Float64Array(registration.views.buffer, COUNTERS_OFFSET, COUNTER_COUNT);
    this.table = new ConsumerTable(registration.views, tableSlotsFor(options.maxConsumers ?? 16));
    this.options = {
      path: options.path,
      socketMode: options.socketMode ?? 0o600,
      allowUids: options.allowUids ?? null,
      maxConsumers: options.maxConsumers ?? 16,
      capacity: options.capacity ?? 32 * 1024 * 1024,
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      dir: options.dir,
      maxKeysPerConsumer: options.maxKeysPerConsumer ?? 1_000_000,
      maxControlFrame: options.maxControlFrame ?? MAX_CONTROL_FRAME,
      compress: options.compress ?? true,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 5000,
      blobs: options.blobs ?? null,
      blobThreshold: options.blobThreshold ?? 65536,
    };
    for (const [kind, mode] of Object.entries(options.kinds ?? {})) this.modes[Number(kind)] = mode;
    this.encoder = new FrameEncoder(this.options.compress);
    // Channel's default maxFrame: half the ring, minus the record header.
    this.maxFrame = this.options.capacity / 2 - 8;
    server.on('connection', (socket) => this.accept(socket));
    if (this.options.idleTimeoutMs > 0) {
      this.idleTimer = setInterval(() => this.sweepIdle(), Math.max(10, this.options.idleTimeoutMs / 4));
      this.idleTimer.unref();
    }
  }

  /** Binds the control socket and starts accepting consumers. */
  static async listen(options: SenderOptions): Promise<Sender> {
    checkOptions(options);
    const path = options.path;
    await removeStaleSocket(path);
    const server = net.createServer({ allowHalfOpen: false, pauseOnConnect: false });
    const mode = options.socketMode ?? 0o600;
    // The socket file is created by bind() with the process umask: narrow the umask around
    // it so it never exists with wider permissions, then set the exact mode.
    const oldMask = process.umask(0o777 & ~mode);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      throw new ShmSystemError(ErrorCode.SYSTEM, `cannot listen on ${path}: ${(err as Error).message}`, {
        cause: err,
        details: { path },
      });
    } finally {
      process.umask(oldMask);
    }
    let registration: Segment;
    try {
      chmodSync(path, mode);
      // Make sure the ring directory exists and is usable before the first consumer comes.
      segmentDir(options.dir);
      registration = register(path, options);
      // Rings of senders that died with their consumers (both locks free) go now: a sender
      // restarted after a crash does not pile them up (`shmbus clean` does the same).
      cleanStale({ dir: options.dir, prefix: RING_PREFIX });
    } catch (err) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      try {
        unlinkSync(path);
      } catch {}
      throw err;
    }
    return new Sender(server, options, registration);
  }

  get path(): string {
    return this.options.path;
  }

  /** Consumers being served now (connected and handed their ring). */
  get consumerCount(): number {
    return this.live.length;
  }

  /** Largest encoded frame a ring takes. */
  get maxFrameLength(): number {
    return this.maxFrame;
  }

  // ---------------------------------------------------------------- control plane

  private accept(socket: net.Socket): void {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    let pid = 0;
    let uid = -1;
    try {
      [pid, uid] = native().peerCredentials(fd);
    } catch {
      socket.destroy();
      return;
    }
    const conn = new Connection(this.nextId++, socket, fd, pid, uid, new ControlSplitter(this.options.maxControlFrame));
    this.connections.add(conn);
    socket.on('error', () => {});
    socket.on('close', () => this.drop(conn, 'disconnect'));
    if (this.closed) {
      this.refuse(conn, 'closing', 'the sender is shutting down');
      return;
    }
    const allow = this.options.allowUids;
    if (allow !== null && !allow.includes(uid)) {
      this.refuse(conn, 'uid', `uid ${uid} is not allowed to connect (allowUids: ${allow.join(', ')})`);
      return;
    }
    if (this.live.length + this.pendingHandshakes() > this.options.maxConsumers) {
      this.refuse(
        conn,
        'max-consumers',
        `the sender serves at most ${this.options.maxConsumers} consumers and all are taken`,
      );
      return;
    }
    const timer = setTimeout(() => {
      if (conn.state === 'handshake') this.refuse(conn, 'protocol', 'no HELLO within the handshake timeout');
    }, this.options.handshakeTimeoutMs);
    timer.unref();
    socket.on('data', (chunk: Buffer) => {
      if (conn.state === 'gone') return;
      try {
        for (const body of conn.splitter.push(chunk)) {
          if ((conn.state as ConnState) === 'gone') return;
          this.onFrame(conn, new ControlReader(body));
        }
      } catch (err) {
        const message = err instanceof ShmError ? err.message : String(err);
        this.emit('protocolError', { id: conn.id, pid: conn.pid, error: err });
        if (conn.state === 'handshake') this.refuse(conn, 'protocol', message);
        else this.evict(conn, 'protocol', message);
      }
    });
  }

  private pendingHandshakes(): number {
    let n = 0;
    for (const c of this.connections) if (c.state === 'handshake') n++;
    return n;
  }

  private onFrame(conn: Connection, r: ControlReader): void {
    conn.lastSeen = Date.now();
    if (conn.state === 'handshake') {
      if (r.tag !== Tag.HELLO) throw protocolError(`expected HELLO first, got ${tagName(r.tag)}`);
      r.u32('flags');
      conn.name = r.string('clientName');
      r.end();
      this.handshake(conn);
      return;
    }
    switch (r.tag) {
      case Tag.PING:
        r.end();
        return;
      case Tag.SUBSCRIBE:
      case Tag.UNSUBSCRIBE: {
        // The per-consumer limit is checked after the merge (an eviction with its reason);
        // the frame itself is bounded by maxControlFrame.
        const { requestId, delta } = decodeFilterRequest(r, Number.MAX_SAFE_INTEGER);
        if (r.tag === Tag.SUBSCRIBE) {
          conn.filter.add(delta);
          if (conn.filter.size > this.options.maxKeysPerConsumer) {
            this.evict(
              conn,
              'too-many-keys',
              `subscribed ${conn.filter.size} keys + groups; the limit is ${this.options.maxKeysPerConsumer}`,
            );
            return;
          }
        } else conn.filter.remove(delta);
        if (conn.slot >= 0)
          this.table.setFilter(conn.slot, {
            keys: conn.filter.keys.size,
            groups: conn.filter.groups.size,
            kinds: conn.filter.kinds,
          });
        this.write(conn, new ControlWriter(Tag.ACK).u32(requestId).finish());
        this.emit(r.tag === Tag.SUBSCRIBE ? 'subscribe' : 'unsubscribe', this.info(conn));
        return;
      }
      case Tag.BYE:
        r.end();
        this.drop(conn, 'bye');
        return;
      default:
        throw protocolError(`unexpected ${tagName(r.tag)} frame from a consumer`, { tag: r.tag });
    }
  }

  private handshake(conn: Connection): void {
    const n = native();
    const ringName = `${RING_PREFIX}${process.pid}-${conn.id}-${randomBytes(4).toString('hex')}`;
    let ring: ChannelSender | null = null;
    let eventFd = -1;
    let passFd = -1;
    try {
      ring = Channel.create(ringName, { capacity: this.options.capacity, mode: 0o600, dir: this.options.dir });
      eventFd = n.eventfdCreate(0, false);
      // One wake-up per publishing burst (end of the current JS job), not per message.
      ring.useEventFd(eventFd, true);
      // A fresh open file description to hand over (the receiver re-opens it again through
      // /proc/self/fd, so its liveness locks are its own).
      passFd = n.openFile(Channel.pathOf(ringName, { dir: this.options.dir }), true);
      const ready = new ControlWriter(Tag.READY)
        .u32(conn.id)
        .u32(this.options.idleTimeoutMs)
        .u32(this.options.capacity)
        .string(ringName)
        .string(segmentDir(this.options.dir))
        .string(this.options.blobs?.name ?? '')
        .string(this.options.blobs?.dir ?? '')
        .finish();
      if (STOP_AT !== null) stopAt('fanout.sender.before-ready');
      const sent = n.sendFds(conn.fd, ready, [passFd, eventFd]);
      if (sent !== ready.length) throw new Error(`READY was cut short (${sent} of ${ready.length} bytes)`);
      if (STOP_AT !== null) stopAt('fanout.sender.after-ready');
    } catch (err) {
      if (passFd >= 0) n.closeFd(passFd);
      ring?.close();
      if (ring !== null) Channel.remove(ringName, { dir: this.options.dir });
      if (eventFd >= 0) n.closeFd(eventFd);
      this.refuse(conn, 'internal', `could not set up the consumer's ring: ${(err as Error).message}`);
      return;
    }
    n.closeFd(passFd);
    conn.ring = ring;
    conn.eventFd = eventFd;
    conn.state = 'ready';
    conn.slot = this.table.claim();
    if (conn.slot >= 0) {
      this.table.open(conn.slot, {
        consumerId: conn.id,
        pid: conn.pid,
        uid: conn.uid,
        name: conn.name,
        ring: ringName,
      });
      conn.stats = this.table.stats(conn.slot);
    }
    this.live = [...this.live, conn];
    this.c[Counter.CONSUMERS] = this.live.length;
    this.emit('consumer', this.info(conn));
    if (diagnostics.peerConnected.hasSubscribers)
      diagnostics.peerConnected.publish({
        primitive: 'fanout',
        name: this.options.path,
        id: conn.id,
        pid: conn.pid,
        uid: conn.uid,
      });
  }

  private write(conn: Connection, frame: Uint8Array): void {
    if (conn.state === 'gone' || conn.socket.destroyed) return;
    conn.socket.write(frame);
  }

  /** Tells a connection that never became a consumer why, then closes it. */
  private refuse(conn: Connection, reason: string, message: string): void {
    if (conn.state === 'gone') return;
    this.c[Counter.REFUSED]++;
    const frame = new ControlWriter(Tag.REFUSED).string(reason).string(message).finish();
    conn.socket.end(frame);
    this.release(conn);
    conn.socket.destroySoon();
  }

  /** Removes a consumer with an explicit EVICTED notice (frames already in its ring stay readable). */
  private evict(conn: Connection, reason: EvictReason, message: string): void {
    if (conn.state === 'gone') return;
    const wasReady = conn.state === 'ready';
    this.c[EVICTED_COUNTER[reason]]++;
    const info = this.info(conn);
    if (wasReady && conn.slot >= 0) {
      this.table.end(conn.slot, reason);
      conn.slot = -1;
      conn.stats = Float64Array.from(conn.stats);
    }
    const frame = new ControlWriter(Tag.EVICTED).string(reason).string(message).finish();
    if (!conn.socket.destroyed) conn.socket.end(frame);
    this.release(conn);
    conn.socket.destroySoon();
    if (wasReady) this.emit('evicted', { ...info, reason, message });
    if (diagnostics.evicted.hasSubscribers)
      diagnostics.evicted.publish({
        primitive: 'fanout',
        name: this.options.path,
        id: conn.id,
        pid: conn.pid,
        reason,
        message,
      });
    if (reason === 'ring-full' && diagnostics.lapped.hasSubscribers)
      diagnostics.lapped.publish({
        primitive: 'fanout',
        name: this.options.path,
        id: conn.id,
        pid: conn.pid,
        capacity: this.options.capacity,
      });
  }

  /** The connection ended (EOF, error, BYE). */
  private drop(conn: Connection, why: 'disconnect' | 'bye'): void {
    if (conn.state === 'gone') {
      this.connections.delete(conn);
      return;
    }
    const wasReady = conn.state === 'ready';
    const info = wasReady ? this.info(conn) : null;
    this.release(conn);
    this.connections.delete(conn);
    if (why === 'bye') conn.socket.end();
    if (wasReady) {
      this.c[Counter.DISCONNECTS]++;
      this.emit('disconnect', info);
      if (diagnostics.peerDied.hasSubscribers)
        diagnostics.peerDied.publish({
          primitive: 'fanout',
          name: this.options.path,
          id: conn.id,
          pid: conn.pid,
          reason: 'disconnect',
        });
    }
  }

  /** Closes and unlinks the ring, closes the eventfd; the connection is gone from dispatch. */
  private release(conn: Connection): void {
    if (conn.state === 'gone') return;
    conn.state = 'gone';
    if (conn.slot >= 0) {
      this.table.end(conn.slot, null);
      conn.slot = -1;
      conn.stats = Float64Array.from(conn.stats);
    }
    if (this.live.includes(conn)) {
      this.live = this.live.filter((c) => c !== conn);
      this.c[Counter.CONSUMERS] = this.live.length;
    }
    const ring = conn.ring;
    conn.ring = null;
    if (ring !== null) {
      const name = ring.name;
      ring.close(); // marks the stream ended and wakes a parked consumer through the eventfd
      Channel.remove(name, { dir: this.options.dir });
    }
    if (conn.eventFd >= 0) native().closeFd(conn.eventFd);
    conn.eventFd = -1;
  }

  private sweepIdle(): void {
    const limit = this.options.idleTimeoutMs;
    const now = Date.now();
    for (const conn of this.live)
      if (now - conn.lastSeen > limit)
        this.evict(conn, 'idle', `no message from the consumer for ${now - conn.lastSeen} ms`);
  }

  // ---------------------------------------------------------------- data plane

  /**
   * Encodes the message once and copies it into every matching consumer's ring. Returns how
   * many consumers it reached. Never blocks: a consumer whose ring is full is evicted.
   * Throws SHM_ERR_TOO_LARGE if the encoded frame exceeds what a ring takes.
   */
  publish(message: PublishInput): number {
    const kind = message.kind;
    if (!Number.isInteger(kind) || kind < 0 || kind > 255)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `kind must be an integer in 0..255, got ${kind}`);
    if (!(message.payload instanceof Uint8Array))
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'payload must be a Uint8Array');
    const key = toBytes(message.key, 'key');
    const group = toBytes(message.group, 'group');
    // Nobody to deliver to: skip the encoding (and compression) entirely.
    if (this.live.length === 0) {
      this.c[Counter.PUBLISHED]++;
      this.c[Counter.UNMATCHED]++;
      return 0;
    }
    if (this.options.blobs !== null && message.payload.length >= this.options.blobThreshold) {
      const reached = this.publishBlob(this.options.blobs, kind, key, group, message.payload);
      if (reached >= 0) return reached;
    }
    const frame = this.encoder.encode(kind, key, group, message.payload);
    return this.dispatch(kind, key, group, frame);
  }

  /**
   * Appends the payload to the blob store once (one recipient per matching consumer) and
   * puts its handle into each matching ring, patching the recipient index per consumer.
   * Returns consumers reached, or -1 when the store cannot take it (the caller copies instead).
   */
  private publishBlob(
    store: BlobStore,
    kind: number,
    key: Uint8Array | null,
    group: Uint8Array | null,
    payload: Uint8Array,
  ): number {
    if (this.closed) throw new ShmStateError(ErrorCode.CLOSED, 'the sender is closed');
    const mode = this.modes[kind];
    const mk = this.key;
    mk.set(key, group);
    const matched = this.matched;
    matched.length = 0;
    for (const conn of this.live) if (conn.filter.matches(mode, kind, mk)) matched.push(conn);
    if (matched.length === 0) {
      this.c[Counter.PUBLISHED]++;
      this.c[Counter.UNMATCHED]++;
      return 0;
    }
    let handle: BlobHandle;
    try {
      handle = store.append(payload, { recipients: matched.length });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== ErrorCode.FULL && code !== ErrorCode.NO_SPACE && code !== ErrorCode.TOO_LARGE) throw err;
      this.c[Counter.BLOB_FALLBACKS]++;
      return -1;
    }
    this.c[Counter.PUBLISHED]++;
    this.c[Counter.BLOB_MESSAGES]++;
    handle.writeTo(this.blobRef, 0);
    const frame = this.encoder.encode(kind, key, group, this.blobRef, payload.length);
    const indexAt = frame.byteOffset + frame.length - 4;
    const dv = new DataView(frame.buffer);
    let delivered = 0;
    let full: Connection[] | null = null;
    for (let i = 0; i < matched.length; i++) {
      const conn = matched[i];
      dv.setUint32(indexAt, i, true);
      if (this.deliver(conn, frame)) delivered++;
      else {
        // It will never acknowledge: do it for it, so the blob can still be freed early.
        store.ack(handle, i);
        full ??= [];
        full.push(conn);
      }
    }
    matched.length = 0;
    return this.settle(full, delivered, frame.length);
  }

  /** Copies `frame` into the ring of `conn`; false when it is full (or the consumer is leaving). */
  private deliver(conn: Connection, frame: Uint8Array): boolean {
    let sent: boolean;
    try {
      sent = (conn.ring as ChannelSender).trySend(frame);
    } catch {
      // The consumer closed its end (SHM_ERR_PEER_CLOSED on a full ring): it is leaving.
      sent = false;
    }
    if (sent) {
      const stats = conn.stats;
      stats[0]++;
      stats[1] += frame.length;
    }
    return sent;
  }

  /** Evicts the consumers whose rings were full and counts what was dispatched. */
  private settle(full: Connection[] | null, delivered: number, frameLength: number): number {
    if (full !== null)
      for (const conn of full)
        this.evict(conn, 'ring-full', `the consumer's ring (${this.options.capacity} bytes) was full: it fell behind`);
    this.c[Counter.DISPATCHED] += delivered;
    this.c[Counter.DISPATCHED_BYTES] += delivered * frameLength;
    return delivered;
  }

  /**
   * Dispatches an already encoded frame (e.g. a Solana wire-v9 frame) under `kind`, `key`
   * and `group` for filtering. The frame is copied; the caller keeps it.
   */
  publishFrame(kind: number, key: Uint8Array | null, group: Uint8Array | null, frame: Uint8Array): number {
    return this.dispatch(kind, key, group, frame);
  }

  private dispatch(kind: number, key: Uint8Array | null, group: Uint8Array | null, frame: Uint8Array): number {
    if (this.closed) throw new ShmStateError(ErrorCode.CLOSED, 'the sender is closed');
    if (frame.length > this.maxFrame)
      throw new ShmFrameError(
        ErrorCode.TOO_LARGE,
        `encoded message of ${frame.length} bytes is larger than a consumer ring takes (${this.maxFrame}; raise capacity)`,
        { details: { length: frame.length, maxFrame: this.maxFrame } },
      );
    this.c[Counter.PUBLISHED]++;
    const mode = this.modes[kind];
    const mk = this.key;
    mk.set(key, group);
    const live = this.live;
    let delivered = 0;
    let full: Connection[] | null = null;
    for (let i = 0; i < live.length; i++) {
      const conn = live[i];
      if (!conn.filter.matches(mode, kind, mk)) continue;
      if (this.deliver(conn, frame)) delivered++;
      else {
        full ??= [];
        full.push(conn);
      }
    }
    if (delivered === 0) this.c[Counter.UNMATCHED]++;
    return this.settle(full, delivered, frame.length);
  }

  /**
   * Publishes everything `source` yields (an async iterable of PublishInput) or emits (an
   * EventEmitter's `event`, default 'message'). Returns a function that detaches it. Errors
   * of an async source end it and are emitted as 'sourceError'.
   */
  attach(source: AsyncIterable<PublishInput> | EventEmitter, event = 'message'): () => void {
    if (source instanceof EventEmitter) {
      const listener = (m: PublishInput) => {
        if (!this.closed) this.publish(m);
      };
      source.on(event, listener);
      return () => source.off(event, listener);
    }
    if (source === null || typeof (source as AsyncIterable<PublishInput>)[Symbol.asyncIterator] !== 'function')
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'attach() takes an async iterable or an EventEmitter');
    let detached = false;
    (async () => {
      try {
        for await (const m of source) {
          if (detached || this.closed) break;
          this.publish(m);
        }
      } catch (err) {
        this.emit('sourceError', err);
      }
    })();
    return () => {
      detached = true;
    };
  }

  private info(conn: Connection): ConsumerInfo {
    let ringFill = 0;
    try {
      ringFill = conn.ring?.backpressure() ?? 0;
    } catch {}
    return {
      id: conn.id,
      pid: conn.pid,
      uid: conn.uid,
      name: conn.name,
      ring: conn.ring?.name ?? '',
      delivered: conn.stats[0],
      bytes: conn.stats[1],
      ringFill,
      keys: conn.filter.keys.size,
      groups: conn.filter.groups.size,
      kinds: [...conn.filter.kinds],
      bloomBits: conn.filter.bloomBits,
      bloomRejects: conn.filter.bloomRejects,
    };
  }

  /** The consumers being served now. */
  consumers(): ConsumerInfo[] {
    return this.live.map((c) => this.info(c));
  }

  metrics(): SenderMetrics {
    const e = this.encoder;
    return {
      ...senderCounters(this.c),
      consumers: this.live.length,
      compressedFrames: e.compressedFrames,
      compressionRatio: e.compressedWireBytes === 0 ? 1 : e.compressedRawBytes / e.compressedWireBytes,
      perConsumer: this.consumers(),
    };
  }

  /** Tells every consumer the sender is closing, removes their rings and the socket file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer !== null) clearInterval(this.idleTimer);
    const closing = new ControlWriter(Tag.CLOSING).finish();
    for (const conn of [...this.connections]) {
      if (conn.state !== 'gone' && !conn.socket.destroyed) conn.socket.end(closing);
      this.release(conn);
      conn.socket.destroySoon();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.options.path);
    } catch {}
    this.c[Counter.CONSUMERS] = 0;
    // metrics() still answers after close: from a copy of the counters.
    this.c = Float64Array.from(this.c);
    this.registration.unlinkIfCurrent();
    this.registration.close();
  }
}

/** Name prefix of the consumers' ring segments. */
const RING_PREFIX = 'fanout-';

const EVICTED_COUNTER: Record<EvictReason, number> = {
  'ring-full': Counter.EVICTED_RING_FULL,
  idle: Counter.EVICTED_IDLE,
  protocol: Counter.EVICTED_PROTOCOL,
  'too-many-keys': Counter.EVICTED_TOO_MANY_KEYS,
};

/**
 * Creates the registration segment of the sender serving `path` (layout/sender.ts): its
 * socket path for `shmbus clean` and tools, and its counters. A dead sender's registration of
 * the same path is replaced.
 */
function register(path: string, options: SenderOptions): Segment {
  const absolute = resolve(path);
  const bytes = new TextEncoder().encode(absolute);
  if (bytes.length > SOCKET_PATH_ROOM - 1)
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `the socket's absolute path ${absolute} is ${bytes.length} bytes (at most ${SOCKET_PATH_ROOM - 1})`,
    );
  const name = senderSegmentName(createHash('sha256').update(absolute).digest('hex'));
  const slots = tableSlotsFor(options.maxConsumers ?? 16);
  return Segment.create(
    name,
    Kind.SENDER,
    senderSegmentLength(slots),
    SENDER_PARAMS_LENGTH,
    ({ dv, u8 }) => {
      dv.setUint32(SENDER_PROTOCOL_OFFSET, SENDER_PROTOCOL_VERSION, true);
      dv.setUint32(SOCKET_PATH_LENGTH_OFFSET, bytes.length, true);
      dv.setUint32(SOCKET_MODE_OFFSET, options.socketMode ?? 0o600, true);
      dv.setUint32(MAX_CONSUMERS_OFFSET, options.maxConsumers ?? 16, true);
      dv.setUint32(RING_CAPACITY_OFFSET, options.capacity ?? 32 * 1024 * 1024, true);
      dv.setUint32(TABLE_SLOTS_OFFSET, slots, true);
      dv.setUint32(TABLE_OFFSET_OFFSET, CONSUMER_TABLE_OFFSET, true);
      u8.set(bytes, SOCKET_PATH_OFFSET);
      for (const [kind, mode] of Object.entries(options.kinds ?? {})) {
        const k = Number(kind);
        u8[KIND_MODES_OFFSET + (k >> 2)] |= KIND_MODE_CODES.indexOf(mode) << (2 * (k & 3));
      }
    },
    { dir: options.dir, mode: options.socketMode ?? 0o600 },
  );
}

function checkOptions(o: SenderOptions): void {
  const bad = (message: string) => new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, message);
  if (typeof o?.path !== 'string' || o.path.length === 0) throw bad('path (the control socket) is required');
  if (Buffer.byteLength(o.path) > SOCKET_PATH_MAX)
    throw bad(
      `socket path of ${Buffer.byteLength(o.path)} bytes is longer than the ${SOCKET_PATH_MAX} unix sockets allow`,
    );
  const cap = o.capacity;
  if (
    cap !== undefined &&
    (!Number.isInteger(cap) || cap < MIN_CAPACITY || cap > MAX_CAPACITY || (cap & (cap - 1)) !== 0)
  )
    throw bad(`capacity must be a power of two in ${MIN_CAPACITY}..${MAX_CAPACITY}, got ${cap}`);
  for (const key of ['maxConsumers', 'maxKeysPerConsumer', 'maxControlFrame'] as const) {
    const v = o[key];
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw bad(`${key} must be an integer >= 1, got ${v}`);
  }
  for (const key of ['idleTimeoutMs', 'handshakeTimeoutMs'] as const) {
    const v = o[key];
    if (v !== undefined && !(v >= 0)) throw bad(`${key} must be a number >= 0, got ${v}`);
  }
  for (const [kind, mode] of Object.entries(o.kinds ?? {})) {
    const k = Number(kind);
    if (!Number.isInteger(k) || k < 0 || k > 255) throw bad(`kinds: ${kind} is not a kind in 0..255`);
    if (mode !== 'filtered' && mode !== 'opt-in' && mode !== 'always')
      throw bad(`kinds[${kind}] must be 'filtered', 'opt-in' or 'always', got ${String(mode)}`);
  }
  if (o.allowUids !== undefined && (!Array.isArray(o.allowUids) || !o.allowUids.every((u) => Number.isInteger(u))))
    throw bad('allowUids must be an array of integer uids');
  if (o.blobs !== undefined && !(o.blobs instanceof BlobStore))
    throw bad('blobs must be a BlobStore (BlobStore.create)');
  const t = o.blobThreshold;
  if (t !== undefined && (!Number.isInteger(t) || t < 1)) throw bad(`blobThreshold must be an integer >= 1, got ${t}`);
}

/** Removes a socket file nobody listens on; refuses (SHM_ERR_EXISTS) one that a live sender serves. */
async function removeStaleSocket(path: string): Promise<void> {
  const st = native().stat(path);
  if (st === null) return;
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive)
    throw new ShmSegmentError(ErrorCode.EXISTS, `a sender is already listening on ${path}`, { details: { path } });
  try {
    unlinkSync(path);
  } catch {}
}
