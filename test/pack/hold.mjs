// Packaging check for `npx shmbus ls` (scripts/pack-test.sh): holds channel argv[2] open in
// $SHMBUS_DIR, both ends, says "ready" on stdout, and closes both (which removes the file) when
// stdin ends.
import { Channel } from 'shmbus';

const tx = Channel.create(process.argv[2], { capacity: 1 << 12 });
const rx = Channel.open(process.argv[2]);
tx.trySend(new TextEncoder().encode('one frame in flight'));
console.log('ready');
process.stdin.resume();
process.stdin.on('end', () => {
  tx.close();
  rx.close();
});
