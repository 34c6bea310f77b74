/**
 * Reading shmbus segments from the outside, for `shmbus ls` and `shmbus inspect`: every file
 * is opened read-only and mapped read-only, its header and counters decoded, and each role's
 * liveness lock probed (F_OFD_GETLK: a probe takes no lock). Nothing here writes shared
 * memory, takes a role or touches any process's hot path; a live segment may move while it is
 * read, so positions and counters are a snapshot, each value read once.
 *
 * ```ts
 * listSegments();                 // [{ name, kind, bytes, ownerPid, alive, summary, ... }]
 * inspectSegment('orders');       // the same, plus `details` decoded per kind
 * ```
 * Files that are not shmbus segments, other users' files (no permission) and corrupt ones
 * are listed with a `problem` instead of failing the listing.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ACKED_OFFSET,
  APPENDS_OFFSET,
  CHUNK_SIZE_OFFSET,
  ChunkState,
  chunkStateName,
  ENTRIES_OFFSET,
  ENTRY_GENERATION_OFFSET,
  ENTRY_STATE_OFFSET,
  EXPIRED_OFFSET,
  FREED_OFFSET,
  FULL_OFFSET,
  LEASES_OFFSET,
  MAX_CHUNKS_OFFSET,
  TABLE_ENTRY_LENGTH,
  TABLE_OFFSET,
  TTL_OFFSET,
  USED_OFFSET,
  WRITE_HEAD_OFFSET,
} from '../layout/blob.js';
import {
  ATTACH_COUNT_OFFSET,
  CONSUMER_CLOSED_OFFSET,
  CONSUMER_PID_OFFSET,
  CONSUMER_ROLE,
  FULL_COUNT_OFFSET,
  HEAD_POSITION_OFFSET,
  PRODUCER_CLOSED_OFFSET,
  RECEIVED_BYTES_OFFSET,
  RECEIVED_FRAMES_OFFSET,
  readChannelParams,
  SENT_BYTES_OFFSET,
  SENT_FRAMES_OFFSET,
  TAIL_POSITION_OFFSET,
} from '../layout/channel.js';
import { CLIENT_ROLE_BASE, MAX_CLIENTS_OFFSET } from '../layout/daemon.js';
import { CLASS_COUNT_OFFSET as HUB_CLASS_COUNT_OFFSET, MAX_PEERS_OFFSET, PEER_ROLE_BASE } from '../layout/hub.js';
import { HEADER_LENGTH, hasMagic, Kind, kindName, LAYOUT_VERSION, OWNER_ROLE, readHeader } from '../layout/segment.js';
import {
  COUNTER_COUNT,
  COUNTERS_OFFSET,
  SENDER_SEGMENT_LENGTH,
  SOCKET_PATH_LENGTH_OFFSET,
  SOCKET_PATH_OFFSET,
  SOCKET_PATH_ROOM,
  senderCounters,
} from '../layout/sender.js';
import { PEER_B_ROLE, SLOT_COUNT_OFFSET, SLOT_SIZE_OFFSET } from '../layout/session.js';
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
  /** Decoded per kind (inspectSegment; listSegments fills it too). */
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
  return files.sort().map((file) => readSegment(join(dir, file), file));
}

