// The Solana account / transaction / slot stream (reference wire version 9 frames).
import { once } from 'node:events';
import { setupSender } from 'shmbus/solana';

const TOKEN_PROGRAM = 'TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA';
const sender = await setupSender({ path: '/tmp/shmbus-solana.sock', capacity: 1 << 22 });
await once(sender.sender, 'subscribe');
await once(sender.sender, 'subscribe'); // pubkeys/owners, then the transaction opt-in
/** @param {string | Uint8Array} pubkey @param {number} lamports */
const account = (pubkey, lamports) => ({
  pubkey,
  owner: TOKEN_PROGRAM,
  lamports,
  executable: false,
  rentEpoch: 0,
  slot: 1000,
  writeVersion: 1,
  data: new Uint8Array(165),
});
sender.publishAccount(account(new Uint8Array(32).fill(1), 2_039_280)); // owner subscribed: delivered
sender.publishAccount({ ...account(new Uint8Array(32).fill(2), 1), owner: new Uint8Array(32) }); // filtered out
sender.publishTransaction({
  slot: 1000,
  index: 0,
  signature: new Uint8Array(64).fill(7),
  isVote: false,
  payload: new Uint8Array(200),
});
sender.publishSlot({ slot: 1001 }); // slot updates always reach everyone
console.log('published 2 accounts, 1 transaction, 1 slot');
await sender.close();
