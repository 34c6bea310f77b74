/**
 * Sessions: large messages through a two-peer session (alloc, fill in place, send a
 * descriptor; receive, read in place, release), to compare with a Channel (copy in, copy
 * out: tput.copy.64k / tput.copy.1m) and a unix socket (tput.uds.*) measured in the same run;
 * and the cost of one slot allocation + free.
 */
import { fileURLToPath } from 'node:url';
import { Channel, Session } from '../../dist/src/index.js';
import { startChild } from '../lib/child.mjs';

const child = fileURLToPath(new URL('../session-child.mjs', import.meta.url));
let serial = 0;

/**
 * The child (peer A) produces; this process (peer B) receives each message, reads it in place
 * (checks its first and last byte) and releases it, polling like the Channel's consumer.
 * GB/s of payload from the first message received to the last.
 */
async function throughput(ctx, size) {
  const name = `bench-session-${process.pid}-${++serial}`;
  const count = ctx.scale(size >= 1 << 20 ? 6_000 : 60_000);
  const slots = size >= 1 << 20 ? 16 : 64;
  const producer = startChild(child, ['produce', name, String(size), String(count), String(slots)]);
  let b;
  try {
    await producer.waitFor((m) => m.ready);
    b = Session.open(name, { wait: 'adaptive' });
    let started = 0;
    let touched = 0;
    // Busy-polls like the Channel's throughput consumer (tput.copy.*: tryRecvInto in a loop),
    // so both sides of the comparison wait the same way.
    const deadline = Date.now() + 60_000;
    for (let i = 0; i < count; i++) {
      let m = b.tryRecv();
      while (m === null) {
        if (Date.now() > deadline) throw new Error(`timed out at message ${i}`);
        m = b.tryRecv();
      }
      if (i === 0) started = performance.now();
      const data = m.data;
      if (data[0] !== (i & 0xff) || data.length !== size) throw new Error(`message ${i} came wrong`);
      touched += data[size - 1];
      m.release();
    }
    const seconds = (performance.now() - started) / 1000;
    if (touched !== 7 * count) throw new Error('payload bytes were wrong');
    return { value: ((count - 1) * size) / seconds / 1e9, n: count, note: `${slots} slots of ${size} B` };
  } finally {
    b?.close();
    producer.kill();
    // The producer (peer A) is killed, not closed: remove its segment here.
    Channel.remove(name);
  }
}

export default [
  {
    id: 'session.tput.64k',
    unit: 'GB/s',
    title: 'session one-way, 64 KiB: alloc + fill in place + send; recv + read in place + release',
    run: (ctx) => throughput(ctx, 64 * 1024),
  },
  {
    id: 'session.tput.1m',
    unit: 'GB/s',
    title: 'session one-way, 1 MiB: alloc + fill in place + send; recv + read in place + release',
    run: (ctx) => throughput(ctx, 1 << 20),
  },
  {
    id: 'session.allocfree',
    unit: 'ns',
    title: 'one slot allocation + free (tryAlloc + free, one process)',
    run: async (ctx) => {
      const name = `bench-session-af-${process.pid}-${++serial}`;
      const a = Session.create(name, { slotSize: 4096, slotCount: 64 });
      try {
        const n = ctx.scale(2_000_000);
        for (let i = 0; i < 100_000; i++) a.free(a.tryAlloc(64));
        const t0 = performance.now();
        for (let i = 0; i < n; i++) a.free(a.tryAlloc(64));
        return { value: ((performance.now() - t0) * 1e6) / n, n };
      } finally {
        a.close();
      }
    },
  },
];
