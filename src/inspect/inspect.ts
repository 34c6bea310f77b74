/**
 * Reading shmbus segments from the outside, for `shmbus ls`, `shmbus inspect` and `shmbus top`:
 * every file is opened read-only and mapped read-only, its header and counters decoded, and
 * each role's liveness lock probed (F_OFD_GETLK: a probe takes no lock). Nothing here writes
 * shared memory, takes a role or touches any process's hot path; a live segment may move while
 * it is read, so positions and counters are a snapshot, each value read once.
 *
 * ```ts
 * listSegments();                 // [{ name, kind, bytes, ownerPid, alive, summary, details, ... }]
 * inspectSegment('orders');       // the same for one segment
 * ```
 * What `details` holds per kind: a channel its rings (positions, fill, frames in flight per
 * priority class), both ends' counters and the latency a fan-out consumer publishes; a fan-out
 * sender its counters, kind modes and consumer table, each consumer joined with its ring
 * (lag, fill, latency); a daemon its state version and per client slot the command queue
 * depth and the commands served; a session or hub its slots per state and owner (per size
 * class) and the descriptor traffic each way; a blob store its chunks with their entries,
 * acknowledgements and ages.
 * Files that are not shmbus segments, other users' files (no permission) and corrupt ones
 * are listed with a `problem` instead of failing the listing: no value read from a segment
 * can make these functions throw, loop for long or allocate more than the file's size.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SLOT_ALLOCATED, SLOT_FREE, SLOT_IN_FLIGHT } from '../core/slab.js';
import {
  ACKED_OFFSET,
  APPENDS_OFFSET,
  CHUNK_CAPACITY_OFFSET,
  CHUNK_SIZE_OFFSET,
  ChunkState,
  chunkStateName,
  ENTRIES_OFFSET,
  ENTRY_CREATED_OFFSET,
  ENTRY_GENERATION_OFFSET,
  ENTRY_STATE_OFFSET,
  EXPIRED_OFFSET,
  FIRST_WRITE_OFFSET,
  FREED_OFFSET,
  FULL_OFFSET,
  LAST_WRITE_OFFSET,
  LEASES_OFFSET,
  MAX_CHUNKS,
  MAX_CHUNKS_OFFSET,
  SEALED_OFFSET,
  STORE_CLOSED_OFFSET,
  TABLE_ENTRY_LENGTH,
  TABLE_OFFSET,
  TTL_OFFSET,
  USED_OFFSET,
  WRITE_HEAD_OFFSET,
  WRITERS_OFFSET,
} from '../layout/blob.js';
import {
  ATTACH_COUNT_OFFSET,
  type ChannelGeometry,
  CONSUMER_CLOSED_OFFSET,
  CONSUMER_PID_OFFSET,
  CONSUMER_ROLE,
  checkChannelGeometry,
  FULL_COUNT_OFFSET,
  HEAD_POSITION_OFFSET,
  LATENCY_MAX_OFFSET,
  LATENCY_P50_OFFSET,
  LATENCY_P99_OFFSET,
  LATENCY_SAMPLES_OFFSET,
  LATENCY_UPDATED_MS_OFFSET,
  PRODUCER_CLOSED_OFFSET,
  RECEIVED_BYTES_OFFSET,
  RECEIVED_FRAMES_OFFSET,
  RECORD_HEADER_LENGTH,
  RECORD_LENGTH_OFFSET,
  RECORD_TYPE_OFFSET,
  readChannelParams,
  SENT_BYTES_OFFSET,
  SENT_FRAMES_OFFSET,
  TAIL_POSITION_OFFSET,
  TYPE_DATA,
  TYPE_PADDING,
} from '../layout/channel.js';
import {
  CLIENT_ROLE_BASE,
  checkDaemonGeometry,
  DAEMON_CLOSED_OFFSET,
  DAEMON_PROTOCOL_VERSION,
  NEXT_CLIENT_ID_OFFSET,
  readDaemonParams,
  SLOT_CLAIMED,
  SLOT_CLIENT_ID_OFFSET,
  SLOT_GENERATION_OFFSET,
  SLOT_PID_OFFSET,
  SLOT_STATE_OFFSET,
  STATE_SEQ_OFFSET,
  slotAreas,
} from '../layout/daemon.js';
import {
  ENTRY_CLAIMED,
  ENTRY_PEER_ID_OFFSET,
  HOST_CLOSED_OFFSET,
  HOST_OWNER,
  ENTRY_PID_OFFSET as HUB_ENTRY_PID_OFFSET,
  ENTRY_STATE_OFFSET as HUB_ENTRY_STATE_OFFSET,
  PEER_ROLE_BASE,
  peerAreas,
  readHubParams,
} from '../layout/hub.js';
import { HEADER_LENGTH, hasMagic, Kind, kindName, LAYOUT_VERSION, OWNER_ROLE, readHeader } from '../layout/segment.js';
import {
  CONSUMER_TABLE_OFFSET,
  COUNTER_COUNT,
  COUNTERS_OFFSET,
  type ConsumerEntry,
  KIND_MODE_CODES,
  KIND_MODES_OFFSET,
  MAX_CONSUMERS_OFFSET,
  MAX_TABLE_SLOTS,
  RING_CAPACITY_OFFSET,
  readConsumerEntry,
  SENDER_PROTOCOL_OFFSET,
  SENDER_SEGMENT_LENGTH,
  SOCKET_PATH_LENGTH_OFFSET,
  SOCKET_PATH_OFFSET,
  SOCKET_PATH_ROOM,
  senderCounters,
  senderSegmentLength,
  TABLE_OFFSET_OFFSET,
  TABLE_SLOTS_OFFSET,
} from '../layout/sender.js';
import {
  PEER_A_BLOCK_OFFSET,
  PEER_B_BLOCK_OFFSET,
  PEER_B_ROLE,
  PEER_CLOSED_OFFSET,
  PEER_OPENS_OFFSET,
  PEER_PID_OFFSET,
  readSessionParams,
} from '../layout/session.js';
import { SLAB_STATES_WORD } from '../layout/slab.js';
import { native } from '../native/binding.js';
import { FILE_PREFIX, segmentDir } from '../segment/names.js';

export interface SegmentInfo {
  /** The name under which the library opens it (the file is `shmbus.<name>`). */
  name: string;
  file: string;
  kind: string;
  bytes: number;
  ownerPid: number;
  /** The owner's liveness lock is held: the creating process is alive. */
  alive: boolean;
  createdAtMs: number;
  /** One line for `shmbus ls`: fill, peers, counters. */
  summary: string;
  /** Decoded per kind (see the module doc). */
  details: Record<string, unknown>;
  /** Why it could not be read (not shmbus, no permission, corrupt); the other fields are partial. */
  problem?: string;
}

