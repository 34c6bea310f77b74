/**
 * shmbus/solana: the Solana account / transaction / slot stream over fan-out streaming,
 * frame-compatible with the reference design (wire version 9, src/solana/wire.ts).
 *
 * ```ts
 * import { setupSender, setupShmConsumer } from 'shmbus/solana';
 * const sender = await setupSender({ path: '/tmp/solana.sock' }, { accounts: geyserAccounts });
 * sender.publishSlot({ slot: 250_000_000n });
 *
 * const consumer = await setupShmConsumer('/tmp/solana.sock', { reconnect: true });
 * await consumer.subscribe(['TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA'], []);  // pubkeys, owners
 * await consumer.subscribeTransactions();                                       // opt-in, sticky
 * for await (const a of consumer.accountUpdates()) console.log(a.update.lamports);
 * ```
 * Delivery rules (as the reference): an account update reaches a consumer that subscribed its
 * pubkey OR its owner; transactions only after subscribeTransactions(); slot updates always.
 * Account data >= 500 KiB that compresses travels as an LZ4 block and is inflated here.
 *
 * The consumer copies each update out of its ring into three bounded queues (accounts,
 * transactions, slots; `queueCapacity` each, default 2048, as the reference). Overflow
 * policy: the OLDEST queued update of that stream is dropped and counted
 * (`metrics().dropped`), so a slow reader sees the newest state and never stalls the ring.
 * For zero-copy reading instead, use `Consumer.connect(path, { decode: decodeSolanaFrame })`.
 */
import { EventEmitter } from 'node:events';
import { Histogram, type HistogramSnapshot } from '../core/histogram.js';
import { ErrorCode, ShmArgumentError } from '../errors.js';
import { decompressBlock, maybeCompress } from '../fanout/compress.js';
import { Consumer, type ConsumerMetrics, type ReconnectOptions } from '../fanout/consumer.js';
import { type PublishInput, Sender, type SenderMetrics } from '../fanout/sender.js';
import { toPubkey } from './base58.js';
import {
  type AccountUpdateInput,
  type DecodedAccountUpdate,
  type DecodedFrame,
  type DecodedSlotUpdate,
  type DecodedTransactionUpdate,
  decodeFrame,
  encodeAccountUpdate,
  encodeSlotUpdate,
  encodeTransactionUpdate,
  type SlotUpdateInput,
  TAG_ACCOUNT_UPDATE,
  TAG_SLOT_UPDATE,
  TAG_TRANSACTION_UPDATE,
  type TransactionUpdateInput,
} from './wire.js';

export * from './base58.js';
export * from './wire.js';

/** Fan-out kinds: the wire tags. Accounts are filtered (pubkey = key, owner = group). */
export const KIND_ACCOUNT = TAG_ACCOUNT_UPDATE;
export const KIND_TRANSACTION = TAG_TRANSACTION_UPDATE;
export const KIND_SLOT = TAG_SLOT_UPDATE;

/** Decodes any Solana data frame, inflating LZ4 account data (for zero-copy Consumer use). */
export function decodeSolanaFrame(frame: Uint8Array): DecodedFrame {
  return decodeFrame(frame, { decompress: decompressBlock });
}

export interface SolanaSenderConfig {
  /** The unix control socket. */
  path: string;
  /** Ring bytes per consumer (power of two; default 64 MiB, as the reference: room for 10 MiB updates). */
  capacity?: number;
  /** Default 10, as the reference. */
  maxConsumers?: number;
  idleTimeoutMs?: number;
  allowUids?: readonly number[];
  socketMode?: number;
  dir?: string;
  /** LZ4 for account data >= 500 KiB (default true). */
  compress?: boolean;
}

/** Where setupSender() takes updates from: an async iterable, or an EventEmitter emitting 'message'. */
export type Source<T> = AsyncIterable<T> | EventEmitter;

