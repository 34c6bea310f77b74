import { setTimeout as sleep } from 'node:timers/promises';
import { Session } from 'shmbus';

let b;
for (let attempt = 0; !b; attempt++) {
  try {
    b = Session.open('example-frames'); // slot size and count come from A's header
  } catch (err) {
    if (attempt === 100) throw err;
    await sleep(100);
  }
}
for (;;) {
  const msg = await b.recv({ timeoutMs: 10_000 }); // msg.data is a view into the slab: no copy
  if (msg.channel === 2) {
    msg.release();
    break;
  }
  console.log(`B got ${msg.length} bytes of ${msg.data[0]} in slot ${msg.slot}`);
  msg.release(); // the slot goes back to the free list
}
await b.send(new TextEncoder().encode('thanks'), { timeoutMs: 10_000 });
b.close();
