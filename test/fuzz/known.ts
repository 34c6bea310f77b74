/**
 * Bugs the fuzzers found that are still open in src/: how to recognise their findings, where
 * they live, and a minimal deterministic reproduction of each (run by
 * test/process/fuzz-segments.test.ts as `todo` tests, so npm test stays green while they are
 * open and says so once one is fixed). The runner labels matching findings `known: <id>`
 * and still exits non-zero on them; the bounded fuzz tests fail only on findings that match
 * none of these.
 *
 * ```ts
 * const bug = knownBug(finding);       // the KnownBug it is an instance of, or undefined
 * const r = await bug.reproduce(dir);  // { fixed: false, observed: 'tryAlloc(16) gave 0 bytes at 4352 ...' }
 * ```
 * When a fix lands, set its `fixed`: its fuzz findings then fail the bounded tests again, and its
 * reproduction runs as a regression test.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { BlobHandle } from '../../src/blob/handle.js';
import { BlobStore } from '../../src/blob/store.js';
import { USED_OFFSET } from '../../src/layout/blob.js';
import { TAIL_POSITION_OFFSET } from '../../src/layout/channel.js';
import { slotAreas } from '../../src/layout/daemon.js';
import { VERSION_OFFSET } from '../../src/layout/segment.js';
import { sessionGeometry } from '../../src/layout/session.js';
import { Client } from '../../src/rpc/client.js';
import { Daemon } from '../../src/rpc/daemon.js';
import { Session } from '../../src/session/session.js';
import type { Finding } from './harness.js';
import { isTyped } from './harness.js';

export interface Reproduction {
  /** True when the library now behaves (a typed error, null, or a bounded wait). */
  fixed: boolean;
  observed: string;
}

export interface KnownBug {
  id: string;
  /** Source locations of the defect. */
  where: string;
  summary: string;
  /** Set once fixed: its reproduction is then a regression test, and its findings fail again. */
  fixed?: string;
  matches(f: Pick<Finding, 'target' | 'kind' | 'op' | 'error' | 'signature' | 'stack'>): boolean;
  /** Runs the minimal input in a fresh directory `dir`; never throws. */
  reproduce(dir: string): Promise<Reproduction>;
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

/** pwrite into a segment file, as a hostile peer process would. */
function poke(path: string, at: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, at);
  } finally {
    closeSync(fd);
  }
}

