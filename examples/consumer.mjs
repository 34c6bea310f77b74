// Consumer: opens "quickstart" (waiting up to 10 s for the producer) and prints until end-of-stream.
import { Channel } from 'shmbus';

const rx = Channel.open('quickstart', { waitMs: 10_000 });
const decoder = new TextDecoder();
for await (const frame of rx) console.log('received', decoder.decode(frame)); // frame is a view into shared memory
rx.close(); // the last end to close removes /dev/shm/shmbus.quickstart
