// Packaging check, CommonJS side (scripts/pack-test.sh copies this file into a fresh project
// that installed the packed tarball, so 'shmbus' resolves to node_modules/shmbus, not to the
// repository). In the main thread and again in a worker thread: require() both entry points
// (the CommonJS build, dist/cjs: require(esm) would only cover Node >= 20.19), pass a frame
// through a Channel, and report the entry file and the addon file that were loaded. Prints one
// JSON line per thread and exits 0, or throws.
const { randomBytes } = require('node:crypto');
const { isMainThread, parentPort, Worker } = require('node:worker_threads');
const { Channel, ShmError } = require('shmbus');
const { decodeBase58, encodeBase58 } = require('shmbus/solana');

function roundTrip() {
  const name = `pack-cjs-${process.pid}-${randomBytes(4).toString('hex')}`;
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
  const addon = Object.keys(require.cache).find((file) => file.endsWith('.node'));
  return { format: 'cjs', thread: isMainThread ? 'main' : 'worker', entry: require.resolve('shmbus'), addon };
}

const result = roundTrip();
if (isMainThread) {
  console.log(JSON.stringify(result));
  const worker = new Worker(__filename);
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