export interface ListOptions {
  /** Segment directory (default $SHMBUS_DIR, else /dev/shm). */
  dir?: string;
}

/** Every shmbus file of the directory (half-made `~` files are skipped), decoded. */
export function listSegments(options: ListOptions = {}): SegmentInfo[] {
  const dir = segmentDir(options.dir);
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.startsWith(FILE_PREFIX) && !f.includes('~'));
  } catch {
    return [];
  }
  return files.sort().map((file) => readSegment(dir, file));
}

/** One segment by name (`orders` or `shmbus.orders`), or null if there is no such file. */
export function inspectSegment(name: string, options: ListOptions = {}): SegmentInfo | null {
  const dir = segmentDir(options.dir);
  const file = name.startsWith(FILE_PREFIX) ? name : FILE_PREFIX + name;
  if (file.includes('/')) return null;
  const info = readSegment(dir, file);
  return info.problem === 'no such file' ? null : info;
}

function blank(file: string): SegmentInfo {
  return {
    name: file.slice(FILE_PREFIX.length),
    file,
    kind: '?',
    bytes: 0,
    ownerPid: 0,
    alive: false,
    createdAtMs: 0,
    summary: '',
    details: {},
  };
}

/** What a decoder reads from. */
interface Mapped {
  dir: string;
  dv: DataView;
  i32: Int32Array;
  bytes: number;
  /** Whether the lock byte of `role` is held (its holder is alive). */
  held: (role: number) => boolean;
  alive: boolean;
  ownerPid: number;
  /** Whether to read the segments this one names (a sender's consumer rings, a store's chunks); false inside such a read, so a corrupt name cannot recurse. */
  follow: boolean;
}

