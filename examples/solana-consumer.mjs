import { setTimeout as sleep } from 'node:timers/promises';
import { pubkeyToString, setupShmConsumer } from 'shmbus/solana';

let consumer;
for (let attempt = 0; !consumer; attempt++) {
  try {
    consumer = await setupShmConsumer('/tmp/shmbus-solana.sock');
  } catch (err) {
    if (attempt === 100) throw err;
    await sleep(100);
  }
}
await consumer.subscribe([], ['TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA']); // pubkeys, owners
await consumer.subscribeTransactions();
const slot = (await consumer.slotUpdates().next()).value; // the stream is ordered: the slot comes last
for (let a = consumer.tryNextAccount(); a; a = consumer.tryNextAccount())
  console.log('account', pubkeyToString(a.update.pubkey), 'lamports', a.update.lamports);
for (let t = consumer.tryNextTransaction(); t; t = consumer.tryNextTransaction())
  console.log('transaction in slot', t.update.slot);
console.log('slot', slot.update.slot);
await consumer.close();
