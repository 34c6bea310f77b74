// Fan-out: one sender, any number of consumers, each with its own ring and filter.
import { once } from 'node:events';
import { Sender } from 'shmbus';

const sender = await Sender.listen({
  path: '/tmp/shmbus-example.sock',
  capacity: 1 << 20, // ring bytes per consumer
  kinds: { 9: 'always' }, // kind 9 (heartbeats) reaches every consumer; other kinds are filtered
});
await once(sender, 'subscribe'); // wait for the example consumer to say what it wants
const encoder = new TextEncoder();
for (let i = 0; i < 10; i++) {
  sender.publish({ kind: 1, key: 'BTC-USD', payload: encoder.encode(`BTC ${60_000 + i}`) });
  sender.publish({ kind: 1, key: 'ETH-USD', payload: encoder.encode(`ETH ${3_000 + i}`) }); // not subscribed
}
sender.publish({ kind: 9, payload: encoder.encode('heartbeat') });
console.log(`published 21 messages, delivered ${sender.metrics().dispatched}`);
await sender.close(); // consumers receive what is in their ring, then the stream ends