function readSegment(dir: string, file: string, follow = true): SegmentInfo {
  const info = blank(file);
  const n = native();
  let fd: number;
  try {
    fd = n.openFile(join(dir, file), false);
  } catch (err) {
    const code = (err as { code?: string }).code;
    info.problem =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'no permission (another user)' : `cannot open (${code})`;
    return info;
  }
  try {
    const [bytes] = n.fstat(fd);
    info.bytes = bytes;
    if (bytes < HEADER_LENGTH) {
      info.problem = `truncated (${bytes} bytes)`;
      return info;
    }
    const [buffer, handle] = n.map(fd, bytes, false);
    try {
      const dv = new DataView(buffer);
      const i32 = new Int32Array(buffer, 0, bytes >> 2);
      if (!hasMagic(new Uint8Array(buffer))) {
        info.problem = 'not a shmbus segment';
        return info;
      }
      const h = readHeader(dv, i32);
      info.kind = kindName(h.kind);
      info.ownerPid = h.ownerPid;
      info.createdAtMs = h.createdAtMs;
      info.alive = n.lockHeld(fd, OWNER_ROLE);
      if (h.version !== LAYOUT_VERSION) {
        info.problem = `layout version ${h.version} (this shmbus reads ${LAYOUT_VERSION})`;
        return info;
      }
      const held = (role: number) => n.lockHeld(fd, role);
      try {
        decode(info, h.kind, { dir, dv, i32, bytes, held, alive: info.alive, ownerPid: h.ownerPid, follow });
      } catch (err) {
        info.problem = `corrupt: ${(err as Error).message}`;
      }
      return info;
    } finally {
      n.unmap(handle, buffer);
    }
  } finally {
    n.closeFd(fd);
  }
}

const f64At = (dv: DataView, offset: number) => dv.getFloat64(offset, true);

function ringFill(tail: number, head: number, length: number): number {
  const d = tail - head;
  return d < 0 ? d + 2 * length : d;
}

function percent(part: number, whole: number): string {
  return whole > 0 ? `${Math.round((100 * part) / whole)}%` : '-';
}

/** Records walked per ring at most when counting the frames in flight. */
export const MAX_WALK = 100_000;

/**
 * Counts the DATA records between `head` and `tail` of ring `c` (frames in flight in that
 * class), walking the record headers. Null when a header does not add up (the consumer moved
 * on and the producer reused the bytes while we read, or a corrupt segment), or when there are
 * more than MAX_WALK records.
 */
function countFrames(dv: DataView, g: ChannelGeometry, c: number, tail: number, head: number): number | null {
  const length = g.ringLengths[c];
  const data = g.dataIndices[c];
  const two = 2 * length;
  let p = head;
  let frames = 0;
  for (let walked = 0; p !== tail; walked++) {
    if (walked >= MAX_WALK) return null;
    const index = p < length ? p : p - length;
    if (index + RECORD_HEADER_LENGTH > length) return null;
    const recordLength = dv.getInt32(data + index + RECORD_LENGTH_OFFSET, true);
    const type = dv.getUint32(data + index + RECORD_TYPE_OFFSET, true);
    if (recordLength < RECORD_HEADER_LENGTH || recordLength % 8 !== 0 || index + recordLength > length) return null;
    if (type === TYPE_DATA) frames++;
    else if (type !== TYPE_PADDING) return null;
    p = (p + recordLength) % two;
  }
  return frames;
}

/** A ring set's positions and both ends' counters (a channel's, or an area of a daemon, session or hub). */
function areaState(dv: DataView, g: ChannelGeometry, blocksBase: number, walk: boolean) {
  const rings = g.ringLengths.map((length, c) => {
    const tail = dv.getUint32(blocksBase + TAIL_POSITION_OFFSET + 4 * c, true);
    const head = dv.getUint32(blocksBase + HEAD_POSITION_OFFSET + 4 * c, true);
    const fillBytes = ringFill(tail, head, length);
    return {
      class: c,
      length,
      tail,
      head,
      fillBytes,
      fill: length > 0 ? fillBytes / length : 0,
      ...(walk ? { framesInFlight: countFrames(dv, g, c, tail, head) } : {}),
    };
  });
  const sentFrames = f64At(dv, blocksBase + SENT_FRAMES_OFFSET);
  const receivedFrames = f64At(dv, blocksBase + RECEIVED_FRAMES_OFFSET);
  return {
    rings,
    fillBytes: rings.reduce((a, r) => a + r.fillBytes, 0),
    sentFrames,
    sentBytes: f64At(dv, blocksBase + SENT_BYTES_OFFSET),
    receivedFrames,
    receivedBytes: f64At(dv, blocksBase + RECEIVED_BYTES_OFFSET),
    /** From the batched counters: the walk per ring is exact, this lags by up to a batch. */
    inFlightFrames: Math.max(0, sentFrames - receivedFrames),
  };
}

