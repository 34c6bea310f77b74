/**
 * Crash-test hooks: stop this process dead at a named protocol point, so a test can SIGKILL
 * it exactly there (test/process/crash-matrix.test.ts).
 *
 * ```ts
 * // SHMBUS_TEST_STOP_AT=channel.before-commit:3 node producer.js
 * if (STOP_AT !== null) stopAt('channel.before-commit');   // the 3rd time: stops here
 * ```
 * SHMBUS_TEST_STOP_AT names one point, optionally with `:N` (stop the Nth time it is
 * reached; default 1). It is read once, when this module loads. When the point is reached for
 * the Nth time, stopAt() writes `STOPPED <point>\n` to stderr synchronously and sends SIGSTOP
 * to its own process; the test waits for that line, then SIGKILLs the stopped process. Other
 * points, and every point when the variable is unset, cost one branch on a module constant
 * at the call site (`STOP_AT !== null`): no call, no string built, nothing allocated.
 *
 * Points (where the library stands when the process stops there):
 *
 * | point | where | state left in shared memory |
 * |---|---|---|
 * | `ring.after-copy` | RingWriter.tryWrite | payload copied, record header not written, tail not moved |
 * | `ring.before-publish` | RingWriter.written | record complete (header says committed), tail not published |
 * | `channel.after-claim` | ChannelSender.claim | record claimed (negative length), nothing written |
 * | `channel.before-commit` | ChannelSender.commit | claimed record filled, header still negative |
 * | `channel.holding-frame` | ChannelReceiver.tryRecv | frame handed out, head not released |
 * | `segment.before-link` | Segment.create | `name~pid.random` complete (version published), not linked |
 * | `segment.after-link` | Segment.create | linked under its name, the `~` file not yet removed |
 * | `fanout.sender.before-ready` | Sender.handshake | consumer's ring file and eventfd made, READY not sent |
 * | `fanout.sender.after-ready` | Sender.handshake | READY and fds sent, connection not yet in the dispatch list |
 * | `fanout.consumer.after-hello` | consumer handshake | HELLO sent, READY not read |
 * | `fanout.consumer.after-ready` | Consumer.open | READY and fds received, ring not mapped |
 * | `state.mid-write` | StateWriter.write | cell's length and version stored, data not copied, sequence not moved |
 * | `daemon.mid-reply` | Daemon.reply | reply record claimed, header written, not committed |
 * | `client.slot-locked` | Client.claim | slot lock taken, rings reset, slot still FREE |
 * | `client.slot-claimed` | Client.claim | slot CLAIMED, claim sequence not bumped |
 * | `client.command-claimed` | Client.commitCommand | command record claimed, nothing written |
 * | `client.awaiting-reply` | Client.issue | request committed, reply not read |
 * | `session.holding-slot` | Session.tryAlloc | slot ALLOCATED to this peer, not sent |
 * | `session.in-flight` | Session.sendSlot | slot IN_FLIGHT, descriptor not written |
 * | `session.holding-message` | Session.tryRecv | descriptor consumed (head published), slot not released |
 * | `hub.holding-slot` | Endpoint.tryAlloc | slot ALLOCATED to this side, not sent |
 * | `hub.in-flight` | Endpoint.sendOn | slot handed over (IN_FLIGHT, owned by the destination), descriptor not written |
 * | `hub.mid-reclaim` | Hub.reclaimPeer | dead peer's slots freed, its entry still CLAIMED, its lock held by the host |
 * | `blob.after-reserve` | BlobStore.append | bytes reserved (`used` moved, `writers` + 1), nothing written |
 * | `blob.mid-copy` | BlobStore.append | entry header written, payload not copied |
 * | `blob.before-count` | BlobStore.append | entry complete, `entries` not counted, `writers` not released |
 * | `blob.holding-view` | BlobStore.view | lease taken (`leases` + 1), view not released |
 * | `blob.chunk-claimed` | BlobStore.createChunk | table entry CREATING (with this pid), no file |
 * | `blob.chunk-created` | BlobStore.createChunk | chunk file created and linked, table entry still CREATING |
 *
 * Any process may import this; the hooks are inert unless the variable is set.
 */
import { writeSync } from 'node:fs';

function parse(spec: string | undefined): [point: string | null, count: number] {
  if (spec === undefined || spec === '') return [null, 0];
  const colon = spec.lastIndexOf(':');
  if (colon < 0) return [spec, 1];
  const count = Number(spec.slice(colon + 1));
  if (!Number.isInteger(count) || count < 1)
    throw new RangeError(`SHMBUS_TEST_STOP_AT=${spec}: the count after ':' must be an integer >= 1`);
  return [spec.slice(0, colon), count];
}

const [point, count] = parse(process.env.SHMBUS_TEST_STOP_AT);

/** The point this process stops at, or null (the normal case: every hook is inert). */
export const STOP_AT: string | null = point;

let remaining = count;

/**
 * Stops the process (SIGSTOP) the Nth time `at` is reached, if SHMBUS_TEST_STOP_AT names it;
 * otherwise returns. Call it behind `if (STOP_AT !== null)`.
 */
export function stopAt(at: string): void {
  if (at !== STOP_AT || --remaining !== 0) return;
  writeSync(2, `STOPPED ${at}\n`);
  process.kill(process.pid, 'SIGSTOP');
}
