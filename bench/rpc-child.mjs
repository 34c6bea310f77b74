/**
 * The other processes of the rpc and state cases (bench/cases/rpc.mjs).
 *   echo <name> <wait>                       a Daemon whose handler returns each command as its reply
 *   publish <name> <size> <clients> <loop>   a Daemon publishing a <size>-byte state (every u32 word =
 *                                            its version); with loop=1, once <clients> clients are
 *                                            connected, republishes (new version, new words) as fast
 *                                            as it can until SIGTERM
 *   read <name> <size> <seconds>             a Client reading snapshots for <seconds> once the
 *                                            publisher's loop has started, checking every one
 * The daemons close (which unlinks the segment) on SIGTERM; each child leaves if its parent dies.
 * Snapshot check: all words of a snapshot are equal (one memcmp of the snapshot against itself
 * shifted by a word) and equal to the version readData() reported, so a torn or stale-labelled
 * snapshot fails at once.
 */
import { Client, Daemon } from '../dist/src/index.js';

const [role, ...args] = process.argv.slice(2);
const print = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const parentPid = process.ppid;
const orphaned = () => process.ppid !== parentPid;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (role === 'echo') {
  const [name, wait] = args;
  const daemon = Daemon.create(name, { wait });
  // `cmd` is a view into the client's command ring, released only at the next poll; a
  // synchronous handler's reply is copied into the response ring before that, so the view
  // itself can be the reply.
  const server = daemon.serve((_clientId, cmd) => cmd);
  const leave = async () => {
    await server.stop();
    daemon.close();
    process.exit(0);
  };
  process.on('SIGTERM', leave);
  setInterval(() => orphaned() && leave(), 500);
  print({ ready: true });
} else if (role === 'publish') {
  const [name, sizeArg, clientsArg, loopArg] = args;
  const size = Number(sizeArg);
  const state = new Uint8Array(size);
  const words = new Uint32Array(state.buffer);
  const daemon = Daemon.create(name, { dataSize: size, maxClients: Number(clientsArg) + 1 });
  let stopping = false;
  const publish = () => {
    const next = daemon.dataVersion + 1;
    words.fill(next);
    const version = daemon.writeData(state);
    if (version !== next) throw new Error(`writeData returned version ${version}, expected ${next}`);
  };
  process.on('SIGTERM', () => {
    stopping = true;
    daemon.close();
    process.exit(0);
  });
  publish();
  print({ ready: true, version: daemon.dataVersion });
  if (loopArg === '1') {
    while (daemon.clients().length < Number(clientsArg)) {
      if (orphaned()) process.exit(1);
      await sleep(1);
    }
    // Batches of 32 publishes (~a few ms), then one turn of the event loop for SIGTERM.
    while (!stopping) {
      for (let k = 0; k < 32; k++) publish();
      if (orphaned()) break;
      await new Promise(setImmediate);
    }
    daemon.close();
  } else {
    setInterval(() => {
      if (!orphaned()) return;
      daemon.close();
      process.exit(1);
    }, 500);
  }
} else if (role === 'read') {
  const [name, sizeArg, secondsArg] = args;
  const size = Number(sizeArg);
  const client = Client.connect(name, { wait: 'park' });
  const buf = Buffer.alloc(size);
  const head = buf.subarray(0, size - 4);
  const tail = buf.subarray(4, size);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, size >> 2);
  print({ ready: true });
  // Start with the publisher's loop (the first version after the initial one).
  const initial = client.latestVersion();
  for (let spins = 0; client.latestVersion() === initial; spins++) {
    if ((spins & 1023) === 0) {
      if (orphaned()) process.exit(1);
      await sleep(0);
    }
  }
  const internal = client.state; // StateReader: its retry counter is not public API
  const retries0 = internal?.retries;
  const v0 = client.latestVersion();
  const t0 = performance.now();
  const deadline = t0 + Number(secondsArg) * 1000;
  let snapshots = 0;
  let torn = 0;
  let firstTorn = null;
  let lastVersion = 0;
  let backwards = 0;
  let now = t0;
  while (now < deadline) {
    for (let k = 0; k < 8; k++) {
      const n = client.readData(buf);
      const version = client.dataVersion;
      if (n !== size || words[0] !== version || Buffer.compare(head, tail) !== 0) {
        torn++;
        if (firstTorn === null) {
          let at = 0;
          while (at < words.length && words[at] === words[0]) at++;
          firstTorn = { n, version, first: words[0], differsAtWord: at, word: words[at] };
        }
      }
      if (version < lastVersion) backwards++;
      lastVersion = version;
      snapshots++;
    }
    now = performance.now();
  }
  const v1 = client.latestVersion();
  print({
    done: true,
    snapshots,
    bytes: snapshots * size,
    startMs: performance.timeOrigin + t0,
    endMs: performance.timeOrigin + now,
    v0,
    v1,
    retries: retries0 === undefined ? null : internal.retries - retries0,
    torn,
    firstTorn,
    backwards,
  });
  client.close();
} else {
  throw new Error(`rpc-child: unknown role ${role}`);
}