/** Latency a fan-out consumer published into its ring's consumer block, or null if none. */
function latencyOf(dv: DataView) {
  const updatedMs = f64At(dv, LATENCY_UPDATED_MS_OFFSET);
  if (!(updatedMs > 0)) return null;
  return {
    p50Ns: f64At(dv, LATENCY_P50_OFFSET),
    p99Ns: f64At(dv, LATENCY_P99_OFFSET),
    maxNs: f64At(dv, LATENCY_MAX_OFFSET),
    samples: f64At(dv, LATENCY_SAMPLES_OFFSET),
    ageMs: Math.max(0, Date.now() - updatedMs),
  };
}

/** A slab's slots per state and per owner (layout/slab.ts; owners: session A 0 / B 1, hub peer i / host 63). */
function slabState(i32: Int32Array, slabOffset: number, slotCount: number) {
  const base = slabOffset >> 2;
  let free = 0;
  let held = 0;
  let inFlight = 0;
  const byOwner: Record<string, { held: number; inFlight: number }> = {};
  for (let s = 0; s < slotCount; s++) {
    const word = i32[base + SLAB_STATES_WORD + s];
    const state = word & 3;
    if (state === SLOT_FREE) {
      free++;
      continue;
    }
    const owner = String((word >>> 2) & 63);
    byOwner[owner] ??= { held: 0, inFlight: 0 };
    if (state === SLOT_ALLOCATED) {
      held++;
      byOwner[owner].held++;
    } else if (state === SLOT_IN_FLIGHT) {
      inFlight++;
      byOwner[owner].inFlight++;
    }
  }
  return { slots: slotCount, free, held, inFlight, byOwner };
}

/** Milliseconds since a blob-store stamp (low 32 bits of Date.now(), 0: none), or null. */
function stampAge(stamp: number): number | null {
  if (stamp === 0) return null;
  return Math.max(0, ((Date.now() >>> 0) - stamp) | 0);
}

const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

function decode(info: SegmentInfo, kind: number, m: Mapped): void {
  switch (kind) {
    case Kind.CHANNEL:
      decodeChannel(info, m);
      return;
    case Kind.SENDER:
      decodeSender(info, m);
      return;
    case Kind.SESSION:
      decodeSession(info, m);
      return;
    case Kind.HUB:
      decodeHub(info, m);
      return;
    case Kind.DAEMON:
      decodeDaemon(info, m);
      return;
    case Kind.BLOB:
      decodeBlobStore(info, m);
      return;
    case Kind.BLOB_CHUNK:
      decodeBlobChunk(info, m);
      return;
    default:
      info.summary = '';
  }
}

function decodeChannel(info: SegmentInfo, { dv, i32, bytes, held, alive, ownerPid }: Mapped): void {
  const g = readChannelParams(dv);
  const problems = checkChannelGeometry(g, bytes);
  if (problems.length > 0) throw new Error(problems.join('; '));
  const area = areaState(dv, g, 0, true);
  const consumerAlive = held(CONSUMER_ROLE);
  const latency = latencyOf(dv);
  info.details = {
    capacity: g.capacity,
    maxFrame: g.maxFrame,
    priorities: g.classCount > 1,
    rings: area.rings,
    fillBytes: area.fillBytes,
    fill: area.fillBytes / g.capacity,
    inFlightFrames: area.inFlightFrames,
    producer: {
      pid: ownerPid,
      alive,
      closed: i32[PRODUCER_CLOSED_OFFSET >> 2] !== 0,
      sentFrames: area.sentFrames,
      sentBytes: area.sentBytes,
      fullCount: f64At(dv, FULL_COUNT_OFFSET),
    },
    consumer: {
      pid: dv.getUint32(CONSUMER_PID_OFFSET, true),
      alive: consumerAlive,
      closed: i32[CONSUMER_CLOSED_OFFSET >> 2] !== 0,
      attachCount: i32[ATTACH_COUNT_OFFSET >> 2],
      receivedFrames: area.receivedFrames,
      receivedBytes: area.receivedBytes,
    },
    latency,
  };
  const lat = latency === null ? '' : `, latency p50 ${micros(latency.p50Ns)} p99 ${micros(latency.p99Ns)}`;
  info.summary = `fill ${percent(area.fillBytes, g.capacity)} of ${g.capacity} B, consumer ${consumerAlive ? 'alive' : 'none'}, sent ${area.sentFrames} frames, ~${area.inFlightFrames} in flight${lat}`;
}