/** Streams to publish from (async iterables, or EventEmitters emitting 'message'). */
export interface SolanaSources {
  accounts?: Source<AccountUpdateInput>;
  transactions?: Source<TransactionUpdateInput>;
  slots?: Source<SlotUpdateInput>;
}

/** Sender-side counters, shareable (pass one instance to several senders or read it live). */
export class SolanaSenderMetrics {
  /** Updates handed to dispatch. */
  dispatches = 0;
  /** Copies into consumer rings. */
  shmSends = 0;
  /** Consumers evicted because their ring was full. */
  ringFull = 0;
  /** Time to encode and dispatch one update, ns. */
  readonly dispatchNs = new Histogram();
}

export class SolanaSender {
  readonly metrics: SolanaSenderMetrics;
  private readonly detachers: (() => void)[] = [];
  private readonly compress: boolean;

  constructor(
    readonly sender: Sender,
    config: SolanaSenderConfig,
    metrics: SolanaSenderMetrics,
  ) {
    this.metrics = metrics;
    this.compress = config.compress ?? true;
    sender.on('evicted', (info: { reason: string }) => {
      if (info.reason === 'ring-full') metrics.ringFull++;
    });
  }

  private timed(fn: () => number): number {
    const t0 = performance.now();
    const n = fn();
    this.metrics.dispatches++;
    this.metrics.shmSends += n;
    this.metrics.dispatchNs.record((performance.now() - t0) * 1e6);
    return n;
  }

  /** Publishes an account update to consumers that subscribed its pubkey or owner; returns how many. */
  publishAccount(u: AccountUpdateInput): number {
    return this.timed(() => {
      if (this.sender.consumerCount === 0) return 0;
      const pubkey = toPubkey(u.pubkey);
      const owner = toPubkey(u.owner);
      const frame = encodeAccountUpdate(u, this.compress ? { compress: maybeCompress } : undefined);
      return this.sender.publishFrame(KIND_ACCOUNT, pubkey, owner, frame);
    });
  }

  /** Publishes a transaction to consumers that opted in to transactions. */
  publishTransaction(t: TransactionUpdateInput): number {
    return this.timed(() => {
      if (this.sender.consumerCount === 0) return 0;
      return this.sender.publishFrame(KIND_TRANSACTION, null, null, encodeTransactionUpdate(t));
    });
  }

  /** Publishes a slot update to every consumer. */
  publishSlot(s: SlotUpdateInput): number {
    return this.timed(() => {
      if (this.sender.consumerCount === 0) return 0;
      return this.sender.publishFrame(KIND_SLOT, null, null, encodeSlotUpdate(s));
    });
  }

  attach(sources: SolanaSources): void {
    const wrap = <T>(source: Source<T>, publish: (x: T) => number) => {
      if (source instanceof EventEmitter) {
        const listener = (x: T) => publish(x);
        source.on('message', listener);
        this.detachers.push(() => source.off('message', listener));
        return;
      }
      let stop = false;
      this.detachers.push(() => {
        stop = true;
      });
      (async () => {
        try {
          for await (const x of source) {
            if (stop) break;
            publish(x);
          }
        } catch (err) {
          this.sender.emit('sourceError', err);
        }
      })();
    };
    if (sources.accounts) wrap(sources.accounts, (u) => this.publishAccount(u));
    if (sources.transactions) wrap(sources.transactions, (t) => this.publishTransaction(t));
    if (sources.slots) wrap(sources.slots, (s) => this.publishSlot(s));
  }

  senderMetrics(): SenderMetrics {
    return this.sender.metrics();
  }

  async close(): Promise<void> {
    for (const d of this.detachers.splice(0)) d();
    await this.sender.close();
  }
}

