// Reads the blobs whose handles examples/blob-writer.mjs sends through a channel.
import { BlobHandle, BlobStore, Channel } from 'shmbus';

const handles = Channel.open('example-blob-handles', { waitMs: 10_000 });
const store = BlobStore.attach('example-blobs', { readOnly: true }); // its configuration comes from the writer
for await (const frame of handles) {
  const h = BlobHandle.fromBytes(frame);
  if (h.size < 100) {
    const copy = store.resolve(h); // a copy, or null once expired or freed: never other bytes
    console.log('reader: resolved', JSON.stringify(new TextDecoder().decode(copy)));
  } else {
    const view = store.view(h); // zero-copy; the chunk is not freed while the view is held
    if (view === null) throw new Error('the blob expired before it was read');
    console.log(`reader: viewed ${view.data.length} bytes in place, all ${view.data[0]}s`);
    view.release();
  }
  store.ack(h); // idempotent: acknowledging twice counts once
}
handles.close();
store.close(); // an attacher's close removes nothing
