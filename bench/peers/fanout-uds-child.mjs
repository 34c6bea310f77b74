/**
 * A unix-socket fan-out consumer process of the fanout.uds.* cases (bench/cases/fanout.mjs):
 * the same stream as fanout.shmbus.*, over one `net` stream socket per consumer.
 *   node fanout-uds-child.mjs <socket path> <index> <warm> <latency 0|1>
 * Connects, sends its subscription (the keys of quarter index % 4; the sender filters), prints
 * {ready}, then reads length-prefixed frames and parses each one with shmbus's decodeMessage()
 * (the frame bytes are the same as in a shmbus ring) until the end-of-stream message, and
 * prints its Tally (fanout-workload.mjs).
 *
 * Wire, both directions little-endian:
 *   consumer -> sender, once: u32 bodyLength, u32 keyCount, keyCount x (u16 length, key bytes)
 *   sender -> consumer:       u32 frameLength, generic fan-out frame (src/layout/fanout.ts)
 */
import { once } from 'node:events';
import net from 'node:net';
import { decodeMessage } from '../../dist/src/index.js';
import { KIND_END, keysOfQuarter, quarterOfConsumer, Tally } from './fanout-workload.mjs';

const LENGTH_PREFIX = 4;
const [path, indexArg, warmArg, latencyArg] = process.argv.slice(2);
const index = Number(indexArg);
const print = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);

/** The subscription frame: every key of this consumer's quarter. */
function subscription(keyList) {
  const body = 4 + keyList.reduce((n, k) => n + 2 + k.length, 0);
  const frame = Buffer.allocUnsafe(LENGTH_PREFIX + body);
  frame.writeUInt32LE(body, 0);
  frame.writeUInt32LE(keyList.length, 4);
  let at = 8;
  for (const k of keyList) {
    frame.writeUInt16LE(k.length, at);
    frame.set(k, at + 2);
    at += 2 + k.length;
  }
  return frame;
}

const sock = net.createConnection(path);
await once(sock, 'connect');
sock.write(subscription(keysOfQuarter(quarterOfConsumer(index))));
print({ ready: true });

const tally = new Tally(Number(warmArg), latencyArg === '1');
let ended = false;
/** Returns false at the end-of-stream message. */
function onFrame(frame) {
  const m = decodeMessage(frame);
  if (m.kind === KIND_END) return false;
  tally.onMessage(m);
  return true;
}
function finish() {
  ended = true;
  print(tally.report(index));
  sock.destroy();
}

// A frame that straddles two reads is assembled in `carry` (one copy of that frame only);
// every other frame is parsed in place in the chunk it arrived in.
let carry = Buffer.allocUnsafe(64 * 1024);
let carried = 0;
sock.on('data', (chunk) => {
  if (ended) return;
  let at = 0;
  if (carried > 0) {
    if (carried < LENGTH_PREFIX) {
      const n = Math.min(LENGTH_PREFIX - carried, chunk.length);
      chunk.copy(carry, carried, 0, n);
      carried += n;
      at = n;
      if (carried < LENGTH_PREFIX) return;
    }
    const total = LENGTH_PREFIX + carry.readUInt32LE(0);
    if (total > carry.length) {
      const bigger = Buffer.allocUnsafe(total);
      carry.copy(bigger, 0, 0, carried);
      carry = bigger;
    }
    const n = Math.min(total - carried, chunk.length - at);
    chunk.copy(carry, carried, at, at + n);
    carried += n;
    at += n;
    if (carried < total) return;
    carried = 0;
    if (!onFrame(carry.subarray(LENGTH_PREFIX, total))) return finish();
  }
  while (chunk.length - at >= LENGTH_PREFIX) {
    const length = chunk.readUInt32LE(at);
    if (chunk.length - at - LENGTH_PREFIX < length) break;
    const start = at + LENGTH_PREFIX;
    at = start + length;
    if (!onFrame(chunk.subarray(start, at))) return finish();
  }
  if (at < chunk.length) {
    if (chunk.length - at > carry.length) carry = Buffer.allocUnsafe(chunk.length - at);
    chunk.copy(carry, 0, at);
    carried = chunk.length - at;
  }
});
sock.on('close', () => {
  if (!ended) {
    process.stderr.write('fanout-uds-child: the sender closed the socket before the end-of-stream message\n');
    process.exit(1);
  }
});