/** Binds the control socket, attaches the sources, and returns the running sender. */
export async function setupSender(
  config: SolanaSenderConfig,
  sources: SolanaSources = {},
  metrics: SolanaSenderMetrics = new SolanaSenderMetrics(),
): Promise<SolanaSender> {
  const sender = await Sender.listen({
    path: config.path,
    capacity: config.capacity ?? 64 * 1024 * 1024,
    maxConsumers: config.maxConsumers ?? 10,
    idleTimeoutMs: config.idleTimeoutMs,
    allowUids: config.allowUids,
    socketMode: config.socketMode,
    dir: config.dir,
    // The Solana encoder compresses account data itself (the reference's rule); the generic
    // encoder never sees these frames.
    compress: false,
    kinds: { [KIND_ACCOUNT]: 'filtered', [KIND_TRANSACTION]: 'opt-in', [KIND_SLOT]: 'always' },
  });
  const s = new SolanaSender(sender, config, metrics);
  s.attach(sources);
  return s;
}

/** A bounded FIFO that drops its oldest entry when full (counted). */
export class UpdateQueue<T> {
  private readonly items: (T | undefined)[];
  private head = 0;
  private count = 0;
  dropped = 0;
  private waiter: (() => void) | null = null;

  constructor(readonly capacity: number) {
    this.items = new Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count === this.capacity) {
      this.items[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.count--;
      this.dropped++;
    }
    this.items[(this.head + this.count) % this.capacity] = item;
    this.count++;
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    return item;
  }

  /** Resolves when something is pushed (or wake() is called). One waiter at a time. */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      const previous = this.waiter;
      this.waiter = () => {
        previous?.();
        resolve();
      };
    });
  }

  wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}

export interface ShmConsumerOptions {
  name?: string;
  reconnect?: boolean | ReconnectOptions;
  /** Entries per typed queue (default 2048, as the reference). */
  queueCapacity?: number;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
}

export interface SolanaConsumerMetrics extends ConsumerMetrics {
  accounts: number;
  transactions: number;
  slots: number;
  /** Updates dropped from full queues (oldest first). */
  dropped: { accounts: number; transactions: number; slots: number };
  /** Sender stamp to enqueue here, ns (the reference's `full_read`). */
  fullRead: HistogramSnapshot;
}

/** Copies a decoded update's views so it outlives the ring slot. */
function detach(d: DecodedFrame): DecodedFrame {
  switch (d.tag) {
    case TAG_ACCOUNT_UPDATE: {
      const u = d.update;
      const data = d.compressed ? u.data : u.data.slice();
      return { ...d, update: { ...u, pubkey: u.pubkey.slice(), owner: u.owner.slice(), data } };
    }
    case TAG_TRANSACTION_UPDATE: {
      const t = d.update;
      return { ...d, update: { ...t, signature: t.signature.slice(), payload: t.payload.slice() } };
    }
    default:
      return d;
  }
}

export class SolanaConsumer extends EventEmitter {
  readonly accounts: UpdateQueue<DecodedAccountUpdate>;
  readonly transactions: UpdateQueue<DecodedTransactionUpdate>;
  readonly slots: UpdateQueue<DecodedSlotUpdate>;
  private readonly fullRead = new Histogram();
  private readonly counts = { accounts: 0, transactions: 0, slots: 0 };
  private ended: Error | 'closed' | null = null;

