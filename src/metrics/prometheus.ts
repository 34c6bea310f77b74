/**
 * A Prometheus adapter: the counters every shmbus segment keeps in shared memory, read at
 * scrape time and exposed through prom-client (an optional peer dependency: shmbus never
 * imports it; the caller passes its own module, so its registry, version and cluster
 * aggregation are the ones used).
 *
 * ```ts
 * import client from 'prom-client';
 * import { registerPrometheusMetrics } from 'shmbus';
 *
 * registerPrometheusMetrics(client);                 // into client.register
 * // GET /metrics: res.end(await client.register.metrics());
 * ```
 *
 * Every scrape maps each `shmbus.*` file of the directory read-only (listSegments: the same
 * reader as `shmbus ls`), decodes its counters and unmaps it: no hot path is touched, no lock
 * taken, and any process can scrape any segment it may read, including other processes'
 * segments. A scrape costs about 0.1 ms per segment (80-150 us measured with 100 channels on the
 * loaded 2-core test machine); one snapshot serves every metric of the same scrape (it is reused for `snapshotMs`, 250 ms by default). Values are a snapshot: a live
 * segment moves while it is read.
 *
 * Counters are cumulative over a segment's life (`*_total`): a segment re-created under the
 * same name starts again at 0, which Prometheus' rate() reads as a counter reset.
 */
import { ErrorCode, ShmArgumentError } from '../errors.js';
import { listSegments, type SegmentInfo } from '../inspect/inspect.js';

/** The part of prom-client's module this adapter uses (prom-client >= 13). */
export interface PromClientLike {
  /** prom-client's Gauge class (typed loosely so that any prom-client version's typings fit). */
  Gauge: abstract new (
    ...args: never[]
  ) => unknown;
  register: unknown;
}

/** How this adapter constructs prom-client's Gauge. */
type GaugeClass = new (config: {
  name: string;
  help: string;
  labelNames?: readonly string[];
  registers?: unknown[];
  collect?: (this: PromGaugeLike) => void | Promise<void>;
}) => PromGaugeLike;

/** What collect() calls on a prom-client Gauge. */
export interface PromGaugeLike {
  set(labels: Record<string, string | number>, value: number): void;
  reset(): void;
}

export interface PrometheusOptions {
  /** Registry to register into (default: `client.register`, prom-client's global registry). */
  registry?: unknown;
  /** Metric name prefix (default `shmbus_`). */
  prefix?: string;
  /** Segment directory (default $SHMBUS_DIR, else /dev/shm). */
  dir?: string;
  /** Only segments this returns true for (default: all). */
  filter?: (segment: SegmentInfo) => boolean;
  /** How long one directory snapshot is reused across the metrics of a scrape (default 250 ms). */
  snapshotMs?: number;
}

interface MetricSpec {
  name: string;
  help: string;
  labels: readonly string[];
  /** [labels, value] pairs for one segment; nothing for segments of other kinds. */
  read: (s: SegmentInfo) => Array<[Record<string, string>, number]>;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const obj = (v: unknown): Record<string, unknown> =>
  typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};

/** One value of a segment's details at `path`, if it is a finite number. */
function at(s: SegmentInfo, ...path: string[]): number | undefined {
  let v: unknown = s.details;
  for (const p of path) v = obj(v)[p];
  return num(v);
}

function one(s: SegmentInfo, v: number | undefined, extra: Record<string, string> = {}) {
  return v === undefined ? [] : [[{ segment: s.name, ...extra }, v] as [Record<string, string>, number]];
}

/** A per-segment metric of one kind, read from one details path. */
function field(kind: string, name: string, help: string, ...path: string[]): MetricSpec {
  return { name, help, labels: ['segment'], read: (s) => (s.kind === kind ? one(s, at(s, ...path)) : []) };
}

