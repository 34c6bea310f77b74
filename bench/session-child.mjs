/**
 * The producing peer of the session.* cases (bench/cases/session.mjs).
 *   produce <name> <size> <count> <slotCount>   peer A: alloc, fill, send `count` messages of `size` bytes
 * The fill writes the payload in place (as a producer generating data would: one write into
 * shared memory, no copy out); the first and last bytes carry the message number.
 */
import { Session } from '../dist/src/index.js';

const [role, name, sizeArg, countArg, slotsArg] = process.argv.slice(2);
if (role !== 'produce') throw new Error(`unknown role ${role}`);
const size = Number(sizeArg);
const count = Number(countArg);
const a = Session.create(name, { slotSize: size, slotCount: Number(slotsArg), wait: 'adaptive' });
const source = new Uint8Array(size).fill(7);
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
for (let i = 0; i < count; i++) {
  const view = a.tryAlloc(size) ?? (await a.alloc(size, { timeoutMs: 30_000 }));
  view.set(source); // the fill: one write of the payload into the slot
  view[0] = i & 0xff;
  if (!a.trySend(view)) await a.send(view, { timeoutMs: 30_000 });
}
// Wait for the consumer to release everything before A removes the segment.
while (a.freeSlots < Number(slotsArg)) await new Promise((r) => setTimeout(r, 1));
a.close();