  constructor(
    readonly consumer: Consumer<DecodedFrame>,
    queueCapacity: number,
  ) {
    super();
    this.accounts = new UpdateQueue(queueCapacity);
    this.transactions = new UpdateQueue(queueCapacity);
    this.slots = new UpdateQueue(queueCapacity);
    for (const event of ['evicted', 'disconnected', 'reconnected', 'rejected'])
      consumer.on(event, (x) => this.emit(event, x));
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const d = await this.consumer.next();
        if (d === null) break;
        const copy = detach(d);
        // ns from the sender's stamp to now, in doubles (the stamp's BigInt already exists;
        // no new BigInt per update); ~0.25 us resolution at today's epoch.
        this.fullRead.record((performance.timeOrigin + performance.now()) * 1e6 - Number(d.senderNanos));
        if (copy.tag === TAG_ACCOUNT_UPDATE) {
          this.counts.accounts++;
          this.accounts.push(copy);
        } else if (copy.tag === TAG_TRANSACTION_UPDATE) {
          this.counts.transactions++;
          this.transactions.push(copy);
        } else {
          this.counts.slots++;
          this.slots.push(copy);
        }
      }
      this.ended = 'closed';
    } catch (err) {
      this.ended = err as Error;
    }
    this.accounts.wake();
    this.transactions.wake();
    this.slots.wake();
  }

  /** Adds pubkeys and owners (base58 strings or 32-byte arrays); resolves when the sender applied it. */
  subscribe(pubkeys: Iterable<string | Uint8Array>, owners: Iterable<string | Uint8Array> = []): Promise<void> {
    return this.consumer.subscribe({ keys: [...pubkeys].map(toPubkey), groups: [...owners].map(toPubkey) });
  }

  unsubscribe(pubkeys: Iterable<string | Uint8Array>, owners: Iterable<string | Uint8Array> = []): Promise<void> {
    return this.consumer.unsubscribe({ keys: [...pubkeys].map(toPubkey), groups: [...owners].map(toPubkey) });
  }

  /** Opts in to transactions (sticky until unsubscribeTransactions()). */
  subscribeTransactions(): Promise<void> {
    return this.consumer.subscribe({ kinds: [KIND_TRANSACTION] });
  }

  unsubscribeTransactions(): Promise<void> {
    return this.consumer.unsubscribe({ kinds: [KIND_TRANSACTION] });
  }

  tryNextAccount(): DecodedAccountUpdate | undefined {
    return this.accounts.shift();
  }

  tryNextTransaction(): DecodedTransactionUpdate | undefined {
    return this.transactions.shift();
  }

  tryNextSlot(): DecodedSlotUpdate | undefined {
    return this.slots.shift();
  }

  private async *stream<T>(queue: UpdateQueue<T>): AsyncGenerator<T> {
    for (;;) {
      const item = queue.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.ended === 'closed') return;
      if (this.ended !== null) throw this.ended;
      await queue.wait();
    }
  }

  /** Account updates as they arrive (copies). Ends when the consumer closes; throws on eviction/disconnect. */
  accountUpdates(): AsyncGenerator<DecodedAccountUpdate> {
    return this.stream(this.accounts);
  }

  transactionUpdates(): AsyncGenerator<DecodedTransactionUpdate> {
    return this.stream(this.transactions);
  }

  slotUpdates(): AsyncGenerator<DecodedSlotUpdate> {
    return this.stream(this.slots);
  }

  metrics(): SolanaConsumerMetrics {
    return {
      ...this.consumer.metrics(),
      ...this.counts,
      dropped: { accounts: this.accounts.dropped, transactions: this.transactions.dropped, slots: this.slots.dropped },
      fullRead: this.fullRead.snapshot(),
    };
  }

  async close(): Promise<void> {
    await this.consumer.close();
  }
}

/** Connects to a Solana sender's socket; updates flow into the typed queues at once (slots always on). */
export async function setupShmConsumer(socketPath: string, options: ShmConsumerOptions = {}): Promise<SolanaConsumer> {
  const queueCapacity = options.queueCapacity ?? 2048;
  if (!Number.isInteger(queueCapacity) || queueCapacity < 1)
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `queueCapacity must be an integer >= 1, got ${queueCapacity}`,
    );
  const consumer = await Consumer.connect<DecodedFrame>(socketPath, {
    name: options.name,
    reconnect: options.reconnect,
    connectTimeoutMs: options.connectTimeoutMs,
    pingIntervalMs: options.pingIntervalMs,
    decode: decodeSolanaFrame,
  });
  return new SolanaConsumer(consumer, queueCapacity);
}

export type { PublishInput };