function micros(ns: number): string {
  return ns >= 1e6 ? `${(ns / 1e6).toFixed(1)} ms` : `${(ns / 1e3).toFixed(1)} us`;
}

/** A fan-out consumer's ring, read through its own channel segment (same directory). */
function consumerRing(dir: string, ring: string) {
  if (!SAFE_NAME.test(ring)) return { found: false as const };
  const r = readSegment(dir, FILE_PREFIX + ring, false);
  if (r.problem !== undefined || r.kind !== 'channel') return { found: false as const, problem: r.problem };
  const d = r.details as {
    capacity: number;
    fillBytes: number;
    fill: number;
    inFlightFrames: number;
    consumer: { alive: boolean; receivedFrames: number };
    producer: { sentFrames: number };
    latency: ReturnType<typeof latencyOf>;
  };
  return {
    found: true as const,
    consumerAlive: d.consumer.alive,
    fillBytes: d.fillBytes,
    fill: d.fill,
    lagFrames: d.inFlightFrames,
    receivedFrames: d.consumer.receivedFrames,
    latency: d.latency,
  };
}

function decodeSender(info: SegmentInfo, { dir, dv, i32, bytes, follow }: Mapped): void {
  if (bytes < SENDER_SEGMENT_LENGTH) throw new Error(`${bytes} bytes`);
  const pathLength = dv.getUint32(SOCKET_PATH_LENGTH_OFFSET, true);
  if (pathLength >= SOCKET_PATH_ROOM) throw new Error(`socket path length ${pathLength}`);
  const socket = new TextDecoder().decode(new Uint8Array(dv.buffer, SOCKET_PATH_OFFSET, pathLength));
  const counters = senderCounters(new Float64Array(dv.buffer, COUNTERS_OFFSET, COUNTER_COUNT));
  const evicted = counters.evictions;
  const evictions = evicted['ring-full'] + evicted.idle + evicted.protocol + evicted['too-many-keys'];
  const protocol = dv.getUint32(SENDER_PROTOCOL_OFFSET, true);
  const details: Record<string, unknown> = {
    socket,
    protocol,
    maxConsumers: dv.getUint32(MAX_CONSUMERS_OFFSET, true),
    ringCapacity: dv.getUint32(RING_CAPACITY_OFFSET, true),
    ...counters,
  };
  let live: (ConsumerEntry & { ringState: ReturnType<typeof consumerRing> })[] = [];
  if (protocol >= 2) {
    const slots = dv.getUint32(TABLE_SLOTS_OFFSET, true);
    if (slots > MAX_TABLE_SLOTS || senderSegmentLength(slots) > bytes)
      throw new Error(`tableSlots=${slots} (file ${bytes} B)`);
    const tableOffset = dv.getUint32(TABLE_OFFSET_OFFSET, true);
    if (tableOffset !== CONSUMER_TABLE_OFFSET) throw new Error(`tableOffset=${tableOffset}`);
    const optIn: number[] = [];
    const always: number[] = [];
    for (let k = 0; k < 256; k++) {
      const mode = (dv.getUint8(KIND_MODES_OFFSET + (k >> 2)) >> (2 * (k & 3))) & 3;
      if (KIND_MODE_CODES[mode] === 'opt-in') optIn.push(k);
      else if (KIND_MODE_CODES[mode] === 'always') always.push(k);
    }
    details.kindModes = { 'opt-in': optIn, always, filtered: 'every other kind' };
    const entries: ConsumerEntry[] = [];
    for (let s = 0; s < slots; s++) {
      const e = readConsumerEntry(dv, i32, s);
      if (e !== null) entries.push(e);
    }
    const withRings = entries.map((e) => ({
      ...e,
      ringState: e.state === 'live' && follow ? consumerRing(dir, e.ring) : { found: false as const },
    }));
    live = withRings.filter((e) => e.state === 'live');
    details.consumerTable = { slots, used: entries.length };
    details.perConsumer = withRings.map(({ ringState, ...e }) => ({
      slot: e.slot,
      state: e.state,
      evictReason: e.evictReason === '' ? null : e.evictReason,
      consumerId: e.consumerId,
      pid: e.pid,
      uid: e.uid,
      name: e.name,
      filter: `${e.keys} key(s), ${e.groups} group(s), ${e.kinds.length} opted-in kind(s)`,
      keys: e.keys,
      groups: e.groups,
      kinds: e.kinds,
      delivered: e.delivered,
      deliveredBytes: e.deliveredBytes,
      connectedMs: e.connectedMs,
      endedMs: e.endedMs,
      ring: { name: e.ring, ...ringState },
    }));
  }
  info.details = details;
  const worst = live.reduce((a, e) => Math.max(a, e.ringState.found ? e.ringState.lagFrames : 0), 0);
  info.summary = `socket ${socket}, ${counters.consumers} consumer(s), published ${counters.published}, dispatched ${counters.dispatched}, evicted ${evictions}${live.length > 0 ? `, worst lag ${worst} frames` : ''}`;
}

