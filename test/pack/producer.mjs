// Packaging check, cross-process (scripts/pack-test.sh): this ES module process creates channel
// argv[2] in $SHMBUS_DIR and sends 10 messages; consumer.cjs, a CommonJS process, receives them.
// Both load the installed package, each through its own build.
import { Channel } from 'shmbus';

const tx = Channel.create(process.argv[2], { capacity: 1 << 16 });
const encoder = new TextEncoder();
for (let i = 0; i < 10; i++) await tx.send(encoder.encode(`message ${i}`), { timeoutMs: 10_000 });
tx.close(); // the consumer receives everything, then end-of-stream
console.log('sent 10 messages');
