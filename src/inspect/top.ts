/**
 * The numbers behind `shmbus top`: one row per segment from two listings taken some time
 * apart, with rates computed from the deltas of the counters that live in shared memory.
 *
 * ```ts
 * const a = sample({ dir });
 * // ... some time later
 * const b = sample({ dir });
 * topRows(a, b);   // [{ name, kind, fill, framesPerSec, bytesPerSec, drops, latency, ... }]
 * ```
 * What each kind counts: a channel its frames and bytes sent, drops = times the producer
 * found the ring full; a fan-out sender its copies into consumer rings, drops = evictions,
 * fill = its fullest consumer ring; a daemon the commands its live clients had served, fill =
 * its fullest command ring; a session or hub the descriptors sent both ways (bytes: descriptor
 * bytes, payloads travel in slots), fill = slots not free; a blob store the entries and bytes
 * its chunks grew by, drops = appends refused because it was full, fill = chunks in use. Latency is end-to-end (sender
 * stamp to the consumer decoding it) as a fan-out consumer publishes it into its ring about
 * every 100 ms: on the ring's row and, worst over its consumers, on the sender's row. Blob
 * chunks are folded into their store's row.
 * Reads only (see inspect.ts); allocates per call, for a tool.
 */
import { type ListOptions, listSegments, type SegmentInfo } from './inspect.js';

export interface Sample {
  atMs: number;
  segments: SegmentInfo[];
}

export interface TopRow {
  name: string;
  kind: string;
  pid: number;
  alive: boolean;
  /** 0..1, or null when the kind has no fill. */
  fill: number | null;
  /** Totals now (the counters as read). */
  frames: number | null;
  bytes: number | null;
  /** Per second over the interval; null without a previous sample of the same segment (or a counter that went back). */
  framesPerSec: number | null;
  bytesPerSec: number | null;
  drops: number | null;
  /** End-to-end latency in ns (fan-out rings and senders), or null. */
  latencyP50Ns: number | null;
  latencyP99Ns: number | null;
  /** Who is attached: "consumer alive", "2 consumers", "1 client", ... */
  peers: string;
  problem?: string;
}

/** A listing with its time. */
export function sample(options: ListOptions = {}): Sample {
  return { atMs: Date.now(), segments: listSegments(options) };
}

interface Counted {
  frames: number | null;
  bytes: number | null;
  drops: number | null;
  fill: number | null;
  p50: number | null;
  p99: number | null;
  peers: string;
  /** A blob store's chunks: generation -> [entries, used bytes], for rates that survive chunks being freed. */
  chunks?: Map<number, [number, number]>;
}

type Latency = { p50Ns: number; p99Ns: number; ageMs: number } | null;

/** A latency older than this is not shown (the consumer stopped receiving or publishing). */
const LATENCY_STALE_MS = 5000;