function peerBlock(dv: DataView, i32: Int32Array, at: number, alive: boolean) {
  return {
    pid: dv.getUint32(at + PEER_PID_OFFSET, true),
    alive,
    closed: i32[(at + PEER_CLOSED_OFFSET) >> 2] !== 0,
    opens: dv.getUint32(at + PEER_OPENS_OFFSET, true),
  };
}

function direction(a: ReturnType<typeof areaState>) {
  const { rings, ...rest } = a;
  return { ...rest, ringBytes: rings[0]?.length ?? 0 };
}

function decodeSession(info: SegmentInfo, { dv, i32, bytes, held, alive }: Mapped): void {
  const { protocol, g, problems } = readSessionParams(dv, bytes);
  if (g === null || problems.length > 0) throw new Error(problems.join('; '));
  const b = held(PEER_B_ROLE);
  const slab = slabState(i32, g.slabOffset, g.slotCount);
  const ab = areaState(dv, g.ab.g, g.ab.blocksBase, false);
  const ba = areaState(dv, g.ba.g, g.ba.blocksBase, false);
  const { byOwner, ...slots } = slab;
  info.details = {
    protocol: `${protocol >>> 16}.${protocol & 0xffff}`,
    slotSize: g.slotSize,
    slotCount: g.slotCount,
    inlineMax: g.inlineMax,
    ringCapacity: g.ringCapacity,
    peerA: peerBlock(dv, i32, PEER_A_BLOCK_OFFSET, alive),
    peerB: peerBlock(dv, i32, PEER_B_BLOCK_OFFSET, b),
    slots: {
      ...slots,
      byPeer: { A: byOwner['0'] ?? { held: 0, inFlight: 0 }, B: byOwner['1'] ?? { held: 0, inFlight: 0 } },
    },
    aToB: direction(ab),
    bToA: direction(ba),
  };
  info.summary = `${g.slotCount} slots of ${g.slotSize} B (${slab.free} free, ${slab.held} held, ${slab.inFlight} in flight), peer B ${b ? 'alive' : 'none'}, ${ab.sentFrames} A->B, ${ba.sentFrames} B->A`;
}

function decodeHub(info: SegmentInfo, { dv, i32, bytes, held, alive, ownerPid }: Mapped): void {
  const { protocol, h, problems } = readHubParams(dv, bytes);
  if (h === null || problems.length > 0) throw new Error(problems.join('; '));
  const peers = [];
  let up = 0;
  let down = 0;
  for (let i = 0; i < h.maxPeers; i++) {
    const areas = peerAreas(h, i);
    const claimed = i32[(areas.base + HUB_ENTRY_STATE_OFFSET) >> 2] === ENTRY_CLAIMED;
    const peerAlive = held(PEER_ROLE_BASE + i);
    if (!claimed && !peerAlive) continue;
    const u = areaState(dv, areas.up.g, areas.up.blocksBase, false);
    const d = areaState(dv, areas.down.g, areas.down.blocksBase, false);
    up += u.sentFrames;
    down += d.sentFrames;
    peers.push({
      index: i,
      peerId: dv.getUint32(areas.base + ENTRY_PEER_ID_OFFSET, true),
      pid: dv.getUint32(areas.base + HUB_ENTRY_PID_OFFSET, true),
      alive: peerAlive,
      claimed,
      up: direction(u),
      down: direction(d),
    });
  }
  const owner = (o: string) => (o === String(HOST_OWNER) ? 'host' : `peer ${o}`);
  const classes = h.classes.map((c, i) => {
    const { byOwner, ...s } = slabState(i32, c.slabOffset, c.slotCount);
    return {
      class: i,
      slotSize: c.slotSize,
      ...s,
      byOwner: Object.fromEntries(Object.entries(byOwner).map(([o, v]) => [owner(o), v])),
    };
  });
  const total = classes.reduce((a, c) => a + c.slots, 0);
  const used = classes.reduce((a, c) => a + c.held + c.inFlight, 0);
  info.details = {
    protocol: `${protocol >>> 16}.${protocol & 0xffff}`,
    maxPeers: h.maxPeers,
    ringCapacity: h.ringCapacity,
    inlineMax: h.inlineMax,
    host: { pid: ownerPid, alive, closed: i32[HOST_CLOSED_OFFSET >> 2] !== 0 },
    peers,
    livePeers: peers.filter((p) => p.alive).map((p) => p.index),
    classes,
    slotsInUse: used,
    slotsTotal: total,
    upFrames: up,
    downFrames: down,
  };
  info.summary = `${peers.filter((p) => p.alive).length} of ${h.maxPeers} peers alive, ${classes.length} size class(es), ${used} of ${total} slots in use`;
}