function describe(err: unknown): string {
  return err instanceof Error
    ? `${err.constructor.name}${isTyped(err) ? ` ${err.code}` : ''}: ${err.message}`
    : String(err);
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const KNOWN: readonly KnownBug[] = [
  {
    id: 'slab-head-unchecked',
    fixed: 'Slab.alloc() refuses a head or link that names no slot (SHM_ERR_CORRUPT)',
    where: 'src/core/slab.ts Slab.alloc(); seen through src/session/session.ts tryAlloc(), alloc(), trySend(), send()',
    summary:
      'Slab.alloc() trusts the free-list head (and next links) the other peer can write: a slot index >= slotCount comes back, tryAlloc() hands out a 0-byte view past the slot area (after storing a state word outside the state array), and trySend()/send() of a payload over inlineMax throw RangeError',
    matches: (f) =>
      f.target === 'segment-session' &&
      ((f.kind === 'invariant' && /alloc/i.test(f.op)) ||
        (f.kind === 'throw' && /RangeError/.test(f.error) && /Session\.(trySend|send)/.test(f.stack ?? ''))),
    async reproduce(dir) {
      const o = { ringCapacity: 1024, slotSize: 64, slotCount: 4, inlineMax: 32 };
      const a = Session.create('slab', { dir, ...o });
      const b = Session.open('slab', { dir });
      try {
        const g = sessionGeometry(o);
        const path = `${dir}/shmbus.slab`;
        // Head word = tag 0 | (slot + 1) = 100: slot 99 of 4.
        poke(path, g.slabOffset, u32(100));
        let view: Uint8Array | null = null;
        try {
          view = a.tryAlloc(16);
        } catch (err) {
          if (!isTyped(err)) return { fixed: false, observed: `tryAlloc threw ${describe(err)}` };
        }
        if (view !== null && view.length !== 16)
          return {
            fixed: false,
            observed: `tryAlloc(16) returned a view of ${view.length} bytes at ${view.byteOffset} (slot area ${g.slotsOffset}..${g.segmentLength})`,
          };
        poke(path, g.slabOffset, u32(100));
        try {
          a.trySend(new Uint8Array(40));
        } catch (err) {
          if (!isTyped(err)) return { fixed: false, observed: `trySend(40 bytes) threw ${describe(err)}` };
        }
        return { fixed: true, observed: 'tryAlloc and trySend refuse the bad head' };
      } finally {
        b.close();
        a.close();
      }
    },
  },
  {
    id: 'blob-locate-unbounded',
    fixed: 'locate() bounds `used` by the chunk size; appends refuse a negative `used`',
    where: 'src/blob/store.ts BlobStore.locate() (resolve, view, ack, isAcknowledged)',
    summary:
      "locate() bounds a handle's entry offset by the chunk's shared `used` counter but never by the chunk size: with `used` corrupted (0xffffffff) a handle whose offset lies past the chunk makes resolve/view/ack/isAcknowledged throw RangeError (DataView out of bounds) instead of returning null/false",
    matches: (f) => f.target === 'segment-blob' && f.kind === 'throw' && /BlobStore\.locate/.test(f.stack ?? ''),
    async reproduce(dir) {
      const s = BlobStore.create('locate', { dir, chunkSize: 1024, maxChunks: 2 });
      const r = BlobStore.attach('locate', { dir });
      try {
        const h = s.append(new Uint8Array(10));
        poke(s.chunkFiles()[0], USED_OFFSET, u32(0xffffffff));
        const forged = new BlobHandle(h.chunk, 4096, 10, h.generation, Date.now());
        for (const op of ['resolve', 'view', 'ack', 'isAcknowledged'] as const) {
          try {
            r[op](forged);
          } catch (err) {
            if (!isTyped(err))
              return { fixed: false, observed: `${op}(handle at offset 4096 of a 1 KiB chunk) threw ${describe(err)}` };
          }
        }
        return { fixed: true, observed: 'every call returned null/false or a ShmError' };
      } finally {
        r.close();
        s.close();
      }
    },
  },
  {
    id: 'blob-ready-wait',
    fixed: 'chunks open with readyTimeoutMs 0; cleanup() goes on past a corrupt chunk and reports it',
    where: 'src/blob/store.ts BlobStore.attach() and mapChunk() call Segment.open() without readyTimeoutMs',
    summary:
      'a control or chunk file whose version word reads 0 makes attach(), and every resolve/view/ack/cleanup/append that has to map that chunk, block the thread for 1000 ms (the default readyTimeoutMs, which BlobStore does not expose) before SHM_ERR_NOT_READY, on every call; cleanup() then never gets past that chunk',
    matches: (f) => f.target === 'segment-blob' && f.kind === 'hang' && f.signature.endsWith('|stall'),
    async reproduce(dir) {
      const s = BlobStore.create('ready', { dir, chunkSize: 1024, maxChunks: 2 });
      const r = BlobStore.attach('ready', { dir });
      try {
        const h = s.append(new Uint8Array(10));
        poke(s.chunkFiles()[0], VERSION_OFFSET, new Uint8Array(4));
        const started = performance.now();
        let outcome: string;
        try {
          outcome = `returned ${r.resolve(h)}`;
        } catch (err) {
          outcome = `threw ${describe(err)}`;
        }
        const ms = Math.round(performance.now() - started);
        return {
          fixed: ms < 200,
          observed: `resolve() of a handle into that chunk ${outcome} after blocking ${ms} ms`,
        };
      } finally {
        r.close();
        s.close();
      }
    },
  },
  {
    id: 'client-orphaned-rejections',
    fixed: 'issue() and pump() reject every pending request through its own promise',
    where: 'src/rpc/client.ts issue() (spinForReply() throws after register()), pump() (void this.pump() rejects)',
    summary:
      'a corrupt response ring (tail position) makes request() reject its caller while the reply promise it already registered is left behind: it rejects later (timeout, or "client closed" at close()) with nobody listening; with wait: "park" pump() itself rejects unhandled, and a request without timeout never settles. Unhandled rejections end a default Node process',
    matches: (f) => f.target === 'segment-daemon' && f.kind === 'crash' && /rpc\/client\.js/.test(f.stack ?? ''),
    async reproduce(dir) {
      const unhandled: string[] = [];
      const listener = (err: unknown) => unhandled.push(describe(err));
      process.on('unhandledRejection', listener);
      const d = Daemon.create('orphan', { dir, maxClients: 1, respCapacity: 1024 });
      const c = Client.connect('orphan', { dir, wait: 'adaptive' });
      try {
        const { resp } = slotAreas(d.geometry, c.slot);
        poke(`${dir}/shmbus.orphan`, resp.blocksBase + TAIL_POSITION_OFFSET, u32(12345));
        await c.request(new Uint8Array(4), { timeoutMs: 20 }).catch(() => {});
        await delay(60);
        return {
          fixed: unhandled.length === 0,
          observed: unhandled.length === 0 ? 'no unhandled rejection' : `unhandled rejection: ${unhandled[0]}`,
        };
      } finally {
        c.close();
        try {
          d.close();
        } catch {}
        await delay(10);
        process.off('unhandledRejection', listener);
      }
    },
  },
  {
    id: 'daemon-scan-throws',
    fixed: 'scan() skips a client whose rings are corrupt from the start; close() always unmaps',
    where:
      "src/rpc/daemon.ts scan() -> new Peer() (ring constructors validate positions outside nextCommand()'s guard)",
    summary:
      'a client slot whose ring positions are corrupt (a hostile client writes its own command tail) makes scan() throw from the Peer constructor: the serve loop ends with SHM_ERR_CORRUPT for every client, writeData()/stats()/clients() throw, and close() throws before it marks the daemon closed, unmaps and unlinks (the segment leaks)',
    matches: (f) =>
      f.target === 'segment-daemon' && (f.kind === 'leak' || (f.kind === 'unavailable' && f.op === 'serve loop')),
    async reproduce(dir) {
      const d = Daemon.create('scan', { dir, maxClients: 4 });
      const server = d.serve((_, cmd) => cmd.slice());
      let ended: string | null = null;
      server.done.then(
        () => {},
        (err) => {
          ended = describe(err);
        },
      );
      const good = Client.connect('scan', { dir });
      const hostile = Client.connect('scan', { dir });
      try {
        const { cmd } = slotAreas(d.geometry, hostile.slot);
        poke(`${dir}/shmbus.scan`, cmd.blocksBase + TAIL_POSITION_OFFSET, u32(3));
        let reply = 'a reply';
        try {
          await good.request(Uint8Array.of(1), { timeoutMs: 300 });
        } catch (err) {
          reply = describe(err);
        }
        const fixed = ended === null && reply === 'a reply';
        return {
          fixed,
          observed: fixed
            ? 'the daemon kept serving the other client'
            : `serve loop: ${ended ?? 'running'}; the well-behaved client got ${reply}`,
        };
      } finally {
        await Promise.race([server.stop(), delay(500)]);
        good.close();
        hostile.close();
        try {
          d.close();
        } catch {}
      }
    },
  },
];

/** The known bug `f` is an instance of, if any. */
export function knownBug(
  f: Pick<Finding, 'target' | 'kind' | 'op' | 'error' | 'signature' | 'stack'>,
): KnownBug | undefined {
  return KNOWN.find((bug) => bug.fixed === undefined && bug.matches(f));
}

/** Runs one reproduction in its own directory under /dev/shm (removed afterwards). */
export async function reproduce(bug: KnownBug): Promise<Reproduction> {
  const dir = mkdtempSync('/dev/shm/shmbus-known-');
  try {
    return await bug.reproduce(dir);
  } catch (err) {
    return { fixed: false, observed: `the reproduction itself failed: ${describe(err)}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
