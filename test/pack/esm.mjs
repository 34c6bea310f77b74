// Packaging check, ES module side (scripts/pack-test.sh copies this file into a fresh project
// that installed the packed tarball, so 'shmbus' resolves to node_modules/shmbus, not to the
// repository). In the main thread and again in a worker thread: import both entry points, pass a
// frame through a Channel, and report the entry file and the addon file that were loaded. Prints
// one JSON line per thread and exits 0, or throws.
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { Channel, ShmError } from 'shmbus';
import { decodeBase58, encodeBase58 } from 'shmbus/solana';

function roundTrip() {
  const name = `pack-esm-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tx = Channel.create(name, { capacity: 1 << 12 });
  const rx = Channel.open(name);
  try {
    if (!tx.trySend(new TextEncoder().encode('ping'))) throw new Error('trySend refused');
    const frame = rx.tryRecv();
    if (frame === null || new TextDecoder().decode(frame) !== 'ping') throw new Error('no ping came back');
  } finally {
    tx.close();
    rx.close();
  }
  if (encodeBase58(decodeBase58('11111111111111111111111111111111')).length !== 32) throw new Error('shmbus/solana');
  if (!(new ShmError('SHM_ERR_FULL', 'x') instanceof Error)) throw new Error('ShmError');
  // The addon is loaded through the CommonJS loader (createRequire), so its path is in the cache.
  const addon = Object.keys(createRequire(import.meta.url).cache).find((file) => file.endsWith('.node'));
  const entry = fileURLToPath(import.meta.resolve('shmbus'));
  return { format: 'esm', thread: isMainThread ? 'main' : 'worker', entry, addon };
}

const result = roundTrip();
if (isMainThread) {
  console.log(JSON.stringify(result));
  const worker = new Worker(new URL(import.meta.url));
  worker.on('message', (m) => console.log(JSON.stringify(m)));
  worker.on('error', (err) => {
    throw err;
  });
  worker.on('exit', (code) => {
    if (code !== 0) process.exitCode = 1;
  });
} else {
  parentPort.postMessage(result);
}