function decodeDaemon(info: SegmentInfo, { dv, i32, bytes, held, alive, ownerPid }: Mapped): void {
  const d = readDaemonParams(dv);
  const problems = checkDaemonGeometry(d, bytes);
  if (problems.length > 0) throw new Error(problems.join('; '));
  const clients = [];
  let queued = 0;
  let served = 0;
  for (let i = 0; i < d.maxClients; i++) {
    const { base, cmd, resp } = slotAreas(d, i);
    const claimed = i32[(base + SLOT_STATE_OFFSET) >> 2] === SLOT_CLAIMED;
    const clientAlive = held(CLIENT_ROLE_BASE + i);
    if (!claimed && !clientAlive) continue;
    const c = areaState(dv, cmd.g, cmd.blocksBase, true);
    const r = areaState(dv, resp.g, resp.blocksBase, false);
    queued += c.inFlightFrames;
    served += c.receivedFrames;
    clients.push({
      slot: i,
      clientId: dv.getUint32(base + SLOT_CLIENT_ID_OFFSET, true),
      pid: dv.getUint32(base + SLOT_PID_OFFSET, true),
      generation: dv.getUint32(base + SLOT_GENERATION_OFFSET, true),
      alive: clientAlive,
      claimed,
      commands: {
        sent: c.sentFrames,
        served: c.receivedFrames,
        queued: c.inFlightFrames,
        queuedBytes: c.fillBytes,
        servedBytes: c.receivedBytes,
        perClass: c.rings.map((ring, k) => ({
          class: ['critical', 'high', 'low'][k] ?? String(k),
          fillBytes: ring.fillBytes,
          fill: ring.fill,
          framesInFlight: ring.framesInFlight,
        })),
      },
      responses: { sent: r.sentFrames, received: r.receivedFrames, queued: r.inFlightFrames, queuedBytes: r.fillBytes },
    });
  }
  // SYNC POINT: pairs with the daemon's Atomics.store(stateSeq) after each state write; read once.
  const stateVersion = Atomics.load(i32, STATE_SEQ_OFFSET >> 2) >>> 0;
  info.details = {
    protocolVersion: d.protocolVersion,
    protocolOk: d.protocolVersion === DAEMON_PROTOCOL_VERSION,
    dataSize: d.dataSize,
    maxClients: d.maxClients,
    cmdCapacity: d.cmdCapacity,
    respCapacity: d.respCapacity,
    cmdMaxBytes: d.cmdMaxBytes,
    daemon: { pid: ownerPid, alive, closed: i32[DAEMON_CLOSED_OFFSET >> 2] !== 0 },
    stateVersion,
    clientsEverConnected: dv.getUint32(NEXT_CLIENT_ID_OFFSET, true),
    clients,
    liveClientSlots: clients.filter((c) => c.alive).map((c) => c.slot),
    /** Over the client slots in use now: a slot's counters restart when a new client claims it. */
    commandsQueued: queued,
    commandsServed: served,
  };
  info.summary = `${clients.filter((c) => c.alive).length} of ${d.maxClients} client slots in use, state version ${stateVersion}, ${queued} command(s) queued, ${served} served`;
}

