/**
 * The sender process of the `control-socket` fuzz target (control-socket.ts forks it with
 * an IPC channel and --expose-gc): a real fan-out Sender on `path`, rings in `dir`.
 *
 * ```sh
 * node --expose-gc dist/test/fuzz/sender-host.js /dev/shm/shmbus-fuzz-x/sender.sock /dev/shm/shmbus-fuzz-x
 * ```
 * IPC requests (`{ id, op }`): `count` (open fds, live consumers, ring files, the longest
 * event-loop stall since the last count: cheap), `stats` (after a full GC: rss, arrayBuffers, heapUsed,
 * external, open fds, live consumers, ring files in `dir`, protocol errors seen, and the
 * non-ShmError ones in full), `publish` (`kind`, base64 `payload`: returns how many
 * consumers it reached), `close`. It sends `{ type: 'ready' }` once listening, and
 * `{ type: 'crash', error }` before exiting 70 on an uncaught exception or rejection.
 */
import { readdirSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Sender } from '../../src/fanout/sender.js';
import { isTyped } from './harness.js';

const [path, dir] = process.argv.slice(2);

function send(message: Record<string, unknown>): void {
  process.send?.(message);
}

function describe(err: unknown): string {
  if (err instanceof Error)
    return `${err.constructor.name}: ${err.message}\n${err.stack?.split('\n').slice(1, 7).join('\n')}`;
  return String(err);
}

const crash = (kind: string) => (err: unknown) => {
  send({ type: 'crash', error: `${kind}: ${describe(err)}` });
  setTimeout(() => process.exit(70), 50);
};
process.on('uncaughtException', crash('uncaughtException'));
process.on('unhandledRejection', crash('unhandledRejection'));

const sender = await Sender.listen({
  path,
  dir,
  capacity: 1 << 16,
  kinds: { 9: 'always' },
  maxConsumers: 256,
  handshakeTimeoutMs: 1000,
  maxKeysPerConsumer: 10_000,
});

// How long the sender's event loop was blocked at worst since the last `count` (a stall stops every consumer).
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

let protocolErrors = 0;
let consumers = 0;
const untyped: string[] = [];
sender.on('protocolError', (e: { error: unknown }) => {
  protocolErrors++;
  if (!isTyped(e.error) && untyped.length < 20) untyped.push(describe(e.error));
});
sender.on('consumer', () => {
  consumers++;
});

function ringFiles(): number {
  try {
    return readdirSync(dir).filter((f) => f.startsWith('shmbus.fanout-')).length;
  } catch {
    return -1;
  }
}

process.on('message', async (m: { id: number; op: string; kind?: number; payload?: string }) => {
  switch (m.op) {
    case 'count':
      // Cheap: no GC (polled while waiting for the sender to release gone clients).
      send({
        id: m.id,
        fds: readdirSync('/proc/self/fd').length,
        consumers: sender.consumerCount,
        ringFiles: ringFiles(),
        untyped: untyped.length,
        maxDelayMs: Math.round(loopDelay.max / 1e6),
      });
      loopDelay.reset();
      return;
    case 'stats': {
      (globalThis as { gc?: () => void }).gc?.();
      const mem = process.memoryUsage();
      const metrics = sender.metrics();
      send({
        id: m.id,
        rss: mem.rss,
        arrayBuffers: mem.arrayBuffers,
        heapUsed: mem.heapUsed,
        external: mem.external,
        fds: readdirSync('/proc/self/fd').length,
        consumers: sender.consumerCount,
        ringFiles: ringFiles(),
        handshakes: consumers,
        refused: metrics.refused,
        evictions: metrics.evictions,
        protocolErrors,
        untyped: untyped.splice(0),
      });
      return;
    }
    case 'publish': {
      let delivered = -1;
      let error: string | undefined;
      try {
        delivered = sender.publish({ kind: m.kind ?? 9, payload: Buffer.from(m.payload ?? '', 'base64') });
      } catch (err) {
        error = describe(err);
      }
      send({ id: m.id, delivered, error });
      return;
    }
    case 'close':
      await sender.close();
      send({ id: m.id });
      setTimeout(() => process.exit(0), 20);
      return;
  }
});

send({ type: 'ready', pid: process.pid });
