/**
 * The other process of the shmbus cases.
 *   echo <ping> <pong> <wait> <mode> <count> <size>   receive on <ping>, send it back on <pong>, count times
 *   produce <name> <size> <count> <capacity>    send count frames of size bytes as fast as the ring allows (corked x64)
 *   idle <name> <ms>                            park in await recv() and report the CPU used while parked
 */
import { Channel } from '../dist/src/index.js';

const [role, ...args] = process.argv.slice(2);
const print = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);

if (role === 'echo') {
  const [ping, pong, wait, mode, countArg, sizeArg] = args;
  const count = Number(countArg);
  const rx = Channel.open(ping, { wait, waitMs: 10_000 });
  const tx = Channel.create(pong, { capacity: rx.geometry.capacity, wait });
  print({ ready: true });
  // Copy-out receives (no allocation per frame) into one buffer that is sent straight back.
  const buffer = new Uint8Array(Number(sizeArg));
  for (let i = 0; i < count; i++) {
    const n = mode === 'async' ? await rx.recvInto(buffer) : rx.recvSyncInto(buffer);
    if (n < 0) break;
    if (!tx.trySend(buffer)) tx.sendSync(buffer);
  }
  tx.close();
  rx.close();
} else if (role === 'produce') {
  const [name, sizeArg, countArg, capacityArg] = args;
  const frame = new Uint8Array(Number(sizeArg)).fill(7);
  const count = Number(countArg);
  const tx = Channel.create(name, { capacity: Number(capacityArg) });
  print({ ready: true });
  while (!tx.consumerAttached()) await new Promise((r) => setTimeout(r, 1));
  // Corked batches of 64 frames, as the corked unix-socket peer writes them.
  for (let i = 0; i < count; ) {
    tx.cork();
    for (const end = Math.min(count, i + 64); i < end; i++) if (!tx.trySend(frame)) tx.sendSync(frame);
    tx.uncork();
  }
  tx.close();
} else if (role === 'idle') {
  const [name, msArg] = args;
  const rx = Channel.open(name, { wait: 'park', waitMs: 10_000 });
  print({ ready: true });
  const before = process.cpuUsage();
  const started = process.hrtime.bigint();
  const frame = await rx.recv({ timeoutMs: Number(msArg) * 4 + 10_000 });
  const cpu = process.cpuUsage(before);
  const elapsedUs = Number(process.hrtime.bigint() - started) / 1000;
  print({ cpuPercent: ((cpu.user + cpu.system) / elapsedUs) * 100, got: frame?.length ?? null });
  rx.close();
} else {
  throw new Error(`unknown role ${role}`);
}
