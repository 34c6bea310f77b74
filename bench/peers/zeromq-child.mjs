// Child side of the zeromq benchmarks (bench/cases/peers.mjs), a separate process.
//   node zeromq-child.mjs echo <address>                  Pair: connect, echo every message
//   node zeromq-child.mjs produce <address> <size> <count>  Push: connect, send <count> frames
// The parent binds.
import { Pair, Push } from 'zeromq';

// Stay alive until the parent kills it (an idle zeromq socket does not hold the event loop),
// leave with it if it dies first.
process.channel.ref();
process.on('disconnect', () => process.exit(0));

const [role, address, sizeArg, countArg] = process.argv.slice(2);

if (role === 'echo') {
  const sock = new Pair();
  sock.connect(address);
  for await (const [message] of sock) await sock.send(message);
} else if (role === 'produce') {
  const count = Number(countArg);
  const frame = Buffer.alloc(Number(sizeArg), 0xa5);
  const sock = new Push();
  sock.connect(address);
  // send() resolves at once while the queue is below the high-water mark (1000 messages).
  for (let i = 0; i < count; i++) await sock.send(frame);
} else {
  throw new Error(`zeromq-child: unknown role ${role}`);
}
