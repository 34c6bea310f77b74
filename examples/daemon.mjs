// Daemon: publishes shared state and answers its clients' requests.
import { Daemon } from 'shmbus';

const daemon = Daemon.create('example-prices', { dataSize: 4096, maxClients: 8 });
const encoder = new TextEncoder();
let price = 100;
daemon.writeData(encoder.encode(JSON.stringify({ price })));
const server = daemon.serve((clientId, cmd) => {
  const request = new TextDecoder().decode(cmd);
  if (request === 'bump') {
    price += 1;
    daemon.writeData(encoder.encode(JSON.stringify({ price }))); // every client sees it, lock-free
    return `client ${clientId}: price is now ${price}`;
  }
  if (request === 'stop') setImmediate(() => server.stop().then(() => daemon.close()));
  return `client ${clientId}: ok`;
});
console.log('daemon serving');
