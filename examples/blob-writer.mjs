// Blob store: append once, pass the 24-byte handle through any channel, read it anywhere.
// Run from the repository root: node examples/blob-writer.mjs   (and node examples/blob-reader.mjs)
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobStore, Channel } from 'shmbus';

const store = BlobStore.create('example-blobs', { chunkSize: 4 << 20 });
const handles = Channel.create('example-blob-handles', { capacity: 1 << 16 });
const sent = [
  store.append(new TextEncoder().encode('hello world')),
  store.append(new Uint8Array(1 << 20).fill(7)), // 1 MiB, written once, never moved
];
for (const h of sent) await handles.send(h.toBytes(), { timeoutMs: 10_000 }); // 24 bytes each
handles.close();
const deadline = Date.now() + 10_000;
while (!sent.every((h) => store.isAcknowledged(h)) && Date.now() < deadline) await sleep(10);
console.log('writer: both blobs acknowledged');
store.close(); // the creator's close removes the store's files
