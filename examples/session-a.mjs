// Session: large messages without copies. Peer A creates the session and sends.
import { Session } from 'shmbus';

const a = Session.create('example-frames', { slotSize: 1 << 20, slotCount: 8 });
for (let i = 0; i < 3; i++) {
  const frame = await a.alloc(1 << 20, { timeoutMs: 10_000 }); // a 1 MiB view inside the shared slab
  frame.fill(i + 1); // write the payload in place
  await a.send(frame, { channel: 1, timeoutMs: 10_000 }); // zero-copy: only a descriptor crosses
}
await a.send(new TextEncoder().encode('done'), { channel: 2, timeoutMs: 10_000 }); // small: inline
const ack = await a.recv({ timeoutMs: 10_000 });
console.log('A got:', new TextDecoder().decode(ack.data));
ack.release();
a.close(); // A removes the segment
