/**
 * The other process of the shmbus cases.
 *   echo <ping> <pong> <wait> <mode> <count>   receive on <ping>, send it back on <pong>, count times
 *   produce <name> <size> <count> <capacity>    send count frames of size bytes as fast as the ring allows
 *   idle <name> <ms>                            park in await recv() and report the CPU used while parked
 */
import { Channel } from '../dist/src/index.js';

const [role, ...args] = process.argv.slice(2);
const print = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);

if (role === 'echo') {
  const [ping, pong, wait, mode, countArg] = args;
  const count = Number(countArg);
  const rx = Channel.open(ping, { wait, waitMs: 10_000 });
  const tx = Channel.create(pong, { capacity: rx.geometry.capacity, wait });
  print({ ready: true });
  for (let i = 0; i < count; i++) {
    const frame = mode === 'async' ? await rx.recv() : rx.recvSync();
    if (frame === null) break;
    if (!tx.trySend(frame)) tx.sendSync(frame);
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
  for (let i = 0; i < count; i++) if (!tx.trySend(frame)) tx.sendSync(frame);
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
