import { setTimeout as sleep } from 'node:timers/promises';
import { Consumer } from 'shmbus';

let consumer;
for (let attempt = 0; !consumer; attempt++) {
  try {
    consumer = await Consumer.connect('/tmp/shmbus-example.sock', { subscribe: { keys: ['BTC-USD'] } });
  } catch (err) {
    if (attempt === 100) throw err; // the sender did not come up within ~10 s
    await sleep(100);
  }
}
const decoder = new TextDecoder();
for await (const m of consumer) console.log(`kind ${m.kind}:`, decoder.decode(m.payload)); // payload: a view into the ring
await consumer.close();
