// Child side of the unix-socket benchmarks (bench/cases/peers.mjs), a separate process.
//   node uds-child.mjs echo <path> <size>                  listen on <path>, echo each <size>-byte frame
//   node uds-child.mjs produce <path> <size> <count> <batch>  connect to <path>, send <count> frames,
//                                                            <batch> frames per write (corked) when > 1
import { once } from 'node:events';
import net from 'node:net';

// Stay alive until the parent kills it, leave with it if it dies first.
process.channel.ref();
process.on('disconnect', () => process.exit(0));

const [role, path, sizeArg, countArg, batchArg] = process.argv.slice(2);
const size = Number(sizeArg);

if (role === 'echo') {
  // Message semantics: reply only once the whole frame has arrived (a stream may split it).
  const frame = Buffer.alloc(size);
  const server = net.createServer((sock) => {
    let filled = 0;
    sock.on('data', (chunk) => {
      for (let at = 0; at < chunk.length; ) {
        const n = Math.min(size - filled, chunk.length - at);
        chunk.copy(frame, filled, at, at + n);
        filled += n;
        at += n;
        // Reusing `frame` is safe: the parent sends the next frame only after this one came back whole.
        if (filled === size) {
          sock.write(frame);
          filled = 0;
        }
      }
    });
  });
  server.listen(path, () => process.send('ready'));
} else if (role === 'produce') {
  const count = Number(countArg);
  const batch = Number(batchArg);
  const frame = Buffer.alloc(size, 0xa5); // the same bytes every time; the write still moves all of them
  const sock = net.createConnection(path);
  await once(sock, 'connect');
  for (let sent = 0; sent < count; ) {
    const n = Math.min(batch, count - sent);
    if (batch > 1) sock.cork(); // buffer n writes, uncork flushes them as one writev
    for (let k = 0; k < n; k++) sock.write(frame);
    if (batch > 1) sock.uncork();
    sent += n;
    // Backpressure: wait once more than highWaterMark bytes are queued in user space.
    if (sock.writableNeedDrain) await once(sock, 'drain');
  }
} else {
  throw new Error(`uds-child: unknown role ${role}`);
}
