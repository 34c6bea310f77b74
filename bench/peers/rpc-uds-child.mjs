/**
 * Child side of rpc.uds.* (bench/cases/rpc.mjs): request/response over a unix socket, the
 * `net` equivalent of a Daemon whose handler echoes the command.
 *   node rpc-uds-child.mjs <path>    listen on <path>; answer every request frame with its body
 * Wire, both directions: u32 bodyLength (little-endian), body. Prints {ready} once listening;
 * leaves when its parent dies.
 */
import net from 'node:net';

const LENGTH_PREFIX = 4;
const [path] = process.argv.slice(2);
const parentPid = process.ppid;

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  // A frame that straddles two reads is assembled in `carry`; whole frames are answered with
  // a view of the chunk they arrived in (each chunk is a fresh Buffer, never reused).
  let carry = Buffer.allocUnsafe(64 * 1024);
  let carried = 0;
  sock.on('data', (chunk) => {
    let at = 0;
    if (carried > 0) {
      const needHeader = Math.max(0, LENGTH_PREFIX - carried);
      const h = Math.min(needHeader, chunk.length);
      chunk.copy(carry, carried, 0, h);
      carried += h;
      at = h;
      if (carried < LENGTH_PREFIX) return;
      const total = LENGTH_PREFIX + carry.readUInt32LE(0);
      if (total > carry.length) {
        const bigger = Buffer.allocUnsafe(total);
        carry.copy(bigger, 0, 0, carried);
        carry = bigger;
      }
      const n = Math.min(total - carried, chunk.length - at);
      chunk.copy(carry, carried, at, at + n);
      carried += n;
      at += n;
      if (carried < total) return;
      carried = 0;
      sock.write(Buffer.from(carry.subarray(0, total))); // a copy: carry is reused
    }
    while (chunk.length - at >= LENGTH_PREFIX) {
      const total = LENGTH_PREFIX + chunk.readUInt32LE(at);
      if (chunk.length - at < total) break;
      sock.write(chunk.subarray(at, at + total));
      at += total;
    }
    if (at < chunk.length) {
      if (chunk.length - at > carry.length) carry = Buffer.allocUnsafe(chunk.length - at);
      chunk.copy(carry, 0, at);
      carried = chunk.length - at;
    }
  });
  sock.on('error', () => {});
});
server.listen(path, () => process.stdout.write(`${JSON.stringify({ ready: true })}\n`));
setInterval(() => {
  if (process.ppid === parentPid) return;
  server.close();
  process.exit(1);
}, 500).unref();