function fresh(l: Latency | undefined): Latency {
  return l !== undefined && l !== null && l.ageMs <= LATENCY_STALE_MS ? l : null;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** The counters of one segment that `top` shows, by kind (see the module doc). */
function counted(s: SegmentInfo): Counted {
  // biome-ignore lint/suspicious/noExplicitAny: details are decoded per kind by inspect.ts; every number read here goes through num()
  const d = s.details as Record<string, any>;
  const none: Counted = { frames: null, bytes: null, drops: null, fill: null, p50: null, p99: null, peers: '' };
  if (s.problem !== undefined) return none;
  switch (s.kind) {
    case 'channel': {
      const l = fresh(d.latency);
      return {
        frames: num(d.producer?.sentFrames),
        bytes: num(d.producer?.sentBytes),
        drops: num(d.producer?.fullCount),
        fill: num(d.fill),
        p50: l?.p50Ns ?? null,
        p99: l?.p99Ns ?? null,
        peers: d.consumer?.alive ? 'consumer alive' : 'no consumer',
      };
    }
    case 'fan-out sender': {
      const e = d.evictions ?? {};
      const consumers = (Array.isArray(d.perConsumer) ? d.perConsumer : []).filter(
        (c: { state?: string }) => c.state === 'live',
      );
      let fill: number | null = null;
      let worst: Latency = null;
      for (const c of consumers) {
        const ring = c.ring ?? {};
        if (ring.found) fill = Math.max(fill ?? 0, num(ring.fill) ?? 0);
        const l = fresh(ring.latency);
        if (l !== null && (worst === null || l.p99Ns > worst.p99Ns)) worst = l;
      }
      return {
        frames: num(d.dispatched),
        bytes: num(d.dispatchedBytes),
        drops:
          (num(e['ring-full']) ?? 0) + (num(e.idle) ?? 0) + (num(e.protocol) ?? 0) + (num(e['too-many-keys']) ?? 0),
        fill,
        p50: worst?.p50Ns ?? null,
        p99: worst?.p99Ns ?? null,
        peers: `${num(d.consumers) ?? 0} consumer(s)`,
      };
    }
    case 'daemon': {
      const clients = Array.isArray(d.clients) ? d.clients : [];
      let fill: number | null = 0;
      let bytes = 0;
      for (const c of clients) {
        bytes += num(c.commands?.servedBytes) ?? 0;
        for (const k of c.commands?.perClass ?? []) fill = Math.max(fill ?? 0, num(k.fill) ?? 0);
      }
      return {
        frames: num(d.commandsServed),
        bytes,
        drops: null,
        fill,
        p50: null,
        p99: null,
        peers: `${clients.filter((c: { alive?: boolean }) => c.alive).length} client(s), state v${num(d.stateVersion) ?? '?'}`,
      };
    }
    case 'session': {
      const slots = d.slots ?? {};
      const total = num(slots.slots) ?? 0;
      return {
        frames: (num(d.aToB?.sentFrames) ?? 0) + (num(d.bToA?.sentFrames) ?? 0),
        bytes: (num(d.aToB?.sentBytes) ?? 0) + (num(d.bToA?.sentBytes) ?? 0),
        drops: null,
        fill: total > 0 ? 1 - (num(slots.free) ?? 0) / total : null,
        p50: null,
        p99: null,
        peers: d.peerB?.alive ? 'peer B alive' : 'no peer B',
      };
    }
    case 'hub': {
      const total = num(d.slotsTotal) ?? 0;
      const peers = Array.isArray(d.livePeers) ? d.livePeers.length : 0;
      return {
        frames: (num(d.upFrames) ?? 0) + (num(d.downFrames) ?? 0),
        bytes: null,
        drops: null,
        fill: total > 0 ? (num(d.slotsInUse) ?? 0) / total : null,
        p50: null,
        p99: null,
        peers: `${peers} peer(s)`,
      };
    }
    case 'blob store': {
      const max = num(d.maxChunks) ?? 0;
      const list = Array.isArray(d.chunks) ? d.chunks : [];
      const used = list.length;
      const chunks = new Map<number, [number, number]>();
      for (const c of list)
        if (c.file?.found === true) chunks.set(c.generation, [num(c.file.entries) ?? 0, num(c.file.used) ?? 0]);
      return {
        chunks,
        frames: num(d.entries),
        bytes: num(d.usedBytes),
        drops: num(d.full),
        fill: max > 0 ? used / max : null,
        p50: null,
        p99: null,
        peers: `${used} chunk(s), ${num(d.entries) ?? 0} entries`,
      };
    }
    default:
      return none;
  }
}

/**
 * Entries and bytes appended to a blob store between two samples, chunk by chunk (a chunk's
 * counters only grow during its life; one that appeared counts from 0, one freed meanwhile
 * counts nothing more). The store's own `appends` counter is published in batches of 64.
 */
function chunkGrowth(now: Map<number, [number, number]>, before: Map<number, [number, number]>): [number, number] {
  let entries = 0;
  let bytes = 0;
  for (const [generation, [e, b]] of now) {
    const [e0, b0] = before.get(generation) ?? [0, 0];
    entries += Math.max(0, e - e0);
    bytes += Math.max(0, b - b0);
  }
  return [entries, bytes];
}

function rate(now: number | null, before: number | null, seconds: number): number | null {
  if (now === null || before === null || seconds <= 0 || now < before) return null;
  return (now - before) / seconds;
}

/** One row per segment of `current` (blob chunks folded into their store), rates against `previous`. */
export function topRows(previous: Sample | null, current: Sample): TopRow[] {
  const before = new Map<string, Counted>();
  if (previous !== null) for (const s of previous.segments) before.set(`${s.file}@${s.createdAtMs}`, counted(s));
  const seconds = previous === null ? 0 : (current.atMs - previous.atMs) / 1000;
  const rows: TopRow[] = [];
  for (const s of current.segments) {
    if (s.kind === 'blob chunk') continue;
    const c = counted(s);
    const b = before.get(`${s.file}@${s.createdAtMs}`) ?? null;
    let framesPerSec = rate(c.frames, b?.frames ?? null, seconds);
    let bytesPerSec = rate(c.bytes, b?.bytes ?? null, seconds);
    if (c.chunks !== undefined && b?.chunks !== undefined && seconds > 0) {
      const [entries, bytes] = chunkGrowth(c.chunks, b.chunks);
      framesPerSec = entries / seconds;
      bytesPerSec = bytes / seconds;
    }
    rows.push({
      name: s.name,
      kind: s.kind,
      pid: s.ownerPid,
      alive: s.alive,
      fill: c.fill,
      frames: c.frames,
      bytes: c.bytes,
      framesPerSec,
      bytesPerSec,
      drops: c.drops,
      latencyP50Ns: c.p50,
      latencyP99Ns: c.p99,
      peers: c.peers,
      ...(s.problem !== undefined ? { problem: s.problem } : {}),
    });
  }
  return rows;
}
