/**
 * A fan-out consumer process of the blob.fanout.* cases (bench/cases/blob.mjs).
 *   node blob-child.mjs <socket path> <round>
 * Subscribes to key 'k', reads every message in place (first and last byte; a blob payload is
 * a view into the store, released and acknowledged when the next message is taken), prints
 * {got: n} after every `round` messages and {done: n} at the end-of-stream message (kind 2).
 */
import { Consumer } from '../dist/src/index.js';

const [path, roundArg] = process.argv.slice(2);
const round = Number(roundArg);
const print = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const consumer = await Consumer.connect(path, { subscribe: { keys: ['k'] } });
print({ ready: true });
let got = 0;
let touched = 0;
for (;;) {
  const m = consumer.poll() ?? (await consumer.next());
  if (m === null) throw new Error('the stream ended before the end-of-stream message');
  if (m.kind === 2) break;
  touched += m.payload[0] + m.payload[m.payload.length - 1];
  got++;
  if (got % round === 0) print({ got });
}
print({ done: got, touched });
await consumer.close();
