/**
 * The unix-socket side of `shmbus demo`'s comparison: the same Solana v9 frames to the same
 * consumer processes over one `net` socket each, written the way one would without shmbus:
 * the sender filters (each consumer's pubkey / owner Sets and transaction opt-in, the rule of
 * shmbus/solana), encodes an update once, and writes it with a u32 little-endian length prefix
 * to every matching socket, corked per batch. Consumers identify themselves with their index
 * (a u32) when they connect (src/cli/demo-consumer.ts).
 *
 * ```ts
 * const s = await UdsSender.listen(path, filters.map(filterSets));
 * // ...consumers connect...
 * await s.connected(timeoutMs);
 * s.begin(); s.publish(update); s.commit();
 * s.backlog();          // the largest number of bytes Node still holds for one socket
 * await s.close();      // sockets destroyed, socket file removed
 * ```
 * One thread (the demo's event loop). publish() allocates the record it writes.
 */
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { encodeAccountUpdate, encodeSlotUpdate, encodeTransactionUpdate } from '../solana/index.js';
import { type DemoUpdate, type FilterSets, matches } from './demo-workload.js';

const LENGTH_PREFIX = 4;

export class UdsSender {
  /** Socket of consumer i, once it said hello. */
  private readonly sockets: (net.Socket | null)[];
  /** Records written to consumer i. */
  readonly written: number[];
  private readonly all = new Set<net.Socket>();
  private waiting: (() => void) | null = null;

  private constructor(
    private readonly server: net.Server,
    readonly path: string,
    private readonly filters: FilterSets[],
  ) {
    this.sockets = filters.map(() => null);
    this.written = filters.map(() => 0);
    server.on('connection', (socket) => this.accept(socket));
  }

  static async listen(path: string, filters: FilterSets[]): Promise<UdsSender> {
    const server = net.createServer();
    server.listen(path);
    await once(server, 'listening');
    return new UdsSender(server, path, filters);
  }

  private accept(socket: net.Socket): void {
    this.all.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => this.all.delete(socket));
    let hello = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      hello = Buffer.concat([hello, chunk]);
      if (hello.length < LENGTH_PREFIX) return;
      socket.off('data', onData);
      const index = hello.readUInt32LE(0);
      if (index < this.sockets.length && this.sockets[index] === null) this.sockets[index] = socket;
      else socket.destroy();
      if (this.sockets.every((s) => s !== null)) this.waiting?.();
    };
    socket.on('data', onData);
  }

  /** Resolves once every consumer is connected and identified. */
  connected(timeoutMs: number): Promise<void> {
    if (this.sockets.every((s) => s !== null)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = this.sockets.flatMap((s, i) => (s === null ? [i] : []));
        reject(new Error(`unix-socket consumers ${missing.join(', ')} did not connect within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  begin(): void {
    for (const s of this.sockets) s?.cork();
  }

  /** Encodes the update once and writes it to every consumer whose filter matches; returns how many. */
  publish(u: DemoUpdate): number {
    const frame =
      u.type === 'account'
        ? encodeAccountUpdate(u.input)
        : u.type === 'transaction'
          ? encodeTransactionUpdate(u.input)
          : encodeSlotUpdate(u.input);
    const record = Buffer.allocUnsafe(LENGTH_PREFIX + frame.length);
    record.writeUInt32LE(frame.length, 0);
    record.set(frame, LENGTH_PREFIX);
    let reached = 0;
    for (let i = 0; i < this.sockets.length; i++) {
      const s = this.sockets[i];
      if (s === null || !matches(this.filters[i], u)) continue;
      s.write(record);
      this.written[i]++;
      reached++;
    }
    return reached;
  }

  commit(): void {
    for (const s of this.sockets) s?.uncork();
  }

  backlog(): number {
    let bytes = 0;
    for (const s of this.sockets) if (s !== null && s.writableLength > bytes) bytes = s.writableLength;
    return bytes;
  }

  async close(): Promise<void> {
    for (const s of this.all) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}