/** One segment by name (`orders` or `shmbus.orders`), or null if there is no such file. */
export function inspectSegment(name: string, options: ListOptions = {}): SegmentInfo | null {
  const dir = segmentDir(options.dir);
  const file = name.startsWith(FILE_PREFIX) ? name : FILE_PREFIX + name;
  if (file.includes('/')) return null;
  const info = readSegment(join(dir, file), file);
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

function readSegment(path: string, file: string): SegmentInfo {
  const info = blank(file);
  const n = native();
  let fd: number;
  try {
    fd = n.openFile(path, false);
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
        decode(info, h.kind, dv, i32, bytes, held);
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

function decode(
  info: SegmentInfo,
  kind: number,
  dv: DataView,
  i32: Int32Array,
  bytes: number,
  held: (role: number) => boolean,
): void {
  switch (kind) {
    case Kind.CHANNEL: {
      const g = readChannelParams(dv);
      if (g.classCount < 1 || g.classCount > 3) throw new Error(`classCount ${g.classCount}`);
      const rings = g.ringLengths.map((length, c) => {
        const tail = dv.getUint32(TAIL_POSITION_OFFSET + 4 * c, true);
        const head = dv.getUint32(HEAD_POSITION_OFFSET + 4 * c, true);
        return { length, tail, head, fillBytes: ringFill(tail, head, length) };
      });
      const fill = rings.reduce((a, r) => a + r.fillBytes, 0);
      const consumerAlive = held(CONSUMER_ROLE);
      info.details = {
        capacity: g.capacity,
        maxFrame: g.maxFrame,
        priorities: g.classCount > 1,
        rings,
        producer: {
          pid: info.ownerPid,
          alive: info.alive,
          closed: i32[PRODUCER_CLOSED_OFFSET >> 2] !== 0,
          sentFrames: f64At(dv, SENT_FRAMES_OFFSET),
          sentBytes: f64At(dv, SENT_BYTES_OFFSET),
          fullCount: f64At(dv, FULL_COUNT_OFFSET),
        },
        consumer: {
          pid: dv.getUint32(CONSUMER_PID_OFFSET, true),
          alive: consumerAlive,
          closed: i32[CONSUMER_CLOSED_OFFSET >> 2] !== 0,
          attachCount: i32[ATTACH_COUNT_OFFSET >> 2],
          receivedFrames: f64At(dv, RECEIVED_FRAMES_OFFSET),
          receivedBytes: f64At(dv, RECEIVED_BYTES_OFFSET),
        },
      };
      const inFlight = f64At(dv, SENT_FRAMES_OFFSET) - f64At(dv, RECEIVED_FRAMES_OFFSET);
      info.summary = `fill ${percent(fill, g.capacity)} of ${g.capacity} B, consumer ${consumerAlive ? 'alive' : 'none'}, sent ${f64At(dv, SENT_FRAMES_OFFSET)} frames, ~${Math.max(0, inFlight)} in flight`;
      return;
    }
    case Kind.SENDER: {
      if (bytes < SENDER_SEGMENT_LENGTH) throw new Error(`${bytes} bytes`);
      const pathLength = dv.getUint32(SOCKET_PATH_LENGTH_OFFSET, true);
      if (pathLength >= SOCKET_PATH_ROOM) throw new Error(`socket path length ${pathLength}`);
      const socket = new TextDecoder().decode(new Uint8Array(dv.buffer, SOCKET_PATH_OFFSET, pathLength));
      const counters = senderCounters(new Float64Array(dv.buffer, COUNTERS_OFFSET, COUNTER_COUNT));
      const evicted = counters.evictions;
      const evictions = evicted['ring-full'] + evicted.idle + evicted.protocol + evicted['too-many-keys'];
      info.details = { socket, ...counters };
      info.summary = `socket ${socket}, ${counters.consumers} consumer(s), published ${counters.published}, dispatched ${counters.dispatched}, evicted ${evictions}`;
      return;
    }
    case Kind.SESSION: {
      const slotSize = dv.getUint32(SLOT_SIZE_OFFSET, true);
      const slotCount = dv.getUint32(SLOT_COUNT_OFFSET, true);
      const b = held(PEER_B_ROLE);
      info.details = { slotSize, slotCount, peerA: { alive: info.alive }, peerB: { alive: b } };
      info.summary = `${slotCount} slots of ${slotSize} B, peer B ${b ? 'alive' : 'none'}`;
      return;
    }
    case Kind.HUB: {
      const maxPeers = dv.getUint32(MAX_PEERS_OFFSET, true);
      if (maxPeers > 1024) throw new Error(`maxPeers ${maxPeers}`);
      const peers: number[] = [];
      for (let i = 0; i < maxPeers; i++) if (held(PEER_ROLE_BASE + i)) peers.push(i);
      const classes = dv.getUint32(HUB_CLASS_COUNT_OFFSET, true);
      info.details = { maxPeers, classes, livePeers: peers };
      info.summary = `${peers.length} of ${maxPeers} peers alive, ${classes} size class(es)`;
      return;
    }
    case Kind.DAEMON: {
      const maxClients = dv.getUint32(MAX_CLIENTS_OFFSET, true);
      if (maxClients > 1024) throw new Error(`maxClients ${maxClients}`);
      const clients: number[] = [];
      for (let i = 0; i < maxClients; i++) if (held(CLIENT_ROLE_BASE + i)) clients.push(i);
      info.details = { maxClients, liveClientSlots: clients };
      info.summary = `${clients.length} of ${maxClients} client slots in use`;
      return;
    }
    case Kind.BLOB: {
      const maxChunks = dv.getUint32(MAX_CHUNKS_OFFSET, true);
      if (TABLE_OFFSET + maxChunks * TABLE_ENTRY_LENGTH > bytes) throw new Error(`maxChunks ${maxChunks}`);
      const states: Record<string, number> = {};
      const chunks: { index: number; state: string; generation: number }[] = [];
      for (let i = 0; i < maxChunks; i++) {
        const at = TABLE_OFFSET + i * TABLE_ENTRY_LENGTH;
        const state = i32[(at + ENTRY_STATE_OFFSET) >> 2] & 7;
        const name = chunkStateName(state);
        states[name] = (states[name] ?? 0) + 1;
        if (state !== ChunkState.FREE)
          chunks.push({ index: i, state: name, generation: dv.getUint32(at + ENTRY_GENERATION_OFFSET, true) });
      }
      info.details = {
        chunkSize: dv.getUint32(CHUNK_SIZE_OFFSET, true),
        maxChunks,
        ttlMs: dv.getUint32(TTL_OFFSET, true),
        writeHead: i32[WRITE_HEAD_OFFSET >> 2],
        appends: dv.getUint32(APPENDS_OFFSET, true),
        freed: dv.getUint32(FREED_OFFSET, true),
        full: dv.getUint32(FULL_OFFSET, true),
        expired: dv.getUint32(EXPIRED_OFFSET, true),
        chunks,
        states,
      };
      const by = ['active', 'sealed', 'ready', 'creating', 'freeing']
        .filter((k) => (states[k] ?? 0) > 0)
        .map((k) => `${states[k]} ${k}`);
      info.summary = `${chunks.length} of ${maxChunks} chunks in use${by.length > 0 ? ` (${by.join(', ')})` : ''}`;
      return;
    }
    case Kind.BLOB_CHUNK: {
      const used = dv.getUint32(USED_OFFSET, true);
      info.details = {
        used,
        entries: dv.getUint32(ENTRIES_OFFSET, true),
        acked: dv.getUint32(ACKED_OFFSET, true),
        leases: i32[LEASES_OFFSET >> 2],
      };
      info.summary = `${used} B used, ${dv.getUint32(ENTRIES_OFFSET, true)} entries, ${dv.getUint32(ACKED_OFFSET, true)} acknowledged`;
      return;
    }
    default:
      info.summary = '';
  }
}
