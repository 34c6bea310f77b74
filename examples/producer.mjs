// Producer: creates the channel "quickstart" and sends 10 messages, then closes.
// Run from the repository root: node examples/producer.mjs   (then node examples/consumer.mjs)
import { Channel } from 'shmbus';

const tx = Channel.create('quickstart', { capacity: 1 << 16 });
const encoder = new TextEncoder();
for (let i = 0; i < 10; i++) await tx.send(encoder.encode(`message ${i}`), { timeoutMs: 5000 });
tx.close(); // the consumer receives everything, then end-of-stream
console.log('sent 10 messages');
