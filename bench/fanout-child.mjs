/**
 * A shmbus fan-out consumer process of the fanout.shmbus.* cases (bench/cases/fanout.mjs).
 *   node fanout-child.mjs <socket path> <index> <warm> <latency 0|1> <wait>
 * Connects to the Sender, subscribes to the keys of quarter index % 4, prints {ready}, then
 * drains its ring (poll() while frames are there, await next() when it is empty: the consumer
 * parks per `wait`) until the end-of-stream message, and prints its Tally (peers/fanout-workload.mjs).
 */
import { Consumer } from '../dist/src/index.js';
import { KIND_END, keysOfQuarter, quarterOfConsumer, Tally } from './peers/fanout-workload.mjs';

const [path, indexArg, warmArg, latencyArg, wait] = process.argv.slice(2);
const index = Number(indexArg);
const print = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);

const consumer = await Consumer.connect(path, {
  name: `bench consumer ${index}`,
  wait,
  subscribe: { keys: keysOfQuarter(quarterOfConsumer(index)) },
});
print({ ready: true, consumerId: consumer.consumerId });
const tally = new Tally(Number(warmArg), latencyArg === '1');
for (;;) {
  const m = consumer.poll() ?? (await consumer.next());
  if (m === null) throw new Error('the stream ended before the end-of-stream message');
  if (m.kind === KIND_END) break;
  tally.onMessage(m);
}
const { latency } = consumer.metrics();
print({ ...tally.report(index), library: { p50: latency.p50, p99: latency.p99, count: latency.count } });
await consumer.close();
