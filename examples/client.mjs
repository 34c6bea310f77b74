import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'shmbus';

let client;
for (let attempt = 0; !client; attempt++) {
  try {
    client = Client.connect('example-prices');
  } catch (err) {
    if (attempt === 100) throw err; // no daemon within ~10 s
    await sleep(100);
  }
}
const text = (/** @type {Uint8Array} */ bytes) => new TextDecoder().decode(bytes);
console.log('state:', text(client.readData()), 'version', client.dataVersion); // a consistent snapshot
const reply = await client.request(new TextEncoder().encode('bump'), { timeoutMs: 5000 });
console.log(text(reply));
console.log('state:', text(client.readData()));
await client.request(new TextEncoder().encode('stop'), { timeoutMs: 5000 });
client.close();