const SPECS: MetricSpec[] = [
  {
    name: 'segment_bytes',
    help: 'Size of the segment file in bytes',
    labels: ['segment', 'kind'],
    read: (s) => [[{ segment: s.name, kind: s.kind }, s.bytes]],
  },
  {
    name: 'segment_owner_alive',
    help: "1 while the segment's creating process holds its liveness lock, else 0",
    labels: ['segment', 'kind'],
    read: (s) => [[{ segment: s.name, kind: s.kind }, s.alive ? 1 : 0]],
  },
  {
    name: 'segment_unreadable',
    help: '1 for a shmbus file that could not be decoded (other user, corrupt, other layout version)',
    labels: ['segment'],
    read: (s) => (s.problem === undefined ? [] : [[{ segment: s.name }, 1]]),
  },
  // Channels: the producer's and the consumer's own counters, and the ring positions.
  field('channel', 'channel_capacity_bytes', 'Ring data capacity in bytes', 'capacity'),
  {
    name: 'channel_fill_bytes',
    help: 'Bytes written and not yet released, per priority ring',
    labels: ['segment', 'ring'],
    read: (s) => {
      if (s.kind !== 'channel') return [];
      const rings = obj(s.details).rings;
      if (!Array.isArray(rings)) return [];
      return rings.flatMap((r, i) => one(s, num(obj(r).fillBytes), { ring: String(i) }));
    },
  },
  field('channel', 'channel_sent_frames_total', 'Frames committed by the producer', 'producer', 'sentFrames'),
  field('channel', 'channel_sent_bytes_total', 'Payload bytes committed by the producer', 'producer', 'sentBytes'),
  field('channel', 'channel_full_total', 'Times the producer found the ring full', 'producer', 'fullCount'),
  field('channel', 'channel_received_frames_total', 'Frames released by the consumer', 'consumer', 'receivedFrames'),
  field(
    'channel',
    'channel_received_bytes_total',
    'Payload bytes released by the consumer',
    'consumer',
    'receivedBytes',
  ),
  {
    name: 'channel_consumer_alive',
    help: '1 while a consumer holds the receiving end, else 0',
    labels: ['segment'],
    read: (s) => (s.kind === 'channel' ? one(s, obj(obj(s.details).consumer).alive ? 1 : 0) : []),
  },
  // Fan-out senders: the registration segment's counters.
  field('fan-out sender', 'fanout_consumers', 'Consumers connected to the fan-out sender', 'consumers'),
  field('fan-out sender', 'fanout_published_total', 'Messages published by the sender', 'published'),
  field('fan-out sender', 'fanout_dispatched_total', 'Message copies written to consumer rings', 'dispatched'),
  field('fan-out sender', 'fanout_dispatched_bytes_total', 'Bytes written to consumer rings', 'dispatchedBytes'),
  field('fan-out sender', 'fanout_unmatched_total', 'Published messages no consumer wanted', 'unmatched'),
  field('fan-out sender', 'fanout_refused_total', 'Connections refused (allow-list, limits, bad handshake)', 'refused'),
  field('fan-out sender', 'fanout_disconnects_total', 'Consumers that went away', 'disconnects'),
  {
    name: 'fanout_evictions_total',
    help: 'Consumers evicted by the sender, by reason',
    labels: ['segment', 'reason'],
    read: (s) => {
      if (s.kind !== 'fan-out sender') return [];
      const ev = obj(obj(s.details).evictions);
      return Object.keys(ev).flatMap((reason) => one(s, num(ev[reason]), { reason }));
    },
  },
  // Blob stores: the control segment's table and counters.
  {
    name: 'blob_chunks',
    help: 'Chunks of the blob store, by state',
    labels: ['segment', 'state'],
    read: (s) => {
      if (s.kind !== 'blob store') return [];
      const states = obj(obj(s.details).states);
      return Object.keys(states).flatMap((state) => one(s, num(states[state]), { state }));
    },
  },
  field('blob store', 'blob_max_chunks', 'Most chunks the store may hold (its backpressure limit)', 'maxChunks'),
  field(
    'blob store',
    'blob_appends_total',
    'Blobs appended (each writer adds its count every 64 appends and when it closes)',
    'appends',
  ),
  field('blob store', 'blob_chunks_freed_total', 'Chunks freed (acknowledged or expired)', 'freed'),
  field('blob store', 'blob_chunks_expired_total', 'Chunks freed by the TTL', 'expired'),
  field('blob store', 'blob_full_total', 'Appends refused because maxChunks were in use', 'full'),
  // Daemons and hubs: who is attached.
  {
    name: 'daemon_clients',
    help: 'Client slots held by live clients',
    labels: ['segment'],
    read: (s) => {
      const slots = obj(s.details).liveClientSlots;
      return s.kind === 'daemon' && Array.isArray(slots) ? one(s, slots.length) : [];
    },
  },
  field('daemon', 'daemon_max_clients', 'Client slots of the daemon', 'maxClients'),
  {
    name: 'hub_peers',
    help: 'Peers attached to the hub and alive',
    labels: ['segment'],
    read: (s) => {
      const peers = obj(s.details).livePeers;
      return s.kind === 'hub' && Array.isArray(peers) ? one(s, peers.length) : [];
    },
  },
  field('hub', 'hub_max_peers', 'Peer places of the hub', 'maxPeers'),
];

/** Metric names (without the prefix), for documentation and tests. */
export const PROMETHEUS_METRICS: readonly string[] = SPECS.map((s) => s.name);

/**
 * Registers one prom-client Gauge per shmbus metric (`PROMETHEUS_METRICS`), each filled at
 * scrape time from the segments of `dir`. Call once per registry (a second call throws
 * prom-client's "already registered"). Synchronous; reads nothing until the first scrape.
 * Counters (`*_total`) are exposed as gauges holding the cumulative value, because their
 * source is a total kept in shared memory, not increments seen by this process.
 * Returns `unregister()`, which removes them from the registry.
 */
export function registerPrometheusMetrics(
  client: PromClientLike,
  options: PrometheusOptions = {},
): { unregister(): void } {
  if (typeof client?.Gauge !== 'function')
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      'registerPrometheusMetrics(client): pass the prom-client module (import client from "prom-client")',
    );
  const prefix = options.prefix ?? 'shmbus_';
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(`${prefix}x`))
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `prefix ${JSON.stringify(prefix)} is not a metric name prefix`,
    );
  const registry = options.registry ?? client.register;
  const snapshotMs = options.snapshotMs ?? 250;
  let taken = -Infinity;
  let segments: SegmentInfo[] = [];
  const snapshot = (): SegmentInfo[] => {
    const now = performance.now();
    if (now - taken >= snapshotMs) {
      const all = listSegments({ dir: options.dir });
      segments = options.filter ? all.filter(options.filter) : all;
      taken = now;
    }
    return segments;
  };
  const names: string[] = [];
  for (const spec of SPECS) {
    const name = prefix + spec.name;
    names.push(name);
    new (client.Gauge as unknown as GaugeClass)({
      name,
      help: spec.help,
      labelNames: spec.labels,
      registers: [registry],
      collect(this: PromGaugeLike) {
        // Segments gone since the last scrape must disappear, not keep their last value.
        this.reset();
        for (const s of snapshot()) for (const [labels, value] of spec.read(s)) this.set(labels, value);
      },
    });
  }
  return {
    unregister() {
      const r = registry as { removeSingleMetric?: (name: string) => void };
      for (const name of names) r.removeSingleMetric?.(name);
    },
  };
}