function chunkDetails(dir: string, storeName: string, generation: number) {
  const r = readSegment(dir, `${FILE_PREFIX}${storeName}.b${generation}`, false);
  if (r.problem !== undefined || r.kind !== 'blob chunk') return { found: false, problem: r.problem ?? r.kind };
  return { found: true, ...r.details };
}

function decodeBlobStore(info: SegmentInfo, { dir, dv, i32, bytes, follow }: Mapped): void {
  const maxChunks = dv.getUint32(MAX_CHUNKS_OFFSET, true);
  if (maxChunks > MAX_CHUNKS || TABLE_OFFSET + maxChunks * TABLE_ENTRY_LENGTH > bytes)
    throw new Error(`maxChunks ${maxChunks}`);
  const states: Record<string, number> = {};
  const chunks = [];
  let entries = 0;
  let acked = 0;
  let usedBytes = 0;
  let oldest: number | null = null;
  let newest: number | null = null;
  const storeName = info.name;
  for (let i = 0; i < maxChunks; i++) {
    const at = TABLE_OFFSET + i * TABLE_ENTRY_LENGTH;
    const state = i32[(at + ENTRY_STATE_OFFSET) >> 2] & 7;
    const name = chunkStateName(state);
    states[name] = (states[name] ?? 0) + 1;
    if (state === ChunkState.FREE) continue;
    const generation = dv.getUint32(at + ENTRY_GENERATION_OFFSET, true);
    const ageMs = stampAge(dv.getUint32(at + ENTRY_CREATED_OFFSET, true));
    if (ageMs !== null) {
      oldest = oldest === null ? ageMs : Math.max(oldest, ageMs);
      newest = newest === null ? ageMs : Math.min(newest, ageMs);
    }
    const file =
      follow && (state === ChunkState.READY || state === ChunkState.ACTIVE || state === ChunkState.SEALED)
        ? chunkDetails(dir, storeName, generation)
        : null;
    if (file?.found) {
      const f = file as unknown as { entries: number; acked: number; used: number };
      entries += f.entries;
      acked += f.acked;
      usedBytes += f.used;
    }
    chunks.push({ index: i, state: name, generation, ageMs, ...(file === null ? {} : { file }) });
  }
  const chunkSize = dv.getUint32(CHUNK_SIZE_OFFSET, true);
  info.details = {
    chunkSize,
    maxChunks,
    ttlMs: dv.getUint32(TTL_OFFSET, true),
    closed: i32[STORE_CLOSED_OFFSET >> 2] !== 0,
    writeHead: i32[WRITE_HEAD_OFFSET >> 2],
    appends: dv.getUint32(APPENDS_OFFSET, true),
    freed: dv.getUint32(FREED_OFFSET, true),
    full: dv.getUint32(FULL_OFFSET, true),
    expired: dv.getUint32(EXPIRED_OFFSET, true),
    entries,
    acked,
    usedBytes,
    oldestChunkAgeMs: oldest,
    newestChunkAgeMs: newest,
    chunks,
    states,
  };
  const by = ['active', 'sealed', 'ready', 'creating', 'freeing']
    .filter((k) => (states[k] ?? 0) > 0)
    .map((k) => `${states[k]} ${k}`);
  info.summary = `${chunks.length} of ${maxChunks} chunks in use${by.length > 0 ? ` (${by.join(', ')})` : ''}, ${entries} entries, ${acked} acknowledged${oldest === null ? '' : `, oldest chunk ${Math.round(oldest / 1000)} s`}`;
}

function decodeBlobChunk(info: SegmentInfo, { dv, i32 }: Mapped): void {
  const used = dv.getUint32(USED_OFFSET, true);
  const entries = dv.getUint32(ENTRIES_OFFSET, true);
  const acked = dv.getUint32(ACKED_OFFSET, true);
  info.details = {
    capacity: dv.getUint32(CHUNK_CAPACITY_OFFSET, true),
    used,
    entries,
    acked,
    writers: i32[WRITERS_OFFSET >> 2],
    sealed: i32[SEALED_OFFSET >> 2] !== 0,
    leases: i32[LEASES_OFFSET >> 2],
    firstWriteAgeMs: stampAge(dv.getUint32(FIRST_WRITE_OFFSET, true)),
    lastWriteAgeMs: stampAge(dv.getUint32(LAST_WRITE_OFFSET, true)),
  };
  info.summary = `${used} B used, ${entries} entries, ${acked} acknowledged`;
}
